"""What a reload changes, worked out before anything is changed: pure functions, no I/O.

Sockets first (`plan_sockets`): an address that is open already keeps its open socket, under
whatever name the new files give it (a renamed socket, or two that swapped addresses); a new
address is bound (`fresh`) before the old socket of that name is closed; a socket whose
address stays but whose bind options changed (reuse_port, ipv6_only) cannot coexist with its
old self: its unit is stopped, the socket rebound, the unit started (`rebinding`); other
changed options are adjusted in place.

Then units (`plan_units`), by fingerprint: removed, added, restarted (any change of what its
files mean, or a socket to rebind), rescaled (only `instances` changed: instances are added or
stopped, the rest keep running), unchanged (with `reload_signal`: signalled).
"""

from __future__ import annotations


from activator.record import Record
from activator.model import Model, Socket
from activator.states import P, S


class OpenSocket(Record):
    """What the plan needs to know of a socket that is open now."""
    bind_key: tuple
    listen: object
    fingerprint: object


class SocketPlan(Record):
    renamed: dict  # new name -> old name of the same open socket
    fresh: list  # specs to bind now
    rebinding: dict  # unit name -> specs to bind again once the unit is down
    adjusted: list  # specs whose open socket takes new options in place
    kept: list  # specs whose open socket stays as it is


class UnitPlan(Record):
    removed: list
    added: list
    restarted: list
    rescaled: list
    unchanged: list
    revived: list  # failed only because a unit they require failed: tried again


def plan_sockets(open_sockets: dict[str, OpenSocket], model: Model) -> SocketPlan:
    by_address = {s.bind_key: name for name, s in open_sockets.items()}
    renamed, fresh, rebinding, adjusted, kept = {}, [], {}, [], []
    for name, spec in model.sockets.items():
        owner = by_address.pop(spec.bind_key, None)
        old = open_sockets.get(name)
        if owner is not None:
            if owner != name:
                renamed[name] = owner
                if open_sockets[owner].fingerprint != spec.fingerprint:
                    adjusted.append(spec)
                else:
                    kept.append(spec)
            elif old.fingerprint != spec.fingerprint:
                adjusted.append(spec)
            else:
                kept.append(spec)
        elif old is not None and old.listen == spec.listen:
            rebinding.setdefault(spec.unit, []).append(spec)  # same address, other bind options
        else:
            fresh.append(spec)
    return SocketPlan(renamed, fresh, rebinding, adjusted, kept)


def plan_units(services: dict, model: Model, rebinding: dict) -> UnitPlan:
    removed = [name for name in services if name not in model.units]
    added, restarted, rescaled, unchanged, revived = [], [], [], [], []
    for name, unit in model.units.items():
        service = services.get(name)
        if service is None:
            added.append(name)
            continue
        if service.phase is P.STOPPING:
            continue  # being removed by an earlier reload
        old = service.unit
        changed = old.fingerprint != unit.fingerprint
        gave_up = any(slot.state is S.FAILED and slot.proc is None for slot in service.slots)
        if changed and not gave_up and name not in rebinding and (
                old.replace(instances=unit.instances).fingerprint == unit.fingerprint):
            rescaled.append(name)
        elif changed or name in rebinding:
            restarted.append(name)
        else:
            unchanged.append(name)
        if name not in restarted and (service.failure or "").startswith("required unit"):
            revived.append(name)
    return UnitPlan(removed, added, restarted, rescaled, unchanged, revived)


def open_sockets(specs: dict[str, Socket]) -> dict[str, OpenSocket]:
    """The plan's view of the open sockets, from their current specs."""
    return {name: OpenSocket(s.bind_key, s.listen, s.fingerprint) for name, s in specs.items()}
