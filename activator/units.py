"""Unit files → one validated, immutable `Model` of the whole stack (model.py).

Loading is all-or-nothing: every file of every directory is read and checked, every problem
is collected (`FILE:LINE: unit NAME: message`), and only a stack without errors becomes a
Model. Nothing in here binds, starts or changes anything, so `activator check`, boot and
reload share it. PID 1 runs it in a child process (loading.py), so that the parser and its
validators never take room in the init, and a bug in them cannot take the init down.

The rooms: discovery.py finds the files, unitkeys.py holds the key tables and converters,
unitfile.py reads one unit, and this module loads them all and checks across units.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

from activator import observed
from activator.discovery import directories, discover
from activator.model import Location, Model, Problem, Socket, UnitsError
from activator.unitfile import UnitReader
from activator.yamlsource import SourceError

def load_observed(dirs: list[str], environ: Mapping[str, str], explicit: bool) -> tuple[Model, dict]:
    """`load`, and every outside fact it consulted (observed.py): what the model cache keeps
    beside the Model, to tell later whether loading again would give the same one."""
    with observed.recording() as facts:
        model = load(dirs, observed.Environ(environ), explicit)
    return model, facts


def load(dirs: list[str] | None = None, environ: Mapping[str, str] | None = None,
         explicit: bool | None = None) -> Model:
    """Read every unit of `dirs` into a Model, or raise UnitsError with every problem."""
    environ = os.environ if environ is None else environ
    if dirs is None or explicit is None:
        dirs, explicit = directories(dirs, environ)
    found = discover(dirs, explicit)
    problems = found.problems
    for name, files in sorted(found.dropins.items()):
        if name not in found.units:
            first = files[sorted(files)[0]]
            problems.append(Problem(Location(first, 1), name,
                                    f"drop-in for a unit that does not exist (no {name}.yaml in "
                                    f"{', '.join(dirs)})"))

    env_files: dict[str, dict | SourceError] = {}  # read once, however many units name them
    readers: dict[str, UnitReader] = {}
    for name, path in sorted(found.units.items()):
        reader = UnitReader(name, path, environ, problems, env_files)
        dropins = found.dropins.get(name, {})
        if reader.read([dropins[k] for k in sorted(dropins)]):
            readers[name] = reader
    known = set(found.units)
    for reader in readers.values():
        reader.build(known)
    _check_across_units(readers, problems)
    layers = _layers(readers, problems)
    if any(not p.warning for p in problems):
        raise UnitsError(problems)
    units = {name: reader.unit for name, reader in readers.items()}
    return Model(MappingProxyType(units), layers, tuple(problems), tuple(dirs))


# --------------------------------------------------------------------------- across units

def _check_across_units(readers: dict[str, UnitReader], problems: list[Problem]) -> None:
    """Socket names are global, and no two sockets may take the same address."""
    by_name: dict[str, Socket] = {}
    by_address: dict[tuple, list[Socket]] = {}  # only sockets that could collide share a key
    for name in sorted(readers):
        for socket in readers[name].sockets:
            other = by_name.get(socket.name)
            if other is None:
                by_name[socket.name] = socket
            elif other.unit == socket.unit:
                problems.append(Problem(socket.where, socket.unit,
                                        f"sockets.{socket.key}: the name '{socket.name}' is also "
                                        f"the name of socket '{other.key}' ({other.where})"))
            else:
                problems.append(Problem(socket.where, socket.unit,
                                        f"sockets.{socket.key}: the name '{socket.name}' is also "
                                        f"used by unit {other.unit} ({other.where}); socket names "
                                        "are global"))
            listen = socket.listen
            key = (listen.kind, listen.port) if listen.is_inet else ("path", listen.path)
            for earlier in by_address.setdefault(key, []):
                both_reuse = socket.reuse_port and earlier.reuse_port  # SO_REUSEPORT: shared on purpose
                if not both_reuse and listen.conflicts_with(earlier.listen, socket.ipv6_only,
                                                            earlier.ipv6_only):
                    owner = "this unit" if earlier.unit == socket.unit else f"unit {earlier.unit}"
                    problems.append(Problem(socket.where, socket.unit,
                                            f"sockets.{socket.key}: {listen} collides with "
                                            f"{earlier.listen}, socket '{earlier.key}' of {owner} "
                                            f"({earlier.where})"))
                    break
            by_address[key].append(socket)


def _layers(readers: dict[str, UnitReader], problems: list[Problem]) -> tuple[tuple[str, ...], ...]:
    """Start order by levels (Kahn's algorithm): a unit comes after everything it requires,
    wants or is after. Each dependency cycle is reported once, with the cycle printed."""
    deps = {name: {d for ds in r.dependencies.values() for d in ds if d in readers and d != name}
            for name, r in readers.items()}
    placed: set[str] = set()
    remaining = dict(deps)
    layers = []
    while remaining:
        ready = sorted(n for n, ds in remaining.items() if ds <= placed)
        if not ready:
            break
        for n in ready:
            del remaining[n]
        placed.update(ready)
        layers.append(tuple(ready))
    reported: set[str] = set()
    for start in sorted(remaining):
        cycle = _find_cycle(start, deps, remaining)
        if not cycle or reported & set(cycle):
            continue
        reported.update(cycle)
        first, second = cycle[0], cycle[1]
        reader = readers[first]
        key = next(k for k, ds in reader.dependencies.items() if second in ds)
        problems.append(Problem(reader.where(reader.item_path(key, second)), first,
                                f"{key}: dependency cycle: " + " -> ".join(cycle)))
    return tuple(layers)


def _find_cycle(start: str, deps: dict[str, set[str]], candidates: dict) -> list[str] | None:
    """Follow dependencies from `start` until a unit repeats: the loop from there."""
    path, seen = [start], {start: 0}
    node = start
    while True:
        following = sorted(d for d in deps[node] if d in candidates)
        if not following:
            return None
        node = following[0]
        if node in seen:
            return path[seen[node]:] + [node]
        seen[node] = len(path)
        path.append(node)
