"""The one reaper, and the table that says whose each pid is.

Exactly one place in activator waits for children: `ProcessTable.reap`, `waitpid(-1, WNOHANG)`
until nothing is left. Each pid is resolved to its process before its status is read; a pid we
do not know is an orphan that was reparented to us, reaped quietly. `reap` returns what ended
and decides nothing: the manager reads the `(process, status)` pairs.

A process's main pid may end before the rest of its process group: it is then `draining`
until the group is empty (`drained`). The table also answers who sent an sd_notify message
(`sender`): the process itself, its session or group as recorded when it was spawned, or an
ancestor — known at receive time even when a short-lived sender has already exited.

Below the table, the namespace-wide helpers: descendants (subreaper mode), the final SIGKILL
of everything, and becoming a child subreaper when not PID 1.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time

from activator.service import Process, exit_status

SHUTDOWN_REAP_SECONDS = 5.0


class ProcessTable:
    def __init__(self):
        self.pids: dict[int, Process] = {}  # main pids and spawned pids of live processes
        self.sessions: dict[int, Process] = {}  # session id (the spawned pid) -> process
        self.draining: set[Process] = set()

    def add(self, proc: Process) -> None:
        self.pids[proc.pid] = proc
        self.sessions[proc.pid] = proc

    def move_main(self, proc: Process, pid: int) -> None:
        self.pids[pid] = proc
        proc.main_pid = pid

    def forget(self, proc: Process) -> None:
        """Its main process ended: its pids are no longer its."""
        for pid in (proc.pid, proc.main_pid):
            if self.pids.get(pid) is proc:
                del self.pids[pid]

    def drain(self, proc: Process) -> None:
        proc.draining = True
        self.draining.add(proc)

    def done(self, proc: Process) -> None:
        """The process and its whole group are gone."""
        proc.draining = False
        self.draining.discard(proc)
        self.sessions.pop(proc.pgid, None)

    def reap(self) -> tuple[list[tuple[Process, int]], list[tuple[int, int]]]:
        """Reap every child that ended: (main processes with their status, orphans)."""
        ended, orphans = [], []
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            proc = self.pids.get(pid)  # who it was, before anything else
            if proc is None:
                orphans.append((pid, exit_status(wait_status)))
            elif pid != proc.main_pid:
                del self.pids[pid]  # the first pid of a service that named another MAINPID
            else:
                ended.append((proc, exit_status(wait_status)))
        return ended, orphans

    def drained(self) -> list[Process]:
        """The draining processes whose group is now empty."""
        gone = [proc for proc in self.draining if not group_alive(proc.pgid)]
        self.draining.difference_update(gone)
        return gone

    def sender(self, pid: int) -> Process | None:
        """The process of a unit that `pid` belongs to: itself, its session, or an ancestor."""
        proc = self.pids.get(pid)
        if proc is not None:
            return proc
        for _ in range(64):
            fields = stat(pid)
            if fields is None:
                return None
            ppid, pgid, sid = fields
            for key in (sid, pgid):
                proc = self.sessions.get(key)
                if proc is not None and not (proc.exited and not proc.draining):
                    return proc
            if ppid <= 1:
                return None
            pid = ppid
            proc = self.pids.get(pid)
            if proc is not None:
                return proc
        return None


# ---------------------------------------------------------------------- the namespace

def stat(pid: int) -> tuple[int, int, int] | None:
    """(ppid, pgid, session) of a process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    try:
        return int(fields[1]), int(fields[2]), int(fields[3])
    except (IndexError, ValueError):
        return None


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def descendants() -> list[int]:
    """Every process below us (subreaper mode, where kill(-1) would reach the whole machine)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = stat(int(entry))
            if fields is not None:
                children.setdefault(fields[0], []).append(int(entry))
    result, todo = [], [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            result.append(child)
            todo.append(child)
    return result


def strays(unit: str, known) -> list[int]:
    """Our children that are no process we know but came from `unit`: daemons that left its
    process group and session (double fork, setsid) and were reparented to us. They are known
    by the ACTIVATOR_UNIT their environment inherited; read only when the unit stops."""
    me, mark = os.getpid(), f"\0ACTIVATOR_UNIT={unit}\0".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in known:
            continue
        fields = stat(int(entry))
        if fields is None or fields[0] != me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = b"\0" + f.read()
        except OSError:
            continue
        if mark in environ:
            found.append(int(entry))
    return found


def kill_everything(is_pid1: bool, wakeup_fd: int) -> bool:
    """SIGKILL every process left (daemonized orphans included), then reap them all; False if
    some could not be reaped in time. `wakeup_fd` is the signal wakeup pipe: SIGCHLD wakes us
    instead of a fixed sleep."""
    deadline = time.monotonic() + SHUTDOWN_REAP_SECONDS
    while True:
        if is_pid1:
            with contextlib.suppress(ProcessLookupError):
                os.kill(-1, signal.SIGKILL)
        else:
            for pid in descendants():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
            while pid:
                pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            if is_pid1 or not descendants():
                return True
        if time.monotonic() > deadline:
            return False
        if wakeup_fd >= 0:
            select.select([wakeup_fd], [], [], 0.1)
            with contextlib.suppress(OSError):
                os.read(wakeup_fd, 65536)
        else:
            time.sleep(0.01)


def become_subreaper() -> str | None:
    """Orphans of the services come to us instead of the machine's PID 1; None, or why not."""
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as e:
        return str(e)
    return None
