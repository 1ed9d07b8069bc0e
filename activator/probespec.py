"""What `ready:` and `health:` say (SPEC §10), as a record of the model, and the addresses
they name.

A `Probe` is one of five kinds: `listening` (read from /proc), `tcp` (a connection
succeeds), `http` (a GET answers 2xx or 3xx), `exec` (a command exits 0), `fd` (a newline on a
pipe the service holds at fd N). Addresses and commands are templates, expanded for each
instance when it starts, so `$(instance)` can pick an instance's own port.

Probes connect without a name lookup: a resolver call would block the one loop of PID 1. So
HOST is an IPv4 address, an IPv6 address in brackets, or `localhost` (127.0.0.1).
"""

from __future__ import annotations

import socket

from activator.record import Record

READY_KINDS = ("listening", "tcp", "http", "exec", "fd")
HEALTH_KINDS = ("tcp", "http", "exec")
READY_DEFAULTS = {"interval": 0.2, "timeout": 1.0}
HEALTH_DEFAULTS = {"interval": 10.0, "timeout": 2.0, "retries": 3, "start_period": 0.0}


class Probe(Record):
    kind: str  # one of READY_KINDS
    target: tuple = ()  # templates: the address (tcp, http) or the command's arguments (exec)
    fd: int = 0  # `fd`: where the service finds the pipe's writing end
    interval: float = 0.2
    timeout: float = 1.0
    retries: int = 1
    start_period: float = 0.0

    def describe(self, expanded: list[str] | None = None) -> str:
        if self.kind == "listening":
            return "listening"
        if self.kind == "fd":
            return f"fd {self.fd}"
        text = " ".join(expanded) if expanded is not None else " ".join(str(t) for t in self.target)
        return f"{self.kind} {text}"


class AddressError(ValueError):
    pass


def parse_address(text: str) -> tuple[int, str, int]:
    """`HOST:PORT` as (family, host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise AddressError(f"'{text}' is not HOST:PORT")
    return (*_host(host, text), _port(port, text))


def parse_url(text: str) -> tuple[int, str, int, str, str]:
    """`http://HOST[:PORT][/PATH]` as (family, host, port, Host header, path)."""
    if not text.startswith("http://"):
        raise AddressError(f"'{text}' is not an http:// URL (https is not probed)")
    rest = text[len("http://"):]
    authority, slash, path = rest.partition("/")
    path = "/" + path if slash else "/"
    if any(c in path for c in " \r\n\t"):
        raise AddressError(f"'{text}': the path has blanks; write them as %20")
    if authority.startswith("["):
        host, _, port = authority.partition("]")
        host, port = host + "]", port[1:] if port.startswith(":") else (port or None)
    else:
        host, sep, port = authority.partition(":")
        port = port if sep else None
    port_number = 80 if port is None else _port(port, text)
    return (*_host(host, text), port_number, authority, path)


def _host(host: str, text: str) -> tuple[int, str]:
    if host == "localhost":
        return socket.AF_INET, "127.0.0.1"
    import ipaddress  # only the loader reads addresses: the init never needs it (0.3 MiB)

    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise AddressError(f"'{text}': the host must be an IP address or localhost (a name "
                           "lookup would block activator)") from None
    if address.version == 6 and not bracketed:
        raise AddressError(f"'{text}': write an IPv6 address in brackets, [{host}]")
    return (socket.AF_INET6 if address.version == 6 else socket.AF_INET), str(address)


def _port(port: str, text: str) -> int:
    if not port.isascii() or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise AddressError(f"'{text}': the port must be a number from 1 to 65535")
    return int(port)
