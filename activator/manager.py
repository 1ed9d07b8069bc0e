"""The init: one single-threaded event loop that owns every unit, process and socket.

Design
------
Everything happens on one thread, in `Manager.run`, around one `epoll`:

- signals arrive as bytes on the wakeup pipe (signals.py) and become commands;
- SIGCHLD means "reap": `waitpid(-1, WNOHANG)` until nothing is left, each pid resolved to
  its process first; a pid we do not know is an orphan that was reparented to us, reaped
  quietly. Nothing else in activator ever waits for a child (no subprocess, no asyncio);
- the notify socket, service output pipes, on-demand and accept sockets are readers;
- timers exist only for pending deadlines (a restart backoff, a stop or start timeout, a
  watchdog); with none pending, epoll waits forever: an idle activator never wakes.

Exit-driven changes (`on_exit` → `finish`) and time-driven ones (timer callbacks) are kept
apart; every state change goes through `Slot.enter`.

PID 1 must not die of a bug: work for one unit runs under `guard(service)`, which logs the
traceback, fails that unit and goes on. If the loop itself breaks, `fatal` stops every
process, reaps them and exits 1.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import os
import select
import signal
import time

from activator import activation, log as logmod, spawn
from activator.counters import Counters
from activator.log import Log
from activator.notify import Message, NotifyServer
from activator.output import OutputPipe
from activator.service import (ACTIVE, Process, S, Service, Slot, backoff, exit_status, is_clean,
                               should_restart)
from activator.signals import SignalReceiver
from activator.sockets import BindError, BoundSocket, bind, inherited_sockets
from activator.model import Model, Unit

FDSTORE_MAX = 64
ACCEPT_BATCH = 16
SHUTDOWN_REAP_SECONDS = 5.0


class Timer:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback):
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:
        return self.deadline < other.deadline


class Loop:
    """epoll plus a heap of deadlines. Nothing here knows about units."""

    def __init__(self):
        self.epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self.readers: dict[int, object] = {}
        self.timers: list[Timer] = []

    def add_reader(self, fd: int, callback) -> None:
        if fd in self.readers:
            self.readers[fd] = callback
            return
        self.readers[fd] = callback
        self.epoll.register(fd, select.EPOLLIN)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            try:
                self.epoll.unregister(fd)
            except OSError:
                pass

    def call_later(self, delay: float, callback) -> Timer:
        timer = Timer(time.monotonic() + max(delay, 0.0), callback)
        if delay != float("inf"):  # `infinity` (a timeout turned off) never fires
            heapq.heappush(self.timers, timer)
        return timer

    def poll(self) -> list:
        """Wait for the next event or deadline; the callbacks that are due, in order."""
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        timeout = -1.0
        if self.timers:
            # epoll takes at most 2**31 ms; a farther deadline is recomputed after a day.
            timeout = min(max(self.timers[0].deadline - time.monotonic(), 0.0), 86400.0)
        events = self.epoll.poll(timeout)
        due = [self.readers[fd] for fd, _ in events if fd in self.readers]
        now = time.monotonic()
        while self.timers and (self.timers[0].cancelled or self.timers[0].deadline <= now):
            timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.cancelled = True
                due.append(timer.callback)
        return due

    def close(self) -> None:
        self.epoll.close()


class Manager:
    def __init__(self, model: Model, log: Log, runtime_dir: str, environ: dict | None = None):
        self.model = model
        self.log = log
        log.instances_of = lambda name: (s.unit.instances if (s := self.services.get(name)) else None)
        self.runtime_dir = runtime_dir
        self.environ = dict(os.environ if environ is None else environ)
        self.base_env = activation.base_environment(self.environ)
        self.loop = Loop()
        self.services: dict[str, Service] = {}
        self.sockets: dict[str, BoundSocket] = {}
        self.inherited: dict[str, int] = {}
        self.pids: dict[int, Process] = {}  # main pids and spawned pids of live processes
        self.sessions: dict[int, Process] = {}  # session id (the spawned pid) -> process
        self.draining: set[Process] = set()
        self.generation = 1
        self.started_wall = time.time()
        self.is_pid1 = os.getpid() == 1
        self.shutting_down = False
        self.exit_code: int | None = None
        self.finished = False
        self.dirty = True
        self.devnull = -1
        self.signals: SignalReceiver | None = None
        self.notify: NotifyServer | None = None
        self.notify_path: str | None = None
        self.outer = None  # the manager that started us, when NOTIFY_SOCKET was set
        self.announced_ready = False
        self.reloader = None  # set by reload.Reloader when a reload runs
        self.pending_commands: set[str] = set()
        self.reload_record: dict = {"requested": 0, "completed": 0, "outcome": None, "errors": [],
                                    "time": None, "generation": 1}
        self.status_writer = None
        self.command: list[str] | None = None  # `-- CMD`, kept across reloads
        # Only as PID 1 is the namespace's next pid ours to predict (spawn.py, step 2).
        self.pid_guess = spawn.PidGuess() if self.is_pid1 else None
        self.explicit_dirs = True
        self.counters = Counters()  # for /metrics (counters.py)

    # ------------------------------------------------------------------ boot

    def boot(self) -> None:
        """Bind every socket, then start the units. BindError leaves nothing running."""
        from activator import status

        self.signals = SignalReceiver()
        self.loop.add_reader(self.signals.read_fd, self.handle_signals)
        if not self.is_pid1:
            _become_subreaper(self.log)
        os.makedirs(self.runtime_dir, mode=0o755, exist_ok=True)
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        self.inherited = inherited_sockets(self.environ)
        _close_on_exec_all(keep=set(self.inherited.values()))
        try:
            for unit in self.model.units.values():
                for spec in unit.sockets:
                    self.sockets[spec.name] = bind(spec, self.inherited)
        except BindError:
            for bound in self.sockets.values():
                bound.close()
            self.sockets.clear()
            raise
        self.notify_path = os.path.join(self.runtime_dir, "notify")
        self.notify = NotifyServer(self.notify_path)
        self.loop.add_reader(self.notify.fd, self.handle_notify)
        if self.environ.get("NOTIFY_SOCKET"):
            from activator.outer import OuterManager
            self.outer = OuterManager(self.log)
        self.status_writer = status.StatusWriter(self)
        with open(os.path.join(self.runtime_dir, "activator.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        for unit in self.model.units.values():
            self.services[unit.name] = self.new_service(unit)
        self.log.info(f"started with {self.model.summary()}"
                      + ("" if self.is_pid1 else f" (pid {os.getpid()})"))
        for warning in self.model.warnings:
            self.log.warning(str(warning))
        self.schedule()

    def new_service(self, unit: Unit) -> Service:
        service = Service(unit, self.mark_dirty)
        if not unit.accepts:
            service.slots = [Slot(service, n) for n in range(1, unit.instances + 1)]
        return service

    def mark_dirty(self) -> None:
        self.dirty = True

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until shutdown completes; the exit code of SPEC §7."""
        failures = 0
        while not self.finished:
            try:
                changed = False
                for _ in range(100):  # settle: starting a unit can unblock the next one
                    if not self.dirty or self.finished:
                        break
                    self.after_changes()
                    changed = True
                if self.finished:
                    break
                if changed:
                    self.publish()
                for callback in self.loop.poll():
                    callback()
                    if self.finished:
                        break
                failures = 0
            except Exception:
                failures += 1
                import traceback  # only when needed: with linecache and tokenize, 0.6 MiB
                self.log.error("internal error in the event loop:\n" + traceback.format_exc().rstrip())
                if failures >= 20:
                    return self.fatal()
        return self.exit_code if self.exit_code is not None else 0

    def after_changes(self) -> None:
        self.dirty = False
        for service in list(self.services.values()):
            self.maybe_done(service)
        if self.finished:
            return
        self.schedule()
        if self.reloader is not None:
            self.reloader.advance()

    def publish(self) -> None:
        """Once the changes of an iteration have settled: status.json, the outer manager."""
        self.status_writer.write()
        if self.outer is not None:
            self.outer.update(self)
        if self.announced_ready or self.shutting_down:
            return
        if all(s.started or s.state is S.FAILED for s in self.services.values()):
            self.announced_ready = True
            if self.outer is not None:
                self.outer.ready(self)

    @contextlib.contextmanager
    def guard(self, service: Service | None):
        """A bug while handling one unit fails that unit; the rest go on."""
        try:
            yield
        except Exception:
            name = service.name if service else None
            import traceback
            self.log.error("internal error:\n" + traceback.format_exc().rstrip(), unit=name)
            if service is not None and not service.failed:
                service.failed = "internal error in activator (see the log)"
                service.changed()
                for proc in list(service.processes()):
                    if not proc.exited:
                        self.stop_process(proc, "stop")

    def fatal(self) -> int:
        self.log.error("cannot go on: stopping every process")
        with contextlib.suppress(Exception):
            self.kill_everything()
        return 1

    # ------------------------------------------------------------------ signals

    def handle_signals(self) -> None:
        commands = self.signals.commands()
        if "reap" in commands:
            self.reap()
        if "stop" in commands:
            if self.shutting_down:
                self.log.info("already shutting down; finishing the clean-up")
            else:
                self.shutdown(0, "stop signal received")
        if "status" in commands:
            self.print_status()
        if "reload" in commands and not self.shutting_down:
            self.request("reload")
        if "restart" in commands and not self.shutting_down:
            self.request("restart")

    def print_status(self) -> None:
        """SIGUSR1: the table of `activator status`, CPU and memory included, on stderr. A
        child writes it: measuring takes a moment and psutil, neither of which PID 1 should
        spend; the child is reaped like any orphan."""
        from activator import status

        data = status.snapshot(self)
        if os.fork() == 0:
            try:
                signal.set_wakeup_fd(-1)
                status.add_usage(data)
                logmod.write_all(2, status.table(data).encode())
            finally:
                os._exit(0)

    def request(self, command: str) -> None:
        from activator.reload import Reloader

        if self.reloader is not None:
            self.pending_commands.add(command)  # coalesced: runs once after the current one
            return
        self.reloader = Reloader(self, command)
        self.reloader.begin()

    def reload_finished(self) -> None:
        self.counters.reload_finished(self.reloader.command, self.reload_record.get("outcome"))
        self.reloader = None
        self.mark_dirty()
        if self.pending_commands and not self.shutting_down:
            command = "reload" if "reload" in self.pending_commands else "restart"
            self.pending_commands.discard(command)
            self.request(command)

    # ------------------------------------------------------------------ reaping

    def reap(self) -> None:
        while True:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            proc = self.pids.get(pid)  # who it was, before anything else
            if proc is None:
                self.log.debug(f"reaped orphan {pid} ({exit_status(wait_status)})")
                continue
            if pid != proc.main_pid:
                self.forget_pid(pid, proc)  # the first pid of a service that named another MAINPID
                continue
            with self.guard(self.services.get(proc.unit.name)):
                self.on_exit(proc, exit_status(wait_status))
        self.check_draining()

    def forget_pid(self, pid: int, proc: Process) -> None:
        if self.pids.get(pid) is proc:
            del self.pids[pid]

    def on_main_pid_gone(self, proc: Process) -> None:
        """pidfd: a MAINPID that is not our child ended. If it was reparented to us, reaping
        gives its real status; only when another process reaps it is the status unknown."""
        self.reap()
        if proc.pidfd >= 0:
            self.loop.remove_reader(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = -1
        if not proc.exited:
            with self.guard(self.services.get(proc.unit.name)):
                self.on_exit(proc, 0)

    def on_exit(self, proc: Process, status: int) -> None:
        """Exit-driven: the main process of `proc` has ended with `status`."""
        proc.exited = True
        proc.status = status
        for pid in (proc.pid, proc.main_pid):
            self.forget_pid(pid, proc)
        if proc.pidfd >= 0:
            self.loop.remove_reader(proc.pidfd)
            os.close(proc.pidfd)
            proc.pidfd = -1
        proc.cancel_timers("start", "watchdog")
        for pipe in proc.pipes:
            pipe.drain()
        if proc.slot is None and proc.unit.accepts:
            self.finish(proc)  # one connection's process: never restarted
            return
        if _group_alive(proc.pgid):
            # What is left of its process group is stopped the same way as a stop would.
            proc.draining = True
            self.draining.add(proc)
            if "stop" not in proc.timers:
                self.signal_group(proc, proc.unit.kill_signal)
                proc.timers["stop"] = self.loop.call_later(proc.unit.timeout_stop_sec,
                                                           lambda: self.stop_timeout(proc))
            return
        self.finish(proc)

    def check_draining(self) -> None:
        for proc in list(self.draining):
            if not _group_alive(proc.pgid):
                self.draining.discard(proc)
                with self.guard(self.services.get(proc.unit.name)):
                    self.finish(proc)

    def finish(self, proc: Process) -> None:
        """The process and its whole group are gone: decide what comes next."""
        proc.cancel_timers()
        proc.draining = False
        self.draining.discard(proc)
        self.sessions.pop(proc.pgid, None)
        service = self.services.get(proc.unit.name)
        status = proc.status if proc.status is not None else 0
        if service is None:
            return
        if proc.slot is None:
            self.finish_connection(service, proc)
            return
        slot = proc.slot
        if proc in slot.retiring:
            slot.retiring.remove(proc)
            self.log.debug(f"replaced process exited ({status})", **proc.where)
            service.changed()
            return
        if proc is slot.candidate:
            slot.candidate = None
            self.log.warning(f"new process exited ({status}) before it was ready", **proc.where)
            if self.reloader is not None:
                self.reloader.candidate_failed(slot, proc)
            service.changed()
            return
        slot.proc = None
        slot.exit_status = status
        reason = proc.stop_reason
        if slot in service.leaving:
            if not any(True for _ in slot.processes()):
                service.leaving.remove(slot)
            self.log.info(f"stopped ({status})", **proc.where)
            service.changed()
            return
        if reason == "restart" and not self.shutting_down and not service.stopping:
            self.log.info(f"stopped ({status}); starting again", **proc.where)
            self.start_slot(slot)
            return
        if reason in ("stop", "restart") or self.shutting_down or service.stopping:
            self.log.info(f"stopped ({status})", **proc.where)
            slot.enter(S.FAILED if service.failed or slot.state is S.FAILED else S.EXITED)
            return
        self.exited_on_its_own(service, slot, proc, status)

    def exited_on_its_own(self, service: Service, slot: Slot, proc: Process, status: int) -> None:
        unit = slot.unit
        result = proc.result
        what = {"timeout": "did not become ready in time", "watchdog": "missed its watchdog"}.get(result)
        ran = time.monotonic() - proc.started
        if unit.type == "oneshot" and status == 0 and result is None:
            self.log.info("finished", **proc.where)
            slot.failures = 0
            slot.enter(S.EXITED)
            self.unit_done(service, success=True, status=0)
            return
        if should_restart(unit.restart, status, result):
            slot.failures = 1 if ran >= unit.restart_max_sec else slot.failures + 1
            delay = backoff(unit, slot.failures)
            self.log.info(f"{what or f'exited ({status})'}; restarting in {delay:g}s", **proc.where)
            slot.enter(S.RESTARTING)
            slot.timer = self.loop.call_later(delay, lambda: self.restart_timer(slot))
            return
        if is_clean(status, result) and unit.type != "oneshot":
            self.log.info(f"exited ({status})", **proc.where)
            slot.enter(S.EXITED)
            if unit.start == "on-demand":
                self.maybe_wait_again(service)
                return
            self.unit_done(service, success=True, status=status)
            return
        self.log.warning(f"{what or f'exited ({status})'}; not restarted (restart: {unit.restart})",
                         **proc.where)
        slot.failure = what or f"exited with status {status}"
        slot.enter(S.FAILED)
        self.unit_done(service, success=False, status=status)

    def restart_timer(self, slot: Slot) -> None:
        """Time-driven: the backoff of `slot` is over."""
        slot.timer = None
        service = slot.service
        if self.shutting_down or service.stopping or self.services.get(service.name) is not service:
            return
        with self.guard(service):
            self.start_slot(slot, restart=True)

    def unit_done(self, service: Service, success: bool, status: int) -> None:
        """A slot ended for good; apply success_action/failure_action and requires."""
        unit = service.unit
        if not all(s.state in (S.EXITED, S.FAILED) for s in service.slots) and success:
            return
        if success and unit.success_action == "exit":
            # `-- CMD` ends the container with CMD's own status, 143 after a SIGTERM as with tini
            self.shutdown(status if unit.literal_exec else 0,
                          f"unit {unit.name} finished (success_action: exit)")
        elif not success and unit.failure_action == "exit":
            self.shutdown(status, f"unit {unit.name} failed (failure_action: exit)")
        if not success:
            self.propagate_failure(service)

    def propagate_failure(self, failed: Service) -> None:
        """`requires`: units that need a unit that failed for good are stopped and failed too."""
        for service in list(self.services.values()):
            if failed.name not in service.unit.requires or service.failed or service.stopping:
                continue
            service.failed = f"required unit {failed.name} failed"
            self.log.warning(f"stopping: {service.failed}", unit=service.name)
            service.pending = False
            self.stop_slots(service.slots)
            for slot in service.slots:
                if slot.proc is None and slot.state is not S.FAILED:
                    slot.enter(S.FAILED)
            self.unwatch_sockets(service)
            service.changed()
            if service.unit.failure_action == "exit":
                self.shutdown(1, f"unit {service.name} failed (failure_action: exit)")
            self.propagate_failure(service)

    # ------------------------------------------------------------------ starting

    def schedule(self) -> None:
        """Start every pending unit whose dependencies are settled."""
        if self.shutting_down:
            return
        progress = True
        while progress:
            progress = False
            for service in list(self.services.values()):
                if not service.pending or service.failed or service.stopping:
                    continue
                verdict = self.dependencies_settled(service)
                if verdict is None:
                    continue
                if verdict is False:
                    continue
                service.pending = False
                progress = True
                with self.guard(service):
                    self.start_service(service)

    def dependencies_settled(self, service: Service) -> bool | None:
        """True when it may start, None when it must wait (a failed requires fails it)."""
        unit = service.unit
        for name in (*unit.requires, *unit.wants, *unit.after):
            dep = self.services.get(name)
            if dep is None or dep is service:
                continue
            if dep.state is S.FAILED:
                if name in unit.requires:
                    service.pending = False
                    service.failed = f"required unit {name} failed"
                    self.log.warning(f"not started: {service.failed}", unit=unit.name)
                    for slot in service.slots:
                        slot.enter(S.FAILED)
                    service.changed()
                    if unit.failure_action == "exit":
                        self.shutdown(1, f"unit {unit.name} failed (failure_action: exit)")
                    self.propagate_failure(service)
                    return False
                continue
            if not dep.started:
                return None
        return True

    def start_service(self, service: Service) -> None:
        unit = service.unit
        if unit.accepts or unit.start == "on-demand":
            self.watch_sockets(service)
            return
        for slot in service.slots:
            self.start_slot(slot)

    def watch_sockets(self, service: Service) -> None:
        service.waiting = not service.unit.accepts
        for slot in service.slots:
            if slot.state is not S.WAITING:
                slot.enter(S.WAITING)
        for spec in service.unit.sockets:
            bound = self.sockets[spec.name]
            if spec.accept:
                self.loop.add_reader(bound.fd, lambda b=bound, s=service: self.accept(s, b))
            else:
                self.loop.add_reader(bound.fd, lambda s=service: self.traffic(s))
        service.changed()

    def unwatch_sockets(self, service: Service) -> None:
        for spec in service.unit.sockets:
            bound = self.sockets.get(spec.name)
            if bound is not None:
                self.loop.remove_reader(bound.fd)

    def traffic(self, service: Service) -> None:
        """An on-demand unit's socket became readable: start it; the service accepts."""
        self.unwatch_sockets(service)
        service.waiting = False
        with self.guard(service):
            self.log.info("traffic on its socket: starting", unit=service.name)
            for slot in service.slots:
                self.start_slot(slot)

    def maybe_wait_again(self, service: Service) -> None:
        """On-demand: after a clean exit of every instance, wait for traffic again."""
        if self.shutting_down or service.stopping:
            return
        if all(slot.state is S.EXITED and not list(slot.processes()) for slot in service.slots):
            self.watch_sockets(service)

    def start_slot(self, slot: Slot, candidate_unit: Unit | None = None,
                   restart: bool = False) -> Process | None:
        """Start the process of `slot` (or, with `candidate_unit`, its replacement)."""
        service = slot.service
        unit = candidate_unit or slot.unit
        if candidate_unit is None:
            if not self.start_allowed(slot):
                return None
            if restart:
                slot.restarts += 1
            slot.enter(S.STARTING)
        proc = self.launch(service, unit, slot, slot.number)
        if proc is None:
            return None
        if candidate_unit is not None:
            slot.candidate = proc
        else:
            slot.proc = proc
            slot.started_wall = proc.started_wall
            slot.notify_status = slot.notify_errno = None
        service.changed()
        if unit.type in ("simple", "exec"):
            self.became_ready(proc)
        return proc

    def start_allowed(self, slot: Slot) -> bool:
        unit = slot.unit
        now = time.monotonic()
        interval = unit.start_limit_interval_sec
        if interval > 0:
            while slot.starts and slot.starts[0] <= now - interval:
                slot.starts.popleft()
            if len(slot.starts) >= unit.start_limit_burst:
                self.log.error(f"started {len(slot.starts)} times within {interval:g}s "
                               f"(start_limit_burst {unit.start_limit_burst}): giving up",
                               unit=unit.name, instance=slot.number, label=slot.label)
                slot.failure = "start limit hit"
                slot.enter(S.FAILED)
                self.unit_done(slot.service, success=False, status=slot.exit_status or 1)
                return False
        slot.starts.append(now)
        return True

    def launch(self, service: Service, unit: Unit, slot: Slot | None, number: int,
               connection: dict | None = None) -> Process | None:
        label = service.label(number)
        socket_fds = [self.sockets[s.name].fd for s in unit.sockets]
        stored = [(name, fd) for name, fd, _ in service.fdstore]
        pipes: list[tuple[int, int, str]] = []
        try:
            launch = activation.prepare(unit, number, socket_fds, stored, self.base_env, self.environ,
                                        self.notify_path, connection)
            launch.stdin = None if unit.literal_exec else self.devnull
            if unit.output == "null":
                launch.stdout = launch.stderr = self.devnull
            elif unit.output == "prefix":
                for stream in ("stdout", "stderr"):
                    r, w = os.pipe2(os.O_CLOEXEC)
                    pipes.append((r, w, stream))
                launch.stdout, launch.stderr = pipes[0][1], pipes[1][1]
            pid = spawn.spawn(launch, self.pid_guess)
        except (spawn.SpawnError, activation.ProgramMissing) as e:
            for r, w, _ in pipes:
                os.close(r)
                os.close(w)
            status = 127 if e.errno == errno.ENOENT else 126
            self.log.error(f"cannot execute '{e.program}': {e.text}", unit=unit.name, instance=number,
                           label=label)
            if slot is not None:
                proc = Process(0, unit, slot, number, label)
                proc.exited, proc.status = True, status
                if slot.candidate is None and slot.proc is None and slot.state is S.STARTING:
                    slot.exit_status = status
                    self.exited_on_its_own(service, slot, proc, status)
                elif self.reloader is not None:
                    self.reloader.candidate_failed(slot, proc)
            return None
        proc = Process(pid, unit, slot, number, label)
        self.pids[pid] = proc
        self.sessions[pid] = proc
        for r, w, stream in pipes:
            os.close(w)
            os.set_blocking(r, False)
            pipe = OutputPipe(r, stream, self.log, unit.name, number, label)
            pipe.pid = pid
            proc.pipes.append(pipe)
            self.loop.add_reader(r, lambda p=pipe, pr=proc: self.relay(p, pr))
        if unit.type == "notify":
            proc.timers["start"] = self.loop.call_later(unit.timeout_start_sec,
                                                        lambda: self.start_timeout(proc))
        if connection is None:
            self.log.debug("started", **proc.where)
        return proc

    def relay(self, pipe: OutputPipe, proc: Process) -> None:
        if not pipe.read():
            self.loop.remove_reader(pipe.fd)
            pipe.close()
            proc.pipes.remove(pipe)

    def became_ready(self, proc: Process) -> None:
        """The process counts as started (forked, exec'd, or READY=1)."""
        proc.ready = True
        proc.cancel_timers("start")
        slot = proc.slot
        if proc.unit.watchdog_sec:
            proc.watchdog_usec = int(proc.unit.watchdog_sec * 1_000_000)
            self.arm_watchdog(proc)
        if slot is None:
            return
        if proc is slot.candidate:
            if self.reloader is not None:
                self.reloader.candidate_ready(slot, proc)
            return
        if proc is slot.proc and slot.state in (S.STARTING, S.RELOADING, S.RESTARTING):
            slot.enter(S.RUNNING)
            self.log.info("started" if proc.unit.type != "notify" else "ready", **proc.where)

    def start_timeout(self, proc: Process) -> None:
        with self.guard(self.services.get(proc.unit.name)):
            self.log.warning(f"no READY=1 within {proc.unit.timeout_start_sec:g}s: stopping it", **proc.where)
            proc.result = "timeout"
            self.stop_process(proc, None)

    # ------------------------------------------------------------------ accept

    def accept(self, service: Service, bound: BoundSocket) -> None:
        """inetd style: one process per connection, at most max_connections at once.

        Reaping first keeps finished connections from counting against the limit; taking at
        most ACCEPT_BATCH per wake-up lets signals and other work in between a busy backlog."""
        self.reap()
        limit = bound.spec.max_connections
        for _ in range(ACCEPT_BATCH):
            if len(service.connections) >= limit:
                break
            try:
                connection, address = bound.obj.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning(f"cannot accept: {e.strerror}", unit=service.name)
                    return
                continue  # ECONNABORTED and the like: that connection is gone
            with connection:  # the service has its own copy once started
                self.spawn_connection(service, connection.fileno(), address)
        else:
            return  # a full batch: epoll brings us back for the rest
        self.loop.remove_reader(bound.fd)  # full: the rest wait in the backlog

    def spawn_connection(self, service: Service, fd: int, address) -> None:
        connection: dict = {"fd": fd}
        if isinstance(address, tuple) and len(address) >= 2:
            connection["REMOTE_ADDR"], connection["REMOTE_PORT"] = address[0], address[1]
        service.connection_count += 1
        self.counters.connection(service.unit.sockets[0].name)
        with self.guard(service):
            proc = self.launch(service, service.unit, None, service.connection_count, connection)
            if proc is not None:
                service.connections[proc.pid] = proc

    def finish_connection(self, service: Service, proc: Process) -> None:
        service.connections.pop(proc.pid, None)
        if proc.status:
            self.log.debug(f"connection process exited ({proc.status})", **proc.where)
        if service.stopping:
            self.mark_dirty()
        elif not service.failed and service.unit.accepts and self.services.get(service.name) is service:
            bound = self.sockets.get(service.unit.sockets[0].name)
            if bound is not None and bound.fd not in self.loop.readers:
                self.loop.add_reader(bound.fd, lambda b=bound, s=service: self.accept(s, b))

    # ------------------------------------------------------------------ stopping

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

    def stop_process(self, proc: Process, reason: str | None) -> None:
        """kill_signal to its process group now, SIGKILL after timeout_stop_sec."""
        if reason is not None:
            proc.stop_reason = reason
        if "stop" in proc.timers:
            return  # already on its way down
        slot = proc.slot
        if slot is not None and proc is slot.proc and slot.state not in (S.STOPPING, S.FAILED):
            slot.enter(S.STOPPING)
        proc.cancel_timers("start", "watchdog")
        self.signal_group(proc, proc.unit.kill_signal)
        proc.timers["stop"] = self.loop.call_later(proc.unit.timeout_stop_sec, lambda: self.stop_timeout(proc))

    def stop_timeout(self, proc: Process) -> None:
        self.log.warning(f"still running {proc.unit.timeout_stop_sec:g}s after "
                         f"{signal.Signals(proc.unit.kill_signal).name}: sending SIGKILL", **proc.where)
        self.signal_group(proc, signal.SIGKILL)
        # The kernel needs a moment; reaping (SIGCHLD) finishes it. Should a member of the
        # group not be our child, check again shortly rather than never.
        proc.timers["kill"] = self.loop.call_later(0.5, lambda: self.recheck(proc))

    def recheck(self, proc: Process) -> None:
        self.reap()
        if proc.draining and not _group_alive(proc.pgid):
            self.check_draining()
        elif not proc.exited or proc.draining:
            proc.timers["kill"] = self.loop.call_later(0.5, lambda: self.recheck(proc))

    def stop_slots(self, slots: list[Slot], reason: str = "stop") -> None:
        """Cancel the pending restarts of these slots and stop all their processes."""
        for slot in slots:
            if slot.timer:
                slot.timer.cancel()
                slot.timer = None
            for proc in list(slot.processes()):
                if not proc.exited or proc.draining:
                    self.stop_process(proc, reason)

    def stop_service(self, service: Service) -> None:
        """Stop every process of `service` for good (shutdown, removal)."""
        service.stopping = True
        service.pending = False
        self.unwatch_sockets(service)
        self.stop_slots([*service.slots, *service.leaving])
        for slot in service.slots:
            if slot.proc is None and slot.state in (S.RESTARTING, S.STARTING, S.WAITING):
                slot.enter(S.EXITED)
        for proc in list(service.connections.values()):
            self.stop_process(proc, "stop")
        service.changed()

    def maybe_done(self, service: Service) -> None:
        if service.stopping and not any(True for _ in service.processes()):
            if self.reloader is not None:
                self.reloader.service_stopped(service)
            if self.shutting_down:
                self.advance_shutdown()

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, code: int, why: str) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.exit_code = code
        self.log.info(f"shutting down: {why}")
        if self.outer is not None:
            self.outer.stopping()
        self.advance_shutdown()
        self.mark_dirty()

    def advance_shutdown(self) -> None:
        """Stop units in reverse dependency order: a unit once nothing that needs it runs."""
        remaining = [s for s in self.services.values() if any(True for _ in s.processes()) or not s.stopping]
        for service in remaining:
            if service.stopping:
                continue
            dependents = [d for d in self.services.values()
                          if service.name in self.model_dependencies(d) and d is not service]
            if all(d.stopping and not any(True for _ in d.processes()) for d in dependents):
                self.stop_service(service)
        if all(s.stopping and not any(True for _ in s.processes()) for s in self.services.values()):
            self.finish_shutdown()

    def model_dependencies(self, service: Service) -> set[str]:
        unit = service.unit
        return {*unit.requires, *unit.wants, *unit.after}

    def finish_shutdown(self) -> None:
        if self.finished:
            return
        self.kill_everything()
        for service in self.services.values():
            service.close_fdstore()
        for bound in self.sockets.values():
            bound.close()
        self.status_writer.write()
        if self.notify is not None:
            self.notify.close()
        self.log.info(f"exiting with status {self.exit_code}")
        self.finished = True

    def kill_everything(self) -> None:
        """SIGKILL every process left (daemonized orphans included), then reap them all."""
        deadline = time.monotonic() + SHUTDOWN_REAP_SECONDS
        while True:
            victims = _descendants() if not self.is_pid1 else None
            if self.is_pid1:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(-1, signal.SIGKILL)
            else:
                for pid in victims:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                while pid:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                if self.is_pid1 or not _descendants():
                    return
            if time.monotonic() > deadline:
                self.log.warning("some processes could not be reaped")
                return
            # Wait for the next SIGCHLD (its wakeup byte), not a fixed sleep.
            if self.signals is not None:
                select.select([self.signals.read_fd], [], [], 0.1)
                with contextlib.suppress(OSError):
                    os.read(self.signals.read_fd, 65536)
            else:
                time.sleep(0.01)

    # ------------------------------------------------------------------ notify

    def handle_notify(self) -> None:
        for message in self.notify.receive():
            proc = self.sender(message.pid)
            if proc is None or not self.allowed(proc, message.pid):
                self.counters.notify_message(accepted=False)
                self.log.debug(f"notify message from pid {message.pid} ignored: "
                               + ("not a process of a unit" if proc is None else
                                  f"notify_access is {proc.unit.notify_access}"))
                message.close_fds()
                continue
            self.counters.notify_message(accepted=True)
            with self.guard(self.services.get(proc.unit.name)):
                self.apply_notify(proc, message)
            message.close_fds()

    def sender(self, pid: int) -> Process | None:
        """The process of a unit that `pid` belongs to: itself, its session, or an ancestor."""
        proc = self.pids.get(pid)
        if proc is not None:
            return proc
        for _ in range(64):
            fields = _stat(pid)
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

    def allowed(self, proc: Process, pid: int) -> bool:
        access = proc.unit.notify_access
        if access == "all":
            return True
        if access == "main":
            return pid == proc.main_pid
        return False

    def apply_notify(self, proc: Process, message: Message) -> None:
        fields = message.fields
        service = self.services[proc.unit.name]
        slot = proc.slot
        if "MAINPID" in fields:
            self.move_main_pid(proc, fields["MAINPID"])
        if "STATUS" in fields:
            proc.notify_status = fields["STATUS"]
            if slot is not None and proc is slot.proc:
                slot.notify_status = fields["STATUS"]
            service.changed()
        if "ERRNO" in fields:
            with contextlib.suppress(ValueError):
                proc.notify_errno = int(fields["ERRNO"])
                if slot is not None and proc is slot.proc:
                    slot.notify_errno = proc.notify_errno
                service.changed()
        if "EXTEND_TIMEOUT_USEC" in fields and "start" in proc.timers:
            with contextlib.suppress(ValueError):
                extension = int(fields["EXTEND_TIMEOUT_USEC"]) / 1e6
                timer = proc.timers["start"]
                if time.monotonic() + extension > timer.deadline:
                    timer.cancel()
                    proc.timers["start"] = self.loop.call_later(extension, lambda: self.start_timeout(proc))
        if "WATCHDOG_USEC" in fields:
            with contextlib.suppress(ValueError):
                proc.watchdog_usec = int(fields["WATCHDOG_USEC"])
                self.arm_watchdog(proc)
        if fields.get("WATCHDOG") == "1":
            self.arm_watchdog(proc)
        elif fields.get("WATCHDOG") == "trigger":
            self.watchdog_expired(proc, triggered=True)
        if fields.get("FDSTORE") == "1" and message.fds:
            self.store_fds(service, proc, fields.get("FDNAME") or "stored", message)
        if fields.get("FDSTOREREMOVE") == "1" and fields.get("FDNAME"):
            self.remove_fds(service, fields["FDNAME"])
        if fields.get("STOPPING") == "1":
            proc.stopping = True
            proc.cancel_timers("watchdog")  # a service on its way out owes no more pings
            if slot is not None and proc is slot.proc and slot.state in ACTIVE + (S.STARTING,):
                slot.enter(S.STOPPING)
        if fields.get("RELOADING") == "1":
            proc.reloading = True
            if slot is not None and proc is slot.proc and slot.state is S.RUNNING:
                slot.enter(S.RELOADING)
        if fields.get("READY") == "1":
            proc.reloading = False
            if not proc.ready:
                self.became_ready(proc)
            elif slot is not None and proc is slot.proc and slot.state is S.RELOADING:
                slot.enter(S.RUNNING)

    def move_main_pid(self, proc: Process, value: str) -> None:
        try:
            pid = int(value)
        except ValueError:
            return
        if pid <= 0 or pid == proc.main_pid:
            return
        fields = _stat(pid)
        if fields is None or (self.sender(pid) is not proc):
            self.log.warning(f"MAINPID={pid} ignored: not a process of this unit", **proc.where)
            return
        self.pids[pid] = proc
        proc.main_pid = pid
        self.mark_dirty()  # status.json shows the new main pid
        if fields[0] != os.getpid():  # not our child: learn of its end through a pidfd
            try:
                proc.pidfd = os.pidfd_open(pid)
                self.loop.add_reader(proc.pidfd, lambda: self.on_main_pid_gone(proc))
            except OSError:
                proc.pidfd = -1
        self.log.info(f"main process is now {pid}", **proc.where)

    def arm_watchdog(self, proc: Process) -> None:
        proc.cancel_timers("watchdog")
        if proc.watchdog_usec > 0 and not proc.exited and proc.stop_reason is None and not proc.stopping:
            proc.timers["watchdog"] = self.loop.call_later(proc.watchdog_usec / 1e6,
                                                           lambda: self.watchdog_expired(proc))

    def watchdog_expired(self, proc: Process, triggered: bool = False) -> None:
        with self.guard(self.services.get(proc.unit.name)):
            self.log.warning("WATCHDOG=trigger: aborting it" if triggered else
                             f"no WATCHDOG=1 for {proc.watchdog_usec / 1e6:g}s: aborting it", **proc.where)
            proc.result = "watchdog"
            self.counters.watchdog_timeout(proc.unit.name)
            proc.cancel_timers("watchdog", "start")
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.main_pid, signal.SIGABRT)
            slot = proc.slot
            if slot is not None and proc is slot.proc and slot.state is not S.STOPPING:
                slot.enter(S.STOPPING)
            proc.timers["stop"] = self.loop.call_later(proc.unit.timeout_stop_sec,
                                                       lambda: self.stop_timeout(proc))

    def store_fds(self, service: Service, proc: Process, name: str, message: Message) -> None:
        kept = 0
        for fd in list(message.fds):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            key = (st.st_dev, st.st_ino)
            if any(k == key for _, _, k in service.fdstore):
                continue  # the same open file once is enough
            if len(service.fdstore) >= FDSTORE_MAX:
                self.log.warning(f"FDSTORE: the store holds {FDSTORE_MAX} descriptors already; "
                                 "closing the new ones", **proc.where)
                break
            message.fds.remove(fd)  # kept: not closed with the message
            service.fdstore.append((name, fd, key))
            kept += 1
        if kept:
            self.log.debug(f"stored {kept} descriptor(s) as '{name}'", **proc.where)

    def remove_fds(self, service: Service, name: str) -> None:
        keep = []
        for entry in service.fdstore:
            if entry[0] == name:
                os.close(entry[1])
            else:
                keep.append(entry)
        service.fdstore = keep


# ---------------------------------------------------------------------- helpers

def _close_on_exec_all(keep: set[int]) -> None:
    """Descriptors we inherited from whatever started us must not reach the services."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stat(pid: int) -> tuple[int, int, int] | None:
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


def _descendants() -> list[int]:
    """Every process below us (subreaper mode, where kill(-1) would reach the whole machine)."""
    me = os.getpid()
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None:
                children.setdefault(fields[0], []).append(int(entry))
    result, todo = [], [me]
    while todo:
        for child in children.get(todo.pop(), ()):
            result.append(child)
            todo.append(child)
    return result


def _become_subreaper(log: Log) -> None:
    import ctypes

    PR_SET_CHILD_SUBREAPER = 36
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
        log.info("not PID 1: acting as child subreaper, so orphans of the services come to "
                 "activator and are reaped")
    except (OSError, AttributeError) as e:
        log.warning(f"not PID 1 and cannot become a child subreaper ({e}): orphans of the "
                    "services go to PID 1")
