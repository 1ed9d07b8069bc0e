"""The life of every unit's processes: start, readiness, exit, restart, stop.

The supervisor owns the running services, the process table and the sockets, and acts on
three kinds of event, each through one door:

- a process ended (`on_exit`, fed by the reaper's `(process, status)` pairs): `how_it_ended`
  and `after_exit` (service.py) say what that means, and `finish` carries it out;
- a deadline passed (a restart backoff, a start or stop timeout, a watchdog): timer callbacks,
  kept apart from the exit path;
- a request: start what may start (`schedule`), stop a unit for good, shut down.
- a probe's verdict (probewatch.py, SPEC §10): `became_ready` once `ready:` passes; an
  instance whose `health:` fails is stopped by `ProcessControl.unhealthy`. Probe commands'
  exits come back from the one reaper among the pids no process of ours holds.

Stopping is one path whatever asks for it: `ProcessControl.stop` (process_control.py), which
also keeps the start timeout and the watchdog.
sd_notify's effects are read in readiness.py and applied by notified.py, which calls down into
this module, never the reverse. What a reload or rolling restart must hear about reaches it
through the one `Listener` interface.
"""

from __future__ import annotations

import contextlib
import time

from activator import dependencies, reaper
from activator.dependencies import Start
from activator.connections import ConnectionLog
from activator.counters import Counters
from activator.launcher import Launcher
from activator.log import Log, traceback_text
from activator.model import Model, Unit
from activator.process_control import ProcessControl
from activator.service import (End, Outcome, Process, Service, Slot, after_exit, how_it_ended)
from activator.sockets import BindError, SocketTable
from activator.sockets_watch import SocketWatch
from activator.spawn import SpawnError
from activator.states import P, Result, S, StopReason


class Listener:
    """What a reload or rolling restart in progress hears of; by default, nothing."""

    def candidate_ready(self, slot: Slot, proc: Process) -> None:
        pass

    def candidate_failed(self, slot: Slot) -> None:
        pass

    def service_down(self, service: Service) -> None:
        pass


@contextlib.contextmanager
def guarded(log: Log, control: ProcessControl, service: Service | None):
    """A bug while handling one unit fails that unit; the rest go on."""
    try:
        yield
    except Exception:
        log.error("internal error:\n" + traceback_text(),
                  unit=service.name if service else None)
        if service is not None and not service.failure:
            service.fail("internal error in activator (see the log)")
            for proc in list(service.processes()):
                if not proc.exited:
                    control.stop(proc, StopReason.STOP)


def where(slot: Slot) -> dict:
    return {"unit": slot.service.name, "instance": slot.number, "pid": None, "label": slot.label}


class Supervisor:
    def __init__(self, model: Model, loop, log: Log, sockets: SocketTable, launcher: Launcher,
                 on_change, counters: Counters, on_quiet_change):
        self.model = model
        self.generation = 1
        self.loop = loop
        self.log = log
        self.sockets = sockets
        self.launcher = launcher
        self.on_change = on_change
        self.on_quiet_change = on_quiet_change  # for status.json only: written within a second
        self.counters = counters
        self.table = reaper.ProcessTable()
        self.control = ProcessControl(loop, log, self.reap, counters)
        self.sockets_watch = SocketWatch(loop, sockets, log)
        self.connection_log = ConnectionLog(log)
        self.probing = None  # probewatch.Probes, made for the first unit with `ready` or `health`
        self.services: dict[str, Service] = {}
        self.listener = Listener()
        self.shutting_down = False
        self.exit_request: tuple[int, str] | None = None

    def add_service(self, unit: Unit) -> Service:
        service = self.services[unit.name] = Service(unit, self.on_change)
        return service

    def adopt(self, model: Model) -> None:
        """A reload's valid model is the one running from now on."""
        self.model = model
        self.generation += 1
        self.launcher.forget_programs()

    def guard(self, service: Service | None):
        return guarded(self.log, self.control, service)

    def probes(self):
        """The probes (SPEC §10), imported only when a unit has one: PID 1 is smaller without."""
        if self.probing is None:
            from activator.probewatch import Probes
            self.probing = Probes.of(self.loop, self.log, self.launcher, self.on_change)
        return self.probing

    def service_of(self, proc: Process) -> Service | None:
        return self.services.get(proc.unit.name)

    # ------------------------------------------------------------------ exits

    def reap(self) -> None:
        ended, orphans = self.table.reap()
        for pid, status in orphans:
            if self.probing is not None and self.probing.child_exited(pid, status):
                continue  # a probe's command (probes.py), not an orphan
            self.log.debug(f"reaped orphan {pid} ({status})")
        for proc, status in ended:
            with self.guard(self.service_of(proc)):
                self.on_exit(proc, status)
        for proc in self.table.drained():
            with self.guard(self.service_of(proc)):
                self.finish(proc)

    def on_exit(self, proc: Process, status: int) -> None:
        """Exit-driven: the main process of `proc` has ended with `status`."""
        proc.exited = True
        proc.status = status
        self.table.forget(proc)
        self.control.close_pidfd(proc)
        proc.cancel_timers("start", "watchdog", "ready", "health")
        for pipe in proc.pipes:
            pipe.drain()
        if proc.slot is not None or not proc.unit.accepts:
            if reaper.group_alive(proc.pgid):
                # What is left of its process group is stopped the same way as a stop would.
                self.table.drain(proc)
                self.control.stop_rest_of_group(proc)
                return
        self.finish(proc)

    def finish(self, proc: Process) -> None:
        """The process and its whole group are gone: decide what comes next."""
        proc.cancel_timers()
        self.table.done(proc)
        service = self.service_of(proc)
        status = proc.status if proc.status is not None else 0
        if service is None:
            return
        if proc.slot is None:
            self.connection_ended(service, proc)
            return
        slot = proc.slot
        end = how_it_ended(slot, proc, self.shutting_down or service.phase in (P.STOPPING, P.STOPPED))
        if end is End.RETIRED:
            slot.retiring.remove(proc)
            self.log.debug(f"replaced process exited ({status})", **proc.where)
        elif end is End.REPLACEMENT_FAILED:
            slot.candidate = None
            self.log.warning(f"new process exited ({status}) before it was ready", **proc.where)
            self.listener.candidate_failed(slot)
        else:
            slot.proc = None
            slot.exit_status = status
            self.slot_ended(service, slot, proc, end, status)
        service.changed()

    def slot_ended(self, service: Service, slot: Slot, proc: Process, end: End, status: int) -> None:
        if end is End.LEFT:
            if not any(True for _ in slot.processes()):
                service.leaving.remove(slot)
            self.log.info(f"stopped ({status})", **proc.where)
        elif end is End.START_AGAIN:
            self.log.info(f"stopped ({status}); starting again", **proc.where)
            self.start_slot(slot, restart=True)  # a replacement, as a rolling one counts
        elif end is End.STOPPED:
            self.log.info(f"stopped ({status})", **proc.where)
            if not service.has_processes():  # and what left its process group (SPEC §11)
                self.control.stop_strays(service.unit, self.table.pids)
            if service.phase is P.STOPPED:  # by command: it stays so until started again
                slot.enter(S.STOPPED)
            else:
                slot.enter(S.FAILED if service.failure or slot.state is S.FAILED else S.EXITED)
        else:
            if proc.reload_signalled and status == 128 + proc.reload_signalled:
                self.log.warning(f"died of its reload_signal ({status}); its unit file may need "
                                 "another reload_signal (or none)", **proc.where)
            ran = time.monotonic() - proc.started
            self.apply_verdict(slot, after_exit(slot.unit, slot.failures, ran, status, proc.result),
                               status, proc.result, proc.where)

    def apply_verdict(self, slot: Slot, verdict, status: int, result: Result | None, at: dict) -> None:
        service = slot.service
        what = result.value if result is not None else None
        slot.failures = verdict.failures
        if verdict.outcome is Outcome.FINISHED:
            self.log.info("finished", **at)
            slot.enter(S.EXITED)
            self.unit_done(service, success=True, status=0)
        elif verdict.outcome is Outcome.RESTART:
            self.log.info(f"{what or f'exited ({status})'}; restarting in {verdict.delay:g}s", **at)
            slot.enter(S.RESTARTING)
            slot.timer = self.loop.call_later(verdict.delay, lambda: self.restart_timer(slot))
        elif verdict.outcome is Outcome.EXITED:
            self.log.info(f"exited ({status})", **at)
            slot.enter(S.EXITED)
            # A unit with sockets waits for traffic again, as systemd's socket units do: its
            # socket stays open, and the next connection starts it (SPEC §1, `start`).
            if slot.unit.sockets and (slot.unit.start == "on-demand" or slot.unit.success_action != "exit"):
                self.wait_again(service)
            else:
                self.unit_done(service, success=True, status=status)
        else:
            self.log.warning(f"{what or f'exited ({status})'}; not restarted (restart: "
                             f"{slot.unit.restart})", **at)
            slot.failure = what or f"exited with status {status}"
            slot.enter(S.FAILED)
            self.unit_done(service, success=False, status=status)

    def restart_timer(self, slot: Slot) -> None:
        """Time-driven: the backoff of `slot` is over."""
        slot.timer = None
        service = slot.service
        if self.shutting_down or service.phase is P.STOPPING or self.services.get(service.name) is not service:
            return
        with self.guard(service):
            self.start_slot(slot, restart=True)

    def unit_done(self, service: Service, success: bool, status: int) -> None:
        """A slot ended for good; apply success_action/failure_action and requires."""
        unit = service.unit
        if success and not all(s.state in (S.EXITED, S.FAILED) for s in service.slots):
            return
        if success and unit.success_action == "exit":
            # `-- CMD` ends the container with CMD's own status, 143 after a SIGTERM as with tini
            self.request_exit(status if unit.literal_exec else 0,
                          f"unit {unit.name} finished (success_action: exit)")
        elif not success and unit.failure_action == "exit":
            self.request_exit(status, f"unit {unit.name} failed (failure_action: exit)")
        if not success:
            self.propagate_failure(service)

    def propagate_failure(self, failed: Service) -> None:
        """`requires`: units that need a unit that failed for good are stopped and failed too."""
        for service in dependencies.requiring(failed.name, self.services):
            self.fail_with(service, failed.name, "stopping")

    def fail_with(self, service: Service, required: str, doing: str) -> None:
        service.fail(f"required unit {required} failed")
        self.log.warning(f"{doing}: {service.failure}", unit=service.name)
        self.stop_slots(service.slots)
        for slot in service.slots:
            if slot.proc is None and slot.state is not S.FAILED:
                slot.enter(S.FAILED)
        self.unwatch(service)
        if service.unit.failure_action == "exit":
            self.request_exit(1, f"unit {service.name} failed (failure_action: exit)")
        self.propagate_failure(service)

    # ------------------------------------------------------------------ starting

    def schedule(self) -> None:
        """Start every pending unit whose dependencies are settled."""
        progress = not self.shutting_down
        while progress:
            progress = False
            for service in list(self.services.values()):
                if service.phase is not P.PENDING:
                    continue
                verdict, required = dependencies.may_start(service, self.services)
                if verdict is Start.FAIL:
                    self.fail_with(service, required, "not started")
                elif verdict is Start.NOW:
                    progress = True
                    with self.guard(service):
                        self.start_service(service)

    def start_service(self, service: Service) -> None:
        unit = service.unit
        if unit.accepts or unit.start == "on-demand":
            self.watch(service)
            return
        service.enter(P.ACTIVE)
        for slot in service.slots:
            self.start_slot(slot)

    def start_slot(self, slot: Slot, candidate_unit: Unit | None = None,
                   restart: bool = False) -> Process | None:
        """Start the process of `slot` (or, with `candidate_unit`, its replacement)."""
        unit = candidate_unit or slot.unit
        if candidate_unit is None:
            if not self.start_allowed(slot):
                return None
            if restart:
                slot.restarts += 1
            slot.enter(S.STARTING)
        try:
            self.sockets_watch.reopen(slot.service, unit)
            proc = self.launch(slot.service, unit, slot, slot.number)
        except (SpawnError, OSError, BindError) as e:
            self.start_failed(slot, unit, e, candidate_unit is not None)
            return None
        if candidate_unit is not None:
            slot.candidate = proc
        else:
            slot.adopt(proc)
        slot.service.changed()
        if unit.type in ("simple", "exec") and unit.ready is not None:
            self.probes().watch_ready(proc, self.sockets, self.became_ready)
        elif unit.type in ("simple", "exec"):
            self.became_ready(proc)
        return proc

    def start_failed(self, slot: Slot, unit: Unit, error: Exception, candidate: bool) -> None:
        """The program could not be executed (127, 126), or a resource ran out: a failed start,
        which the restart policy judges like any failure."""
        if isinstance(error, SpawnError):
            status = error.exit_status
            self.log.error(f"cannot execute '{error.program}': {error.text}", **where(slot))
        elif isinstance(error, BindError):
            status = 1
            self.log.error(f"cannot start: {error}", **where(slot))
        else:
            status = 126
            self.log.error(f"cannot start: {error.strerror or error}", **where(slot))
        if candidate:
            self.listener.candidate_failed(slot)
        elif slot.proc is None and slot.candidate is None and slot.state is S.STARTING:
            slot.exit_status = status
            self.apply_verdict(slot, after_exit(unit, slot.failures, 0.0, status, None), status,
                               None, where(slot))

    def start_allowed(self, slot: Slot) -> bool:
        if slot.within_start_limit(time.monotonic()):
            return True
        unit = slot.unit
        self.log.error(f"started {len(slot.starts)} times within {unit.start_limit_interval_sec:g}s "
                       f"(start_limit_burst {unit.start_limit_burst}): giving up", **where(slot))
        slot.failure = "start limit hit"
        slot.enter(S.FAILED)
        self.unit_done(slot.service, success=False, status=slot.exit_status or 1)
        return False

    def launch(self, service: Service, unit: Unit, slot: Slot | None, number: int,
               connection: dict | None = None) -> Process:
        socket_fds = [self.sockets.get(s.name).fd for s in unit.sockets]
        proc = self.launcher.start(unit, slot, number, service.label(number), socket_fds,
                                   service.fdstore.named_fds(), connection)
        self.table.add(proc)
        if unit.type == "notify" or (unit.ready is not None and connection is None):
            self.control.arm_start_timeout(proc)
        if connection is None:
            self.log.debug("started", **proc.where)
        return proc

    def became_ready(self, proc: Process) -> None:
        """The process counts as started (forked, exec'd, READY=1, or its `ready:` passed)."""
        proc.ready = True
        proc.cancel_timers("start")
        slot = proc.slot
        if proc.unit.watchdog_sec:
            proc.watchdog_usec = int(proc.unit.watchdog_sec * 1_000_000)
            self.control.arm_watchdog(proc)
        if slot is None:
            return
        if proc.unit.health is not None:
            self.probes().watch_health(proc, self.control.unhealthy)
        if proc is slot.candidate:
            self.listener.candidate_ready(slot, proc)
        elif proc.current and slot.state in (S.STARTING, S.RELOADING, S.RESTARTING):
            slot.enter(S.RUNNING)
            self.log.info("ready" if proc.unit.type == "notify" or proc.unit.ready else "started", **proc.where)

    # ------------------------------------------------------------------ stopping

    def stop_slots(self, slots: list[Slot], reason: StopReason = StopReason.STOP) -> None:
        """Cancel the pending restarts of these slots and stop all their processes."""
        for slot in slots:
            slot.cancel_restart()
            for proc in list(slot.processes()):
                if not proc.exited or proc.draining:
                    self.control.stop(proc, reason)

    def stop_service(self, service: Service) -> None:
        """Stop every process of `service` for good (shutdown, removal)."""
        service.enter(P.STOPPING)
        self.unwatch(service)
        self.stop_slots([*service.slots, *service.leaving])
        for slot in service.slots:
            if slot.proc is None and slot.state in (S.RESTARTING, S.STARTING, S.WAITING):
                slot.enter(S.EXITED)
        for proc in list(service.connections.values()):
            self.control.stop(proc, StopReason.STOP)
        service.changed()

    def request_exit(self, code: int, why: str) -> None:
        """A unit's success_action or failure_action asks activator to stop everything; the
        manager acts on it once the current changes have settled."""
        if self.exit_request is None:
            self.exit_request = (code, why)
            self.on_change()

    def begin_shutdown(self) -> None:
        """From now on nothing starts or restarts: every end is a stop for good."""
        self.shutting_down = True

    # ------------------------------------------------------------------ socket activation

    def watch(self, service: Service) -> None:
        """Wait for traffic on the unit's sockets: on-demand units, and accept units always."""
        unit = service.unit
        self.sockets_watch.reopen(service, unit)
        service.enter(P.ACTIVE if unit.accepts else P.WAITING)
        for slot in service.slots:
            slot.enter(S.WAITING)
        if unit.accepts:
            self.sockets_watch.on_connections(  # finished connections reaped first: they free room
                unit, lambda: unit.sockets[0].max_connections - len(service.connections),
                lambda fd, address: self.spawn_connection(service, fd, address), before=self.reap)
        else:
            self.sockets_watch.on_traffic(unit, lambda: self.traffic(service))
        service.changed()

    def unwatch(self, service: Service) -> None:
        self.sockets_watch.stop(service.unit)

    def traffic(self, service: Service) -> None:
        """An on-demand unit's socket became readable: start it; the service accepts."""
        self.unwatch(service)
        with self.guard(service):
            service.enter(P.ACTIVE)
            self.log.info("traffic on its socket: starting", unit=service.name)
            for slot in service.slots:
                self.start_slot(slot)

    def wait_again(self, service: Service) -> None:
        """On-demand: after a clean exit of every instance, wait for traffic again."""
        if self.shutting_down or service.phase is P.STOPPING:
            return
        if all(slot.state is S.EXITED and not list(slot.processes()) for slot in service.slots):
            self.watch(service)

    def spawn_connection(self, service: Service, fd: int, address) -> None:
        details: dict = {"fd": fd}
        if isinstance(address, tuple) and len(address) >= 2:
            details["REMOTE_ADDR"], details["REMOTE_PORT"] = address[0], address[1]
        service.connection_count += 1
        self.counters.connection(service.unit.sockets[0].name)
        self.on_quiet_change()
        with self.guard(service):
            try:
                proc = self.launch(service, service.unit, None, service.connection_count, details)
            except (SpawnError, OSError) as e:
                self.log.error(f"cannot start a connection's process: {e}", unit=service.name)
                return
            service.connections[proc.pid] = proc

    def connection_ended(self, service: Service, proc: Process) -> None:
        self.connection_log.ended(service, proc)
        self.on_quiet_change()  # status.json's counts, without a write per connection
        if service.phase is P.STOPPING:
            self.on_change()
        elif not service.failure and self.services.get(service.name) is service:
            self.sockets_watch.resume(service.unit)
