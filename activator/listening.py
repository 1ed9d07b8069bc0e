"""`ready: listening`: whether a process of an instance waits on one of its unit's sockets.

Read from /proc, with no cooperation from the program. A server waits on its listening
socket in one of two ways the kernel lets us see:

- the socket is in one of its epoll sets: `/proc/PID/fdinfo/N` of an epoll descriptor lists
  one `tfd:` line per watched file, with that file's inode (`ino:`, hexadecimal); the socket
  is known by its inode, which every process holding it shares (`/proc/PID/fd/N` links read
  `socket:[INODE]`). asyncio (uvicorn, hypercorn), libuv (node), Go's netpoller, gunicorn's
  gthread worker, nginx: all epoll.
- one of its threads is blocked in accept/accept4 on it: `/proc/PID/task/TID/syscall` reads
  `NR ARG1 ...` while a thread sleeps in a system call, the syscall number and its first
  argument, the descriptor (gunicorn's sync worker after select, a plain blocking server).

What is not seen: a server that waits in select or poll (gunicorn's sync worker between
accepts, many small C servers): the descriptors are in a buffer of the program's memory, not
in /proc. For those, `ready: {tcp: ...}` or `{http: ...}` is the way.

Because the answer is per process, instances sharing one socket are told apart: instance 2
is ready when *its* processes wait on the socket, whatever instance 1 does.

"The instance's processes" are its main process and every descendant (workers are children
of an arbiter), found by one pass over /proc/*/stat.
"""

from __future__ import annotations

import os

# accept and accept4, by architecture: the numbers /proc/PID/task/TID/syscall shows. The
# machine from os.uname(): the `platform` module would cost PID 1 0.14 MiB for it.
ACCEPT_SYSCALLS = {
    "x86_64": (43, 288),
    "aarch64": (202, 242),
    "arm64": (202, 242),
}.get(os.uname().machine, (43, 288))


def epoll_inodes(fdinfo: str) -> set[int]:
    """The inodes an epoll descriptor watches, from the text of its fdinfo."""
    inodes = set()
    for line in fdinfo.splitlines():
        if not line.startswith("tfd:"):
            continue
        for field in line.split():
            if field.startswith("ino:"):
                try:
                    inodes.add(int(field[4:], 16))
                except ValueError:
                    pass
    return inodes


def accepting_fd(syscall: str) -> int | None:
    """The descriptor a thread is blocked in accept on, from the text of its syscall file."""
    fields = syscall.split()
    if len(fields) < 2 or not fields[0].isdigit() or int(fields[0]) not in ACCEPT_SYSCALLS:
        return None
    try:
        return int(fields[1], 16)
    except ValueError:
        return None


def socket_inode(link: str) -> int | None:
    """`socket:[12345]` -> 12345."""
    if link.startswith("socket:[") and link.endswith("]"):
        return int(link[8:-1])
    return None


def family(root: int, stats: dict[int, int]) -> list[int]:
    """`root` and its descendants, given every process's parent (`stats`: pid -> ppid)."""
    children: dict[int, list[int]] = {}
    for pid, ppid in stats.items():
        children.setdefault(ppid, []).append(pid)
    result, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            result.append(child)
            todo.append(child)
    return result


def parents() -> dict[int, int]:
    """pid -> ppid of every process we can see."""
    result = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                data = f.read()
            result[int(entry)] = int(data[data.rfind(b")") + 2:].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    return result


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def waits_on(pid: int, inodes: set[int]) -> bool:
    """Whether process `pid` waits on a socket with one of `inodes` (epoll or accept)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    socket_fds, epolls = set(), []
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link == "anon_inode:[eventpoll]":
            epolls.append(fd)
        elif socket_inode(link) in inodes:
            socket_fds.add(int(fd))
    if not socket_fds:
        return False  # it does not even hold the socket
    for fd in epolls:
        try:
            if epoll_inodes(_read(f"/proc/{pid}/fdinfo/{fd}")) & inodes:
                return True
        except OSError:
            continue
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return False
    for tid in threads:
        try:
            if accepting_fd(_read(f"/proc/{pid}/task/{tid}/syscall")) in socket_fds:
                return True
        except OSError:
            continue
    return False


def listening(root: int, inodes: set[int]) -> bool:
    """Whether `root` or one of its descendants waits on one of the sockets `inodes`."""
    if waits_on(root, inodes):
        return True  # the common case, without a pass over /proc
    return any(waits_on(pid, inodes) for pid in family(root, parents())[1:])
