"""The `listen` forms of a socket spec, parsed into a `Listen` value.

    tcp://HOST:PORT   tcp://[V6ADDR]:PORT   udp://HOST:PORT   udp://[V6ADDR]:PORT
    unix:/path        unix:@name (abstract)  fifo:/path        inherit:NAME
    8000              a bare port: TCP on all interfaces, IPv4 and IPv6 (one dual-stack socket)

`tcp://*:PORT` (and `udp://*:PORT`) is how a bare port prints, so it is accepted too: every
interface of both families. `str(parse(x))` is the canonical form, and parses back to the same
value.
"""

from __future__ import annotations

from activator.record import Record

_HOSTNAME = r"[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*"
_UNIX_PATH_MAX = 107  # sun_path holds 108 bytes, one of them the terminating NUL
_PATH_MAX = 4095
FORMS = ("tcp://HOST:PORT, tcp://[V6ADDR]:PORT, udp://HOST:PORT, unix:/path, unix:@name, "
         "fifo:/path, inherit:NAME, or a port number")


class ListenError(ValueError):
    pass


class Listen(Record):
    kind: str  # "tcp", "udp", "unix", "fifo" or "inherit"
    host: str = ""  # for tcp/udp; "" means every interface, dual-stack (a bare port)
    port: int = 0
    path: str = ""  # unix path, "@name" for an abstract unix socket, fifo path, or inherited name

    @property
    def is_inet(self) -> bool:
        return self.kind in ("tcp", "udp")

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
        if self.is_inet:
            host = "*" if not self.host else f"[{self.host}]" if self.is_ipv6 else self.host
            return f"{self.kind}://{host}:{self.port}"
        return f"{self.kind}:{self.path}"

    def conflicts_with(self, other: "Listen", ipv6_only: bool = False, other_ipv6_only: bool = False) -> bool:
        """Whether binding both would collide (SO_REUSEPORT aside).

        `ipv6_only` matters because Linux binds an IPv6 wildcard (`[::]` or a bare port) for IPv4
        as well unless IPV6_V6ONLY is set: `tcp://[::]:80` then takes `tcp://127.0.0.1:80` too.
        """
        if self.is_inet:
            if other.kind != self.kind or other.port != self.port or self.port == 0:
                return False  # port 0: the kernel picks a free port for each
            mine, theirs = self._scopes(ipv6_only), other._scopes(other_ipv6_only)
            return any(_overlap(a, b) for a in mine for b in theirs)
        if self.is_file:
            return other.is_file and other.path == self.path  # one file-system name
        return other.kind == self.kind and other.path == self.path

    def _scopes(self, ipv6_only: bool) -> list[tuple[str, str]]:
        """(family, address) pairs this socket takes; address "" is the family's wildcard."""
        if not self.host:
            return [("6", "")] if ipv6_only else [("4", ""), ("6", "")]
        if self.host == "0.0.0.0":
            return [("4", "")]
        if self.host == "::":
            return [("6", "")] if ipv6_only else [("4", ""), ("6", "")]
        if _is_ip(self.host):
            return [("6" if self.is_ipv6 else "4", self.host)]
        return [("name", self.host)]  # a host name: its family is only known once resolved


def _is_ip(host: str) -> bool:
    import ipaddress  # here and below: only the loader needs it, never the init

    try:
        ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    return True


def _overlap(a: tuple[str, str], b: tuple[str, str]) -> bool:
    if a == b:
        return True
    if "name" in (a[0], b[0]):
        # A host name collides with a wildcard of any family; with a specific address we
        # cannot tell without resolving it, and binding will say.
        return (a[0] != "name" and not a[1]) or (b[0] != "name" and not b[1])
    return a[0] == b[0] and (not a[1] or not b[1])


def parse(value) -> Listen:
    """A `listen` value (text, or a port number) as a Listen; ListenError says what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ListenError(f"expected {FORMS}")
    if isinstance(value, int):
        return Listen("tcp", "", _port(str(value), value))
    text = value
    if ascii_digits(text):
        return Listen("tcp", "", _port(text, value))
    for kind in ("tcp", "udp"):
        if text.startswith(kind + "://"):
            return _inet(kind, text[len(kind) + 3:], value)
    if text.startswith("unix:"):
        path = text[5:]
        if path.startswith("@"):
            if "\0" in path:
                raise ListenError(f"{value!r}: the abstract name contains a NUL character")
            if len(path) < 2 or len(path.encode()) > _UNIX_PATH_MAX:
                raise ListenError(f"'{value}': an abstract name is 1 to {_UNIX_PATH_MAX - 1} bytes")
            return Listen("unix", path=path)
        return Listen("unix", path=_file_path(path, value, _UNIX_PATH_MAX))
    if text.startswith("fifo:"):
        return Listen("fifo", path=_file_path(text[5:], value, _PATH_MAX))
    if text.startswith("inherit:"):
        name = text[8:]
        import re  # here: PID 1 reads no listen address at boot (the model holds them parsed)

        if not re.fullmatch(r"[\x21-\x39\x3b-\x7e]{1,255}", name):
            raise ListenError(f"'{value}': expected inherit:NAME, NAME as in LISTEN_FDNAMES "
                              "(printable characters, no ':' or blank)")
        return Listen("inherit", path=name)
    for kind in ("tcp", "udp"):
        if text.startswith(kind + ":"):
            raise ListenError(f"'{value}': expected {kind}://HOST:PORT or {kind}://[V6ADDR]:PORT")
    raise ListenError(f"'{value}' is not an address; expected {FORMS}")


def _inet(kind: str, rest: str, value: str) -> Listen:
    import ipaddress

    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1:end + 2] != ":":
            raise ListenError(f"'{value}': expected {kind}://[V6ADDR]:PORT")
        host, port = rest[1:end], rest[end + 2:]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise ListenError(f"'{value}': '{host}' is not an IPv6 address") from None
        return Listen(kind, host, _port(port, value))
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise ListenError(f"'{value}': expected {kind}://HOST:PORT")
    if host == "*":
        return Listen(kind, "", _port(port, value))
    if ":" in host:
        raise ListenError(f"'{value}': write an IPv6 address in brackets, {kind}://[{host}]:PORT")
    try:
        host = str(ipaddress.IPv4Address(host))
    except ValueError:
        import re

        if not re.fullmatch(_HOSTNAME, host) or len(host) > 253 or host.replace(".", "").isdigit():
            raise ListenError(f"'{value}': '{host}' is neither an IP address nor a host name") from None
        host = host.lower()  # host names are case-insensitive: one spelling, to compare them
    return Listen(kind, host, _port(port, value))


def ascii_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() alone also accepts '²' and '٣'."""
    return text.isascii() and text.isdigit()


def _port(text: str, value) -> int:
    if not ascii_digits(text) or not 0 <= int(text) <= 65535:
        raise ListenError(f"'{value}': the port must be a number from 0 to 65535")
    return int(text)


def _file_path(path: str, value: str, limit: int) -> str:
    if "\0" in path:
        raise ListenError(f"{value!r}: the path contains a NUL character")
    if not path.startswith("/"):
        raise ListenError(f"'{value}': the path must be absolute")
    if path.endswith("/"):
        raise ListenError(f"'{value}': the path names a directory; give the file's name")
    if len(path.encode()) > limit:
        raise ListenError(f"'{value}': the path is longer than {limit} bytes")
    return path
