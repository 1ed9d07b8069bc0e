"""Finding the running activator, and its services, from where `status` or `reload` runs.

The pids in `activator.pid` and `status.json` are the ones activator sees: in a container,
or under `unshare --pid`, activator is pid 1 of its own PID namespace. Run from that same
namespace (`docker exec`, `kubectl exec`), the commands use them as they are. Run from the
host, pid 1 is the host's init: these functions find activator's host pid instead, as the
process that holds the runtime directory's notify socket and is, in its own namespace, the
recorded pid; and they translate the services' pids the same way (/proc/PID/status NSpid).

`reload` signals the process found, so it must be activator, and that runtime directory's:
a pid alone may have been reused by anything (`tail -f activator.log` once received SIGHUP
because its command line held the word). A process counts as proved when, with the
recorded pid in its own namespace, it also holds the directory's notify socket (the socket
is visible in this network namespace), or it started at the very clock tick that activator
recorded in status.json (`process_start`): a pid is never reused within the tick its first
owner started in. Nothing else, and no command-line word, is taken as proof.
"""

from __future__ import annotations

import os


def _ns_pid(pid: int) -> int | None:
    """`pid`'s number in its own innermost PID namespace (the last NSpid field)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _all_pids() -> list[int]:
    return [int(name) for name in os.listdir("/proc") if name.isdigit()]


def _socket_inode(path: str) -> str | None:
    """The inode of the unix socket bound at `path`, from this network namespace's table."""
    try:
        with open("/proc/net/unix", "rb") as f:
            next(f)
            for line in f:
                fields = line.rstrip(b"\n").split(None, 7)  # a path may hold blanks
                if len(fields) == 8 and os.fsdecode(fields[7]) == path:
                    return fields[6].decode()
    except (OSError, StopIteration):
        pass
    return None


def _holds(pid: int, target: str) -> bool:
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                return True
        except OSError:
            continue
    return False


def start_ticks(pid) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def activator_pid(runtime_dir: str, recorded: int, started: int | None = None) -> int | None:
    """The pid, as this process sees it, of the activator serving `runtime_dir`, which
    recorded itself as `recorded`, started at clock tick `started`; None unless proved."""
    inode = _socket_inode(os.path.join(runtime_dir, "notify"))
    if inode is not None:
        target = f"socket:[{inode}]"
        # Forked helpers of activator may hold the socket too for a moment: the one whose
        # own pid is the recorded one is activator.
        for pid in [recorded, *_all_pids()]:
            if _ns_pid(pid) == recorded and _holds(pid, target):
                return pid
    # No notify socket in this network namespace, or its holder's fds not readable (another
    # user's process): the process with the recorded pid that started when activator did.
    if started is None:
        return None
    for pid in [recorded, *_all_pids()]:
        if start_ticks(pid) == started and _ns_pid(pid) == recorded:
            return pid
    return None


def pid_translator(activator: int, recorded: int):
    """A function from the pids activator reports to the pids seen here."""
    if activator == recorded:
        return lambda pid: pid
    namespace = _pid_namespace(activator)
    seen_here = {}
    for pid in _all_pids():
        if _pid_namespace(pid) == namespace:
            inner = _ns_pid(pid)
            if inner is not None:
                seen_here[inner] = pid
    return seen_here.get
