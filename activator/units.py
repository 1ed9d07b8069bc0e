"""Unit files → one validated, immutable `Model` of the whole stack (model.py).

Loading is all-or-nothing: every file of every directory is read and checked, every problem
is collected (`FILE:LINE: unit NAME: message`), and only a stack without errors becomes a
Model. Nothing in here binds, starts or changes anything, so `activator check`, boot and
reload share it. PID 1 runs it in a child process (loading.py), so that the parser and its
validators never take room in the init, and a bug in them cannot take the init down.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import re
import shlex
import signal
from collections.abc import Callable, Mapping
from types import MappingProxyType

from activator import envfile, templates, yamlsource
from activator.listen import ListenError
from activator.listen import parse as parse_listen
from activator.model import (  # noqa: F401 - the model's names are the loader's API too
    INFINITY, Credentials, Location, Model, Problem, Socket, Unit, UnitsError,
    command_unit, find_program, may_enter, service_path, user_label, with_command, with_main)
from activator.loading import DEFAULT_DIRECTORY, directories  # noqa: F401 - API as well
from activator.templates import Template, TemplateError
from activator.yamlsource import SourceError

UNIT_NAME = re.compile(r"[A-Za-z0-9_.@-]+\Z")
UNIT_SUFFIXES = (".yaml", ".yml")
FDNAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,255}\Z")  # printable ASCII, no ':' (sd_listen_fds)
MAX_INSTANCES = 4096


# --------------------------------------------------------------------------- converters

class Invalid(ValueError):
    """A value is not acceptable; the message says what was expected."""


_DIGITS = re.compile(r"[0-9]+\Z")  # ASCII only: str.isdigit() also accepts '²'
# Names useradd would take, and a little more (Samba's `name$`); never ':', '/', blanks or NUL.
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,255}\Z")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


def _describe(value, raw: str | None = None) -> str:
    """A value as the user wrote it, for messages: 'got off', not 'got False'."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        if raw and raw not in ("true", "false"):
            return f"{raw} (read by YAML as {str(value).lower()})"
        return f"the boolean {str(value).lower()}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bytes):
        return "binary data (!!binary)"
    if isinstance(value, str):
        return repr(value)
    if raw is not None:
        return raw  # numbers, dates: as written
    if isinstance(value, (int, float)):
        return repr(value)
    return f"{type(value).__name__} {value!r}"


def _no_nul(text: str) -> str:
    if "\0" in text:
        raise Invalid(f"{text!r} contains a NUL character, which no file name, argument or "
                      "environment can hold")
    return text


def _text(value, raw: str | None) -> str:
    """A scalar as text, numbers and booleans as written (`PORT: 8000`, `DEBUG: yes`)."""
    if isinstance(value, str):
        return _no_nul(value)
    if value is None or isinstance(value, (dict, list, bytes)):
        raise Invalid(f"expected text, got {_describe(value, raw)}")
    return raw if raw is not None else str(value)


def _string(value, raw):
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {_describe(value, raw)}")
    return _no_nul(value)


def _path(value, raw):
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected a path, got {_describe(value, raw)}")
    return _no_nul(value)


def _boolean(value, raw):
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {_describe(value, raw)}")
    return value


def _integer(low: int, high: int | None = None):
    def convert(value, raw):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {_describe(value, raw)}")
        if value < low or (high is not None and value > high):
            limit = f"from {low} to {high}" if high is not None else f"of at least {low}"
            raise Invalid(f"expected a number {limit}, got {value}")
        return value
    return convert


def _choice(*choices: str):
    """One of `choices`. YAML reads unquoted `no` as false and `null` as nothing; where those
    words are choices, the unquoted forms mean the words (SPEC §1), and nothing else does."""
    def convert(value, raw):
        if isinstance(value, str) and value in choices:
            return value
        if (value is False or value is None) and raw in choices:
            return raw
        raise Invalid(f"expected one of {', '.join(choices)}, got {_describe(value, raw)}")
    return convert


_DURATION_UNITS = {
    "us": 1e-6, "usec": 1e-6, "ms": 1e-3, "msec": 1e-3, "s": 1.0, "sec": 1.0, "second": 1.0,
    "seconds": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0, "h": 3600.0,
    "hr": 3600.0, "hour": 3600.0, "hours": 3600.0, "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
}
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)")


def parse_duration(value, *, infinity=False, raw: str | None = None) -> float:
    """Seconds, as a number (`1.5`) or a time span (`500ms`, `1min 30s`, and `infinity` where
    the caller allows it), as systemd writes them."""
    expected = ("expected seconds: a number, or a span such as 500ms, 30s or 1min 30s"
                + (", or infinity" if infinity else ""))
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise Invalid(f"{expected}; got {_describe(value, raw)}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif value.strip() in ("infinity", "inf"):
        seconds = INFINITY
    else:
        seconds, pos, text = 0.0, 0, value.strip()
        if not text:
            raise Invalid(f"{expected}; got an empty text")
        while pos < len(text):
            m = _DURATION_PART.match(text, pos)
            if not m or m.group(2) not in _DURATION_UNITS and m.group(2) != "":
                raise Invalid(f"{expected}; got '{value}'")
            seconds += float(m.group(1)) * _DURATION_UNITS.get(m.group(2) or "s")
            pos = m.end()
            while pos < len(text) and text[pos].isspace():
                pos += 1
    if seconds != seconds or seconds < 0:
        raise Invalid(f"{expected}; got {_describe(value, raw)}")
    if seconds == INFINITY and not infinity:
        raise Invalid(f"expected a finite number of seconds, got {_describe(value, raw)}")
    return seconds


def _seconds(*, infinity=False, zero_is_infinity=False):
    def convert(value, raw):
        seconds = parse_duration(value, infinity=infinity, raw=raw)
        return INFINITY if zero_is_infinity and seconds == 0 else seconds
    return convert


def _optional_seconds(value, raw):
    if value is None:
        return None
    seconds = parse_duration(value, raw=raw)
    return seconds or None  # 0 turns the watchdog off, as in systemd


def parse_signal(value, raw: str | None = None) -> int:
    """A signal by name (`SIGTERM`, `TERM`, `term`) or number."""
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value < signal.NSIG:
            return value
        raise Invalid(f"expected a signal, got the number {value} (signals are 1 to {signal.NSIG - 1})")
    if not isinstance(value, str):
        raise Invalid(f"expected a signal name such as SIGTERM, got {_describe(value, raw)}")
    name = value.strip().upper()
    name = name if name.startswith("SIG") else "SIG" + name
    number = getattr(signal.Signals, name, None) if name.isidentifier() else None
    if number is None:
        raise Invalid(f"'{value}' is not a signal name (SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, …)")
    return int(number)


def _signal(value, raw):
    return parse_signal(value, raw)


def _optional_signal(value, raw):
    return None if value is None else parse_signal(value, raw)


_OCTAL = re.compile(r"(?:0o|0)?([0-7]{1,4})\Z")


def _octal(high: int, example: str):
    """An octal mode. Unquoted `0022` is a number to YAML (18): its text as written is used."""
    def convert(value, raw):
        text = raw if isinstance(value, int) and not isinstance(value, bool) and raw else value
        m = _OCTAL.match(text.strip()) if isinstance(text, str) else None
        if not m:
            raise Invalid(f"expected an octal mode such as {example}, got {_describe(value, raw)}")
        number = int(m.group(1), 8)
        if number > high:
            raise Invalid(f"expected an octal mode up to {high:04o}, got {text}")
        return number
    return convert


def _names(value, raw):
    """A list of unit names (a single name is accepted for a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"expected a list of unit names, got {_describe(value, raw)}")
    names = []
    for item in items:
        if not isinstance(item, str) or not UNIT_NAME.match(item):
            raise Invalid(f"expected unit names, got {_describe(item)}")
        if item not in names:
            names.append(item)
    return tuple(names)


def _user_or_group(value, raw):
    """A name, or a number (given as a number or as digits), checked to exist later."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and _DIGITS.match(value):
        number = int(value)
    elif isinstance(value, str) and _ACCOUNT_NAME.match(value):
        return value
    else:
        raise Invalid(f"expected a user or group name or id, got {_describe(value, raw)}")
    if not 0 <= number <= MAX_ID:
        raise Invalid(f"expected an id from 0 to {MAX_ID}, got {number}")
    return number


# Service keys: converter and default. Defaults that depend on other keys are derived later;
# None as converter: the key is read by a method of its own.
SERVICE_KEYS: dict[str, tuple[Callable | None, object]] = {
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
    "working_directory": (_path, "/"),
    "user": (_user_or_group, None),
    "group": (_user_or_group, None),
    "umask": (_octal(0o777, "0022"), None),
    "restart": (_choice("no", "on-failure", "on-abnormal", "always"), "on-failure"),
    "restart_sec": (_seconds(), 0.1),
    "restart_max_sec": (_seconds(), 10.0),
    "start_limit_burst": (_integer(1), 5),
    "start_limit_interval_sec": (_seconds(), 10.0),
    # As in systemd, 0 means no timeout, like `infinity`.
    "timeout_start_sec": (_seconds(infinity=True, zero_is_infinity=True), 30.0),
    "timeout_stop_sec": (_seconds(infinity=True, zero_is_infinity=True), 10.0),
    "kill_signal": (_signal, int(signal.SIGTERM)),
    "reload_signal": (_optional_signal, None),
    "watchdog_sec": (_optional_seconds, None),
    "notify_access": (_choice("none", "main", "all"), None),
    "output": (_choice("prefix", "inherit", "null"), "prefix"),
    "success_action": (_choice("none", "exit"), "none"),
    "failure_action": (_choice("none", "exit"), "none"),
}

SOCKET_KEYS: dict[str, tuple[Callable | None, object]] = {
    "listen": (None, None),
    "name": (_string, None),
    "backlog": (_integer(1, 2**31 - 1), 4096),
    "reuse_port": (_boolean, False),
    "ipv6_only": (_boolean, False),
    "nodelay": (_boolean, False),
    "keepalive": (_boolean, False),
    "mode": (_octal(0o7777, "0660"), 0o666),
    "user": (_user_or_group, None),
    "group": (_user_or_group, None),
    "accept": (_boolean, False),
    "max_connections": (_integer(1, 65536), 64),
}

# The defaults of the keys that have a converter, per table: the start of every unit's values.
_DEFAULTS = {id(table): {key: default for key, (converter, default) in table.items() if converter}
             for table in (SERVICE_KEYS, SOCKET_KEYS)}


# --------------------------------------------------------------------------- discovery

def at_line(location: Location) -> Location:
    """A problem with a unit file as a whole (empty, unreadable, too large) is put on its first
    line, so that every problem of a unit reads FILE:LINE: unit NAME: message."""
    return location if location.line else location.replace(line=1)


class _Found:
    def __init__(self):
        self.units: dict[str, str] = {}  # name -> file
        self.dropins: dict[str, dict[str, str]] = {}  # name -> {basename: file}
        self.problems: list[Problem] = []


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
                found.problems.append(Problem(Location(path, 1), None,
                                              f"'{stem}' is not a valid unit name (letters, digits, _ . @ -)"))
                continue
            if stem in here:
                found.problems.append(Problem(Location(path, 1), stem,
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
            problems.append(Problem(Location(first, 1), name,
                                    f"drop-in for a unit that does not exist (no {name}.yaml in "
                                    f"{', '.join(dirs)})"))

    env_files: dict[str, dict | SourceError] = {}  # read once, however many units name them
    readers: dict[str, _UnitReader] = {}
    for name, path in sorted(found.units.items()):
        reader = _UnitReader(name, path, environ, problems, env_files)
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


class _UnitReader:
    """Checks one unit's document key by key, recording every problem instead of stopping.

    After `build`, `unit` is the Unit (None if any error), and `sockets` and `dependencies`
    hold what could be read of them even so, for the checks across units.
    """

    def __init__(self, name: str, path: str, environ: Mapping[str, str], problems: list[Problem],
                 env_files: dict):
        self.name = name
        self.path = path
        self.environ = environ
        self.problems = problems
        self.env_files = env_files
        self.doc: yamlsource.Document | None = None
        self.files: list[str] = [path]
        self.failed = False
        self.bad_keys: set = set()  # top-level keys with an error
        self.unit: Unit | None = None
        self.sockets: list[Socket] = []
        self.dependencies: dict[str, tuple[str, ...]] = {}

    def read(self, dropins: list[str]) -> bool:
        """Parse the unit file and merge its drop-ins; False if there is no document to check.
        Drop-ins are parsed even then, so that their own errors are reported in the same pass."""
        try:
            self.doc = yamlsource.load(self.path)
        except SourceError as e:
            self.problems.append(Problem(at_line(e.location), self.name, e.message))
        for path in dropins:
            try:
                dropin = yamlsource.load(path, empty_ok=True)
            except SourceError as e:
                self.problems.append(Problem(at_line(e.location), self.name, f"drop-in: {e.message}"))
                self.failed = True
                continue
            if self.doc is not None:
                yamlsource.merge(self.doc, dropin)
                self.files.append(path)
        return self.doc is not None

    # -- reporting

    def where(self, path: tuple) -> Location:
        return self.doc.where(path)

    def error(self, path: tuple, message: str) -> None:
        self.error_at(self.where(path), message, path[0] if path else None)

    def error_at(self, location: Location, message: str, key=None) -> None:
        self.failed = True
        self.bad_keys.add(key)
        self.problems.append(Problem(location, self.name, message))

    def warn(self, path: tuple, message: str) -> None:
        self.problems.append(Problem(self.where(path), self.name, message, warning=True))

    def convert_all(self, table: dict, mapping: dict, path: tuple) -> dict:
        """Every key of `table` that has a converter: its value, or its default if not given
        (or given wrong: the error is recorded)."""
        values = dict(_DEFAULTS[id(table)])
        for key, value in mapping.items():
            converter = table.get(key, (None,))[0]
            if converter is None:
                continue
            try:
                values[key] = converter(value, self.doc.raw.get(path + (key,)))
            except Invalid as e:
                self.error(path + (key,), f"{_key_name(path, key)}: {e}")
        return values

    def unknown_keys(self, table: dict, mapping: dict, path: tuple, what: str) -> None:
        for key in mapping:
            if key not in table:
                import difflib  # only when there is a typo to suggest a fix for

                close = difflib.get_close_matches(key, list(table), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error(path + (key,), f"unknown {what} key '{_key_name(path, key)}'{hint}")

    def item_path(self, key: str, item) -> tuple:
        """The path of `item` in the list under `key` (or of the key, for a single value)."""
        value = self.doc.value.get(key)
        if isinstance(value, list) and item in value:
            return (key, value.index(item))
        return (key,)

    # -- the unit

    def build(self, known_units: set[str]) -> None:
        doc = self.doc.value
        self.unknown_keys(SERVICE_KEYS, doc, (), "service")
        values = self.convert_all(SERVICE_KEYS, doc, ())

        exec_templates, exec_paths = self.read_exec(doc)
        credentials = self.read_credentials(values["user"], values["group"], ())
        sockets = self.sockets = self.read_sockets(doc.get("sockets"))
        environment = self.read_environment(doc.get("environment"))
        env_files, file_environment = self.read_environment_files(doc.get("environment_file"))
        working_directory = self.read_working_directory(values["working_directory"], credentials)

        unit_type = values["type"]
        notify_access = values["notify_access"] or (
            "main" if unit_type == "notify" or values["watchdog_sec"] else "none")
        if unit_type == "notify" and notify_access == "none":
            self.error(("notify_access",), "notify_access: type notify needs main or all: with "
                       "none, its READY=1 could never be received")
        if values["watchdog_sec"] and notify_access == "none":
            self.error(("watchdog_sec",), "watchdog_sec: needs notify_access main or all, to "
                       "receive WATCHDOG=1")

        # Names of sockets that are declared but wrong count too: their error is reported already.
        declared = doc.get("sockets") if isinstance(doc.get("sockets"), dict) else {}
        socket_names = {s.name for s in sockets} | {
            spec["name"] if isinstance(spec, dict) and isinstance(spec.get("name"), str) else key
            for key, spec in declared.items()}
        self.check_templates(exec_templates or (), exec_paths, environment, socket_names)
        names_socket = any(r.kind == "socket" for t in exec_templates or () for r in t.refs)
        socket_env = values["socket_env"] if values["socket_env"] is not None else not names_socket

        accepting = [s for s in sockets if s.accept]
        if accepting:
            if len(sockets) > 1:
                self.error(("sockets",), f"sockets: socket '{accepting[0].key}' has accept: true, so "
                           "it must be the unit's only socket (each process gets its connection as fd 3)")
            if values["instances"] != 1:
                self.error(("instances",), "instances: a unit with an accept socket starts one "
                           "process per connection, so instances must be 1 (limit them with "
                           "max_connections)")
            if unit_type in ("notify", "oneshot"):
                self.error(("type",), f"type: {unit_type} does not fit a unit with an accept socket "
                           "(use simple or exec)")
        if values["start"] == "on-demand" and not doc.get("sockets"):
            self.error(("start",), "start: on-demand needs at least one socket to wait on")

        self.check_dependencies(values, known_units)

        if exec_templates is None:
            return
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
        # The program is looked for only with what decides where it is and who runs it known
        # good; else the message would be a consequence of an error already reported.
        if not self.bad_keys & {"exec", "user", "group", "working_directory", "environment",
                                "environment_file"}:
            problem = check_program(unit, self.environ)
            if problem:
                self.error(exec_paths[0] if exec_paths else ("exec",), f"exec: {problem}")
        if not self.failed:
            self.unit = unit

    def check_templates(self, exec_templates, exec_paths, environment, socket_names: set[str]) -> None:
        sites = list(zip(exec_paths, exec_templates))
        sites += [(("environment", key), t) for key, t in environment]
        unset_reported = set()
        for path, template in sites:
            where = "exec" if path[0] == "exec" else f"environment: {path[1]}"
            for ref in template.refs:
                if ref.kind == "socket" and ref.name not in socket_names:
                    known = (f" (its sockets: {', '.join(sorted(socket_names))})" if socket_names
                             else " (it has none)")
                    self.error(path, f"{where}: {ref} names no socket of this unit{known}")
                elif ref.kind == "env" and ref.name not in self.environ and ref.name not in unset_reported:
                    unset_reported.add(ref.name)
                    self.warn(path, f"{where}: $(env.{ref.name}) is not set here; it expands to an "
                              "empty text unless set when the container runs")

    def check_dependencies(self, values: dict, known_units: set[str]) -> None:
        for key in ("requires", "wants", "after"):
            self.dependencies[key] = values[key]
            for dep in values[key]:
                path = self.item_path(key, dep)
                if dep == self.name:
                    self.error(path, f"{key}: dependency cycle: {dep} -> {dep} (a unit cannot "
                               "depend on itself)")
                elif dep not in known_units:
                    if key == "requires":
                        self.error(path, f"requires: no unit named '{dep}'")
                    else:
                        self.warn(path, f"{key}: no unit named '{dep}' (ignored)")

    def read_exec(self, doc: dict) -> tuple[tuple[Template, ...] | None, list[tuple]]:
        """The templates of the command line, and the path of each argument in the document."""
        if "exec" not in doc:
            self.error((), "missing key 'exec': the command to run")
            return None, []
        value = doc["exec"]
        if isinstance(value, list):
            args, paths = [], []
            for i, item in enumerate(value):
                try:
                    args.append(_text(item, self.doc.raw.get(("exec", i))))
                    paths.append(("exec", i))
                except Invalid as e:
                    self.error(("exec", i), f"exec: item {i + 1}: {e}")
            if len(args) != len(value):
                return None, []
        elif value is None or isinstance(value, dict):
            self.error(("exec",), f"exec: expected a command line or a list of arguments, got {_describe(value)}")
            return None, []
        else:
            try:
                text = _text(value, self.doc.raw.get(("exec",)))  # `exec: true` runs true
                args = _split(text)
            except Invalid as e:
                self.error(("exec",), f"exec: {e}")
                return None, []
            except ValueError as e:
                self.error(("exec",), f"exec: cannot split the command line like a shell would: {e}")
                return None, []
            paths = [("exec",)] * len(args)
        if not args:
            self.error(("exec",), "exec: the command is empty")
            return None, []
        if not args[0]:
            self.error(paths[0], "exec: the program name is empty")
            return None, []
        result = []
        for arg, path in zip(args, paths):
            try:
                result.append(templates.parse(arg))
            except TemplateError as e:
                self.error(path, f"exec: {e}")
        if len(result) != len(args):
            return None, []
        return tuple(result), paths

    def read_environment(self, value) -> list[tuple[str, Template]]:
        if value is None:
            return []  # `environment:` with every entry commented out
        if not isinstance(value, dict):
            self.error(("environment",), f"environment: expected a mapping of names to values, got {_describe(value)}")
            return []
        result = []
        for key, item in value.items():
            path = ("environment", key)
            if not envfile.valid_name(key):
                self.error(path, f"environment: '{key}' is not a valid environment variable name "
                           "(letters, digits and _, not starting with a digit)")
                continue
            if item is None:
                self.error(path, f"environment: {key}: no value (YAML reads null and ~ as nothing); "
                           f"write {key}: \"\" for an empty one")
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
        if not isinstance(items, list):
            self.error(("environment_file",), "environment_file: expected a path or a list of "
                       f"paths, got {_describe(value)}")
            return [], {}
        names, variables = [], {}
        for i, item in enumerate(items):
            path = ("environment_file",) + ((i,) if isinstance(value, list) else ())
            if not isinstance(item, str) or not item.lstrip("-") or "\0" in item:
                self.error(path, f"environment_file: expected a path, got {_describe(item)}")
                continue
            optional = item.startswith("-")
            file = self.resolve_path(item[1:] if optional else item, path)
            names.append(("-" if optional else "") + file)
            if file not in self.env_files:
                try:
                    self.env_files[file] = envfile.load(file)
                except SourceError as e:
                    self.env_files[file] = e
            result = self.env_files[file]
            if isinstance(result, dict):
                variables.update(result)
                self.files.append(file)
            elif optional and not os.path.lexists(file):
                continue  # `-`: a missing file is no error
            elif result.location.line:  # the file's own syntax: located in it
                self.error_at(result.location, f"environment_file: {result.message}", "environment_file")
            elif not os.path.lexists(file):
                self.error(path, f"environment_file: '{file}' does not exist (a leading - makes "
                           "a missing file not an error)")
            else:
                self.error(path, f"environment_file: '{file}': {result.message}")
        return names, variables

    def resolve_path(self, value: str, path: tuple) -> str:
        """An absolute path; a relative one is taken from the directory of the file that says it."""
        if os.path.isabs(value):
            return os.path.normpath(value)
        declared_in = self.where(path).file
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(declared_in)), value))

    def read_working_directory(self, value: str, credentials: Credentials | None) -> str:
        if "working_directory" not in self.doc.value or "working_directory" in self.bad_keys:
            return "/"
        directory = self.resolve_path(value, ("working_directory",))
        if not os.path.isdir(directory):
            what = "does not exist" if not os.path.lexists(directory) else "is not a directory"
            self.error(("working_directory",), f"working_directory: '{directory}' {what}")
        elif credentials is not None and not may_enter(directory, credentials):
            self.error(("working_directory",), f"working_directory: '{directory}' cannot be "
                       f"entered by {user_label(credentials)}")
        return directory

    def read_credentials(self, user, group, path: tuple) -> Credentials | None:
        if user is None and group is None:
            return None
        uid, gid, groups, name, home = os.geteuid(), os.getegid(), (), None, None
        if user is not None:
            entry = _lookup(pwd.getpwnam, pwd.getpwuid, user)
            if entry is not None:
                uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
            elif isinstance(user, str):
                self.error(path + ("user",), f"{_key_name(path, 'user')}: no user named '{user}' "
                           "in /etc/passwd")
                return None
            else:
                uid, gid = user, user  # a bare id: its own group, as with user private groups
        if group is not None:
            entry = _lookup(grp.getgrnam, grp.getgrgid, group)
            if entry is not None:
                gid = entry.gr_gid
            elif isinstance(group, str):
                self.error(path + ("group",), f"{_key_name(path, 'group')}: no group named "
                           f"'{group}' in /etc/group")
                return None
            else:
                gid = group
        if name is not None:
            groups = tuple(sorted(set(os.getgrouplist(name, gid))))
        else:
            groups = (gid,)
        return Credentials(uid, gid, groups, name, home)

    def read_sockets(self, value) -> list[Socket]:
        if value is None:
            return []  # `sockets:` with every entry commented out
        if not isinstance(value, dict):
            self.error(("sockets",), "sockets: expected a mapping of socket names to socket specs, "
                       f"got {_describe(value)}")
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
                self.error(path, f"sockets.{key}: expected a socket spec (a mapping with listen:), "
                           f"got {_describe(spec)}")
                continue
            socket = self.read_socket(key, spec, path)
            if socket:
                result.append(socket)
        return result

    def read_socket(self, key: str, spec: dict, path: tuple) -> Socket | None:
        errors_before = len(self.problems)
        self.unknown_keys(SOCKET_KEYS, spec, path, "socket")
        values = self.convert_all(SOCKET_KEYS, spec, path)
        if "listen" not in spec:
            self.error(path, f"sockets.{key}: missing key 'listen': the address to bind")
            return None
        try:
            listen = parse_listen(spec["listen"])
        except ListenError as e:
            self.error(path + ("listen",), f"sockets.{key}.listen: {e}")
            return None
        name = values["name"] if values["name"] is not None else key
        if not FDNAME.match(name):
            self.error(path + ("name",), f"sockets.{key}.name: '{name}' cannot be passed in "
                       "LISTEN_FDNAMES (1 to 255 printable characters, no ':' or blank)")
        kind = listen.kind
        if values["accept"] and not listen.is_stream:
            self.error(path + ("accept",), f"sockets.{key}.accept: only stream sockets (tcp, unix) "
                       f"accept connections; {listen} is {kind}")
        # Options that do nothing for this kind of socket are ignored, as systemd does, with a
        # warning: a slip worth pointing out, not a reason to refuse the whole stack.
        useless = {}
        for option in ("nodelay", "keepalive"):
            if values[option] and kind != "tcp":
                useless[option] = "applies to tcp sockets only"
        if values["reuse_port"] and kind not in ("tcp", "udp", "inherit"):
            useless["reuse_port"] = "applies to tcp and udp sockets only"
        if values["ipv6_only"] and kind != "inherit" and not (listen.is_inet and (listen.is_ipv6 or not listen.host)):
            useless["ipv6_only"] = "applies to IPv6 addresses and bare ports only"
        for option in ("mode", "user", "group"):
            if option in spec and not listen.is_file:
                useless[option] = "applies to unix socket files and fifos only"
        if "max_connections" in spec and not values["accept"]:
            useless["max_connections"] = "applies with accept: true only"
        if kind == "inherit":
            for option in ("backlog", "reuse_port", "ipv6_only"):
                if option in spec:
                    useless[option] = "an inherited socket is already bound"
        for option, reason in useless.items():
            self.warn(path + (option,), f"sockets.{key}.{option}: {reason}; ignored")
        uid = gid = None
        if values["user"] is not None or values["group"] is not None:
            credentials = self.read_credentials(values["user"], values["group"], path)
            if credentials:
                uid = credentials.uid if values["user"] is not None else None
                gid = credentials.gid
        if any(not p.warning for p in self.problems[errors_before:]):
            return None
        return Socket(
            name=name, key=key, unit=self.name, listen=listen, backlog=values["backlog"],
            reuse_port=values["reuse_port"], ipv6_only=values["ipv6_only"], nodelay=values["nodelay"],
            keepalive=values["keepalive"], mode=values["mode"], uid=uid, gid=gid,
            accept=values["accept"], max_connections=values["max_connections"],
            where=self.where(path),
        )


def _split(command: str) -> list[str]:
    """A command line split like a shell would (shlex), without shlex's cost when no quote or
    backslash could make a difference."""
    if any(c in command for c in "'\"\\"):
        return shlex.split(command)
    return _SHELL_BLANKS.split(command.strip(" \t\r\n")) if command.strip(" \t\r\n") else []


_SHELL_BLANKS = re.compile(r"[ \t\r\n]+")  # shlex's whitespace, not str.split's


def _lookup(by_name, by_id, value):
    """A passwd or group entry, or None."""
    try:
        return by_name(value) if isinstance(value, str) else by_id(value)
    except (KeyError, ValueError, OverflowError):
        return None


def _key_name(path: tuple, key: str) -> str:
    if path and path[0] == "sockets" and len(path) == 2:
        return f"sockets.{path[1]}.{key}"
    return key


def check_program(unit: Unit, environ: Mapping[str, str]) -> str | None:
    """Why the program of `exec` cannot be executed, as the unit's user, or None."""
    if any(r.kind == "env" and r.name not in environ for r in unit.exec[0].refs):
        return None  # known only when the container runs
    fds = {s.name: 3 + i for i, s in enumerate(unit.sockets)}
    program = unit.exec[0].expand(fds, 1, environ)
    if not program:
        return f"the program '{unit.exec[0]}' expands to nothing"
    search_path = service_path(unit, environ)
    path, error = find_program(program, search_path, unit.working_directory, unit.credentials)
    if path:
        return None
    if error[0] == errno.ENOENT:
        where = f" in PATH ({search_path})" if "/" not in program else ""
        return f"program '{program}' not found{where}"
    return f"program '{program}' cannot be executed: {error[1]}"


# --------------------------------------------------------------------------- across units

def _check_across_units(readers: dict[str, _UnitReader], problems: list[Problem]) -> None:
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


def _layers(readers: dict[str, _UnitReader], problems: list[Problem]) -> tuple[tuple[str, ...], ...]:
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
