"""Just enough of the redis protocol (RESP) for the demo: one command, one reply.

The demo has no redis client dependency: a command is an array of bulk strings, and the
replies it uses are a simple string (+OK), an error (-ERR ...), an integer (:42) or a bulk
string ($3 / foo, or $-1 for nothing).
"""

import os
import socket
import time


def address() -> str:
    """The redis unix socket the units give us in REDIS_SOCKET."""
    return os.environ.get("REDIS_SOCKET") or "/run/activator/redis.sock"


def command(*args, path=None, timeout=5.0, retry_for=3.0):
    """Send one command and return its reply as str, int or None; raise RuntimeError on -ERR.

    While redis restarts (a reload that changed its unit), its socket is briefly gone or
    closes without an answer: try again for up to `retry_for` seconds, as a client library's
    reconnecting pool would, so the web app's requests wait instead of failing.
    """
    deadline = time.monotonic() + retry_for
    while True:
        try:
            return _command_once(args, path, timeout)
        except (OSError, EOFError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def _command_once(args, path, timeout):
    request = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = str(arg).encode()
        request.append(b"$%d\r\n%s\r\n" % (len(data), data))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path or address())
        sock.sendall(b"".join(request))
        reply = sock.makefile("rb")
        line = reply.readline()
        if not line:
            raise EOFError("redis closed the connection without an answer")
        line = line.rstrip(b"\r\n")
        kind, rest = line[:1], line[1:].decode()
        if kind == b"+":
            return rest
        if kind == b":":
            return int(rest)
        if kind == b"$":
            size = int(rest)
            return None if size < 0 else reply.read(size + 2)[:-2].decode()
        if kind == b"-":
            raise RuntimeError(f"redis: {rest}")
        raise RuntimeError(f"redis: unexpected reply {line!r}")
