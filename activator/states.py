"""The states of an instance and of a unit, the moves between them, and why processes end.

An instance (a `Slot`) changes state only through `Slot.enter`, which checks the move against
`TRANSITIONS`; the table lists the moves the code makes and no others, so an impossible one is
a bug caught where it happens rather than a wrong `status` later. A unit's own progress (waiting
for its dependencies, serving, waiting for traffic, being stopped for good) is one `Phase`,
changed through `Service.enter` against `PHASES` the same way.
"""

from __future__ import annotations

import enum


class State(enum.Enum):
    """An instance's state, as `status` shows it (SPEC §1, unit states)."""
    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    RELOADING = "reloading"
    STOPPING = "stopping"
    RESTARTING = "restarting"
    EXITED = "exited"
    FAILED = "failed"
    STOPPED = "stopped"  # stopped by command, until started again


S = State

TRANSITIONS: dict[State, frozenset[State]] = {
    # STOPPED (`activator stop`) is entered from STOPPING once the process is gone, or at once
    # from any state in which the slot has no process.
    # Forked (simple), exec'd, READY=1; or it ended; or a stop, a watchdog, STOPPING=1 came
    # first. WAITING: an on-demand unit, or one slot added by scaling while its unit waits.
    S.STARTING: frozenset({S.RUNNING, S.EXITED, S.RESTARTING, S.FAILED, S.STOPPING, S.WAITING,
                           S.STOPPED}),
    S.RUNNING: frozenset({S.RELOADING, S.STOPPING, S.RESTARTING, S.EXITED, S.FAILED}),
    S.RELOADING: frozenset({S.RUNNING, S.STOPPING, S.RESTARTING, S.EXITED, S.FAILED}),
    # STARTING: stopped to be started again at once. RUNNING: during a rolling restart, the
    # process being replaced was stopping when its replacement became ready.
    S.STOPPING: frozenset({S.EXITED, S.FAILED, S.RESTARTING, S.STARTING, S.RUNNING, S.STOPPED}),
    # FAILED: the start limit refused the restart; EXITED: stopped for good in the backoff;
    # RUNNING: a replacement became ready after the process it replaces had ended.
    S.RESTARTING: frozenset({S.STARTING, S.FAILED, S.EXITED, S.RUNNING, S.STOPPED}),
    S.WAITING: frozenset({S.STARTING, S.FAILED, S.EXITED, S.STOPPED}),
    # STARTING: an on-demand unit's next traffic, or a reload's restart; WAITING: on-demand,
    # after a clean exit; FAILED: the start limit refused a reload's restart; RUNNING: as
    # from RESTARTING.
    S.EXITED: frozenset({S.STARTING, S.WAITING, S.FAILED, S.RUNNING, S.STOPPED}),
    # STARTING: started again by a reload that changed it; EXITED: stopped at shutdown or
    # removal; WAITING: a reload made it on-demand; RUNNING: as from RESTARTING.
    S.FAILED: frozenset({S.STARTING, S.EXITED, S.WAITING, S.RUNNING, S.STOPPED}),
    # STARTING: `activator start` or a reload that changes it; EXITED: shutdown or removal.
    S.STOPPED: frozenset({S.STARTING, S.EXITED}),
}

ACTIVE = (S.RUNNING, S.RELOADING)
HEALTHY = (S.RUNNING, S.EXITED, S.WAITING, S.RELOADING)
AT_REST = (S.EXITED, S.FAILED, S.STOPPED)  # no process, none coming: a unit `start` may start


class Phase(enum.Enum):
    """Where a unit as a whole stands, beside its instances' states."""
    PENDING = "pending"  # waiting for its dependencies before its (first or next) start
    ACTIVE = "active"  # started: its instances run, or it serves its accept socket
    WAITING = "waiting"  # on-demand: its sockets watched, no process until traffic
    REBINDING = "rebinding"  # down so that a socket can be bound anew (reload), then started
    FAILED = "failed"  # given up as a whole: a required unit failed, or a bug of activator's
    STOPPED = "stopped"  # stopped by command (`activator stop`), until started again
    STOPPING = "stopping"  # being stopped for good (shutdown, removal)


P = Phase

PHASES: dict[Phase, frozenset[Phase]] = {
    P.PENDING: frozenset({P.ACTIVE, P.WAITING, P.FAILED, P.STOPPED, P.STOPPING}),
    P.ACTIVE: frozenset({P.WAITING, P.REBINDING, P.PENDING, P.FAILED, P.STOPPED, P.STOPPING}),
    P.WAITING: frozenset({P.ACTIVE, P.PENDING, P.FAILED, P.STOPPED, P.STOPPING}),
    P.REBINDING: frozenset({P.ACTIVE, P.FAILED, P.STOPPED, P.STOPPING}),
    P.FAILED: frozenset({P.PENDING, P.STOPPED, P.STOPPING}),  # PENDING: a reload or start tries again
    P.STOPPED: frozenset({P.PENDING, P.STOPPING}),  # PENDING: started again (command, reload)
    P.STOPPING: frozenset(),  # for good: a stopped unit is removed or activator exits
}


class StopReason(enum.Enum):
    """Why activator stops a process, which decides what comes after its exit."""
    STOP = "stop"  # for good: shutdown, removal, a failed dependency
    RESTART = "restart"  # to be started again at once (reload, rolling restart of one)
    RETIRE = "retire"  # replaced: its successor already runs


class Result(enum.Enum):
    """Why a process that ended on activator's initiative counts as a failure."""
    TIMEOUT = "did not become ready in time"
    WATCHDOG = "missed its watchdog"
    UNHEALTHY = "failed its health check"


class InvalidTransition(AssertionError):
    """A move the tables do not allow: a bug in activator, never a user's mistake."""


def check_move(table: dict, old, new, label: str) -> None:
    if new not in table[old]:
        raise InvalidTransition(f"unit {label}: no transition from {old.value} to {new.value}")
