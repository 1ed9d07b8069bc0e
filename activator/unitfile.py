"""The reading of one unit file (and its drop-ins) into a Unit, recording every problem.

`UnitReader.build` checks the document key by key and never stops at the first problem, so
that one pass of `activator check` reports everything wrong with a file. The checks that need
every unit at once (global socket names, colliding addresses, dependency cycles) are in
units.py.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
from collections.abc import Mapping

from activator import envfile, observed, resources, templates, yamlsource
from activator.discovery import at_line
from activator.model import (Credentials, Location, Problem, Socket, Unit, find_program, may_enter,
                             service_path, user_label)
from activator.templates import Template, TemplateError
from activator.unitkeys import (DEFAULTS, SERVICE_KEYS, Invalid, as_text, describe, key_name,
                                lookup_account, split_command)
from activator.unitprobes import read_health, read_ready
from activator.unitsockets import read_sockets
from activator.yamlsource import SourceError

class UnitReader:
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
        values = dict(DEFAULTS[id(table)])
        for key, value in mapping.items():
            converter = table.get(key, (None,))[0]
            if converter is None:
                continue
            try:
                values[key] = converter(value, self.doc.raw.get(path + (key,)))
            except Invalid as e:
                self.error(path + (key,), f"{key_name(path, key)}: {e}")
        return values

    def unknown_keys(self, table: dict, mapping: dict, path: tuple, what: str) -> None:
        for key in mapping:
            if key not in table:
                import difflib  # only when there is a typo to suggest a fix for

                close = difflib.get_close_matches(key, list(table), n=1)
                hint = f"; did you mean '{close[0]}'?" if close else ""
                self.error(path + (key,), f"unknown {what} key '{key_name(path, key)}'{hint}")

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
        sockets = self.sockets = read_sockets(self, doc.get("sockets"))
        environment = self.read_environment(doc.get("environment"))
        env_files, file_environment = self.read_environment_files(doc.get("environment_file"))
        working_directory = self.read_working_directory(values["working_directory"], credentials)

        unit_type = values["type"]
        notify_access = self.read_notify_access(values)

        socket_env = self.read_templates(values, sockets, exec_templates, exec_paths, environment)
        self.check_socket_use(values, sockets, bool(doc.get("sockets")))

        self.check_dependencies(values, known_units)
        accepts = any(s.accept for s in sockets)
        ready = read_ready(self, doc.get("ready"), unit_type, sockets, accepts)
        health = read_health(self, doc.get("health"), unit_type, accepts)

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
            log_buffer_lines=values["log_buffer_lines"], oom_score_adjust=values["oom_score_adjust"],
            limits=self.read_limits(doc.get("limits")), files=tuple(self.files), stdio=values["stdio"],
            ready=ready, health=health,
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

    def read_templates(self, values: dict, sockets, exec_templates, exec_paths, environment) -> bool:
        """Check the templates of `exec` and `environment`; the value of `socket_env`."""
        # Names of sockets that are declared but wrong count too: their error is reported already.
        declared = self.doc.value.get("sockets")
        declared = declared if isinstance(declared, dict) else {}
        socket_names = {s.name for s in sockets} | {
            spec["name"] if isinstance(spec, dict) and isinstance(spec.get("name"), str) else key
            for key, spec in declared.items()}
        self.check_templates(exec_templates or (), exec_paths, environment, socket_names)
        # A program told its socket by template (`--bind fd://3`, `UWSGI_HTTP_SOCKET`) may also
        # read LISTEN_FDS and take the same socket twice: off by default then (SPEC §1).
        templated = [*(exec_templates or ()), *(t for _, t in environment)]
        names_socket = any(r.kind == "socket" for t in templated for r in t.refs)
        return values["socket_env"] if values["socket_env"] is not None else not names_socket

    def read_notify_access(self, values: dict) -> str:
        unit_type = values["type"]
        notify_access = values["notify_access"] or (
            "main" if unit_type == "notify" or values["watchdog_sec"] else "none")
        if unit_type == "notify" and notify_access == "none":
            self.error(("notify_access",), "notify_access: type notify needs main or all: with "
                       "none, its READY=1 could never be received")
        if values["watchdog_sec"] and notify_access == "none":
            self.error(("watchdog_sec",), "watchdog_sec: needs notify_access main or all, to "
                       "receive WATCHDOG=1")
        return notify_access

    def check_socket_use(self, values: dict, sockets: list[Socket], declared: bool) -> None:
        """What an accept socket or on-demand start asks of the rest of the unit."""
        unit_type = values["type"]
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
        elif values["stdio"] == "socket" and "sockets" not in self.bad_keys:
            self.error(("stdio",), "stdio: socket needs a socket with accept: true (each "
                       "connection becomes the process's stdin and stdout)")
        if values["start"] == "on-demand" and not declared:
            self.error(("start",), "start: on-demand needs at least one socket to wait on")

    def read_limits(self, value) -> tuple[tuple[str, int, int], ...]:
        limits, problems = resources.read_limits(value, lambda name: self.doc.raw.get(("limits", name)))
        for path, message in problems:
            self.error(path, message)
        return limits

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
                    args.append(as_text(item, self.doc.raw.get(("exec", i))))
                    paths.append(("exec", i))
                except Invalid as e:
                    hint = (" (YAML reads an item with ': ' in it as a mapping: quote it)"
                            if isinstance(item, dict) else "")
                    self.error(("exec", i), f"exec: item {i + 1}: {e}{hint}")
            if len(args) != len(value):
                return None, []
        elif value is None or isinstance(value, dict):
            self.error(("exec",), f"exec: expected a command line or a list of arguments, got {describe(value)}")
            return None, []
        else:
            try:
                text = as_text(value, self.doc.raw.get(("exec",)))  # `exec: true` runs true
                args = split_command(text)
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
            self.error(("environment",), f"environment: expected a mapping of names to values, got {describe(value)}")
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
                result.append((key, templates.parse(as_text(item, self.doc.raw.get(path)))))
            except (Invalid, TemplateError) as e:
                self.error(path, f"environment: {key}: {e}")
        return result

    def read_environment_files(self, value) -> tuple[list[str], dict[str, str]]:
        if value is None:
            return [], {}
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            self.error(("environment_file",), "environment_file: expected a path or a list of "
                       f"paths, got {describe(value)}")
            return [], {}
        names, variables = [], {}
        for i, item in enumerate(items):
            path = ("environment_file",) + ((i,) if isinstance(value, list) else ())
            if not isinstance(item, str) or not item.lstrip("-") or "\0" in item:
                self.error(path, f"environment_file: expected a path, got {describe(item)}")
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
            elif optional and not observed.lexists(file):
                continue  # `-`: a missing file is no error
            elif result.location.line:  # the file's own syntax: located in it
                self.error_at(result.location, f"environment_file: {result.message}", "environment_file")
            elif not observed.lexists(file):
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
        if not observed.isdir(directory):
            what = "does not exist" if not observed.lexists(directory) else "is not a directory"
            self.error(("working_directory",), f"working_directory: '{directory}' {what}")
        elif credentials is not None and not may_enter(directory, credentials):
            self.error(("working_directory",), f"working_directory: '{directory}' cannot be "
                       f"entered by {user_label(credentials)}")
        return directory

    def read_credentials(self, user, group, path: tuple) -> Credentials | None:
        if user is None and group is None:
            return None
        uid, gid, groups, name, home = os.geteuid(), os.getegid(), (), None, None
        observed.accounts()  # what the lookups below read: facts of the model cache
        if user is not None:
            entry = lookup_account(pwd.getpwnam, pwd.getpwuid, user)
            if entry is not None:
                uid, gid, name, home = entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir
            elif isinstance(user, str):
                self.error(path + ("user",), f"{key_name(path, 'user')}: no user named '{user}' "
                           "in /etc/passwd")
                return None
            else:
                uid, gid = user, user  # a bare id: its own group, as with user private groups
        if group is not None:
            entry = lookup_account(grp.getgrnam, grp.getgrgid, group)
            if entry is not None:
                gid = entry.gr_gid
            elif isinstance(group, str):
                self.error(path + ("group",), f"{key_name(path, 'group')}: no group named "
                           f"'{group}' in /etc/group")
                return None
            else:
                gid = group
        if name is not None:
            groups = tuple(sorted(set(os.getgrouplist(name, gid))))
        else:
            groups = (gid,)
        return Credentials(uid, gid, groups, name, home)


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

