"""What the kernel says about the units' processes and sockets, read without blocking.

Used by the HTTP endpoint, inside PID 1, so it reads /proc and asks the kernel directly
rather than importing psutil (which would stay resident in PID 1 for the container's life).

- CPU and memory of an instance: its main process and every descendant, found through
  `/proc/PID/task/TID/children`. CPU is utime+stime plus cutime+cstime (the children each
  one has already reaped), so work done by short-lived helpers is not lost; RSS is the sum
  of the resident pages of the processes alive now.
- The accept queue of a listening stream socket: for TCP, `getsockopt(TCP_INFO)` of the
  listening socket, whose `tcpi_unacked` is the number of connections waiting to be
  accepted and `tcpi_sacked` the backlog limit; for unix stream sockets, the kernel's
  sock_diag netlink interface (`UNIX_DIAG_RQLEN`: the same two figures). Datagram sockets
  and fifos have no accept queue: nothing is reported for them.
"""

from __future__ import annotations

import os
import socket
import struct

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
MAX_TREE = 4096  # processes per instance: a fork bomb costs a scrape bounded time
TCP_LISTEN = 10  # the kernel's TCP_LISTEN state, also used by listening unix sockets

# ---------------------------------------------------------------------- processes


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].split()


def _children(pid: int) -> list[int]:
    result = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                result.extend(int(p) for p in f.read().split())
    except OSError:
        pass  # it ended while we looked
    return result


def tree_usage(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of `pid` and its descendants; None if it is gone."""
    cpu_ticks = 0
    rss_pages = 0
    seen = 0
    todo = [pid]
    while todo and seen < MAX_TREE:
        current = todo.pop()
        fields = _stat_fields(current)
        if fields is None:
            if current == pid:
                return None
            continue
        seen += 1
        try:
            # fields 14-17 of stat(5) (utime, stime, cutime, cstime), 24 (rss), counted from
            # the state, which is field 3
            cpu_ticks += sum(int(v) for v in fields[11:15])
            rss_pages += int(fields[21])
        except (IndexError, ValueError):
            continue
        todo.extend(_children(current))
    return cpu_ticks / CLOCK_TICKS, rss_pages * PAGE_SIZE


# ---------------------------------------------------------------------- socket queues

NLMSG_HEADER = struct.Struct("=IHHII")  # len, type, flags, seq, pid
UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")  # family, protocol, pad, states, ino, show, cookie×2
UNIX_DIAG_MSG = struct.Struct("=BBBBIII")  # family, type, state, pad, ino, cookie×2
RTATTR = struct.Struct("=HH")
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_RQLEN = 4


def tcp_accept_queue(sock: socket.socket) -> tuple[int, int] | None:
    """(waiting connections, backlog) of a listening TCP socket, from TCP_INFO."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    if len(info) < 32 or info[0] != TCP_LISTEN:
        return None
    # struct tcp_info: 8 one-byte fields, then u32 rto, ato, snd_mss, rcv_mss, unacked, sacked
    unacked, sacked = struct.unpack_from("=II", info, 24)
    return unacked, sacked


def unix_accept_queues() -> dict[int, tuple[int, int]]:
    """inode -> (waiting connections, backlog) of every listening unix socket of this network
    namespace, from sock_diag. Empty where the kernel has no such interface."""
    result: dict[int, tuple[int, int]] = {}
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                             4)  # NETLINK_SOCK_DIAG
    except OSError:
        return result
    with sock:
        request = UNIX_DIAG_REQ.pack(socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_RQLEN,
                                     0xFFFFFFFF, 0xFFFFFFFF)
        header = NLMSG_HEADER.pack(NLMSG_HEADER.size + len(request), SOCK_DIAG_BY_FAMILY,
                                   NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        try:
            sock.send(header + request)
            # The kernel fills a dump while we receive: each recv returns at once.
            for _ in range(1024):
                data = sock.recv(65536)
                if not data or _parse_unix_diag(data, result):
                    break
        except OSError:
            pass
    return result


def _parse_unix_diag(data: bytes, result: dict) -> bool:
    """Add the messages of one netlink datagram to `result`; True at the end of the dump."""
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size:
            return True
        if kind in (NLMSG_DONE, NLMSG_ERROR):
            return True
        body = offset + NLMSG_HEADER.size
        if kind == SOCK_DIAG_BY_FAMILY and body + UNIX_DIAG_MSG.size <= len(data):
            _, _, state, _, inode, _, _ = UNIX_DIAG_MSG.unpack_from(data, body)
            attr = body + UNIX_DIAG_MSG.size
            end = offset + length
            while attr + RTATTR.size <= end:
                attr_len, attr_type = RTATTR.unpack_from(data, attr)
                if attr_len < RTATTR.size:
                    break
                if attr_type == UNIX_DIAG_RQLEN and attr_len >= RTATTR.size + 8 and state == TCP_LISTEN:
                    result[inode] = struct.unpack_from("=II", data, attr + RTATTR.size)
                attr += (attr_len + 3) & ~3
        offset += (length + 3) & ~3
    return False


def accept_queues(sockets: dict[str, int]) -> dict[str, tuple[int, int]]:
    """name -> (waiting connections, backlog) for the listening stream sockets among
    `sockets` (name -> fd); the others (datagram, fifo, closed) are left out."""
    result: dict[str, tuple[int, int]] = {}
    unix: dict[str, int] = {}
    for name, fd in sockets.items():
        if fd < 0:
            continue
        try:
            with socket.socket(fileno=os.dup(fd)) as sock:
                if sock.type != socket.SOCK_STREAM:
                    continue
                if sock.family in (socket.AF_INET, socket.AF_INET6):
                    queue = tcp_accept_queue(sock)
                    if queue is not None:
                        result[name] = queue
                elif sock.family == socket.AF_UNIX:
                    unix[name] = os.fstat(fd).st_ino
        except OSError:
            continue  # a fifo (not a socket), or a descriptor closed meanwhile
    if unix:
        queues = unix_accept_queues()
        for name, inode in unix.items():
            if inode in queues:
                result[name] = queues[inode]
    return result
