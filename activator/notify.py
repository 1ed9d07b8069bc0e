"""The sd_notify server: one unix datagram socket, read by the event loop.

Receiving follows systemd's own receiver (src/shared/notify-recv.c) rule for rule:

- SO_PASSCRED is on, so the kernel attaches the sender's pid, uid and gid to every datagram;
  the sender is judged by that pid, never by anything in the message.
- A datagram that was truncated (payload over 4096 bytes, or more descriptors than fit),
  that carries no credentials, or that has a NUL byte anywhere but at its very end, is
  ignored "like no message at all".
- Descriptors arrive close-on-exec (MSG_CMSG_CLOEXEC). Every descriptor of a message that is
  ignored, not allowed, or not a FDSTORE=1 is closed at once, which also releases a sender
  blocked on BARRIER=1 (systemd-notify without --no-block).

The socket is a path (`$ACTIVATOR_RUNTIME_DIR/notify`), so it also works across network
namespaces, and is world-writable, so services that dropped privileges can reach it.
"""

from __future__ import annotations

import array
import os
import socket
import struct
from dataclasses import dataclass, field

BUFFER = 4096  # systemd's NOTIFY_BUFFER_MAX: PIPE_BUF
MAX_FDS = 768  # systemd's NOTIFY_FD_MAX
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(4 * MAX_FDS)


@dataclass
class Message:
    pid: int
    uid: int
    gid: int
    fields: dict[str, str]
    fds: list[int] = field(default_factory=list)

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def parse(data: bytes) -> dict[str, str] | None:
    """The KEY=VALUE assignments of a datagram, or None for one to ignore entirely."""
    if b"\0" in data[:-1]:
        return None
    if data.endswith(b"\0"):
        data = data[:-1]
    text = data.decode("utf-8", "replace")
    result: dict[str, str] = {}
    for line in text.split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            result[key] = value  # a later assignment of the same key wins, as in systemd
    return result


class NotifyServer:
    def __init__(self, path: str):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        self.sock.bind(path)
        os.chmod(path, 0o777)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.fd = self.sock.fileno()

    def receive(self, limit: int = 256) -> list[Message]:
        """The valid messages waiting, at most `limit` (the loop comes back for the rest)."""
        messages = []
        for _ in range(limit):
            try:
                data, ancillary, flags, _ = self.sock.recvmsg(BUFFER, _ANCILLARY,
                                                              socket.MSG_CMSG_CLOEXEC | socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            credentials, fds = None, []
            for level, kind, payload in ancillary:
                if level != socket.SOL_SOCKET:
                    continue
                if kind == socket.SCM_RIGHTS:
                    usable = len(payload) - len(payload) % 4
                    fds.extend(array.array("i", payload[:usable]))
                elif kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                    credentials = _UCRED.unpack_from(payload)
            message = None
            if not flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC) and credentials and credentials[0] > 0:
                assignments = parse(data)
                if assignments is not None:
                    message = Message(credentials[0], credentials[1], credentials[2], assignments, fds)
            if message is None:
                Message(0, 0, 0, {}, fds).close_fds()
                continue
            messages.append(message)
        return messages

    def close(self) -> None:
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass
