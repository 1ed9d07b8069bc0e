"""Talking to activator's HTTP endpoint from tests: its address from the log, and plain
requests over real sockets (TCP or unix), with every wait bounded."""

from __future__ import annotations

import json
import re
import socket
import time

from harness import wait_for

ANNOUNCE = re.compile(r"HTTP endpoint on (http://\[?([0-9a-f.:]+)\]?:(\d+)/|unix:(\S+))")


def endpoint(a) -> tuple[int, object]:
    """(family, address) activator announced in its log."""
    match = wait_for(lambda: ANNOUNCE.search(a.output()), 15, what="the HTTP endpoint's address")
    if match.group(4):
        return socket.AF_UNIX, match.group(4)
    host = match.group(2)
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), (host, int(match.group(3)))


def base_url(a) -> str:
    family, address = endpoint(a)
    assert family != socket.AF_UNIX
    host = f"[{address[0]}]" if family == socket.AF_INET6 else address[0]
    return f"http://{host}:{address[1]}"


def connect(a, timeout: float = 10.0) -> socket.socket:
    family, address = endpoint(a)
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.connect(address)
    return sock


class Response:
    def __init__(self, raw: bytes):
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status_line = lines[0]
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


def read_response(sock: socket.socket, deadline: float = 10.0) -> Response:
    """One response, read until its Content-Length is complete (or the peer closes)."""
    data = b""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            match = re.search(rb"(?i)content-length:\s*(\d+)", head)
            if match and len(body) >= int(match.group(1)):
                return Response(data[:len(head) + 4 + int(match.group(1))])
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return Response(data)


def request(a, path: str, method: str = "GET", raw: bytes | None = None) -> Response:
    """One request on a new connection: `raw` bytes as given, else a well-formed request."""
    with connect(a) as sock:
        sock.sendall(raw if raw is not None else
                     f"{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        return read_response(sock)


def get(a, path: str) -> Response:
    return request(a, path)
