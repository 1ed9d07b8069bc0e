"""The dependency graph while units run: who may start, who fails with whom, who stops when.

Pure functions over the services (service.py): they read states and return answers; the
manager acts on them. `requires` starts after and fails with; `wants` starts after (or after a
failure) without failing; `after` only orders. Shutdown runs the graph backwards.
"""

from __future__ import annotations

import enum

from activator.model import Unit
from activator.states import P, S


class Start(enum.Enum):
    NOW = "now"  # every dependency is started (or failed, for wants/after)
    WAIT = "wait"  # a dependency is not started yet
    FAIL = "fail"  # a required unit failed for good


def ordering(unit: Unit) -> tuple[str, ...]:
    """Every unit this one starts after."""
    return (*unit.requires, *unit.wants, *unit.after)


def may_start(service, services: dict) -> tuple[Start, str | None]:
    """Whether a pending `service` may start now; with FAIL, the required unit that failed."""
    unit = service.unit
    for name in ordering(unit):
        dep = services.get(name)
        if dep is None or dep is service:
            continue
        if dep.state is S.FAILED:
            if name in unit.requires:
                return Start.FAIL, name
            continue
        if dep.state is S.STOPPED and name not in unit.requires:
            continue  # stopped by command: it orders nothing until started again
        if not dep.started:
            return Start.WAIT, None
    return Start.NOW, None


def requiring(name: str, services: dict) -> list:
    """The services that require `name` and could still run: they fail with it."""
    return [s for s in services.values()
            if name in s.unit.requires and s.phase not in (P.FAILED, P.STOPPING)]


def requirers(name: str, services: dict) -> list:
    """Every service that requires `name`, in no particular state."""
    return [s for s in services.values() if name in s.unit.requires and s.name != name]


def ready_to_stop(services: dict) -> list:
    """Shutdown: the services not stopping yet whose dependents (whatever needs them, wants
    them or comes after them) are all stopped and gone."""
    held: set[str] = set()  # names some running dependent still orders itself after
    for dependent in services.values():
        if not dependent.down:
            held.update(name for name in ordering(dependent.unit) if name != dependent.name)
    return [s for s in services.values() if s.phase is not P.STOPPING and s.name not in held]


def all_down(services: dict) -> bool:
    return all(s.down for s in services.values())
