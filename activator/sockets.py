"""Binding the sockets of socket specs, and the sockets activator itself inherited.

Every socket is bound before any service starts and stays open in activator for its whole
life, so a service can restart, crash or be replaced while clients wait in the backlog
instead of being refused. Sockets are created close-on-exec; spawning places the ones a
unit owns on fds 3, 4, … of its processes. They are left blocking, as systemd leaves them,
except an `accept` socket, which activator itself accepts on.
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from activator.model import Socket


class BindError(Exception):
    def __init__(self, spec: Socket, message: str):
        super().__init__(f"unit {spec.unit}: socket {spec.key}: cannot bind {spec.listen}: {message}")
        self.spec = spec


class BoundSocket:
    """An open socket (or fifo) of a spec; `fd` is what services receive."""

    def __init__(self, spec: Socket, fd: int, obj: socket.socket | None, owns_path: bool):
        self.spec = spec
        self.fd = fd
        self.obj = obj  # keeps the socket object alive; None for fifos and inherited fds
        self.owns_path = owns_path
        self.address = _describe(spec, obj)

    @property
    def name(self) -> str:
        return self.spec.name

    def adjust(self, spec: Socket) -> None:
        """Apply the options a bound socket can change in place (same bind_key)."""
        kind = spec.listen.kind
        if self.obj is not None and kind in ("tcp", "unix") and spec.backlog != self.spec.backlog:
            self.obj.listen(spec.backlog)  # Linux resizes the backlog of a listening socket
        if kind == "tcp" and self.obj is not None:
            self.obj.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(spec.nodelay))
            self.obj.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(spec.keepalive))
        if spec.listen.is_file:
            _own_path(spec)
        if spec.accept != self.spec.accept:
            os.set_blocking(self.fd, not spec.accept)
        self.spec = spec

    def close(self) -> None:
        if self.fd < 0:
            return
        if self.owns_path:
            try:
                os.unlink(self.spec.listen.path)
            except OSError:
                pass
        if self.obj is not None:
            self.obj.close()
        else:
            os.close(self.fd)
        self.fd = -1


def inherited_sockets(environ: dict) -> dict[str, int]:
    """NAME -> fd for what activator received by LISTEN_FDS, as sd_listen_fds_with_names sees it."""
    try:
        if int(environ.get("LISTEN_PID", "")) != os.getpid():
            return {}
        count = int(environ.get("LISTEN_FDS", ""))
    except ValueError:
        return {}
    if count <= 0:
        return {}
    names = environ.get("LISTEN_FDNAMES", "").split(":") if environ.get("LISTEN_FDNAMES") else []
    if len(names) != count:
        names = ["unknown"] * count
    result = {}
    for i, name in enumerate(names):
        fd = 3 + i
        try:
            os.set_inheritable(fd, False)  # only the units that name it get it
        except OSError:
            continue
        result.setdefault(name, fd)
    return result


def bind(spec: Socket, inherited: dict[str, int]) -> BoundSocket:
    listen = spec.listen
    try:
        if listen.kind == "inherit":
            if listen.path not in inherited:
                known = ", ".join(sorted(inherited)) or "none"
                raise BindError(spec, f"activator received no socket named '{listen.path}' "
                                      f"through LISTEN_FDS (received: {known})")
            return BoundSocket(spec, inherited[listen.path], None, False)
        if listen.kind == "fifo":
            return _bind_fifo(spec)
        if listen.kind == "unix":
            return _bind_unix(spec)
        return _bind_inet(spec)
    except BindError:
        raise
    except OSError as e:
        raise BindError(spec, e.strerror or str(e)) from None


def _bind_inet(spec: Socket) -> BoundSocket:
    listen = spec.listen
    kind = socket.SOCK_STREAM if listen.kind == "tcp" else socket.SOCK_DGRAM
    if not listen.host:  # a bare port: one dual-stack socket, IPv4 where there is no IPv6
        try:
            sock = socket.socket(socket.AF_INET6, kind)
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(spec.ipv6_only))
            address = ("::", listen.port)
        except OSError:
            sock = socket.socket(socket.AF_INET, kind)
            address = ("0.0.0.0", listen.port)
    else:
        try:
            family, _, _, _, address = socket.getaddrinfo(listen.host, listen.port, type=kind,
                                                          flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as e:
            raise BindError(spec, f"cannot resolve '{listen.host}': {e.strerror}") from None
        sock = socket.socket(family, kind)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(spec.ipv6_only))
    try:
        if listen.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if spec.nodelay:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if spec.keepalive:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        if spec.reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if listen.kind == "tcp":
            sock.listen(spec.backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(not spec.accept)
    return BoundSocket(spec, sock.fileno(), sock, False)


def _bind_unix(spec: Socket) -> BoundSocket:
    path = spec.listen.path
    abstract = path.startswith("@")
    if not abstract:
        _prepare_path(spec, stat.S_ISSOCK, "a socket")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if abstract:
            sock.bind("\0" + path[1:])
        else:
            old = os.umask(0o777)  # nobody can connect before mode and owner are right
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            _own_path(spec)
        sock.listen(spec.backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(not spec.accept)
    return BoundSocket(spec, sock.fileno(), sock, not abstract)


def _bind_fifo(spec: Socket) -> BoundSocket:
    path = spec.listen.path
    _prepare_path(spec, stat.S_ISFIFO, "a fifo", remove_stale=False)
    if not os.path.exists(path):
        os.mkfifo(path, 0o600)
    _own_path(spec)
    # Read-write, so the fifo never reports end-of-file to its reader when writers come and go.
    fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    os.set_blocking(fd, True)
    return BoundSocket(spec, fd, None, True)


def _prepare_path(spec: Socket, is_kind, kind: str, remove_stale: bool = True) -> None:
    """Create the parent directory; remove a stale socket file; refuse anything else there."""
    path = spec.listen.path
    os.makedirs(os.path.dirname(path) or "/", mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not is_kind(st.st_mode):
        raise BindError(spec, f"{path} exists and is not {kind}; remove it or choose another path")
    if remove_stale:
        if not _is_stale(path):
            raise BindError(spec, f"a running process is listening on {path}")
        os.unlink(path)  # left by an earlier run: nobody listens on it any more


def _is_stale(path: str) -> bool:
    """Whether no socket is bound to the socket file at `path` any more.

    Only ECONNREFUSED says so. A socket of another type answers EPROTOTYPE (try that type),
    and the probe never blocks: a live listener with a full backlog would hold a blocking
    connect() for as long as it does not accept; non-blocking, that is EAGAIN, alive.
    Anything else (EACCES…) is not ours to judge, so binding fails with it.
    """
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM, socket.SOCK_SEQPACKET):
        probe = socket.socket(socket.AF_UNIX, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            return True
        except OSError as e:
            if e.errno == errno.EPROTOTYPE:
                continue
            if e.errno in (errno.EAGAIN, errno.EINPROGRESS):
                return False
            raise
        else:
            return False
        finally:
            probe.close()
    return False


def _own_path(spec: Socket) -> None:
    path = spec.listen.path
    if spec.uid is not None or spec.gid is not None:
        os.chown(path, -1 if spec.uid is None else spec.uid, -1 if spec.gid is None else spec.gid)
    os.chmod(path, spec.mode)


def _describe(spec: Socket, obj: socket.socket | None) -> str:
    """The address as bound: a port 0 in the spec shows the port the kernel chose."""
    listen = spec.listen
    if obj is None or listen.kind not in ("tcp", "udp") or listen.port:
        return str(listen)
    host, port = obj.getsockname()[:2]
    host = "*" if not listen.host else f"[{host}]" if ":" in host else host
    return f"{listen.kind}://{host}:{port}"


class SocketTable:
    """Every socket activator holds, by name, for its whole life: bound at boot or by a
    reload, or inherited from whatever started activator. The one owner of these descriptors:
    boot, reload and shutdown all go through it."""

    def __init__(self, environ: dict):
        self.bound: dict[str, BoundSocket] = {}
        self.inherited = inherited_sockets(environ)

    def __contains__(self, name: str) -> bool:
        return name in self.bound

    def get(self, name: str) -> BoundSocket | None:
        return self.bound.get(name)

    def items(self):
        return self.bound.items()

    def bind_all(self, specs) -> None:
        """Boot: bind every socket; on BindError nothing stays bound."""
        try:
            for spec in specs:
                self.bound[spec.name] = bind(spec, self.inherited)
        except BindError:
            self.close_all()
            raise

    def bind(self, spec: Socket) -> BoundSocket:
        return bind(spec, self.inherited)

    def put(self, name: str, sock: BoundSocket) -> None:
        self.bound[name] = sock

    def pop(self, name: str) -> BoundSocket | None:
        return self.bound.pop(name, None)

    def by_address(self) -> dict:
        """bind_key -> name of every open socket."""
        return {s.spec.bind_key: name for name, s in self.bound.items()}

    def holds(self, sock: BoundSocket) -> bool:
        return any(s is sock for s in self.bound.values())

    def close_all(self) -> None:
        for sock in self.bound.values():
            sock.close()
        self.bound.clear()
