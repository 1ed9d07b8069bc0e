"""Unit files → one validated, immutable `Model` of the whole stack.

Loading is all-or-nothing: every file of every directory is read and checked, every problem
is collected (`FILE:LINE: unit NAME: message`), and only a stack without errors becomes a
Model. Nothing in here binds, starts or changes anything, so `activator check`, boot and
reload share it, and a reload can compare two Models by their fingerprints:

- `Unit.fingerprint` changes with anything the unit file (drop-ins and environment files
  included) means, never with formatting or comments;
- `Unit.process_fingerprint` changes only with what reaches the service's processes; keys the
  manager applies in place (instances, restart policy, timeouts, dependencies, …) are left out,
  so editing them does not restart anything;
- `Socket.fingerprint` and `Socket.bind_key` tell a socket to adjust in place from one that
  must be bound anew.
"""

from __future__ import annotations

import difflib
import errno
import grp
import hashlib
import json
import os
import pwd
import re
import shlex
import signal
import stat
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from activator import envfile, templates, yamlsource
from activator.listen import Listen, ListenError
from activator.listen import parse as parse_listen
from activator.templates import Template, TemplateError
from activator.yamlsource import Location, SourceError

DEFAULT_DIRECTORY = "/etc/activator/units"
UNIT_NAME = re.compile(r"[A-Za-z0-9_.@-]+\Z")
UNIT_SUFFIXES = (".yaml", ".yml")
FDNAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,255}\Z")  # printable ASCII, no ':' (sd_listen_fds)
MAX_INSTANCES = 4096


# --------------------------------------------------------------------------- problems

@dataclass(frozen=True)
class Problem:
    location: Location
    unit: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        unit = f" unit {self.unit}:" if self.unit else ""
        kind = " warning:" if self.warning else ""
        return f"{self.location}:{unit}{kind} {self.message}"


class UnitsError(Exception):
    """The unit files are not valid; `problems` holds every error (and the warnings)."""

    def __init__(self, problems: list[Problem]):
        problems = sorted(problems, key=lambda p: (p.location.file, p.location.line))
        self.problems = problems
        self.errors = [p for p in problems if not p.warning]
        super().__init__("\n".join(str(p) for p in self.errors))


# --------------------------------------------------------------------------- the model

@dataclass(frozen=True)
class Credentials:
    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str | None = None  # the passwd entry's name and home, when `user` names one
    home: str | None = None


@dataclass(frozen=True)
class Socket:
    name: str  # in LISTEN_FDNAMES and in templates; global
    key: str  # the key under `sockets:` in the unit file
    unit: str
    listen: Listen
    backlog: int = 4096
    reuse_port: bool = False
    ipv6_only: bool = False
    nodelay: bool = False
    keepalive: bool = False
    mode: int = 0o666
    uid: int | None = None
    gid: int | None = None
    accept: bool = False
    max_connections: int = 64
    where: Location = field(default=Location(""), compare=False)

    @property
    def bind_key(self) -> tuple:
        """What cannot change on a bound socket: a change here needs a new socket."""
        return (str(self.listen), self.reuse_port, self.ipv6_only)

    @property
    def fingerprint(self) -> str:
        return _digest({k: getattr(self, k) for k in (
            "name", "backlog", "nodelay", "keepalive", "mode", "uid", "gid", "accept",
            "max_connections")} | {"bind": self.bind_key})


@dataclass(frozen=True)
class Unit:
    name: str
    exec: tuple[Template, ...]
    description: str = ""
    type: str = "simple"
    instances: int = 1
    sockets: tuple[Socket, ...] = ()
    socket_env: bool = True
    start: str = "eager"
    requires: tuple[str, ...] = ()
    wants: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    environment: tuple[tuple[str, Template], ...] = ()
    environment_file: tuple[str, ...] = ()
    file_environment: tuple[tuple[str, str], ...] = ()  # read from environment_file at load
    working_directory: str = "/"
    credentials: Credentials | None = None
    umask: int | None = None
    restart: str = "on-failure"
    restart_sec: float = 0.1
    restart_max_sec: float = 10.0
    start_limit_burst: int = 5
    start_limit_interval_sec: float = 10.0
    timeout_start_sec: float = 30.0
    timeout_stop_sec: float = 10.0
    kill_signal: int = signal.SIGTERM
    reload_signal: int | None = None
    watchdog_sec: float | None = None
    notify_access: str = "none"
    output: str = "prefix"
    success_action: str = "none"
    failure_action: str = "none"
    files: tuple[str, ...] = ()  # the unit file, then its drop-ins, then environment files
    literal_exec: bool = False  # `-- CMD`: arguments used as given

    @property
    def accepts(self) -> bool:
        return any(s.accept for s in self.sockets)

    @property
    def fingerprint(self) -> str:
        return _digest(self._fields() | {"process": self.process_fingerprint})

    @property
    def process_fingerprint(self) -> str:
        fields = self._fields()
        for key in MANAGER_KEYS:
            fields.pop(key, None)
        fields["sockets"] = [(s.name, s.bind_key, s.accept) for s in self.sockets]
        return _digest(fields)

    def _fields(self) -> dict:
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("files",)}
        fields["exec"] = [str(t) for t in self.exec]
        fields["environment"] = [(k, str(t)) for k, t in self.environment]
        fields["sockets"] = [s.fingerprint for s in self.sockets]
        fields["credentials"] = None if self.credentials is None else [
            self.credentials.uid, self.credentials.gid, list(self.credentials.groups)]
        return fields


# Keys whose change the manager applies in place, without restarting the unit's processes.
MANAGER_KEYS = (
    "description", "instances", "requires", "wants", "after", "restart", "restart_sec",
    "restart_max_sec", "start_limit_burst", "start_limit_interval_sec", "timeout_start_sec",
    "timeout_stop_sec", "kill_signal", "reload_signal", "success_action", "failure_action",
)


@dataclass(frozen=True)
class Model:
    units: Mapping[str, Unit]
    layers: tuple[tuple[str, ...], ...]  # start order: each layer only needs earlier ones
    warnings: tuple[Problem, ...] = ()
    directories: tuple[str, ...] = ()

    @property
    def sockets(self) -> dict[str, Socket]:
        return {s.name: s for u in self.units.values() for s in u.sockets}

    def dependencies(self, name: str) -> set[str]:
        unit = self.units[name]
        return {d for d in (*unit.requires, *unit.wants, *unit.after) if d in self.units}

    def summary(self) -> str:
        units = self.units.values()
        sockets = sum(len(u.sockets) for u in units)
        processes = sum(u.instances for u in units)
        return (f"{len(self.units)} unit{'s' * (len(self.units) != 1)}, "
                f"{sockets} socket{'s' * (sockets != 1)}, "
                f"{processes} process{'es' * (processes != 1)}, "
                f"{len(self.layers)} start layer{'s' * (len(self.layers) != 1)}"
                + (f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}"
                   if self.warnings else ""))


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- converters

class Invalid(ValueError):
    """A value is not acceptable; the message says what was expected."""


def _describe(value) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return repr(value) if isinstance(value, str) else f"{type(value).__name__} {value!r}"


def _text(value, raw: str | None) -> str:
    """A scalar as text, numbers and booleans as written (`PORT: 8000`, `DEBUG: yes`)."""
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (dict, list)):
        raise Invalid(f"expected text, got {_describe(value)}")
    return raw if raw is not None else str(value)


def _string(value, raw):
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {_describe(value)}")
    return value


def _boolean(value, raw):
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_describe(value)}")
    return value


def _integer(low: int, high: int | None = None):
    def convert(value, raw):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {_describe(value)}")
        if value < low or (high is not None and value > high):
            limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise Invalid(f"expected a number {limit}, got {value}")
        return value
    return convert


def _choice(*choices: str, aliases: dict | None = None):
    def convert(value, raw):
        for alias, meaning in (aliases or {}).items():
            if value is alias or (value == alias and type(value) is type(alias)):
                return meaning
        if isinstance(value, str) and value in choices:
            return value
        raise Invalid(f"expected one of {', '.join(choices)}, got {_describe(value)}")
    return convert


_DURATION_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
    "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
    "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
}
_DURATION_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)")
INFINITY = float("inf")


def parse_duration(value, *, positive=False, infinity=False) -> float:
    """Seconds, as a number (`1.5`) or a time span (`500ms`, `1min 30s`, `infinity`)."""
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise Invalid(f"expected seconds (a number, or a span such as 500ms or 1min 30s), "
                      f"got {_describe(value)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif infinity and value.strip() == "infinity":
        return INFINITY
    else:
        seconds, pos, text = 0.0, 0, value.strip()
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if not m or m.end() == pos or m.group(2) not in _DURATION_UNITS and m.group(2) != "":
                raise Invalid(f"'{value}' is not a time span; write a number of seconds or a span "
                              "such as 500ms, 30s, 1min 30s" + (" or infinity" if infinity else ""))
            seconds += float(m.group(1)) * _DURATION_UNITS.get(m.group(2) or "s")
            pos = m.end()
        if not text:
            raise Invalid("expected seconds, got an empty text")
    if seconds != seconds or seconds < 0 or seconds == INFINITY:
        raise Invalid(f"expected a duration of zero or more seconds, got {value}")
    if positive and seconds == 0:
        raise Invalid("expected a duration above zero" + (" (or infinity)" if infinity else ""))
    return seconds


def _seconds(*, positive=False, infinity=False):
    def convert(value, raw):
        return parse_duration(value, positive=positive, infinity=infinity)
    return convert


def _optional_seconds(value, raw):
    if value is None:
        return None
    seconds = parse_duration(value)
    return seconds or None  # 0 turns the watchdog off, as in systemd


def parse_signal(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value < signal.NSIG:
            return value
        raise Invalid(f"expected a signal, got the number {value}")
    if not isinstance(value, str):
        raise Invalid(f"expected a signal name such as SIGTERM, got {_describe(value)}")
    name = value.strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    number = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if number is None or name.startswith("SIG_"):
        raise Invalid(f"'{value}' is not a signal name (SIGTERM, SIGINT, SIGQUIT, SIGHUP, …)")
    return int(number)


def _signal(value, raw):
    return parse_signal(value)


def _optional_signal(value, raw):
    return None if value is None else parse_signal(value)


def _octal(high: int):
    def convert(value, raw):
        text = raw if isinstance(value, int) and not isinstance(value, bool) and raw else value
        if not isinstance(text, str) or not re.fullmatch(r"0?o?[0-7]{1,4}", text.strip()):
            raise Invalid(f"expected an octal mode such as \"0022\", got {_describe(value)}")
        number = int(text.strip().replace("o", ""), 8)
        if number > high:
            raise Invalid(f"expected an octal mode up to {high:04o}, got {text}")
        return number
    return convert


def _names(value, raw):
    """A list of unit names (a single name is accepted for a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"expected a list of unit names, got {_describe(value)}")
    names = []
    for item in items:
        if not isinstance(item, str) or not UNIT_NAME.match(item):
            raise Invalid(f"expected unit names, got {_describe(item)}")
        if item not in names:
            names.append(item)
    return tuple(names)


def _user_or_group(value, raw):
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**32 - 1:
            raise Invalid(f"expected a user or group name or id, got {value}")
        return value
    if isinstance(value, str) and value:
        return int(value) if value.isdigit() else value
    raise Invalid(f"expected a user or group name or id, got {_describe(value)}")


# Service keys: converter and default. Defaults that depend on other keys are derived later.
SERVICE_KEYS: dict[str, tuple[Callable, object]] = {
    "description": (_text, ""),
    "exec": (None, None),
    "type": (_choice("simple", "exec", "notify", "oneshot"), "simple"),
    "instances": (_integer(1, MAX_INSTANCES), 1),
    "sockets": (None, None),
    "socket_env": (_boolean, None),
    "start": (_choice("eager", "on-demand"), "eager"),
    "requires": (_names, ()),
    "wants": (_names, ()),
    "after": (_names, ()),
    "environment": (None, None),
    "environment_file": (None, None),
    "working_directory": (_string, "/"),
    "user": (_user_or_group, None),
    "group": (_user_or_group, None),
    "umask": (_octal(0o777), None),
    "restart": (_choice("no", "on-failure", "on-abnormal", "always", aliases={False: "no"}),
                "on-failure"),
    "restart_sec": (_seconds(), 0.1),
    "restart_max_sec": (_seconds(), 10.0),
    "start_limit_burst": (_integer(1), 5),
    "start_limit_interval_sec": (_seconds(), 10.0),
    "timeout_start_sec": (_seconds(positive=True, infinity=True), 30.0),
    "timeout_stop_sec": (_seconds(positive=True, infinity=True), 10.0),
    "kill_signal": (_signal, int(signal.SIGTERM)),
    "reload_signal": (_optional_signal, None),
    "watchdog_sec": (_optional_seconds, None),
    "notify_access": (_choice("none", "main", "all"), None),
    "output": (_choice("prefix", "inherit", "null", aliases={None: "null"}), "prefix"),
    "success_action": (_choice("none", "exit"), "none"),
    "failure_action": (_choice("none", "exit"), "none"),
}

SOCKET_KEYS: dict[str, tuple[Callable, object]] = {
    "listen": (None, None),
    "name": (_string, None),
    "backlog": (_integer(1, 2**31 - 1), 4096),
    "reuse_port": (_boolean, False),
    "ipv6_only": (_boolean, False),
    "nodelay": (_boolean, False),
    "keepalive": (_boolean, False),
    "mode": (_octal(0o7777), 0o666),
    "user": (_user_or_group, None),
    "group": (_user_or_group, None),
    "accept": (_boolean, False),
    "max_connections": (_integer(1, 65536), 64),
}


# --------------------------------------------------------------------------- discovery

def directories(given: list[str] | None, environ: Mapping[str, str]) -> tuple[list[str], bool]:
    """The units directories in override order, and whether they were named explicitly."""
    if given:
        return list(given), True
    if environ.get("ACTIVATOR_UNITS"):
        return [d for d in environ["ACTIVATOR_UNITS"].split(":") if d], True
    return [DEFAULT_DIRECTORY], False


@dataclass
class _Found:
    units: dict[str, str] = field(default_factory=dict)  # name -> file
    dropins: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {basename: file}
    problems: list[Problem] = field(default_factory=list)


def _discover(dirs: list[str], explicit: bool) -> _Found:
    found = _Found()
    for directory in dirs:
        try:
            entries = sorted(os.listdir(directory))
        except FileNotFoundError:
            if explicit:
                found.problems.append(Problem(Location(directory), None, "units directory does not exist"))
            continue
        except OSError as e:
            found.problems.append(Problem(Location(directory), None, f"cannot read units directory: {e.strerror}"))
            continue
        here: dict[str, str] = {}
        for entry in entries:
            if entry.startswith("."):
                continue
            path = os.path.join(directory, entry)
            if entry.endswith(".d") and os.path.isdir(path):
                _discover_dropins(entry[:-2], path, found)
                continue
            stem, suffix = os.path.splitext(entry)
            if suffix not in UNIT_SUFFIXES:
                continue
            if not UNIT_NAME.match(stem):
                found.problems.append(Problem(Location(path), None,
                                              f"'{stem}' is not a valid unit name (letters, digits, _ . @ -)"))
                continue
            if stem in here:
                found.problems.append(Problem(Location(path), stem,
                                              f"both {os.path.basename(here[stem])} and {entry} define this unit"))
                continue
            here[stem] = path
        found.units.update(here)  # a later directory overrides a same-named unit
    return found


def _discover_dropins(name: str, directory: str, found: _Found) -> None:
    try:
        entries = sorted(os.listdir(directory))
    except OSError as e:
        found.problems.append(Problem(Location(directory), name, f"cannot read drop-in directory: {e.strerror}"))
        return
    for entry in entries:
        if not entry.startswith(".") and entry.endswith(UNIT_SUFFIXES):
            # For the same file name, the later directory wins.
            found.dropins.setdefault(name, {})[entry] = os.path.join(directory, entry)


# --------------------------------------------------------------------------- loading

def load(dirs: list[str] | None = None, environ: Mapping[str, str] | None = None,
         explicit: bool | None = None) -> Model:
    """Read every unit of `dirs` into a Model, or raise UnitsError with every problem."""
    environ = os.environ if environ is None else environ
    if dirs is None or explicit is None:
        dirs, explicit = directories(dirs, environ)
    found = _discover(dirs, explicit)
    problems = found.problems
    for name, files in sorted(found.dropins.items()):
        if name not in found.units:
            first = files[sorted(files)[0]]
            problems.append(Problem(Location(first), name, "drop-in for a unit that does not exist"))

    readers: dict[str, _UnitReader] = {}
    for name, path in sorted(found.units.items()):
        reader = _UnitReader(name, path, environ, problems)
        dropins = found.dropins.get(name, {})
        if reader.read([dropins[k] for k in sorted(dropins)]):
            readers[name] = reader
    known = set(found.units)
    units = {name: unit for name, reader in readers.items() if (unit := reader.build(known)) is not None}
    _check_across_units(units, readers, known, problems)
    layers = _layers(units, readers, problems)
    if any(not p.warning for p in problems):
        raise UnitsError(problems)
    return Model(MappingProxyType(units), layers, tuple(problems), tuple(dirs))


class _UnitReader:
    """Checks one unit's document key by key, recording every problem instead of stopping."""

    def __init__(self, name: str, path: str, environ: Mapping[str, str], problems: list[Problem]):
        self.name = name
        self.path = path
        self.environ = environ
        self.problems = problems
        self.doc: yamlsource.Document | None = None
        self.files: list[str] = [path]
        self.failed = False

    def read(self, dropins: list[str]) -> bool:
        try:
            self.doc = yamlsource.load(self.path)
        except SourceError as e:
            self.problems.append(Problem(e.location, self.name, e.message))
            return False
        for path in dropins:
            try:
                yamlsource.merge(self.doc, yamlsource.load(path))
                self.files.append(path)
            except SourceError as e:
                self.problems.append(Problem(e.location, self.name, e.message))
                self.failed = True
        return True

    # -- reporting

    def where(self, path: tuple) -> Location:
        return self.doc.where(path)

    def error(self, path: tuple, message: str) -> None:
        self.failed = True
        self.problems.append(Problem(self.where(path), self.name, message))

    def warn(self, path: tuple, message: str) -> None:
        self.problems.append(Problem(self.where(path), self.name, message, warning=True))

    def convert(self, table: dict, mapping: dict, path: tuple, key: str):
        converter, default = table[key]
        if key not in mapping:
            return default
        try:
            return converter(mapping[key], self.doc.raw.get(path + (key,)))
        except Invalid as e:
            self.error(path + (key,), f"{_key_name(path, key)}: {e}")
            return default

    def unknown_keys(self, table: dict, mapping: dict, path: tuple, what: str) -> None:
        for key in mapping:
            if key not in table:
                close = difflib.get_close_matches(key, list(table), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error(path + (key,), f"unknown {what} key '{_key_name(path, key)}'{hint}")

    # -- the unit

    def build(self, known_units: set[str]) -> Unit | None:
        doc = self.doc.value
        self.unknown_keys(SERVICE_KEYS, doc, (), "service")
        values = {k: self.convert(SERVICE_KEYS, doc, (), k) for k, (c, _) in SERVICE_KEYS.items() if c}

        exec_templates = self.read_exec(doc)
        credentials = self.read_credentials(values["user"], values["group"], ())
        sockets = self.read_sockets(doc.get("sockets"))
        environment = self.read_environment(doc.get("environment"))
        env_files, file_environment = self.read_environment_files(doc.get("environment_file"))
        working_directory = self.read_working_directory(values["working_directory"])

        unit_type = values["type"]
        notify_access = values["notify_access"] or (
            "main" if unit_type == "notify" or values["watchdog_sec"] else "none")
        if unit_type == "notify" and notify_access == "none":
            self.error(("notify_access",), "type notify needs notify_access main or all: "
                       "with none, its READY=1 could never be received")
        if values["watchdog_sec"] and notify_access == "none":
            self.error(("watchdog_sec",), "watchdog_sec needs notify_access main or all to receive WATCHDOG=1")

        socket_names = {s.name for s in sockets}
        for i, t in enumerate(exec_templates or ()):
            for ref in t.refs:
                if ref.kind == "socket" and ref.name not in socket_names:
                    self.error(("exec",) + ((i,) if isinstance(doc.get("exec"), list) else ()),
                               f"exec: {ref} names no socket of this unit"
                               + (f" (its sockets: {', '.join(sorted(socket_names))})" if socket_names else ""))
        for key, t in environment:
            for ref in t.refs:
                if ref.kind == "socket" and ref.name not in socket_names:
                    self.error(("environment", key), f"environment: {key}: {ref} names no socket of this unit")
        for t in (*(exec_templates or ()), *(t for _, t in environment)):
            for ref in t.refs:
                if ref.kind == "env" and ref.name not in self.environ:
                    self.warn(("exec",), f"$(env.{ref.name}) is not set here; it expands to an empty "
                              "text unless set when the container runs")
        names_socket = any(r.kind == "socket" for t in exec_templates or () for r in t.refs)
        socket_env = values["socket_env"] if values["socket_env"] is not None else not names_socket

        accepting = [s for s in sockets if s.accept]
        if accepting:
            if len(sockets) > 1:
                self.error(("sockets",), f"socket '{accepting[0].key}' has accept: true, so it must be "
                           "the unit's only socket")
            if values["instances"] != 1:
                self.error(("instances",), "a unit with an accept socket starts one process per "
                           "connection: instances must be 1")
            if unit_type in ("notify", "oneshot"):
                self.error(("type",), f"type {unit_type} does not fit a unit with an accept socket")
        if values["start"] == "on-demand" and not sockets:
            self.error(("start",), "start: on-demand needs at least one socket to wait on")

        if values["restart_max_sec"] < values["restart_sec"]:
            self.error(("restart_max_sec",), f"restart_max_sec ({values['restart_max_sec']:g}) is "
                       f"below restart_sec ({values['restart_sec']:g})")
        for key in ("requires", "wants", "after"):
            for i, dep in enumerate(values[key]):
                if dep == self.name:
                    self.error((key,), f"{key}: a unit cannot depend on itself")
                elif dep not in known_units:
                    if key == "requires":
                        self.error((key,), f"requires: no unit named '{dep}'")
                    else:
                        self.warn((key,), f"{key}: no unit named '{dep}' (ignored)")

        if self.failed or exec_templates is None:
            return None
        unit = Unit(
            name=self.name, exec=exec_templates, description=values["description"],
            type=unit_type, instances=values["instances"], sockets=tuple(sockets),
            socket_env=socket_env, start=values["start"], requires=values["requires"],
            wants=values["wants"], after=values["after"], environment=tuple(environment),
            environment_file=tuple(env_files), file_environment=tuple(file_environment.items()),
            working_directory=working_directory, credentials=credentials, umask=values["umask"],
            restart=values["restart"], restart_sec=values["restart_sec"],
            restart_max_sec=values["restart_max_sec"], start_limit_burst=values["start_limit_burst"],
            start_limit_interval_sec=values["start_limit_interval_sec"],
            timeout_start_sec=values["timeout_start_sec"], timeout_stop_sec=values["timeout_stop_sec"],
            kill_signal=values["kill_signal"], reload_signal=values["reload_signal"],
            watchdog_sec=values["watchdog_sec"], notify_access=notify_access, output=values["output"],
            success_action=values["success_action"], failure_action=values["failure_action"],
            files=tuple(self.files),
        )
        problem = check_program(unit, self.environ)
        if problem:
            self.error(("exec",), f"exec: {problem}")
            return None
        return unit

    def read_exec(self, doc: dict) -> tuple[Template, ...] | None:
        if "exec" not in doc:
            self.error((), "missing key 'exec': the command to run")
            return None
        value = doc["exec"]
        if not isinstance(value, (list, dict)) and value is not None:
            value = _text(value, self.doc.raw.get(("exec",)))  # `exec: true` runs true
        if isinstance(value, str):
            try:
                args = shlex.split(value)
            except ValueError as e:
                self.error(("exec",), f"exec: cannot split the command like a shell would: {e}")
                return None
            paths = [("exec",)] * len(args)
        elif isinstance(value, list):
            args, paths = [], []
            for i, item in enumerate(value):
                try:
                    args.append(_text(item, self.doc.raw.get(("exec", i))))
                    paths.append(("exec", i))
                except Invalid as e:
                    self.error(("exec", i), f"exec: item {i + 1}: {e}")
                    return None
        else:
            self.error(("exec",), f"exec: expected a command line or a list of arguments, got {_describe(value)}")
            return None
        if not args or not args[0]:
            self.error(("exec",), "exec: the command is empty")
            return None
        result = []
        for arg, path in zip(args, paths):
            try:
                result.append(templates.parse(arg))
            except TemplateError as e:
                self.error(path, f"exec: {e}")
                return None
        return tuple(result)

    def read_environment(self, value) -> list[tuple[str, Template]]:
        if value is None:
            if "environment" in self.doc.value:
                self.error(("environment",), "environment: expected a mapping of names to values, got nothing")
            return []
        if not isinstance(value, dict):
            self.error(("environment",), f"environment: expected a mapping of names to values, got {_describe(value)}")
            return []
        result = []
        for key, item in value.items():
            path = ("environment", key)
            if not envfile.valid_name(key):
                self.error(path, f"environment: '{key}' is not a valid environment variable name")
                continue
            try:
                result.append((key, templates.parse(_text(item, self.doc.raw.get(path)))))
            except (Invalid, TemplateError) as e:
                self.error(path, f"environment: {key}: {e}")
        return result

    def read_environment_files(self, value) -> tuple[list[str], dict[str, str]]:
        if value is None:
            return [], {}
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i.strip("-") for i in items):
            self.error(("environment_file",), "environment_file: expected a path or a list of paths, "
                       f"got {_describe(value)}")
            return [], {}
        names, variables = [], {}
        for i, item in enumerate(items):
            path = ("environment_file",) + ((i,) if isinstance(value, list) else ())
            optional = item.startswith("-")
            file = self.resolve_path(item[1:] if optional else item, path)
            names.append(("-" if optional else "") + file)
            try:
                variables.update(envfile.load(file))
                self.files.append(file)
            except SourceError as e:
                if optional and not os.path.exists(file):
                    continue
                if e.location.line:
                    self.error(path, f"environment_file: {e.location}: {e.message}")
                else:
                    self.error(path, f"environment_file: {file}: {e.message}")
        return names, variables

    def resolve_path(self, value: str, path: tuple) -> str:
        """An absolute path; a relative one is taken from the directory of the file that says it."""
        if os.path.isabs(value):
            return os.path.normpath(value)
        declared_in = self.where(path).file
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(declared_in)), value))

    def read_working_directory(self, value: str) -> str:
        if "working_directory" not in self.doc.value:
            return "/"
        directory = self.resolve_path(value, ("working_directory",))
        if not os.path.isdir(directory):
            self.error(("working_directory",), f"working_directory: '{directory}' is not a directory")
        return directory

    def read_credentials(self, user, group, path: tuple) -> Credentials | None:
        if user is None and group is None:
            return None
        uid, gid, groups, name, home = os.geteuid(), os.getegid(), (), None, None
        if user is not None:
            try:
                entry = pwd.getpwnam(user) if isinstance(user, str) else pwd.getpwuid(user)
            except KeyError:
                if isinstance(user, str):
                    self.error(path + ("user",), f"user: no user named '{user}'")
                    return None
                uid, gid = user, user  # a bare id: its own group, as with user private groups
            else:
                uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
        if group is not None:
            try:
                gid = grp.getgrnam(group).gr_gid if isinstance(group, str) else group
            except KeyError:
                self.error(path + ("group",), f"group: no group named '{group}'")
                return None
        if name is not None:
            groups = tuple(sorted(set(os.getgrouplist(name, gid))))
        else:
            groups = (gid,)
        return Credentials(uid, gid, groups, name, home)

    def read_sockets(self, value) -> list[Socket]:
        if value is None:
            if "sockets" in self.doc.value:
                self.error(("sockets",), "sockets: expected a mapping of socket names to socket specs, got nothing")
            return []
        if not isinstance(value, dict):
            self.error(("sockets",), f"sockets: expected a mapping of socket names to socket specs, got {_describe(value)}")
            return []
        result = []
        for key, spec in value.items():
            path = ("sockets", key)
            if not UNIT_NAME.match(key):
                self.error(path, f"sockets: '{key}' is not a valid socket name (letters, digits, _ . @ -)")
                continue
            if isinstance(spec, (int, str)) and not isinstance(spec, bool):
                spec = {"listen": spec}  # `http: 8000` for `http: {listen: 8000}`
                self.doc.lines[path + ("listen",)] = self.doc.lines.get(path)
            if not isinstance(spec, dict):
                self.error(path, f"sockets: {key}: expected a socket spec (a mapping with listen:), got {_describe(spec)}")
                continue
            socket = self.read_socket(key, spec, path)
            if socket:
                result.append(socket)
        return result

    def read_socket(self, key: str, spec: dict, path: tuple) -> Socket | None:
        errors_before = len(self.problems)
        self.unknown_keys(SOCKET_KEYS, spec, path, "socket")
        values = {k: self.convert(SOCKET_KEYS, spec, path, k) for k, (c, _) in SOCKET_KEYS.items() if c}
        if "listen" not in spec:
            self.error(path, f"sockets: {key}: missing key 'listen'")
            return None
        try:
            listen = parse_listen(spec["listen"])
        except ListenError as e:
            self.error(path + ("listen",), f"sockets.{key}.listen: {e}")
            return None
        name = values["name"] if values["name"] is not None else key
        if not FDNAME.match(name):
            self.error(path + ("name",), f"sockets.{key}.name: '{name}' cannot be passed in LISTEN_FDNAMES "
                       "(1 to 255 printable characters, no ':' or blank)")
        kind = listen.kind
        if values["accept"] and not listen.is_stream:
            self.error(path + ("accept",), f"sockets.{key}.accept: only stream sockets (tcp, unix) accept "
                       f"connections; {listen} is {kind}")
        for option in ("nodelay", "keepalive"):
            if values[option] and kind != "tcp":
                self.error(path + (option,), f"sockets.{key}.{option}: applies to tcp sockets only")
        if values["ipv6_only"] and not (kind in ("tcp", "udp") and (listen.is_ipv6 or not listen.host)):
            self.error(path + ("ipv6_only",), f"sockets.{key}.ipv6_only: applies to IPv6 addresses only")
        for option in ("mode", "user", "group"):
            if option in spec and not listen.is_file:
                self.error(path + (option,), f"sockets.{key}.{option}: applies to unix socket files and fifos only")
        if "max_connections" in spec and not values["accept"]:
            self.error(path + ("max_connections",), f"sockets.{key}.max_connections: applies with accept: true only")
        if kind == "inherit":
            for option in ("backlog", "reuse_port", "ipv6_only"):
                if option in spec:
                    self.error(path + (option,), f"sockets.{key}.{option}: an inherited socket is already bound")
        uid = gid = None
        if values["user"] is not None or values["group"] is not None:
            credentials = self.read_credentials(values["user"], values["group"], path)
            if credentials:
                uid = credentials.uid if values["user"] is not None else None
                gid = credentials.gid
        if len(self.problems) != errors_before and any(not p.warning for p in self.problems[errors_before:]):
            return None
        return Socket(
            name=name, key=key, unit=self.name, listen=listen, backlog=values["backlog"],
            reuse_port=values["reuse_port"], ipv6_only=values["ipv6_only"], nodelay=values["nodelay"],
            keepalive=values["keepalive"], mode=values["mode"], uid=uid, gid=gid,
            accept=values["accept"], max_connections=values["max_connections"],
            where=self.where(path),
        )


def _key_name(path: tuple, key: str) -> str:
    if path and path[0] == "sockets" and len(path) == 2:
        return f"sockets.{path[1]}.{key}"
    return key


# --------------------------------------------------------------------------- programs

def service_path(unit: Unit, environ: Mapping[str, str]) -> str:
    """The PATH the service will run with: environment, else environment_file, else ours."""
    for key, template in unit.environment:
        if key == "PATH":
            return template.expand({s.name: 3 + i for i, s in enumerate(unit.sockets)}, 1, environ)
    for key, value in unit.file_environment:
        if key == "PATH":
            return value
    return environ.get("PATH", os.defpath)


def find_program(program: str, search_path: str, cwd: str, credentials: Credentials | None):
    """(path, None) for the file that exec would run, or (None, (errno, message))."""
    if "/" in program:
        candidates = [program if os.path.isabs(program) else os.path.join(cwd, program)]
    else:
        candidates = [os.path.join(d or ".", program) for d in search_path.split(":")]
    denied = None
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode):
            denied = denied or candidate
            continue
        if _may_execute(st, credentials):
            return candidate, None
        denied = denied or candidate
    if denied:
        return None, (errno.EACCES, os.strerror(errno.EACCES))
    return None, (errno.ENOENT, os.strerror(errno.ENOENT))


def _may_execute(st: os.stat_result, credentials: Credentials | None) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    if credentials is None:
        uid, gid, groups = os.geteuid(), os.getegid(), set(os.getgroups())
    else:
        uid, gid, groups = credentials.uid, credentials.gid, set(credentials.groups)
    if uid == 0:
        return bool(st.st_mode & 0o111)
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid or st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def check_program(unit: Unit, environ: Mapping[str, str]) -> str | None:
    """Why the program of `exec` cannot be executed, as the unit's user, or None."""
    fds = {s.name: 3 + i for i, s in enumerate(unit.sockets)}
    program = unit.exec[0].expand(fds, 1, environ)
    if not program:
        return f"the program '{unit.exec[0]}' expands to nothing"
    path, error = find_program(program, service_path(unit, environ), unit.working_directory, unit.credentials)
    if path:
        return None
    who = f" by user {unit.credentials.user or unit.credentials.uid}" if unit.credentials else ""
    if error[0] == errno.ENOENT:
        where = "" if "/" in program else " in PATH"
        return f"program '{program}' not found{where}"
    return f"program '{program}' cannot be executed{who}: {error[1]}"


# --------------------------------------------------------------------------- across units

def _check_across_units(units: dict[str, Unit], readers: dict[str, _UnitReader],
                        known: set[str], problems: list[Problem]) -> None:
    by_name: dict[str, Socket] = {}
    listening: list[Socket] = []
    for unit in units.values():
        for socket in unit.sockets:
            other = by_name.get(socket.name)
            if other:
                problems.append(Problem(socket.where, unit.name,
                                        f"socket name '{socket.name}' is also used by unit {other.unit} "
                                        f"({other.where}); socket names are global"))
            else:
                by_name[socket.name] = socket
            for earlier in listening:
                if socket.listen.conflicts_with(earlier.listen) and not (socket.reuse_port and earlier.reuse_port):
                    problems.append(Problem(socket.where, unit.name,
                                            f"socket '{socket.key}' listens on {socket.listen}, which "
                                            f"socket '{earlier.key}' of unit {earlier.unit} already uses "
                                            f"({earlier.where})"))
                    break
            listening.append(socket)


def _layers(units: dict[str, Unit], readers: dict[str, _UnitReader],
            problems: list[Problem]) -> tuple[tuple[str, ...], ...]:
    """Kahn's algorithm by levels; reports each dependency cycle once."""
    deps = {name: {d for d in (*u.requires, *u.wants, *u.after) if d in units and d != name}
            for name, u in units.items()}
    level: dict[str, int] = {}
    remaining = dict(deps)
    layers = []
    while remaining:
        ready = sorted(n for n, ds in remaining.items() if ds <= level.keys())
        if not ready:
            break
        for n in ready:
            level[n] = len(layers)
            del remaining[n]
        layers.append(tuple(ready))
    if remaining:
        reported: set[str] = set()
        for start in sorted(remaining):
            cycle = _find_cycle(start, deps, remaining)
            if not cycle or reported & set(cycle):
                continue
            reported.update(cycle)
            first = cycle[0]
            reader = readers[first]
            key = next(k for k in ("requires", "wants", "after") if cycle[1] in getattr(units[first], k))
            problems.append(Problem(reader.where((key,)), first,
                                    "dependency cycle: " + " -> ".join(cycle)))
    return tuple(layers)


def _find_cycle(start: str, deps: dict[str, set[str]], candidates: dict) -> list[str] | None:
    path, seen = [start], {start: 0}
    node = start
    while True:
        following = sorted(d for d in deps[node] if d in candidates)
        if not following:
            return None
        node = following[0]
        if node in seen:
            cycle = path[seen[node]:] + [node]
            return cycle
        seen[node] = len(path)
        path.append(node)


# --------------------------------------------------------------------------- `-- CMD`

def command_unit(argv: list[str], cwd: str = "/") -> Unit:
    """The extra unit `main` for `activator -- CMD`: tini's drop-in mode."""
    return Unit(
        name="main", exec=tuple(templates.literal(a) for a in argv), restart="no",
        success_action="exit", failure_action="exit", output="inherit", literal_exec=True,
        working_directory=cwd,
    )


def with_command(model: Model, argv: list[str], cwd: str = "/") -> Model:
    return with_main(model, command_unit(argv, cwd))


def with_main(model: Model, main: Unit) -> Model:
    """`model` plus `main`, which waits for nothing: it starts beside the first layer."""
    if "main" in model.units:
        raise UnitsError([Problem(Location(model.units["main"].files[0]), "main",
                                  "the unit name 'main' is taken by the command given after --")])
    units = dict(model.units, main=main)
    first = (*model.layers[0], "main") if model.layers else ("main",)
    return Model(MappingProxyType(units), (first, *model.layers[1:]), model.warnings, model.directories)
