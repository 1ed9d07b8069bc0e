"""What activator knows about each unit while it runs: services, instance slots, processes.

A `Service` is the running side of a Unit. It has one `Slot` per instance (1..instances), and
each slot has at most one current `Process`, plus, during a rolling restart, the replacement
being started (`candidate`) and the processes being stopped (`retiring`). An `accept` unit
has no slots: one `Process` per connection.

States change only through `Slot.enter` and `Service.enter`, checked against the tables of
states.py. The decisions (how a process's end is read, restart or not, how long to back off,
the overall state of several instances) are plain functions at the bottom: they take facts
and return a verdict, and the manager carries it out.
"""

from __future__ import annotations

import enum
import os
import signal
import time

from activator.record import Record
from activator.model import Unit
from activator.states import (HEALTHY, PHASES, TRANSITIONS, P, Phase, Result, S, State, StopReason,
                              check_move)

FDSTORE_MAX = 64  # descriptors one unit may keep in the store


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
        self.reloading = False  # it said RELOADING=1 and not READY=1 since
        self.stopping = False  # it said STOPPING=1
        self.stop_reason: StopReason | None = None  # why we are stopping it, when we are
        self.result: Result | None = None  # when activator ended it for a failure
        self.exited = False  # its main process has ended
        self.status: int | None = None  # exit code, 128+N for signal N
        self.draining = False  # main process gone, the rest of its group being stopped
        self.pipes: list = []
        self.timers: dict[str, object] = {}
        self.watchdog_usec = 0
        self.reload_signalled = 0  # the reload_signal it was sent last, if any
        self.pidfd = -1
        self.notify_status: str | None = None
        self.notify_errno: int | None = None
        self.ready_fd = -1  # `ready: {fd: N}`: the reading end of its readiness pipe

    @property
    def where(self) -> dict:
        # pid 0: the spawn itself failed, no process ever existed
        return {"unit": self.unit.name, "instance": self.number, "pid": self.main_pid or None,
                "label": self.label}

    @property
    def current(self) -> bool:
        """Whether it is its slot's process (not a replacement, not a retiring one)."""
        return self.slot is not None and self.slot.proc is self

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
        self.starts: list[float] = []  # a handful at most (start_limit_burst): a list is smaller
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
        check_move(TRANSITIONS, self.state, state, self.label)
        self.state = state
        self.service.changed()

    def within_start_limit(self, now: float) -> bool:
        """Whether one more start now stays within start_limit_burst starts per
        start_limit_interval_sec; if so, it is counted."""
        interval = self.unit.start_limit_interval_sec
        if interval <= 0:
            return True  # no limit, no list: start times are kept only while they can matter
        while self.starts and self.starts[0] <= now - interval:
            del self.starts[0]
        if len(self.starts) >= self.unit.start_limit_burst:
            return False
        self.starts.append(now)
        return True

    def processes(self):
        for proc in (self.proc, self.candidate, *self.retiring):
            if proc is not None:
                yield proc

    def cancel_restart(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def reset(self, unit: Unit) -> None:
        """Run `unit` from now on, with a fresh start limit and backoff."""
        self.unit = unit
        self.starts.clear()
        self.failures = 0
        self.cancel_restart()

    def adopt(self, proc: Process) -> None:
        """`proc` is the slot's process from now on."""
        self.proc = proc
        self.started_wall = proc.started_wall
        self.notify_status = proc.notify_status
        self.notify_errno = proc.notify_errno

    def promote(self) -> Process | None:
        """The replacement is ready: it becomes the slot's process; the one it replaces is
        returned, to be stopped."""
        old, proc = self.proc, self.candidate
        self.candidate = None
        self.adopt(proc)
        self.unit = proc.unit
        self.restarts += 1
        self.failures = 0
        self.cancel_restart()  # the old process may have crashed while its successor started
        if self.state is not S.RUNNING:
            self.enter(S.RUNNING)
        if old is not None and (not old.exited or old.draining):
            self.retiring.append(old)
        self.service.changed()
        return old


class FdStore:
    """Descriptors a unit kept with FDSTORE=1, handed to its next start (SPEC §4)."""

    def __init__(self):
        self.entries: list[tuple[str, int, tuple]] = []  # (name, fd, (st_dev, st_ino))

    def add(self, name: str, fds: list[int], room: int = FDSTORE_MAX) -> tuple[list[int], bool]:
        """Keep what is new of `fds` under `name`, at most FDSTORE_MAX in this store and `room`
        more in all: (the fds kept, whether the store is full)."""
        kept = []
        for fd in fds:
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if any(k == key for _, _, k in self.entries):
                continue  # the same open file once is enough
            if len(self.entries) >= FDSTORE_MAX or len(kept) >= room:
                return kept, True
            self.entries.append((name, fd, key))
            kept.append(fd)
        return kept, False

    def remove(self, name: str) -> None:
        keep = []
        for entry in self.entries:
            if entry[0] == name:
                os.close(entry[1])
            else:
                keep.append(entry)
        self.entries = keep

    def named_fds(self) -> list[tuple[str, int]]:
        return [(name, fd) for name, fd, _ in self.entries]

    def close(self) -> None:
        for _, fd, _ in self.entries:
            try:
                os.close(fd)
            except OSError:
                pass
        self.entries = []


class Service:
    def __init__(self, unit: Unit, on_change):
        self.unit = unit
        self.on_change = on_change
        self.phase = P.PENDING
        self.failure: str | None = None  # why the whole unit failed (a dependency, a bug)
        self.slots: list[Slot] = []
        self.leaving: list[Slot] = []  # slots beyond a lowered `instances`, being stopped
        self.connections: dict[int, Process] = {}  # accept units: pid -> process
        self.connection_count = 0  # connections accepted, the number of the next one's process
        self.connections_served = 0  # accept units: connection processes that ended
        self.connections_failed = 0  # of those, the ones that failed
        self.last_connection_failure: int | None = None  # its exit status
        self.scaled: int | None = None  # `activator scale`: instances now, until the files change
        self.fdstore = FdStore()
        if not unit.accepts:
            self.slots = [Slot(self, n) for n in range(1, unit.instances + 1)]

    @property
    def name(self) -> str:
        return self.unit.name

    def label(self, number: int) -> str:
        several = self.unit.instances > 1 or (self.scaled or 0) > 1 or self.unit.accepts
        return f"{self.name}.{number}" if several else self.name

    def changed(self) -> None:
        self.on_change()

    def enter(self, phase: Phase) -> None:
        if phase is self.phase:
            return
        check_move(PHASES, self.phase, phase, self.name)
        self.phase = phase
        self.changed()

    def fail(self, why: str) -> None:
        """The unit as a whole gives up (it stays so until a reload or a start)."""
        self.failure = why
        if self.phase is not P.STOPPING:
            self.enter(P.FAILED)
        self.changed()

    def processes(self):
        for slot in (*self.slots, *self.leaving):
            yield from slot.processes()
        yield from self.connections.values()

    def has_processes(self) -> bool:
        return any(True for _ in self.processes())

    @property
    def down(self) -> bool:
        """Stopped for good, and every process gone."""
        return self.phase is P.STOPPING and not self.has_processes()

    @property
    def state(self) -> State:
        if self.failure:
            return S.FAILED
        if self.phase is P.PENDING:
            return S.STARTING
        if self.phase is P.STOPPED and not self.has_processes():
            return S.STOPPED
        if self.unit.accepts:  # serving from its socket: running, or waiting when on-demand
            if self.phase is P.STOPPING and not self.connections:
                return S.EXITED
            return S.WAITING if self.unit.start == "on-demand" else S.RUNNING
        if self.phase is P.WAITING:
            return S.WAITING
        return overall_state([slot.state for slot in self.slots])

    @property
    def started(self) -> bool:
        """Whether units that depend on this one may start."""
        return self.phase is not P.PENDING and self.state in HEALTHY


# --------------------------------------------------------------------------- decisions

CLEAN_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM, signal.SIGPIPE)


def exit_status(wait_status: int) -> int:
    """The shell's convention: the exit code, or 128+N for a death by signal N."""
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def is_clean(status: int, result: Result | None) -> bool:
    """systemd's notion: exit 0, or death by SIGHUP, SIGINT, SIGTERM or SIGPIPE."""
    if result is not None:
        return False
    return status == 0 or status - 128 in CLEAN_SIGNALS


def should_restart(policy: str, status: int, result: Result | None) -> bool:
    if policy == "always":
        return True
    if policy == "on-failure":
        return not is_clean(status, result)
    if policy == "on-abnormal":
        killed = status > 128 and status - 128 not in CLEAN_SIGNALS
        return killed or result is not None
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
    for state in (S.FAILED, S.STARTING, S.STOPPING, S.RESTARTING, S.RELOADING, S.RUNNING, S.WAITING,
                  S.STOPPED):
        if state in states:
            return state
    return S.EXITED


class End(enum.Enum):
    """What the end of a process of a slot means, before its exit status is read."""
    RETIRED = "retired"  # a replaced process of a rolling restart
    REPLACEMENT_FAILED = "replacement failed"  # a replacement that ended before it was ready
    LEFT = "left"  # an instance beyond a lowered `instances`
    START_AGAIN = "start again"  # stopped to be started again at once
    STOPPED = "stopped"  # stopped by activator, for good
    ON_ITS_OWN = "on its own"  # ended by itself (or by a timeout, a watchdog): policy decides


def how_it_ended(slot: Slot, proc: Process, for_good: bool) -> End:
    """`for_good`: activator is shutting down or the unit is being stopped for good."""
    if proc in slot.retiring:
        return End.RETIRED
    if proc is slot.candidate:
        return End.REPLACEMENT_FAILED
    if slot in slot.service.leaving:
        return End.LEFT
    if proc.stop_reason is StopReason.RESTART and not for_good:
        return End.START_AGAIN
    if proc.stop_reason is not None or for_good:
        return End.STOPPED
    return End.ON_ITS_OWN


class Outcome(enum.Enum):
    FINISHED = "finished"  # a oneshot that did its job
    RESTART = "restart"  # start again after `delay`
    EXITED = "exited"  # a clean end, not restarted
    FAILED = "failed"  # given up


class Verdict(Record):
    outcome: Outcome
    failures: int = 0  # consecutive failures from now on, for the backoff
    delay: float = 0.0


def after_exit(unit: Unit, failures: int, ran: float, status: int, result: Result | None) -> Verdict:
    """What follows a process that ended on its own (or by a timeout or a watchdog) after
    running `ran` seconds, its slot having failed `failures` times in a row before."""
    if unit.type == "oneshot" and status == 0 and result is None:
        return Verdict(Outcome.FINISHED)
    if should_restart(unit.restart, status, result):
        # Up long enough: this failure starts a new series, and the backoff is short again.
        failures = 1 if ran >= unit.restart_max_sec else failures + 1
        return Verdict(Outcome.RESTART, failures, backoff(unit, failures))
    if is_clean(status, result) and unit.type != "oneshot":
        return Verdict(Outcome.EXITED, failures)
    return Verdict(Outcome.FAILED, failures)
