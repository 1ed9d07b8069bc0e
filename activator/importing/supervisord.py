"""supervisord.conf: `[program:x]` and `[fcgi-program:x]` → one unit each.

supervisord expands `%(name)s` itself (Python's `%` formatting with its own names): `here`,
`program_name`, `group_name`, `process_num`, `numprocs`, `host_node_name` and `ENV_X`. `ENV_X`
becomes `$(env.X)` (the container's environment, read when the service starts) unless the file
defines X in an `environment=` line, whose value is then written; `%(process_num)d` becomes
`$(instance)`. Expansions are resolved with placeholders before `environment=` is split the
way supervisord splits it (shlex, `KEY="v",KEY2=v2`), so templates survive the split.
"""

from __future__ import annotations

import glob
import os
import re
import shlex

from activator.importing import common
from activator.importing.ini import SUPERVISORD, Section, parse_ini, read_text
from activator.importing.model import ImportedUnit, ImportFailed, Result, Skipped

_EXPANSION = re.compile(r"%(?:%|\((?P<name>[^)]*)\)(?P<spec>[#0 +-]*\d*(?:\.\d+)?)(?P<conv>[diouxXeEfFgGcrsa]))")
CONSOLE_OUT = ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1")
CONSOLE_ERR = ("/dev/stderr", "/dev/fd/2", "/proc/self/fd/2")
NONE_WORDS = ("none", "off")
CONTROL = "supervisord's own control server and client; activator is controlled by signals and `activator status`"
OWN_SECTIONS = {"supervisord": "supervisord's own settings (logging, pid file, daemon mode)",
                "unix_http_server": CONTROL, "inet_http_server": CONTROL, "supervisorctl": CONTROL}
HANDLED = {"command", "numprocs", "numprocs_start", "priority", "autorestart", "startretries",
           "stopsignal", "stopwaitsecs", "stopasgroup", "killasgroup", "user", "directory",
           "umask", "environment", "process_name", "stdout_logfile", "stderr_logfile",
           "redirect_stderr", "socket", "socket_owner", "socket_mode", "socket_backlog"}
NEUTRAL = {"autostart": "true", "exitcodes": "0", "startsecs": "0", "serverurl": "auto",
           "stdout_logfile_maxbytes": "0", "stderr_logfile_maxbytes": "0",
           "stdout_logfile_backups": "0", "stderr_logfile_backups": "0",
           "stdout_capture_maxbytes": "0", "stderr_capture_maxbytes": "0",
           "stdout_events_enabled": "false", "stderr_events_enabled": "false",
           "stdout_syslog": "false", "stderr_syslog": "false"}
WHY = {
    "autostart": "every unit starts at boot",
    "exitcodes": "exit 0 is success (and death by SIGHUP, SIGINT, SIGTERM or SIGPIPE is clean)",
    "startsecs": "no minimum uptime: use type: notify or ready: for readiness; the restart "
                 "delay resets after restart_max_sec of uptime",
    "serverurl": "no supervisorctl server for programs to call",
}


def read(path: str) -> Result:
    sections: dict[str, Section] = {}
    files = _read_with_includes(path, sections, [])
    return _Translation(sections, files).run()


def _read_with_includes(path: str, sections: dict, chain: list[str]) -> list[str]:
    """Read `path`, then the files of its [include] (globs relative to it), depth first."""
    real = os.path.realpath(path)
    if real in chain:
        raise ImportFailed(path, "include loop: " + " -> ".join(chain + [real]))
    before = sections.get("include")
    if before is not None:
        del sections["include"]
    parse_ini(read_text(path), path, SUPERVISORD, sections)
    include = sections.pop("include", None)
    if before is not None:
        sections["include"] = before
    files = [path]
    if include is None:
        return files
    if "files" not in include.options:
        raise ImportFailed(f"{path}:{include.line}", "[include] has no files= setting")
    here = os.path.dirname(os.path.abspath(path))
    text = include.options["files"].value.replace("%(here)s", here)
    text = re.sub(r"%\(ENV_(\w+)\)s", lambda m: os.environ.get(m.group(1), ""), text)
    for pattern in text.split():
        for name in sorted(glob.glob(os.path.join(here, pattern))):
            files += _read_with_includes(name, sections, chain + [real])
    return files


class _Translation:
    def __init__(self, sections: dict, files: list[str]):
        self.sections = sections
        self.result = Result()
        self.unit: ImportedUnit | None = None
        self.section: Section | None = None
        self.program_name, self.numprocs, self.numprocs_start = "", 1, 0
        self.env: dict = {}
        self.placeholders: dict = {}
        base = sections.get("supervisord")
        self.base_env: dict = {}
        if base is not None and "environment" in base.options:
            self.base_env = self.key_value_pairs(base.options["environment"].value, base, None)

    def run(self) -> Result:
        ranked = []
        for name in sorted(self.sections):
            section = self.sections[name]
            kind = name.split(":", 1)[0].lower()
            if kind in ("program", "fcgi-program"):
                unit, priority = self.program(section, fcgi=kind == "fcgi-program")
                self.result.units.append(unit)
                ranked.append((priority, unit))
            elif kind == "eventlistener":
                self.section_skip(section, "event listeners have no equivalent (no event protocol)")
            elif kind == "group":
                self.section_skip(section, "groups have no equivalent: each program is a unit of its own")
            elif kind in ("rpcinterface", "ctlplugin"):
                self.section_skip(section, CONTROL)
            elif name in OWN_SECTIONS:
                rest = [o for o, option in section.options.items()
                        if not (name == "supervisord" and (o == "environment" or (
                            o == "nodaemon" and common.boolean(option.value))))]  # as activator
                if rest:
                    self.section_skip(section, f"{OWN_SECTIONS[name]}: {', '.join(rest)}")
            else:
                self.section_skip(section, "not a section supervisord reads")
        common.order_by_priority(ranked, "supervisord starts lower priorities first")
        return self.result

    def section_skip(self, section: Section, why: str) -> None:
        self.result.skipped.append(Skipped(section.file, section.line, f"[{section.name}]", why))

    # -- one program

    def program(self, section: Section, fcgi: bool) -> tuple[ImportedUnit, int]:
        program = section.name.split(":", 1)[1].strip()
        unit = ImportedUnit(common.unit_name(program), section.file, section.line, f"[{section.name}]")
        self.unit, self.section, self.program_name = unit, section, program
        options = section.options
        self.numprocs = self.integer("numprocs", 1, 1)
        self.numprocs_start = self.integer("numprocs_start", 0, 0)
        self.env = dict(self.base_env)
        if "environment" in options:
            self.env.update(self.key_value_pairs(options["environment"].value, section, unit))
        keys = unit.keys
        if "command" not in options:
            raise ImportFailed(f"{section.file}:{section.line}", f"[{section.name}] has no command=")
        command = self.expand("command")
        if fcgi:
            keys["exec"] = self.fcgi(section, command)
        else:
            keys["exec"] = command
        keys["instances"] = self.numprocs if self.numprocs > 1 else None
        keys["environment"] = {k: self.finish(v) for k, v in self.env.items()} or None
        for option, key in (("directory", "working_directory"), ("user", "user")):
            if option in options:
                keys[key] = self.expand(option, templates=False)
        if "umask" in options:
            keys["umask"] = self.checked(common.octal_mode(options["umask"].value, 0o777), "umask")
        restart = options["autorestart"].value.strip().lower() if "autorestart" in options else "unexpected"
        keys["restart"] = {"unexpected": None, "true": "always", "false": "no"}.get(restart)
        if restart not in ("unexpected", "true", "false"):
            self.skip("autorestart", f"{restart!r} is not true, false or unexpected")
        retries = self.integer("startretries", None, 0)
        if retries is not None:
            keys["start_limit_burst"] = retries + 1  # the first start, then the retries
        if "stopsignal" in options:
            keys["kill_signal"] = self.checked(common.signal_name(options["stopsignal"].value), "stopsignal")
        if "stopwaitsecs" in options:
            keys["timeout_stop_sec"] = self.checked(common.number(options["stopwaitsecs"].value), "stopwaitsecs")
        self.output()
        for name, option in options.items():
            if name in HANDLED:
                continue
            if NEUTRAL.get(name) == option.value.strip().lower():
                continue
            self.skip(name, WHY.get(name) or self.log_why(name) or "no equivalent in activator")
        return unit, self.integer("priority", 999, None)

    def log_why(self, name: str) -> str | None:
        if name.startswith(("stdout_", "stderr_")):
            return "activator writes every service's output to its own stdout and stderr (the container log)"
        return None

    def output(self) -> None:
        options = self.section.options
        out = options["stdout_logfile"].value.strip() if "stdout_logfile" in options else "auto"
        err = options["stderr_logfile"].value.strip() if "stderr_logfile" in options else "auto"
        redirect = "redirect_stderr" in options and common.boolean(options["redirect_stderr"].value)
        if out.lower() in NONE_WORDS and (redirect or err.lower() in NONE_WORDS):
            self.unit.keys["output"] = "null"
            return
        if out in CONSOLE_OUT and (redirect or err in CONSOLE_ERR):
            self.unit.keys["output"] = "inherit"
            if redirect:
                self.skip("redirect_stderr", "stderr stays stderr; both reach the container log")
            return
        for option, value in (("stdout_logfile", out), ("stderr_logfile", err)):
            if option in options and value.lower() != "auto" and value not in CONSOLE_OUT + CONSOLE_ERR:
                self.skip(option, "activator writes every service's output to its own stdout and "
                          "stderr (NAME | line), for the container log; not to files")
        if redirect:
            self.skip("redirect_stderr", "stderr stays stderr; both reach the container log")

    def fcgi(self, section: Section, command: str) -> list[str]:
        options, unit = section.options, self.unit
        socket = self.expand("socket", templates=False) if "socket" in options else ""
        spec: dict = {}
        if socket.startswith("unix://"):
            spec["listen"] = "unix:" + socket[len("unix://"):]
            spec["mode"] = common.octal_mode(options["socket_mode"].value) if "socket_mode" in options else "0700"
            if "socket_owner" in options:
                user, _, group = options["socket_owner"].value.strip().partition(":")
                spec["user"], spec["group"] = user or None, group or None
            elif "user" in options:
                spec["user"] = options["user"].value.strip()  # supervisord gives it to the program's user
        elif re.fullmatch(r"tcp://[^\s:]+:\d+", socket):
            spec["listen"] = socket
        else:
            raise ImportFailed(f"{section.file}:{options['socket'].line if 'socket' in options else section.line}",
                               f"[{section.name}]: socket must be tcp://HOST:PORT or unix:///path, got {socket!r}")
        if "socket_backlog" in options:
            spec["backlog"] = self.integer("socket_backlog", None, 1)
        unit.sockets[unit.name] = spec
        unit.note("fcgi-program: supervisord passed the socket as fd 0; activator passes it as "
                  "fd 3, so the command runs under sh, which moves it to fd 0 (0<&3 3<&-)")
        try:  # supervisord splits the command as shlex does; sh must see the same words
            words = shlex.split(command)
        except ValueError as e:
            raise ImportFailed(f"{section.file}:{options['command'].line}", f"command: {e}") from None
        return ["sh", "-c", f"exec {shlex.join(words)} 0<&3 3<&-"]

    # -- values

    def skip(self, option: str, why: str) -> None:
        line = self.section.options[option].line if option in self.section.options else self.section.line
        skipped = Skipped(self.section.file, line, option, why)
        (self.unit.skipped if self.unit is not None else self.result.skipped).append(skipped)

    def checked(self, value, option: str):
        if value is None:
            self.skip(option, f"{self.section.options[option].value!r} cannot be read")
        return value

    def integer(self, option: str, default, low):
        if option not in self.section.options:
            return default
        text = self.section.options[option].value.strip()
        if re.fullmatch(r"-?\d+", text) and (low is None or int(text) >= low):
            return int(text)
        self.skip(option, f"{text!r} is not a whole number" + (f" of at least {low}" if low is not None else ""))
        return default

    def key_value_pairs(self, text: str, section: Section, unit: ImportedUnit | None) -> dict:
        """supervisord's `KEY="value",KEY2=value2`, split as it splits it (shlex), with the
        expansions already placeholders so that templates survive the split."""
        self.section = section
        expanded = self.expand_text(text, "environment", templates=True)
        lexer = shlex.shlex(expanded)
        lexer.wordchars += "/.+-():"
        try:
            tokens = list(lexer)
        except ValueError as e:
            raise ImportFailed(f"{section.file}:{section.options['environment'].line}",
                               f"environment: {e}") from None
        pairs = {}
        for i in range(0, len(tokens), 4):
            key_eq_value = tokens[i:i + 3]
            if len(key_eq_value) != 3 or key_eq_value[1] != "=":
                raise ImportFailed(f"{section.file}:{section.options['environment'].line}",
                                   "environment: expected KEY=value pairs separated by commas")
            pairs[key_eq_value[0]] = key_eq_value[2].strip("'\"")
        return pairs

    def expand(self, option: str, templates: bool = True) -> str:
        text = self.expand_text(self.section.options[option].value, option, templates)
        return self.finish(text) if templates else text

    def expand_text(self, text: str, option: str, templates: bool) -> str:
        """`%(name)s` expansions of `text`: values as text, templates as placeholders."""
        def replace(match):
            if match.group(0) == "%%":
                return "%"
            name, spec, conv = match.group("name"), match.group("spec"), match.group("conv")
            value = self.name_value(name, option, templates)
            if isinstance(value, _Template):
                if spec and self.unit is not None:
                    self.unit.note(f"{option}: %({name}){spec}{conv} was padded; $(instance) is not")
                token = f"zzimport{len(self.placeholders)}zz"
                self.placeholders[token] = value.text
                return token
            try:
                return ("%" + spec + conv) % value
            except (TypeError, ValueError):
                return str(value)

        return _EXPANSION.sub(replace, text)

    def finish(self, text: str) -> str:
        """Placeholders back to templates, every other `$` kept literal."""
        text = common.literal(text)
        for token, template in self.placeholders.items():
            text = text.replace(token, template)
        return text

    def name_value(self, name: str, option: str, templates: bool):
        where = f"{self.section.file}:{self.section.options[option].line if option in self.section.options else self.section.line}"
        if name == "here":
            return os.path.dirname(os.path.abspath(self.section.file))
        if name in ("program_name", "group_name"):
            return self.program_name
        if name == "numprocs":
            return self.numprocs
        if name == "process_num":
            start, count = self.numprocs_start, self.numprocs
            if count == 1 or not templates:
                return start
            if start != 1 and self.unit is not None:
                self.skip("numprocs_start" if "numprocs_start" in self.section.options else "numprocs",
                          f"%(process_num) counted from {start}; $(instance) counts from 1")
            return _Template("$(instance)")
        if name.startswith("ENV_"):
            var = name[4:]
            if var in self.env:
                return self.env[var]
            if templates:
                return _Template(f"$(env.{var})")
            self.skip(option, f"%({name})s is only known when the container runs, and "
                      f"{option} takes no template")
            return f"%({name})s"
        if name == "host_node_name" and templates:
            return _Template("$(env.HOSTNAME)")
        raise ImportFailed(where, f"{option}: %({name}) is not a name supervisord expands")


class _Template:
    def __init__(self, text: str):
        self.text = text
