"""Reload (SIGHUP) and rolling restart (SIGUSR2), applied as a diff while the loop runs.

A reload is all or nothing up to the point where it changes something:

1. Every unit file is loaded and validated into a new Model, in a child process (loading.py)
   whose answer is one more reader of the loop. Any error: every error is logged as
   `activator check` prints it, the reload is refused, and nothing changes.
2. Sockets that are new, or whose address changed, are bound. Any bind failure: what was
   just bound is closed, the reload is refused, nothing changes.
3. Only then is the plan (reloadplan.py) carried out: removed units are stopped, then their
   sockets closed; new units start like at boot (dependencies first); changed units are
   restarted by the replacer (rolling.py); unchanged units with `reload_signal` get it.

A socket whose spec did not change is never closed. The reload is finished once nothing it
started is on its way any more; the manager then records its outcome (`outcome`, `errors`).
"""

from __future__ import annotations

import os
import signal

from activator import loading
from activator import model as model_
from activator.reloadplan import open_sockets, plan_sockets, plan_units
from activator.rolling import Replacer
from activator.service import Service, Slot
from activator.sockets import BindError
from activator.states import P, S
from activator.supervisor import Listener, Supervisor

LOAD_TIMEOUT = 60.0  # seconds the unit file loader may take before the reload is refused


class Reloader(Listener):
    def __init__(self, supervisor: Supervisor, command: str, environ: dict, explicit_dirs: bool,
                 main: model_.Unit | None):
        self.supervisor = supervisor
        self.log = supervisor.log
        self.loop = supervisor.loop
        self.command = command  # "reload" or "restart"
        self.environ = environ
        self.explicit_dirs = explicit_dirs
        self.main = main  # `-- CMD`, kept across reloads
        self.replacer = Replacer(supervisor)
        self.removing: set[str] = set()
        self.finished = False
        self.outcome: str | None = None  # "applied", "partial" or "refused"
        self.loader_fd = -1  # while the unit files are being read in a child process
        self.loaded: list[bytes] = []
        self.clients: list = []  # control-socket clients waiting for the outcome

    @property
    def errors(self) -> list[str]:
        return self.replacer.errors

    # ------------------------------------------------------------------ begin

    def begin(self) -> None:
        sup = self.supervisor
        if self.command == "restart":
            self.log.info("rolling restart of every running unit (SIGUSR2)")
            for service in list(sup.services.values()):
                if self.restartable(service):
                    self.replacer.replace(service, service.unit)
            return
        self.log.info("reloading unit files")
        try:
            self.loader_pid, self.loader_fd = loading.start(list(sup.model.directories), self.environ,
                                                            self.explicit_dirs)
        except OSError as e:
            self.refuse([f"cannot start the unit file loader: {e.strerror}"])
            return
        self.loop.add_reader(self.loader_fd, self.read_loader)
        self.loader_timer = self.loop.call_later(LOAD_TIMEOUT, self.loader_timeout)

    @staticmethod
    def restartable(service: Service) -> bool:
        return (service.phase is P.ACTIVE and not service.unit.accepts
                and any(slot.proc is not None for slot in service.slots))

    def read_loader(self) -> None:
        """The loader's answer, a chunk at a time; at its end, refuse or apply."""
        try:
            chunk = os.read(self.loader_fd, 1 << 16)
        except BlockingIOError:
            return
        if chunk:
            self.loaded.append(chunk)
            return
        self.close_loader()
        try:
            model = loading.result(b"".join(self.loaded))
            if self.main is not None:
                model = model_.with_main(model, self.main)
        except model_.UnitsError as e:
            for problem in e.problems:
                (self.log.warning if problem.warning else self.log.error)(str(problem))
            self.refuse([str(p) for p in e.errors])
            return
        except loading.LoadFailed as e:
            self.log.error(str(e))
            self.refuse([str(e)])
            return
        self.load(model)
        self.supervisor.on_change()  # new units start, status.json shows the new model

    def loader_timeout(self) -> None:
        self.log.error(f"the unit files took more than {LOAD_TIMEOUT:g}s to load")
        try:
            os.kill(self.loader_pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.close_loader()
        self.refuse([f"the unit files took more than {LOAD_TIMEOUT:g}s to load"])

    def close_loader(self) -> None:
        self.loop.remove_reader(self.loader_fd)
        os.close(self.loader_fd)
        self.loader_fd = -1
        self.loader_timer.cancel()

    def refuse(self, errors: list[str], why: str | None = None) -> None:
        why = why or f"{len(errors)} error{'s' * (len(errors) != 1)} in the unit files"
        self.log.error(f"reload refused: {why}; nothing changed")
        self.errors[:] = errors
        self.finish("refused")

    # ------------------------------------------------------------------ apply

    def load(self, model: model_.Model) -> None:
        sockets = self.supervisor.sockets
        plan = plan_sockets(open_sockets({n: s.spec for n, s in sockets.items()}), model)
        fresh = {}
        for spec in plan.fresh:
            try:
                fresh[spec.name] = sockets.bind(spec)
            except BindError as e:
                self.log.error(str(e))
                for sock in fresh.values():
                    sock.close()
                self.refuse([str(e)], "a socket cannot be bound")
                return
        self.supervisor.adopt(model)
        retired = self.apply_sockets(plan, fresh)
        self.replacer.rebinding = dict(plan.rebinding)
        self.apply_units(model, plan_units(self.supervisor.services, model, plan.rebinding))
        self.close_unused_sockets(model, retired)

    def apply_sockets(self, plan, fresh: dict) -> list:
        """Renamed ones moved, new ones in, changed options adjusted."""
        sockets, loop = self.supervisor.sockets, self.loop
        moved = {name: sockets.pop(old_name) for name, old_name in plan.renamed.items()}
        for name, sock in moved.items():  # all taken out first: names may be swapped
            loop.remove_reader(sock.fd)  # its unit watches it again under the new name
            sockets.put(name, sock)
            self.log.info(f"socket {plan.renamed[name]} is now named {name}")
        for spec in plan.adjusted:
            sockets.get(spec.name).adjust(spec)
            if spec.name not in plan.renamed:
                self.log.info(f"socket {spec.name}: options adjusted in place")
        for spec in plan.kept:
            sockets.get(spec.name).spec = spec
        retired = []  # a new address for a name: the old socket closes once nothing holds it
        for name, sock in fresh.items():
            if sockets.get(name) is not None:
                retired.append(sockets.get(name))
            sockets.put(name, sock)
        return retired

    def apply_units(self, model: model_.Model, plan) -> None:
        sup = self.supervisor
        for name in plan.removed:
            self.remove(sup.services[name])
        for name in plan.added:
            sup.add_service(model.units[name])
            self.replacer.adding.add(name)
            self.log.info("new unit", unit=name)
        for name in plan.rescaled:
            sup.services[name].scaled = None  # the files say again how many
            self.replacer.rescale(sup.services[name], model.units[name])
        for name in plan.restarted:
            self.log.info("changed: restarting", unit=name)
            sup.services[name].scaled = None
            self.replacer.replace(sup.services[name], model.units[name])
        for name in plan.unchanged:
            service = sup.services[name]
            service.unit = model.units[name]
            for slot in service.slots:
                slot.unit = service.unit
            if service.unit.reload_signal:
                self.send_reload_signal(service)
        for name in plan.revived:
            self.revive(sup.services[name])

    def close_unused_sockets(self, model: model_.Model, retired: list) -> None:
        sup, sockets = self.supervisor, self.supervisor.sockets
        for sock in retired:
            if not sockets.holds(sock):
                self.loop.remove_reader(sock.fd)
                sock.close()
        held = {s.name for svc in sup.services.values() for s in svc.unit.sockets}
        for name in [n for n, _ in sockets.items() if n not in model.sockets and n not in held]:
            sock = sockets.pop(name)
            self.loop.remove_reader(sock.fd)
            sock.close()

    def remove(self, service: Service) -> None:
        self.log.info("removed from the unit files: stopping", unit=service.name)
        self.removing.add(service.name)
        self.supervisor.stop_service(service)

    def revive(self, service: Service) -> None:
        """A unit failed only because something it requires failed: try it again."""
        service.failure = None
        service.enter(P.PENDING)
        for slot in service.slots:
            slot.enter(S.STARTING)
            slot.starts.clear()
        self.replacer.adding.add(service.name)

    def send_reload_signal(self, service: Service) -> None:
        for proc in service.processes():
            if not proc.exited and proc.stop_reason is None:
                try:
                    os.kill(proc.main_pid, service.unit.reload_signal)
                    proc.reload_signalled = service.unit.reload_signal
                    self.log.info("sent reload_signal", **proc.where)
                except ProcessLookupError:
                    pass

    # ------------------------------------------------------------------ what it hears

    def candidate_ready(self, slot: Slot, proc) -> None:
        self.replacer.candidate_ready(slot, proc)

    def candidate_failed(self, slot: Slot) -> None:
        self.replacer.candidate_failed(slot)

    def service_down(self, service: Service) -> None:
        """A removed unit is down: forget it and close the sockets no one else names."""
        sup = self.supervisor
        if service.name not in self.removing or sup.services.get(service.name) is not service:
            return
        del sup.services[service.name]
        service.fdstore.close()
        for spec in service.unit.sockets:
            if spec.name not in sup.model.sockets and spec.name in sup.sockets:
                sock = sup.sockets.pop(spec.name)
                self.loop.remove_reader(sock.fd)
                sock.close()
        self.removing.discard(service.name)
        sup.on_change()

    # ------------------------------------------------------------------ progress

    def advance(self) -> None:
        """Called after every change: finish the reload once nothing it started is pending."""
        if self.finished or self.loader_fd >= 0:
            return
        self.replacer.advance()
        if self.removing or self.replacer.busy():
            return
        self.finish("partial" if self.errors else "applied")

    def finish(self, outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.outcome = outcome
        what = "rolling restart" if self.command == "restart" else "reload"
        generation = self.supervisor.generation
        if outcome == "applied":
            self.log.info(f"{what} done (generation {generation})")
        elif outcome == "partial":
            self.log.warning(f"{what} done with errors (generation {generation})")
        self.supervisor.on_change()

