"""Signals and deadlines for one process: stop with escalation, start timeout, watchdog.

Stopping is one path whatever asks for it (a stop, a restart, a failed dependency, a start
timeout, a missed watchdog, what is left of a group whose main process ended): the unit's
kill_signal goes to the whole process group (with SIGCONT, so that a stopped process sees
it), and the one stop timer is armed; when it fires, SIGKILL follows, and a recheck timer keeps
looking until the group is gone, in case a member of it is not our child (no SIGCHLD would
tell). Each process has at most one timer of each kind, named in `Process.timers`.

This module signals and arms timers; it decides nothing about units. What the end of a
process means is read when the reaper reports it (supervisor.py).
"""

from __future__ import annotations

import contextlib
import os
import signal

from activator import reaper
from activator.log import Log
from activator.service import Process
from activator.states import Result, S, StopReason

KILL_RECHECK_SECONDS = 0.5


class ProcessControl:
    def __init__(self, loop, log: Log, reap, counters):
        self.loop = loop
        self.log = log
        self.counters = counters
        self.reap = reap  # the one reaper, run again when a SIGKILLed group is rechecked

    def close_pidfd(self, proc: Process) -> None:
        """The pidfd of a MAINPID that is not our child (notified.py), once it is done with."""
        if proc.pidfd >= 0:
            self.loop.remove_reader(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = -1

    def signal_group(self, proc: Process, signum: int) -> None:
        try:
            os.killpg(proc.pgid, signum)
            if signum not in (signal.SIGKILL, signal.SIGCONT):
                os.killpg(proc.pgid, signal.SIGCONT)  # a stopped process must see it too
        except ProcessLookupError:
            pass
        except PermissionError:  # pragma: no cover - the group left our reach
            self.log.warning(f"cannot signal process group {proc.pgid}", **proc.where)
        if proc.main_pid != proc.pgid and not proc.exited:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(proc.main_pid, signum)

    def stop(self, proc: Process, reason: StopReason | None) -> None:
        """kill_signal to its process group now, SIGKILL after timeout_stop_sec."""
        if reason is not None:
            proc.stop_reason = reason
        if "stop" in proc.timers:
            return  # already on its way down
        if proc.current and proc.slot.state not in (S.STOPPING, S.FAILED):
            proc.slot.enter(S.STOPPING)
        proc.cancel_timers("start", "watchdog")
        self.signal_group(proc, proc.unit.kill_signal)
        self.arm_stop(proc)

    def stop_rest_of_group(self, proc: Process) -> None:
        """Its main process ended, the rest of its group did not: stopped like a stop."""
        if "stop" not in proc.timers:
            self.signal_group(proc, proc.unit.kill_signal)
            self.arm_stop(proc)

    def arm_stop(self, proc: Process) -> None:
        """The one stop timer: SIGKILL once timeout_stop_sec has passed (the first one armed
        stands: a later reason to stop never delays the SIGKILL)."""
        if "stop" not in proc.timers:
            proc.timers["stop"] = self.loop.call_later(proc.unit.timeout_stop_sec,
                                                       lambda: self.stop_timeout(proc))

    def stop_timeout(self, proc: Process) -> None:
        self.log.warning(f"still running {proc.unit.timeout_stop_sec:g}s after "
                         f"{signal.Signals(proc.unit.kill_signal).name}: sending SIGKILL", **proc.where)
        self.signal_group(proc, signal.SIGKILL)
        # The kernel needs a moment; reaping (SIGCHLD) finishes it.
        proc.timers["kill"] = self.loop.call_later(KILL_RECHECK_SECONDS, lambda: self.recheck(proc))

    def recheck(self, proc: Process) -> None:
        self.reap()
        if not proc.exited or proc.draining:
            proc.timers["kill"] = self.loop.call_later(KILL_RECHECK_SECONDS, lambda: self.recheck(proc))

    def stop_strays(self, unit, known) -> None:
        """Once a unit stopped for good has no process left, its daemons that left its process
        group (reaper.strays): its kill_signal now, SIGKILL after timeout_stop_sec if they
        are still there (they are our children: reaped as orphans)."""
        pids = reaper.strays(unit.name, known)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, unit.kill_signal)
                os.kill(pid, signal.SIGCONT)
        self.log.info(f"stopping {len(pids)} process(es) that left its process group: "
                      f"{', '.join(map(str, pids))}", unit=unit.name)

        def kill_left():
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self.loop.call_later(unit.timeout_stop_sec, kill_left)

    # ------------------------------------------------------------------ start timeout

    def arm_start_timeout(self, proc: Process) -> None:
        proc.timers["start"] = self.loop.call_later(proc.unit.timeout_start_sec,
                                                    lambda: self.start_timeout(proc))

    def extend_start_timeout(self, proc: Process, seconds: float) -> None:
        """EXTEND_TIMEOUT_USEC: the start may take `seconds` from now, if that is later."""
        timer = proc.timers.get("start")
        if timer is not None and self.loop.now() + seconds > timer.deadline:
            timer.cancel()
            proc.timers["start"] = self.loop.call_later(seconds, lambda: self.start_timeout(proc))

    def start_timeout(self, proc: Process) -> None:
        what = f"not ready ({proc.unit.ready.describe()})" if proc.unit.ready else "no READY=1"
        self.log.warning(f"{what} within {proc.unit.timeout_start_sec:g}s: stopping it", **proc.where)
        proc.result = Result.TIMEOUT
        self.stop(proc, None)

    # ------------------------------------------------------------------ health (SPEC §10)

    def unhealthy(self, proc: Process, output: str) -> None:
        """`retries` health checks failed in a row: stopped, and the end counts as a failure
        (as a missed watchdog does), so the restart policy restarts it."""
        self.log.warning(f"unhealthy ({proc.unit.health.describe()}): {output}; stopping it",
                         **proc.where)
        proc.result = Result.UNHEALTHY
        self.stop(proc, None)

    # ------------------------------------------------------------------ watchdog

    def arm_watchdog(self, proc: Process) -> None:
        proc.cancel_timers("watchdog")
        if proc.watchdog_usec > 0 and not proc.exited and proc.stop_reason is None and not proc.stopping:
            proc.timers["watchdog"] = self.loop.call_later(proc.watchdog_usec / 1e6,
                                                           lambda: self.watchdog_expired(proc))

    def watchdog_expired(self, proc: Process, triggered: bool = False) -> None:
        self.log.warning("WATCHDOG=trigger: aborting it" if triggered else
                         f"no WATCHDOG=1 for {proc.watchdog_usec / 1e6:g}s: aborting it", **proc.where)
        proc.result = Result.WATCHDOG
        self.counters.watchdog_timeout(proc.unit.name)
        proc.cancel_timers("watchdog", "start")
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.main_pid, signal.SIGABRT)
        if proc.current and proc.slot.state is not S.STOPPING:
            proc.slot.enter(S.STOPPING)
        self.arm_stop(proc)
