"""systemd `.service` and `.socket` files: one unit per service, with the sockets of the
`.socket` that activates it (matched by name, by `Service=`, or `NAME@.service` for Accept=yes).

A service with a socket starts on the first connection (`start: on-demand`) unless its
[Install] section enables it at boot. `ExecStartPre=` lines become oneshot units the service
requires (wants, for a `-` line). Names of other units in `Requires=`, `Wants=`, `After=` keep
their meaning when those units are imported too; the others are reported, since a container
has no targets, mounts or devices to wait for.
"""

from __future__ import annotations

import os

from activator.importing import common
from activator.importing.ini import IGNORED, Option, parse_systemd, read_text
from activator.importing.model import ImportedUnit, Result, Skipped
from activator.importing.systemd_keys import Context
from activator.importing.systemd_service import listen_address, service_keys, socket_keys


class _File:
    def __init__(self, path: str, sections: dict[str, list[Option]]):
        self.path = path
        self.sections = sections
        base = os.path.basename(path)
        base = base[:-3] if base.endswith(".in") else base  # systemd's own sources, before meson
        stem, suffix = os.path.splitext(base)
        if suffix not in (".service", ".socket"):
            suffix = ".socket" if "Socket" in sections else ".service"
        self.stem, self.suffix = stem, suffix
        self.full_name = stem + suffix

    def values(self, section: str) -> list[Option]:
        return self.sections.get(section, [])

    def last(self, section: str, key: str) -> Option | None:
        found = [o for o in self.values(section) if o.name == key]
        return found[-1] if found else None


def read(paths: list[str]) -> Result:
    files = []
    for path in paths:
        files.append(_File(path, parse_systemd(read_text(path), path)))
    result = Result()
    for file in files:
        for line in file.sections.pop(IGNORED, []):
            result.skipped.append(Skipped(file.path, line.line, repr(line.name),
                                          "not Key=Value: systemd ignores this line too"))
    services = {}
    for file in files:
        if file.suffix != ".service":
            continue
        if any(o.name == "ExecStart" and o.value for o in file.values("Service")):
            services[file.full_name] = file
        else:  # nothing to run: and so nothing for other units to depend on
            result.skipped.append(_whole(file, "no ExecStart=: nothing for a unit to run"))
    sockets = [f for f in files if f.suffix == ".socket"]
    attached: dict[str, list[_File]] = {}
    for socket in sockets:
        target = _target(socket)
        if target in services:
            attached.setdefault(target, []).append(socket)
        else:
            result.skipped.append(_whole(socket, f"its service {target} is not among the files "
                                         "imported; a socket belongs to the unit that uses it"))
    names = {name: common.unit_name(f.stem.rstrip("@")) for name, f in services.items()}
    for name, socket_list in attached.items():
        for socket in socket_list:
            names[socket.full_name] = names[name]
    for name in sorted(services):
        result.units.extend(_Service(services[name], attached.get(name, []), names).translate())
    _apply_before(result.units)
    return result


def _target(socket: _File) -> str:
    named = socket.last("Socket", "Service")
    if named is not None and named.value:
        return named.value
    accept = socket.last("Socket", "Accept")
    if accept is not None and common.boolean(accept.value):
        return f"{socket.stem}@.service"
    return f"{socket.stem}.service"


def _whole(file: _File, why: str):
    return Skipped(file.path, 1, file.full_name, why)


def _apply_before(units: list[ImportedUnit]) -> None:
    """`Before=X` on a unit is `after` on X, activator's only way to say it."""
    by_name = {u.name: u for u in units}
    for unit in units:
        for other in unit.keys.pop("_before", []):
            if other in by_name:
                target = by_name[other]
                target.keys["after"] = sorted(set(target.keys.get("after") or []) | {unit.name})


class _Service:
    def __init__(self, file: _File, sockets: list[_File], names: dict[str, str]):
        self.file = file
        self.sockets = sockets
        self.names = names
        template = file.stem.endswith("@")
        self.unit = ImportedUnit(names[file.full_name], file.path, _first_line(file),
                                 file.full_name + "".join(f" + {s.full_name}" for s in sockets))
        self.context = Context(file.full_name, template, self.unit, file.path)

    def translate(self) -> list[ImportedUnit]:
        unit, context = self.unit, self.context
        if context.template and not any(_accepts(s) for s in self.sockets):
            unit.note(f"template unit {self.file.full_name}: one unit; %i is $(instance) "
                      "(1 to instances), so set instances: to run several")
        pre_units = service_keys(self.file.sections, context, self.names)
        if not unit.keys.get("exec"):  # an ExecStart= that says nothing after its prefixes
            unit.keys["exec"] = ["true"]
            unit.note("ExecStart= names no program: the unit runs `true`")
        for socket in self.sockets:
            self.attach(socket)
        if unit.sockets and not any(o.name in ("WantedBy", "RequiredBy")
                                    for o in self.file.values("Install")):
            if not any(spec.get("accept") for spec in unit.sockets.values()):
                unit.keys["start"] = "on-demand"
                unit.note("socket activation: the service starts on the first connection "
                          "(its [Install] did not start it at boot)")
        return pre_units + [unit]

    def attach(self, socket: _File) -> None:
        unit = self.unit
        context = Context(socket.full_name, False, unit, socket.path)
        options, listens = socket_keys(socket.sections, context)
        for i, (kind, option) in enumerate(listens):
            if options.get("accept") and unit.sockets:
                context.skip(option, "Accept=yes: activator accepts on a unit's only socket, "
                             "the first one", f"{option.name}={option.value}")
                continue
            listen = listen_address(kind, option.value, context, option)
            if listen is None:
                continue
            key = socket.stem if not unit.sockets.get(socket.stem) else f"{socket.stem}-{len(unit.sockets) + 1}"
            spec = {"listen": listen, **options}
            if "name" in spec and i > 0:
                spec.pop("name")
                unit.note(f"FileDescriptorName= names only the first socket of {socket.full_name} "
                          "here: activator's names are one per socket")
            if str(listen).startswith(("fifo:", "udp:")):
                for tcp_only in ("accept", "nodelay", "keepalive", "max_connections"):
                    spec.pop(tcp_only, None)
            unit.sockets[key] = spec


def _accepts(socket: _File) -> bool:
    accept = socket.last("Socket", "Accept")
    return accept is not None and bool(common.boolean(accept.value))


def _first_line(file: _File) -> int:
    lines = [o.line for options in file.sections.values() for o in options]
    return min(lines) if lines else 1


