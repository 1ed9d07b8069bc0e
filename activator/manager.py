"""The init: one single-threaded event loop around the supervisor.

Design
------
Everything happens on one thread, in `Manager.run`, around one `epoll` (loop.py):

- signals arrive as bytes on the wakeup pipe (signals.py) and become commands: reap, stop,
  status, reload, restart;
- SIGCHLD means "reap": the one reaper (reaper.py) returns what ended, and the supervisor
  (supervisor.py) decides what follows. Nothing else in activator ever waits for a child;
- the notify socket (notify.py, applied by notified.py), service output pipes (launcher.py),
  on-demand and accept sockets (sockets_watch.py) are readers;
- timers exist only for pending deadlines (a restart backoff, a stop or start timeout, a
  watchdog); with none pending, epoll waits forever: an idle activator never wakes.

After each batch of events the changes settle (`after_changes`): units whose dependencies are
now started start, units stopped for good are reported to a reload in progress, shutdown
advances, and status.json and the outer manager hear of it once (`publish`).

The calls go one way: the manager calls the supervisor and the reload; the supervisor calls
the process control, the launcher and the tables below it; what a lower part must tell a
higher one is returned, or left as a request the manager reads when changes settle (an exit
asked for by a unit's action, a reload's outcome).

PID 1 must not die of a bug: work for one unit runs under `Supervisor.guard`, which logs the
traceback, fails that unit and goes on. If the loop itself breaks, `fatal` stops every
process, reaps them and exits 1.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time

from activator import dependencies, log as logmod, reaper, resources, status
from activator.history import History
from activator.launcher import Launcher
from activator.log import Log, traceback_text
from activator.loop import Loop
from activator.model import Model
from activator.notified import NotifyApplier
from activator.control import ControlServer
from activator.counters import Counters
from activator.notify import NotifyServer
from activator.output import Relay
from activator.signals import SignalReceiver
from activator.sockets import SocketTable
from activator.states import S
from activator.supervisor import Listener, Supervisor

STALE_SECONDS = 1.0
SETTLE_ROUNDS = 100  # starting a unit can unblock the next one: settle up to this many times


class Manager:
    def __init__(self, model: Model, log: Log, runtime_dir: str, environ: dict | None = None,
                 command: list[str] | None = None, explicit_dirs: bool = True):
        self.log = log
        self.runtime_dir = runtime_dir
        self.environ = dict(os.environ if environ is None else environ)
        self.command = command  # `-- CMD`, kept across reloads
        self.explicit_dirs = explicit_dirs
        self.is_pid1 = os.getpid() == 1
        self.started_wall = time.time()
        self.loop = Loop()
        self.output = Relay(self.loop, log, History())
        self.sockets = SocketTable(self.environ)
        self.notify_path = os.path.join(runtime_dir, "notify")
        self.launcher = Launcher(self.output, self.environ, log, self.notify_path, self.is_pid1)
        self.counters = Counters()  # event counts for /metrics
        self.supervisor = Supervisor(model, self.loop, log, self.sockets, self.launcher, self.mark_dirty,
                                     self.counters, self.mark_stale)
        self.notified = NotifyApplier(self.supervisor)
        log.instances_of = self.instances_of
        self.signals: SignalReceiver | None = None
        self.notify: NotifyServer | None = None
        self.outer = None  # the manager that started us, when NOTIFY_SOCKET was set
        self.status_writer: status.StatusWriter | None = None
        self.operation = None  # the reload, rolling restart or unit command in progress
        # The ones waiting: ("reload" or "restart", [clients]), ("unit command", (client, request))
        self.queue: list[tuple] = []
        self.control: ControlServer | None = None
        self.reload_record: dict = {"requested": 0, "completed": 0, "outcome": None, "errors": [],
                                    "time": None, "generation": 1}
        self.announced_ready = False
        self.exit_code: int | None = None
        self.finished = False
        self.dirty = True
        self.stale_timer = None

    @property
    def services(self) -> dict:
        return self.supervisor.services

    def instances_of(self, name: str) -> int | None:
        service = self.services.get(name)
        return service.unit.instances if service else None

    def mark_dirty(self) -> None:
        self.dirty = True

    def mark_stale(self) -> None:
        """A change only status.json shows (an accept unit's connection counts): published
        within STALE_SECONDS rather than at once, so that a busy accept socket does not cost
        a status write per connection. The timer exists only while something is unpublished."""
        if self.stale_timer is None:
            self.stale_timer = self.loop.call_later(STALE_SECONDS, self.publish_stale)

    def publish_stale(self) -> None:
        self.stale_timer = None
        self.mark_dirty()

    # ------------------------------------------------------------------ boot

    def boot(self) -> None:
        """Bind every socket, then start the units. BindError leaves nothing running."""
        self.signals = SignalReceiver()
        self.loop.add_reader(self.signals.read_fd, self.handle_signals)
        if not self.is_pid1:
            why_not = reaper.become_subreaper()
            if why_not is None:
                self.log.info("not PID 1: acting as child subreaper, so orphans of the services "
                              "come to activator and are reaped")
            else:
                self.log.warning(f"not PID 1 and cannot become a child subreaper ({why_not}): "
                                 "orphans of the services go to PID 1")
        self.launcher.baseline = resources.settle(self.log)
        os.makedirs(self.runtime_dir, mode=0o755, exist_ok=True)
        _close_on_exec_all(keep=set(self.sockets.inherited.values()) | {self.launcher.devnull})
        model = self.supervisor.model
        self.sockets.bind_all(spec for unit in model.units.values() for spec in unit.sockets)
        self.notify = NotifyServer(self.notify_path)
        self.loop.add_reader(self.notify.fd, self.handle_notify)
        self.control = ControlServer(self.loop, self.runtime_dir, self.log, self.handle_control)
        if self.environ.get("NOTIFY_SOCKET"):
            from activator.outer import OuterManager
            self.outer = OuterManager(self.log)
        self.status_writer = status.StatusWriter(self.runtime_dir, self.log, self.loop)
        with open(os.path.join(self.runtime_dir, "activator.pid"), "w") as f:
            f.write(f"{os.getpid()}\n")
        for unit in model.units.values():
            self.supervisor.add_service(unit)
        self.log.info(f"started with {model.summary()}"
                      + ("" if self.is_pid1 else f" (pid {os.getpid()})"))
        for warning in model.warnings:
            self.log.warning(str(warning))
        self.supervisor.schedule()

    # ------------------------------------------------------------------ the loop

    def run(self) -> int:
        """Run until shutdown completes; the exit code of SPEC §7."""
        failures = 0
        while not self.finished:
            try:
                changed = False
                for _ in range(SETTLE_ROUNDS):
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
                self.log.error("internal error in the event loop:\n" + traceback_text())
                if failures >= 20:
                    return self.fatal()
        return self.exit_code if self.exit_code is not None else 0

    def after_changes(self) -> None:
        self.dirty = False
        sup = self.supervisor
        if sup.exit_request is not None and not sup.shutting_down:
            self.shutdown(*sup.exit_request)
        for service in list(self.services.values()):
            if service.down:
                sup.listener.service_down(service)
        if sup.shutting_down:
            self.advance_shutdown()
        if self.finished:
            return
        sup.schedule()
        sup.sockets_watch.close_failed(sup.services)
        if self.operation is not None:
            self.operation.advance()
            if self.operation.finished:
                self.operation_finished()

    def snapshot(self) -> dict:
        sup = self.supervisor
        return status.snapshot(self.services, self.sockets, sup.generation, self.started_wall,
                               self.reload_record)

    def publish(self) -> None:
        """Once the changes of an iteration have settled: status.json, the outer manager."""
        if self.stale_timer is not None:  # this write shows those changes too
            self.stale_timer.cancel()
            self.stale_timer = None
        self.status_writer.write(self.snapshot())
        if self.outer is not None:
            self.outer.update(self.services)
        if self.announced_ready or self.supervisor.shutting_down:
            return
        if all(s.started or s.state is S.FAILED for s in self.services.values()):
            self.announced_ready = True
            if self.outer is not None:
                self.outer.ready(self.services)

    def fatal(self) -> int:
        self.log.error("cannot go on: stopping every process")
        with contextlib.suppress(Exception):
            self.kill_everything()
        return 1

    # ------------------------------------------------------------------ signals

    def handle_signals(self) -> None:
        commands = self.signals.commands()
        if "reap" in commands:
            self.supervisor.reap()
        if "stop" in commands:
            if self.supervisor.shutting_down:
                self.log.info("already shutting down; finishing the clean-up")
            else:
                self.shutdown(0, "stop signal received")
        if "status" in commands:
            self.print_status()
        for command in ("reload", "restart"):
            if command in commands and not self.supervisor.shutting_down:
                self.request(command)

    def print_status(self) -> None:
        """SIGUSR1: the table of `activator status`, CPU and memory included, on stderr. A
        child writes it: measuring takes a moment and psutil, neither of which PID 1 should
        spend; the child is reaped like any orphan."""
        data = self.snapshot()
        if os.fork() == 0:
            try:
                signal.set_wakeup_fd(-1)
                status.add_usage(data)
                logmod.write_all(2, status.table(data).encode())
            finally:
                os._exit(0)

    def handle_notify(self) -> None:
        self.notified.handle(self.notify.receive())

    # ------------------------------------------------------------------ operations

    def request(self, command: str, client=None) -> None:
        """A reload ("reload") or rolling restart ("restart"). Operations run one at a time;
        a request for one already waiting joins it, so a burst runs once afterwards."""
        for entry in self.queue:
            if entry[0] == command:
                if client is not None:
                    entry[1].append(client)
                return
        self.queue.append((command, [client] if client is not None else []))
        self.begin_next()

    def begin_next(self) -> None:
        from activator.commands import OPERATIONS, Refused
        from activator.reload import Reloader

        while self.operation is None and self.queue and not self.supervisor.shutting_down:
            kind, waiting = self.queue.pop(0)
            if kind in ("reload", "restart"):
                self.reload_record["requested"] += 1
                if self.outer is not None:
                    self.outer.reloading()
                main = self.supervisor.model.units.get("main") if self.command is not None else None
                operation = Reloader(self.supervisor, kind, self.environ, self.explicit_dirs, main)
                operation.clients += waiting
            else:  # ("unit command", (client, request))
                client, request = waiting
                operation = OPERATIONS[request["command"]](self.supervisor, client, request)
            self.operation = operation
            self.supervisor.listener = operation
            try:
                operation.begin()
            except Refused as e:
                self.operation, self.supervisor.listener = None, Listener()
                client.reply({"ok": False, "error": str(e)})
            self.mark_dirty()

    def operation_finished(self) -> None:
        operation, self.operation = self.operation, None
        self.supervisor.listener = Listener()
        if not hasattr(operation, "client"):  # a reload or rolling restart
            self.reload_finished(operation)
        else:
            operation.client.reply(operation.reply)
        self.mark_dirty()
        self.begin_next()

    def reload_finished(self, reloader) -> None:
        self.counters.reload_finished(reloader.command, reloader.outcome)
        self.reload_record.update(completed=self.reload_record["completed"] + 1,
                                  outcome=reloader.outcome, errors=reloader.errors,
                                  time=logmod.rfc3339(), generation=self.supervisor.generation)
        what = "rolling restart" if reloader.command == "restart" else "reload"
        if self.outer is not None:
            self.outer.reloaded(f"{what} {reloader.outcome}")
        for client in reloader.clients:
            client.reply({"ok": reloader.outcome == "applied", "outcome": reloader.outcome,
                          "generation": self.supervisor.generation, "errors": reloader.errors})

    def handle_control(self, client, request: dict) -> None:
        """A request on the control socket (control.py; the commands are in commands.py)."""
        from activator import commands

        command = request["command"]
        try:
            if command == "status":
                client.reply({"ok": True, "status": self.status_of(request.get("units"))})
            elif command == "signal":
                client.reply(commands.send_signal(self.supervisor, request))
            elif command == "logs":
                commands.logs(self.output.history, self.supervisor, client, request)
            elif self.supervisor.shutting_down:
                raise commands.Refused("activator is shutting down")
            elif command in ("reload", "restart-all"):
                self.request("reload" if command == "reload" else "restart", client)
            elif command in commands.OPERATIONS:
                self.queue.append(("unit command", (client, request)))
                self.begin_next()
            else:
                raise commands.Refused(f"unknown command {command!r}")
        except commands.Refused as e:
            client.reply({"ok": False, "error": str(e)})

    def recent_output(self, unit: str, lines: int) -> list[dict]:
        """The last `lines` lines `unit` wrote (for the dashboard), oldest first."""
        return [{"time": logmod.rfc3339(wall), "stream": stream, "instance": instance, "text": text}
                for wall, stream, instance, text in self.output.history.recent(unit, lines)]

    def status_of(self, units) -> dict:
        data = self.snapshot()
        if units:
            unknown = [u for u in units if u not in data["units"]]
            if unknown:
                from activator.commands import Refused
                raise Refused(f"no unit named {', '.join(map(repr, unknown))}")
            data["units"] = {name: data["units"][name] for name in units}
        return data

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, code: int, why: str) -> None:
        if self.supervisor.shutting_down:
            return
        self.supervisor.begin_shutdown()
        self.exit_code = code
        self.log.info(f"shutting down: {why}")
        if self.outer is not None:
            self.outer.stopping()
        self.advance_shutdown()
        self.mark_dirty()

    def advance_shutdown(self) -> None:
        """Stop units in reverse dependency order: a unit once nothing that needs it runs."""
        for service in dependencies.ready_to_stop(self.services):
            self.supervisor.stop_service(service)
        if dependencies.all_down(self.services):
            self.finish_shutdown()

    def finish_shutdown(self) -> None:
        if self.finished:
            return
        self.kill_everything()
        for service in self.services.values():
            service.fdstore.close()
        self.sockets.close_all()
        if self.control is not None:
            self.control.close_all()
        if self.notify is not None:
            self.notify.close()
        # Nothing of this run may look alive to the next one: `status` would call it stale.
        for name in ("activator.pid", status.STATUS_FILE):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.runtime_dir, name))
        self.log.info(f"exiting with status {self.exit_code}")
        self.finished = True

    def kill_everything(self) -> None:
        """SIGKILL every process left (daemonized orphans included), then reap them all."""
        wakeup = self.signals.read_fd if self.signals is not None else -1
        if not reaper.kill_everything(self.is_pid1, wakeup):
            self.log.warning("some processes could not be reaped")


def _close_on_exec_all(keep: set[int]) -> None:
    """Descriptors we inherited from whatever started us must not reach the services."""
    for entry in os.listdir("/proc/self/fd"):
        fd = int(entry)
        if fd > 2 and fd not in keep:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
