"""Per-unit control (SPEC §8): start, stop, restart, signal and scale one unit at a time.

Each command that changes units is an operation, run by the manager one at a time, like a
reload: while one runs, a reload waits for it, and the reverse, so no unit is ever restarted
by both at once. An operation starts its work in `begin`, is told after every change
(`advance`) and says when it is `finished`, with the reply for its client. It hears of
replacements through the supervisor's Listener, like a reload.

As systemd does for explicit requests: `stop X` first stops the units that require X;
`restart X` restarts them once X is started again, in dependency order; `start X` also starts
the units X requires that are stopped, failed or exited. A crash of X keeps the usual rules.
"""

from __future__ import annotations

import os
import signal as signals

from activator import dependencies
from activator.log import rfc3339
from activator.rolling import Replacer, Roll
from activator.service import Service
from activator.states import AT_REST, P, S, StopReason
from activator.supervisor import Listener, Supervisor


class Refused(Exception):
    """The request cannot be carried out: the message says why (exit status 1)."""


def parse_target(supervisor: Supervisor, text) -> tuple[Service, int | None]:
    """`UNIT` or `UNIT.N` (a unit whose own name has a dot wins over an instance number)."""
    if not isinstance(text, str) or not text:
        raise Refused(f"expected a unit name, got {text!r}")
    services = supervisor.services
    if text in services:
        return services[text], None
    name, _, number = text.rpartition(".")
    if name in services and number.isdigit():
        service = services[name]
        if not 1 <= int(number) <= len(service.slots):
            raise Refused(f"unit {name} has no instance {number} (it runs {len(service.slots)})")
        return service, int(number)
    raise Refused(f"no unit named {text!r}")


def targets(supervisor: Supervisor, request: dict, instances: bool) -> list[tuple[Service, int | None]]:
    units = request.get("units")
    if not isinstance(units, list) or not units:
        raise Refused("expected \"units\": a list of unit names")
    found = [parse_target(supervisor, text) for text in units]
    if not instances and any(number is not None for _, number in found):
        raise Refused(f"{request['command']} takes whole units, not instances")
    return found


def halt(sup: Supervisor, service: Service) -> None:
    """`activator stop`: every process stopped, and the unit kept stopped until started."""
    service.enter(P.STOPPED)
    sup.unwatch(service)
    sup.stop_slots([*service.slots, *service.leaving])
    for slot in service.slots:
        if not any(True for _ in slot.processes()):
            slot.enter(S.STOPPED)
    for proc in list(service.connections.values()):
        sup.control.stop(proc, StopReason.STOP)
    service.changed()


def stopped(service: Service) -> bool:
    """Stopped (by command, or for good) and no process of it left."""
    return service.phase in (P.STOPPED, P.STOPPING) and not service.has_processes()


def resume(sup: Supervisor, service: Service) -> None:
    """`activator start`: the unit starts again as at boot, its start limit reset."""
    if service.phase is P.ACTIVE:  # some instances at rest, the others running
        for slot in service.slots:
            if slot.state in AT_REST and slot.proc is None:
                slot.reset(slot.unit)
                sup.start_slot(slot)
        return
    service.failure = None
    service.enter(P.PENDING)
    for slot in service.slots:
        slot.reset(slot.unit)
        if slot.proc is None:
            slot.enter(S.STARTING)


def send_signal(sup: Supervisor, request: dict) -> dict:
    """`activator signal UNIT[.N] SIGNAL [--group]`: only to processes of activator's units."""
    if len(request.get("units") or []) != 1:
        raise Refused("signal takes one unit (or instance)")
    service, number = parse_target(sup, request["units"][0])
    name = str(request.get("signal", ""))
    try:
        signum = signals.Signals[name if name.startswith("SIG") else f"SIG{name}"] \
            if not name.isdigit() else signals.Signals(int(name))
    except (KeyError, ValueError):
        raise Refused(f"unknown signal {name!r}") from None
    procs = [s.proc for s in service.slots if s.proc is not None and (number is None or s.number == number)]
    procs += list(service.connections.values()) if number is None else []
    sent = []
    for proc in procs:
        if proc.exited:
            continue
        try:
            if request.get("group"):
                os.killpg(proc.pgid, signum)
            else:
                os.kill(proc.main_pid, signum)
            sent.append(proc.main_pid)
        except ProcessLookupError:
            pass
    if not sent:
        raise Refused(f"unit {service.name} has no running process to signal")
    sup.log.info(f"sent {signum.name} to {'the process group of ' if request.get('group') else ''}"
                 f"pid {', '.join(map(str, sent))} (activator signal)", unit=service.name)
    return {"ok": True, "signalled": sent, "signal": signum.name}


class Operation(Listener):
    """One command that changes units, from `begin` to `finished`."""

    def __init__(self, supervisor: Supervisor, client, request: dict):
        self.supervisor = supervisor
        self.client = client
        self.request = request
        self.replacer = Replacer(supervisor)
        self.finished = False
        self.reply: dict = {"ok": True}

    def candidate_ready(self, slot, proc) -> None:
        self.replacer.candidate_ready(slot, proc)

    def candidate_failed(self, slot) -> None:
        self.replacer.candidate_failed(slot)

    def finish(self, **reply) -> None:
        self.finished = True
        self.reply.update(reply)
        if self.replacer.errors:
            self.reply.update(ok=False, error="; ".join(self.replacer.errors))


class Stop(Operation):
    def begin(self) -> None:
        services = self.supervisor.services
        chosen = [s for s, _ in targets(self.supervisor, self.request, instances=False)]
        self.todo = {s.name: s for s in chosen}
        queue = list(chosen)
        while queue:  # whatever requires a unit to stop is stopped first
            for other in dependencies.requirers(queue.pop().name, services):
                if other.name not in self.todo and other.phase not in (P.STOPPED, P.STOPPING):
                    self.todo[other.name] = other
                    queue.append(other)
        self.names = [s.name for s in chosen]

    def advance(self) -> None:
        sup = self.supervisor
        for service in self.todo.values():
            if service.phase in (P.STOPPED, P.STOPPING):
                continue
            if all(stopped(r) for r in dependencies.requirers(service.name, self.todo)):
                halt(sup, service)
        if all(stopped(s) for s in self.todo.values()):
            also = sorted(set(self.todo) - set(self.names))
            self.finish(stopped=self.names, also_stopped=also)


class Start(Operation):
    def begin(self) -> None:
        sup = self.supervisor
        self.chosen = [s for s, _ in targets(sup, self.request, instances=False)]
        queue, seen = list(self.chosen), set()
        while queue:  # what it requires and is not running starts too
            service = queue.pop()
            if service.name in seen:
                continue
            seen.add(service.name)
            if service.state in AT_REST or service.phase in (P.STOPPED, P.FAILED):
                resume(sup, service)
            queue += [sup.services[n] for n in service.unit.requires if n in sup.services]

    def advance(self) -> None:
        failed = [s.name for s in self.chosen if s.state is S.FAILED]
        waiting = [s for s in self.chosen if not s.started and s.state is not S.FAILED]
        if waiting:
            return
        if failed:
            self.finish(ok=False, error=f"failed to start: {', '.join(failed)}")
        else:
            self.finish(started=[s.name for s in self.chosen])


class Restart(Operation):
    def begin(self) -> None:
        self.chosen = targets(self.supervisor, self.request, instances=True)
        self.done: set[str] = set()
        by_unit: dict[str, tuple[Service, set]] = {}
        for service, number in self.chosen:
            numbers = by_unit.setdefault(service.name, (service, set()))[1]
            numbers.add(number)
        self.stage = [self.restart(service, None if None in numbers else sorted(numbers))
                      for service, numbers in by_unit.values()]

    def restart(self, service: Service, numbers: list[int] | None) -> Service:
        """Restart the unit (or these instances of it) as a reload would a changed unit."""
        sup = self.supervisor
        self.done.add(service.name)
        if service.unit.accepts:  # the running connections end; new ones get the unit anew
            for proc in list(service.connections.values()):
                sup.control.stop(proc, StopReason.STOP)
            if service.phase is not P.ACTIVE:
                resume(sup, service)
        elif service.phase is not P.ACTIVE:
            resume(sup, service)
        elif numbers is None:
            self.replacer.replace(service, service.unit)
        elif len(service.slots) > 1:
            roll = Roll(service, service.unit, numbers)
            self.replacer.rolls[service.name] = roll
            self.replacer.roll_next(roll)
        else:
            self.replacer.restart_slot(service.slots[0], service.unit)
            self.replacer.restarting.add(service.name)
        return service

    def advance(self) -> None:
        self.replacer.advance()
        if self.replacer.busy() or any(not s.started and s.state is not S.FAILED for s in self.stage):
            return  # each one started again (ready), or failed for good
        services = self.supervisor.services
        following = [d for s in self.stage for d in dependencies.requirers(s.name, services)
                     if d.name not in self.done and d.phase is P.ACTIVE]
        if following:  # the units that require these, once these are started again
            self.stage = [self.restart(d, None) for d in {d.name: d for d in following}.values()]
            return
        failed = [s.name for s, _ in self.chosen if s.state is S.FAILED]
        if failed:
            self.finish(ok=False, error=f"failed to start again: {', '.join(failed)}")
        else:
            self.finish(restarted=[s.name if n is None else f"{s.name}.{n}" for s, n in self.chosen],
                        also_restarted=sorted(self.done - {s.name for s, _ in self.chosen}))


class Scale(Operation):
    def begin(self) -> None:
        service, number = parse_target(self.supervisor, self.request.get("unit"))
        count = self.request.get("instances")
        if number is not None or service.unit.accepts:
            raise Refused("scale takes a unit with instances (not an instance, not an accept unit)")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 4096:
            raise Refused(f"expected \"instances\": a number from 1 to 4096, got {count!r}")
        self.service = service
        old = len(service.slots)
        service.scaled = count
        self.supervisor.log.info(f"instances: {old} -> {count} (activator scale)", unit=service.name)
        self.replacer.scale(service, service.unit, old)

    def advance(self) -> None:
        self.replacer.advance()
        if not self.replacer.busy():
            self.finish(unit=self.service.name, instances=len(self.service.slots),
                        in_files=self.service.unit.instances)


OPERATIONS = {"start": Start, "stop": Stop, "restart": Restart, "scale": Scale}


def logs(history, sup: Supervisor, client, request: dict) -> None:
    """`activator logs [UNIT[.N]...] [-n N] [-f]`: the last lines, then (follow) every new one
    until the client goes; a follower that stops reading is dropped (history.py)."""
    wanted = [parse_target(sup, text) for text in request.get("units") or []]
    lines = request.get("lines", 100)
    if not isinstance(lines, int) or isinstance(lines, bool) or lines < 0:
        raise Refused(f"expected \"lines\": a number of lines, got {lines!r}")
    names = [s.name for s, _ in wanted] or sorted(sup.services)
    numbers = {s.name: n for s, n in wanted if n is not None}

    def shown(unit: str, instance) -> bool:
        return unit not in numbers or numbers[unit] == instance

    def entry(unit, wall, stream, instance, text) -> dict:
        service = sup.services.get(unit)
        return {"time": rfc3339(wall), "unit": unit, "instance": instance, "stream": stream, "text": text,
                "label": service.label(instance) if service else unit}

    found = [(wall, unit, stream, instance, text) for unit in names
             for wall, stream, instance, text in history.recent(unit, lines) if shown(unit, instance)]
    found.sort(key=lambda line: line[0])
    client.reply({"ok": True, "lines": [entry(u, w, s, i, t) for w, u, s, i, t in found]},
                 done=not request.get("follow"))
    if not request.get("follow"):
        return

    def push():
        for unit, wall, stream, instance, text in follower.take():
            if shown(unit, instance):
                client.reply({"line": entry(unit, wall, stream, instance, text)}, done=False)
        if follower.dropped:
            client.server.close(client, "it does not read the lines it follows")

    follower = history.follow(names if wanted else None, on_data=push)
    client.on_close = follower.close
