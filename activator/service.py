"""What activator knows about each unit while it runs: services, instance slots, processes.

A `Service` is the running side of a Unit. It has one `Slot` per instance (1..instances), and
each slot has at most one current `Process`, plus, during a rolling restart, the replacement
being started (`candidate`) and the processes being stopped (`retiring`). An `accept` unit
has no slots: one `Process` per connection.

The instance state machine lives on the slot and changes only through `Slot.enter`, which
checks that the move is one the table below allows, so an impossible transition is a bug
caught where it happens rather than a wrong `status` later:

    starting   -> running, exited, restarting, failed, stopping, waiting
    running    -> reloading, stopping, restarting, exited, failed
    reloading  -> running, stopping, restarting, exited, failed
    stopping   -> exited, failed, restarting, starting, running
    restarting -> starting, running, failed, exited
    waiting    -> starting, running, failed, exited
    exited     -> starting, running, waiting, restarting, failed
    failed     -> starting, running, exited, waiting

The decisions (restart or not, how long to back off, the overall state of several instances)
are plain functions at the bottom, kept apart from the effects in `manager.py`.
"""

from __future__ import annotations

import collections
import enum
import os
import signal
import time

from activator.model import Unit


class State(enum.Enum):
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    EXITED = "exited"
    FAILED = "failed"


S = State
_ALLOWED = {
    S.STARTING: {S.RUNNING, S.EXITED, S.RESTARTING, S.FAILED, S.STOPPING, S.WAITING},
    S.RUNNING: {S.RELOADING, S.STOPPING, S.RESTARTING, S.EXITED, S.FAILED},
    S.RELOADING: {S.RUNNING, S.STOPPING, S.RESTARTING, S.EXITED, S.FAILED},
    S.STOPPING: {S.EXITED, S.FAILED, S.RESTARTING, S.STARTING, S.RUNNING},
    S.RESTARTING: {S.STARTING, S.RUNNING, S.FAILED, S.EXITED},
    S.WAITING: {S.STARTING, S.RUNNING, S.FAILED, S.EXITED},
    S.EXITED: {S.STARTING, S.RUNNING, S.WAITING, S.RESTARTING, S.FAILED},
    S.FAILED: {S.STARTING, S.RUNNING, S.EXITED, S.WAITING},
}
ACTIVE = (S.RUNNING, S.RELOADING)
HEALTHY = (S.RUNNING, S.EXITED, S.WAITING, S.RELOADING)


class Process:
    """One process we started; `pid` is the one we spawned, `main_pid` the one MAINPID= named."""

    def __init__(self, pid: int, unit: Unit, slot: "Slot | None", number: int, label: str):
        self.pid = pid
        self.main_pid = pid
        self.pgid = pid  # it started its own session
        self.unit = unit
        self.slot = slot
        self.number = number  # instance number, or connection number for accept units
        self.label = label
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.ready = False
        self.reloading = False
        self.stopping = False  # it said STOPPING=1
        self.stop_reason: str | None = None  # why we are stopping it, when we are
        self.result: str | None = None  # "timeout" or "watchdog" when that ended it
        self.exited = False
        self.status: int | None = None  # exit code, 128+N for signal N
        self.draining = False  # main process gone, the rest of its group being stopped
        self.pipes: list = []
        self.timers: dict[str, object] = {}
        self.watchdog_usec = 0
        self.pidfd = -1
        self.notify_status: str | None = None
        self.notify_errno: int | None = None

    @property
    def where(self) -> dict:
        # pid 0: the spawn itself failed, no process ever existed
        return {"unit": self.unit.name, "instance": self.number, "pid": self.main_pid or None,
                "label": self.label}

    def cancel_timers(self, *names: str) -> None:
        for name in names or list(self.timers):
            timer = self.timers.pop(name, None)
            if timer is not None:
                timer.cancel()


class Slot:
    """Instance number `number` of a service, across the processes that fill it over time."""

    def __init__(self, service: "Service", number: int):
        self.service = service
        self.number = number
        self.unit = service.unit  # the definition this slot runs (a rolling restart moves it)
        self.state = S.STARTING
        self.proc: Process | None = None
        self.candidate: Process | None = None
        self.retiring: list[Process] = []
        self.restarts = 0
        self.failures = 0  # consecutive, for the backoff
        self.starts: collections.deque = collections.deque()
        self.exit_status: int | None = None
        self.timer = None  # the restart backoff
        self.started_wall: float | None = None
        self.notify_status: str | None = None
        self.notify_errno: int | None = None
        self.failure: str | None = None

    @property
    def label(self) -> str:
        return self.service.label(self.number)

    def enter(self, state: State) -> None:
        if state is self.state:
            return
        if state not in _ALLOWED[self.state]:
            raise AssertionError(f"unit {self.label}: no transition from {self.state.value} to {state.value}")
        self.state = state
        self.service.changed()

    def processes(self):
        for proc in (self.proc, self.candidate, *self.retiring):
            if proc is not None:
                yield proc


class Service:
    def __init__(self, unit: Unit, on_change):
        self.unit = unit
        self.on_change = on_change
        self.slots: list[Slot] = []
        self.connections: dict[int, Process] = {}  # accept units: pid -> process
        self.connection_count = 0
        self.pending = True  # waiting for its dependencies before its first start
        self.failed: str | None = None  # why the whole unit failed (dependency, a bug)
        self.waiting = False  # on-demand: sockets watched, no process
        self.removing = False
        self.stopping = False  # being stopped for good (shutdown, removal)
        self.fdstore: list[tuple[str, int, tuple]] = []  # (name, fd, (st_dev, st_ino))
        self.leaving: list[Slot] = []  # slots beyond a lowered `instances`, being stopped
        self.rebind_pending = False  # down so that a socket can be bound anew (reload)

    @property
    def name(self) -> str:
        return self.unit.name

    def label(self, number: int) -> str:
        return f"{self.name}.{number}" if self.unit.instances > 1 or self.unit.accepts else self.name

    def changed(self) -> None:
        self.on_change()

    def processes(self):
        for slot in (*self.slots, *self.leaving):
            yield from slot.processes()
        yield from self.connections.values()

    @property
    def state(self) -> State:
        if self.failed:
            return S.FAILED
        if self.pending:
            return S.STARTING
        if self.unit.accepts:  # serving from its socket: running, or waiting when on-demand
            if self.stopping and not self.connections:
                return S.EXITED
            return S.WAITING if self.unit.start == "on-demand" else S.RUNNING
        if self.waiting:
            return S.WAITING
        return overall_state([slot.state for slot in self.slots])

    @property
    def started(self) -> bool:
        """Whether units that depend on this one may start."""
        return not self.pending and self.state in HEALTHY

    def close_fdstore(self) -> None:
        for _, fd, _ in self.fdstore:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fdstore = []


# --------------------------------------------------------------------------- decisions

CLEAN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


def exit_status(wait_status: int) -> int:
    """The shell's convention: the exit code, or 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def is_clean(status: int, result: str | None) -> bool:
    """systemd's notion: exit 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE."""
    if result in ("timeout", "watchdog"):
        return False
    return status == 0 or status - 128 in CLEAN_SIGNALS


def should_restart(policy: str, status: int, result: str | None) -> bool:
    if policy == "always":
        return True
    if policy == "on-failure":
        return not is_clean(status, result)
    if policy == "on-abnormal":
        killed = status > 128 and status - 128 not in CLEAN_SIGNALS
        return killed or result in ("timeout", "watchdog")
    return False


def backoff(unit: Unit, failures: int) -> float:
    """restart_sec, doubling with each consecutive failure, capped at restart_max_sec (a
    restart_sec above that cap is used as it is, every time)."""
    if failures <= 1:
        return unit.restart_sec
    cap = max(unit.restart_max_sec, unit.restart_sec)
    return min(unit.restart_sec * 2 ** min(failures - 1, 64), cap)


def overall_state(states: list[State]) -> State:
    """One state for several instances: the most pressing one wins, running over exited."""
    if not states:
        return S.EXITED
    for state in (S.FAILED, S.STARTING, S.STOPPING, S.RESTARTING, S.RELOADING, S.RUNNING, S.WAITING):
        if state in states:
            return state
    return S.EXITED
