"""The model of a stack: immutable records of units, sockets and where they came from.

This is what the rest of activator works with. It is kept apart from the loader (units.py),
which needs YAML and every validator: PID 1 loads unit files in a short-lived child process
(loading.py) and receives the finished Model, so the init itself never imports the parser.

Fingerprints let a reload tell what changed:

- `Unit.fingerprint` changes with anything the unit file (drop-ins and environment files
  included) means, never with formatting, comments, or the order of keys where order means
  nothing (only the order of sockets does: it sets their fd numbers);
- a reload restarts every unit whose fingerprint changed;
- `Socket.fingerprint` and `Socket.bind_key` tell a socket to adjust in place from one that
  must be bound anew.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
from collections.abc import Mapping
from types import MappingProxyType

try:  # the built-in BLAKE2: hashlib would load OpenSSL, 3.7 MiB resident in PID 1 for one hash
    from _blake2 import blake2b
except ImportError:  # pragma: no cover - a Python built without it
    from hashlib import blake2b

from activator import observed, templates
from activator.listen import Listen
from activator.record import Record

if False:  # for the annotations only: the init imports probes only for units that have them
    from activator.probespec import Probe  # noqa: F401
from activator.templates import Template

INFINITY = float("inf")


class Location(Record):
    file: str
    line: int = 0  # 1-based; 0 when the problem concerns the whole file

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


# --------------------------------------------------------------------------- problems

class Problem(Record):
    location: Location
    unit: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        unit = f" unit {self.unit}:" if self.unit else ""
        kind = " warning:" if self.warning else ""
        # One problem, one line, whatever a file name or a key holds (a newline, an escape),
        # and printable even for a file name that is not UTF-8 (os.listdir's surrogates).
        text = f"{self.location}:{unit}{kind} {self.message}".translate(_CONTROL_ESCAPES)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


_CONTROL_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(0x20), 0x7f]}


class UnitsError(Exception):
    """The unit files are not valid; `problems` holds every error (and the warnings)."""

    def __init__(self, problems: list[Problem]):
        problems = sorted(problems, key=lambda p: (p.location.file, p.location.line))
        self.problems = problems
        self.errors = [p for p in problems if not p.warning]
        super().__init__("\n".join(str(p) for p in self.errors))


# --------------------------------------------------------------------------- the model

class Credentials(Record):
    uid: int
    gid: int
    groups: tuple[int, ...]
    user: str | None = None  # the passwd entry's name and home, when `user` names one
    home: str | None = None


class Socket(Record):
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
    where: Location = Location("")
    _not_compared = ("where",)  # where it was written is not what it is

    @property
    def bind_key(self) -> tuple:
        """What cannot change on a bound socket: a change here needs a new socket."""
        return (str(self.listen), self.reuse_port, self.ipv6_only)

    @property
    def fingerprint(self) -> str:
        return _digest({k: getattr(self, k) for k in (
            "name", "backlog", "nodelay", "keepalive", "mode", "uid", "gid", "accept",
            "max_connections")} | {"bind": self.bind_key})


class Unit(Record):
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
    log_buffer_lines: int = 1000  # lines of output kept in memory for `activator logs`
    oom_score_adjust: int | None = None  # None: the score activator was started with
    limits: tuple[tuple[str, int, int], ...] = ()  # (name as in `limits`, soft, hard)
    ready: Probe | None = None  # simple/exec: when it counts as started (SPEC §10)
    health: Probe | None = None  # liveness while it runs
    files: tuple[str, ...] = ()  # the unit file, then its drop-ins, then environment files
    literal_exec: bool = False  # `-- CMD`: arguments used as given
    stdio: str = "inherit"  # `socket`: an accept unit's connection is also fds 0 and 1

    @property
    def accepts(self) -> bool:
        return any(s.accept for s in self.sockets)

    @property
    def fingerprint(self) -> str:
        return _digest(self._fields())

    def _fields(self) -> dict:
        """What the unit means, in a form where order that means nothing is normalized away."""
        fields = {k: getattr(self, k) for k in self._record_fields if k not in ("files",)}
        fields["exec"] = [str(t) for t in self.exec]
        fields["environment"] = sorted((k, str(t)) for k, t in self.environment)
        fields["file_environment"] = sorted(self.file_environment)
        for key in ("requires", "wants", "after"):
            fields[key] = sorted(fields[key])
        fields["sockets"] = [s.fingerprint for s in self.sockets]  # order kept: it sets the fds
        fields["credentials"] = None if self.credentials is None else [
            self.credentials.uid, self.credentials.gid, list(self.credentials.groups)]
        return fields


class Model(Record):
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

    def __reduce__(self):  # a MappingProxyType does not pickle; the loader sends Models over a pipe
        return (_model, (dict(self.units), self.layers, self.warnings, self.directories))

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


def _model(units: dict, layers, warnings, directories) -> Model:
    return Model(MappingProxyType(units), layers, warnings, directories)


def _digest(value) -> str:
    import json  # only here: PID 1 booting from a model cache never digests

    text = json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))
    return blake2b(text.encode(), digest_size=8).hexdigest()


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
    """(path, None) for the file that exec would run, or (None, (errno, message)).

    As execvp does it, but judged for the user the service runs as: the file must be a regular
    file with an execute bit for that user, in directories that user may search. Relative
    names and PATH entries are taken from the service's working directory. Each stat is a
    fact of the model cache when the loader runs this (observed.py).
    """
    if "\0" in program:
        return None, (errno.ENOENT, os.strerror(errno.ENOENT))
    if "/" in program:
        candidates = [os.path.join(cwd, program)]
    else:
        candidates = [os.path.join(cwd, directory, program) for directory in search_path.split(":")]
    denied = None
    for candidate in candidates:
        try:
            st = observed.stat(candidate)
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode):
            denied = denied or f"'{candidate}' is a directory"
        elif not _may_execute(st, credentials):
            denied = denied or f"'{candidate}' is not executable by {user_label(credentials)}"
        elif not may_enter(os.path.dirname(candidate), credentials):
            denied = denied or f"{user_label(credentials)} may not search a directory on the way to '{candidate}'"
        else:
            return candidate, None
    if denied:
        return None, (errno.EACCES, f"{os.strerror(errno.EACCES)}: {denied}")
    return None, (errno.ENOENT, os.strerror(errno.ENOENT))


def _identity(credentials: Credentials | None) -> tuple[int, int, set[int]]:
    if credentials is None:
        return os.geteuid(), os.getegid(), set(os.getgroups())
    return credentials.uid, credentials.gid, set(credentials.groups)


def user_label(credentials: Credentials | None) -> str:
    if credentials is None:
        return f"uid {os.geteuid()}"
    return f"user {credentials.user}" if credentials.user else f"uid {credentials.uid}"


def _permits(st: os.stat_result, uid: int, gid: int, groups: set[int]) -> bool:
    """Whether the owner, group or other execute/search bit that applies to uid is set."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid or st.st_gid in groups:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _may_execute(st: os.stat_result, credentials: Credentials | None) -> bool:
    if not stat.S_ISREG(st.st_mode):
        return False
    uid, gid, groups = _identity(credentials)
    if uid == 0:
        return bool(st.st_mode & 0o111)  # root needs one execute bit, any of them
    return _permits(st, uid, gid, groups)


def may_enter(directory: str, credentials: Credentials | None) -> bool:
    """Whether the user may search `directory` and every directory above it (root always may)."""
    uid, gid, groups = _identity(credentials)
    if uid == 0:
        return True
    path = os.path.abspath(directory)
    while True:
        try:
            if not _permits(observed.stat(path), uid, gid, groups):
                return False
        except (OSError, ValueError):
            return False
        if path == "/":
            return True
        path = os.path.dirname(path)


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
        raise UnitsError([Problem(Location(model.units["main"].files[0], 1), "main",
                                  "the unit name 'main' is taken by the command given after --")])
    units = dict(model.units, main=main)
    first = (*model.layers[0], "main") if model.layers else ("main",)
    return Model(MappingProxyType(units), (first, *model.layers[1:]), model.warnings, model.directories)
