"""Finding the running activator, and its services, from where `status` or `reload` runs.

The pids in `activator.pid` and `status.json` are the ones activator sees: in a container,
or under `unshare --pid`, activator is pid 1 of its own PID namespace. Run from that same
namespace (`docker exec`, `kubectl exec`), the commands use them as they are. Run from the
host, pid 1 is the host's init: these functions find activator's host pid instead, as the
process that holds the runtime directory's notify socket and is, in its own namespace, the
recorded pid; and they translate the services' pids the same way (/proc/PID/status NSpid).
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


def _is_activator(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"activator" in f.read()
    except OSError:
        return False


def activator_pid(runtime_dir: str, recorded: int) -> int | None:
    """The pid, as this process sees it, of the activator serving `runtime_dir`, which
    recorded itself as `recorded`; None when no such process is alive here."""
    inode = _socket_inode(os.path.join(runtime_dir, "notify"))
    if inode is not None:
        target = f"socket:[{inode}]"
        # Forked helpers of activator may hold the socket too for a moment: the one whose
        # own pid is the recorded one is activator.
        for pid in [recorded, *_all_pids()]:
            if _ns_pid(pid) == recorded and _holds(pid, target):
                return pid
    # No notify socket in this network namespace, or its holder's fds not readable (another
    # user's process): the recorded pid, if it is an activator here.
    return recorded if _is_activator(recorded) else None


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
