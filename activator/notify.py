"""The sd_notify server: one unix datagram socket, read by the event loop.

Receiving follows systemd's own receiver (src/shared/notify-recv.c) rule for rule:

- SO_PASSCRED is on, so the kernel attaches the sender's pid, uid and gid to every datagram;
  the sender is judged by that pid, never by anything in the message. The kernel lets root
  put any live pid there (sd_pid_notify(pid=...)), anyone else only their own: notify_access
  holds against services that dropped privileges, not against root ones.
- A sender must still exist when its datagram is read, or nobody can tell whose it is (its
  /proc entry is gone); a process that notifies and exits at once should wait at a barrier
  (BARRIER=1, as systemd-notify does); systemd has the same rule.
- A datagram that was truncated (payload over 4096 bytes, or more descriptors than fit),
  that carries no credentials, or that has a NUL byte anywhere but at its very end, is
  ignored "like no message at all".
- Descriptors arrive close-on-exec (MSG_CMSG_CLOEXEC). Every descriptor of a message that is
  ignored, not allowed, or not a FDSTORE=1 is closed at once, which also releases a sender
  blocked on BARRIER=1 (systemd-notify without --no-block).
- The text is read as systemd's service manager reads it (`parse`): lines end at LF or CR,
  a value's first line wins, a flag counts on any line, values systemd would refuse are
  left out, so the manager never has to second-guess them.

The socket is a path (`$ACTIVATOR_RUNTIME_DIR/notify`), so it also works across network
namespaces, and is world-writable, so services that dropped privileges can reach it.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct

BUFFER = 4096  # systemd's NOTIFY_BUFFER_MAX: PIPE_BUF
MAX_FDS = 768  # systemd's NOTIFY_FD_MAX
_UCRED = struct.Struct("iII")
_ANCILLARY = socket.CMSG_SPACE(_UCRED.size) + socket.CMSG_SPACE(4 * MAX_FDS)


class Message:
    """One notification: the sender's credentials, its assignments, the descriptors it sent."""

    def __init__(self, pid: int, uid: int, gid: int, fields: dict[str, str], fds: list[int] | None = None):
        self.pid = pid
        self.uid = uid
        self.gid = gid
        self.fields = fields
        self.fds = fds if fds is not None else []

    def close_fds(self) -> None:
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []


def parse(data: bytes) -> dict[str, str] | None:
    """The assignments of a datagram, as systemd's service manager reads them; None for one
    to ignore entirely (a NUL anywhere but at its very end).

    Lines end at LF or CR (systemd's NEWLINE); a line without `=` or with an empty key
    means nothing. Where a key is given twice, systemd looks values up with
    strv_find_startswith (the first line wins) but flags with strv_contains (any `READY=1`
    line counts), so the result holds the first value of each key, except that a flag is "1"
    when any of its lines says so. Values systemd would refuse are dropped here, so that the
    manager sees them as absent, as systemd does: a number that is not one (MAINPID,
    EXTEND_TIMEOUT_USEC, WATCHDOG_USEC, ERRNO, which may also be an errno name), an FDNAME
    that cannot go into LISTEN_FDNAMES. A STATUS that is not UTF-8 or is longer than
    STATUS_TEXT_MAX clears the status text (""), as in systemd.
    """
    if b"\0" in data[:-1]:
        return None
    if data.endswith(b"\0"):
        data = data[:-1]
    result: dict[str, str | None] = {}
    for line in data.replace(b"\r", b"\n").split(b"\n"):
        key, sep, value = line.partition(b"=")
        if not sep or not key:
            continue
        name = key.decode("utf-8", "replace")
        if name in FLAGS and value == b"1":
            result[name] = "1"
        elif name not in result:
            result[name] = _value(name, value)
    return {k: v for k, v in result.items() if v is not None}


FLAGS = frozenset({"READY", "STOPPING", "RELOADING", "FDSTORE", "FDSTOREREMOVE", "BARRIER"})
NUMBERS = frozenset({"MAINPID", "EXTEND_TIMEOUT_USEC", "WATCHDOG_USEC", "ERRNO"})
STATUS_TEXT_MAX = 3 * 1024  # systemd's, in bytes
FDNAME_MAX = 255
_U64_MAX = 2**64 - 1  # safe_atou64: anything larger is ERANGE
_LIMITS = {"MAINPID": 2**31 - 1, "ERRNO": 4095}  # a pid_t; ERRNO_MAX


def _unsigned(value: bytes) -> bytes | None:
    """The digits of what strtoull takes whole, as safe_atou64 wants: blanks, an optional +,
    ASCII digits. (bytes.isdigit() is ASCII-only.)"""
    digits = value.lstrip(b" \t")
    digits = digits[1:] if digits.startswith(b"+") else digits
    return digits if digits.isdigit() else None


def _value(name: str, value: bytes) -> str | None:
    """The value as the manager should see it; None where systemd would ignore the key."""
    if name == "STATUS":
        if len(value) > STATUS_TEXT_MAX:
            return ""
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return ""
    if name in NUMBERS:
        digits = _unsigned(value)
        if digits is not None:
            number = int(digits)
        elif name == "ERRNO" and value.isascii() and value.isalnum():
            number = getattr(errno, value.decode(), None) if value.startswith(b"E") else None
        else:
            number = None
        if number is None or number > _LIMITS.get(name, _U64_MAX) or (name == "MAINPID" and number <= 0):
            return None
        return str(number)
    if name == "FDNAME":
        if len(value) > FDNAME_MAX or any(b < 0x20 or b >= 0x7F or b == 0x3A for b in value):
            return None  # control characters, non-ASCII, or ':' (the LISTEN_FDNAMES separator)
        return value.decode("ascii")
    return value.decode("utf-8", "replace")


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
