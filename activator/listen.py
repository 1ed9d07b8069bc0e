"""The `listen` forms of a socket spec, parsed into a `Listen` value.

    tcp://HOST:PORT   tcp://[V6ADDR]:PORT   udp://HOST:PORT   udp://[V6ADDR]:PORT
    unix:/path        unix:@name (abstract)  fifo:/path        inherit:NAME
    8000              a bare port: TCP on all interfaces, IPv4 and IPv6 (one dual-stack socket)
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, one of them the terminating NUL
FORMS = ("tcp://HOST:PORT, tcp://[V6ADDR]:PORT, udp://HOST:PORT, unix:/path, unix:@name, "
         "fifo:/path, inherit:NAME, or a port number")


class ListenError(ValueError):
    pass


@dataclass(frozen=True)
class Listen:
    kind: str  # "tcp", "udp", "unix", "fifo" or "inherit"
    host: str = ""  # for tcp/udp; "" means every interface, dual-stack (a bare port)
    port: int = 0
    path: str = ""  # unix path, "@name" for an abstract unix socket, fifo path, or inherited name

    @property
    def is_stream(self) -> bool:
        return self.kind in ("tcp", "unix")

    @property
    def is_ipv6(self) -> bool:
        return ":" in self.host

    @property
    def is_file(self) -> bool:
        """A path in the file system: a unix socket file or a fifo."""
        return self.kind == "fifo" or (self.kind == "unix" and not self.path.startswith("@"))

    def __str__(self) -> str:
        if self.kind in ("tcp", "udp"):
            host = "*" if not self.host else f"[{self.host}]" if self.is_ipv6 else self.host
            return f"{self.kind}://{host}:{self.port}"
        return f"{self.kind}:{self.path}"

    def conflicts_with(self, other: "Listen") -> bool:
        """Whether binding both would collide (SO_REUSEPORT aside)."""
        if self.kind in ("tcp", "udp"):
            if other.kind != self.kind or other.port != self.port or self.port == 0:
                return False
            if self.host == other.host:
                return True
            # A wildcard of a family covers every address of it; a bare port covers both families.
            def covers(a: Listen, b: Listen) -> bool:
                if not a.host:
                    return True
                return a.host in ("0.0.0.0", "::") and a.is_ipv6 == b.is_ipv6
            return covers(self, other) or covers(other, self)
        if self.kind in ("unix", "fifo"):
            return other.kind in ("unix", "fifo") and other.path == self.path
        return other.kind == self.kind and other.path == self.path


def parse(value) -> Listen:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ListenError(f"expected {FORMS}")
    if isinstance(value, int) or value.isdigit():
        return Listen("tcp", "", _port(str(value)))
    for kind in ("tcp", "udp"):
        if value.startswith(kind + "://"):
            return _inet(kind, value[len(kind) + 3:], value)
    if value.startswith("unix:"):
        path = value[5:]
        if path.startswith("@"):
            if len(path) < 2 or len(path.encode()) > _UNIX_PATH_MAX:
                raise ListenError(f"'{value}': an abstract name is 1 to {_UNIX_PATH_MAX - 1} bytes")
            return Listen("unix", path=path)
        return Listen("unix", path=_file_path(path, value, _UNIX_PATH_MAX))
    if value.startswith("fifo:"):
        return Listen("fifo", path=_file_path(value[5:], value, 4095))
    if value.startswith("inherit:"):
        name = value[8:]
        if not name or ":" in name:
            raise ListenError(f"'{value}': expected inherit:NAME, NAME as in LISTEN_FDNAMES")
        return Listen("inherit", path=name)
    raise ListenError(f"'{value}' is not an address; expected {FORMS}")


def _inet(kind: str, rest: str, value: str) -> Listen:
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1:end + 2] != ":":
            raise ListenError(f"'{value}': expected {kind}://[V6ADDR]:PORT")
        host, port = rest[1:end], rest[end + 2:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ListenError(f"'{value}': '{host}' is not an IPv6 address") from None
    else:
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise ListenError(f"'{value}': expected {kind}://HOST:PORT")
        if ":" in host:
            raise ListenError(f"'{value}': write an IPv6 address in brackets, {kind}://[{host}]:PORT")
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            if not _HOSTNAME.match(host) or host.replace(".", "").isdigit():
                raise ListenError(f"'{value}': '{host}' is neither an IP address nor a host name") from None
    return Listen(kind, host, _port(port, value))


def _port(text: str, value: str | None = None) -> int:
    value = text if value is None else value
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise ListenError(f"'{value}': the port must be a number from 0 to 65535")
    return int(text)


def _file_path(path: str, value: str, limit: int) -> str:
    if not path.startswith("/"):
        raise ListenError(f"'{value}': the path must be absolute")
    if len(path.encode()) > limit:
        raise ListenError(f"'{value}': the path is longer than {limit} bytes")
    if "\0" in path:
        raise ListenError(f"'{value}': the path contains a NUL byte")
    return path
