"""circus.ini: `[watcher:NAME]` → one unit each, `[socket:NAME]` → a socket of the unit whose
command names it, `[env]` and `[env:PATTERNS]` → environment.

Circus expands `$(circus.env.VAR)` when it reads the file, from `[env]` sections and its own
environment: a variable the file defines is written as its value, any other as `$(env.VAR)`.
`$(circus.sockets.NAME)` and `$(circus.wid)` are kept as they are: activator reads both.
"""

from __future__ import annotations

import configparser
import fnmatch
import glob
import os
import re

from activator.importing import common
from activator.importing.ini import CIRCUS, Section, parse_ini, read_text
from activator.importing.model import ImportedUnit, ImportFailed, Result

_TEMPLATE = re.compile(r"\$\((circus\.[\w.]+)\)|\(\((circus\.[\w.]+)\)\)", re.IGNORECASE)
_SHELL_VAR = re.compile(r"\$([A-Z]+[A-Z0-9_]*)")
DAEMON_SECTIONS = {"circus": "circusd's own settings (endpoints, statistics, logging)"}
HANDLED = {"cmd", "args", "shell", "numprocesses", "working_dir", "uid", "gid", "respawn",
           "max_retry", "graceful_timeout", "stop_signal", "stop_children", "send_hup",
           "priority", "singleton", "use_sockets", "copy_env", "umask", "on_demand",
           "close_child_stdout", "close_child_stderr"}
NEUTRAL = {"warmup_delay": ("0", "0.0"), "autostart": ("true", "1", "yes", "on"),
           "copy_path": ("false", "0", "no", "off"), "check_flapping": ("true", "1", "yes", "on")}
WHY = {
    "warmup_delay": "no delay between starts; use type: notify or ready: for real readiness",
    "autostart": "every unit starts at boot; start: on-demand waits for traffic, not for a command",
    "copy_path": "the environment, PATH included, is always inherited",
    "virtualenv": "name the program by its full path, or set PATH in environment",
    "max_age": "no restart by age",
    "max_age_variance": "no restart by age",
    "executable": "the program is the first word of exec",
    "check_flapping": "restarts are limited by start_limit_burst and start_limit_interval_sec",
    "use_papa": "sockets are held by activator itself",
    "close_child_stdin": "stdin is always /dev/null",
    "stream_backend": "output goes to activator's stdout and stderr",
}


def read(path: str) -> Result:
    sections: dict[str, Section] = {}
    parse_ini(read_text(path), path, CIRCUS, sections)
    for included in _includes(path, sections):
        parse_ini(read_text(included), included, CIRCUS, sections)
    values = _interpolated(sections)
    return _Translation(sections, values).run()


def _includes(path: str, sections: dict) -> list[str]:
    here = os.path.dirname(os.path.abspath(path))
    options = sections.get("circus").options if "circus" in sections else {}
    patterns = options["include"].value.split() if "include" in options else []
    if "include_dir" in options:
        patterns += [os.path.join(d, "*.ini") for d in options["include_dir"].value.split()]
    found: list[str] = []
    for pattern in patterns:
        for name in sorted(glob.glob(os.path.join(here, pattern))):
            if os.path.abspath(name) == os.path.abspath(path) or name in found:
                raise ImportFailed(f"{path}:{options['include'].line if 'include' in options else 1}",
                                   f"include loop: {name} is included twice")
            found.append(name)
    return found


def _interpolated(sections: dict) -> dict:
    """Section -> option -> value after ConfigParser's `%(name)s` interpolation, as Circus
    reads them (its ConfigParser keeps BasicInterpolation)."""
    parser = configparser.ConfigParser(interpolation=configparser.BasicInterpolation())
    parser.optionxform = str
    for name, section in sections.items():
        if name != parser.default_section:
            parser.add_section(name)
        for option in section.options.values():
            try:
                parser.set(name, option.name, option.value)
            except ValueError as e:  # a lone '%': Circus fails on it too
                raise ImportFailed(f"{section.file}:{option.line}", f"{option.name}: {e}") from None
    values = {}
    for name, section in sections.items():
        values[name] = {}
        for option in section.options.values():
            try:
                values[name][option.name] = parser.get(name, option.name)
            except (configparser.Error, ValueError) as e:
                message = str(e).splitlines()[0]
                raise ImportFailed(f"{section.file}:{option.line}", f"{option.name}: {message}") from None
    return values


class _Translation:
    def __init__(self, sections: dict, values: dict):
        self.sections = sections
        self.values = values
        self.result = Result()
        self.global_env = dict(values.get("env", {}))
        self.sockets = {name.split(":", 1)[1].lower(): name for name in sections
                        if name.lower().startswith("socket:")}
        self.socket_owner: dict[str, ImportedUnit] = {}
        self.depth = 0  # of $(circus.env.VAR) values expanded in a command

    def run(self) -> Result:
        ranked = []
        for name in sorted(self.sections):
            section = self.sections[name]
            kind = name.split(":", 1)[0].lower()
            if kind == "watcher":
                unit, priority = self.watcher(section)
                ranked.append((priority, unit))
                self.result.units.append(unit)
            elif kind == "plugin":
                self.result.skipped.append(_section_skip(section, "Circus plugins have no equivalent"))
            elif name in DAEMON_SECTIONS and _daemon_options(section):
                self.result.skipped.append(_section_skip(section, DAEMON_SECTIONS[name]))
            elif kind not in ("socket", "env", "circus"):
                self.result.skipped.append(_section_skip(section, "not a section Circus reads"))
        for key, section in self.sockets.items():
            if key not in self.socket_owner:
                self.result.skipped.append(_section_skip(
                    self.sections[section], "no watcher's command names this socket "
                    "($(circus.sockets.NAME)), so it belongs to no unit"))
        common.order_by_priority(ranked, "Circus starts higher priorities first")
        return self.result

    # -- one watcher

    def watcher(self, section: Section) -> tuple[ImportedUnit, int]:
        raw_name = section.name.split(":", 1)[1]
        unit = ImportedUnit(common.unit_name(raw_name), section.file, section.line, f"[{section.name}]")
        values = self.values[section.name]
        env = self.environment(raw_name)
        self.unit, self.section, self.env = unit, section, env
        keys = unit.keys
        command = " ".join(v for v in (values.get("cmd", ""), values.get("args", "")) if v)
        command = self.expand(command, "cmd", templates=True)
        shell = common.boolean(values.get("shell", "false"))
        keys["exec"] = ["sh", "-c", command] if shell else command
        instances = self.integer("numprocesses", 1, 1)
        singleton = common.boolean(values.get("singleton", "false"))
        keys["instances"] = instances if instances > 1 and not singleton else None
        keys["start"] = "on-demand" if common.boolean(values.get("on_demand", "false")) else None
        keys["environment"] = {k: self.expand(v, "env", templates=True, shell_vars=True)
                               for k, v in env.items()} or None
        if "copy_env" in values and common.boolean(values["copy_env"]) is False:
            unit.note("copy_env = false: Circus gave only the [env] variables; activator's "
                      "services inherit its whole environment")
        for option, key in (("working_dir", "working_directory"), ("uid", "user"), ("gid", "group")):
            if option in values:
                keys[key] = self.expand(values[option], option, templates=False)
        if "umask" in values:
            keys["umask"] = self.checked(common.octal_mode(values["umask"], 0o777), "umask", "not an octal umask")
        respawn = common.boolean(values.get("respawn", "true"))
        keys["restart"] = "always" if respawn is not False else "no"  # Circus's default: respawn
        retries = self.integer("max_retry", None, -1)
        if retries == -1:
            keys["start_limit_interval_sec"] = 0
        elif retries:
            keys["start_limit_burst"] = retries
        timeout = common.number(values.get("graceful_timeout", "30"))
        keys["timeout_stop_sec"] = self.checked(timeout, "graceful_timeout", "not a number of seconds")
        if "stop_signal" in values:
            keys["kill_signal"] = self.checked(common.signal_name(values["stop_signal"]), "stop_signal",
                                               "not a signal name")
        if common.boolean(values.get("send_hup", "false")):
            keys["reload_signal"] = "SIGHUP"
        self.output(values)
        for option in section.options:
            self.unhandled(option, values[option])
        self.attach_sockets(unit, command)
        return unit, -(self.integer("priority", 0, None) or 0)  # higher first: the first level

    def unhandled(self, option: str, value: str) -> None:
        if option in HANDLED:
            return
        where = self.section.options[option]
        if option in NEUTRAL and value.strip().lower() in NEUTRAL[option]:
            return
        if option in ("hooks.before_start", "hooks.before_spawn"):
            why = ("hooks run Python inside circusd; a oneshot unit that this one requires "
                   "runs a command before it starts")
        elif option.startswith("hooks."):
            why = "hooks run Python inside circusd; activator runs no code of yours in itself"
        elif option.startswith("flapping."):
            why = WHY["check_flapping"]
        elif option.startswith(("stdout_stream.", "stderr_stream.")):
            if option.endswith(".class") and value.rsplit(".", 1)[-1] in ("StdoutStream", "StdErrStream"):
                return  # what activator does anyway
            why = "output goes to activator's stdout and stderr, prefixed with the unit's name"
        elif option.startswith("rlimit_"):
            why = "resource limits come from the container runtime (or sh -c 'ulimit ...; exec ...')"
        else:
            why = WHY.get(option, "no equivalent in activator")
        self.unit.skip(self.section.file, where.line, option, why)

    def output(self, values: dict) -> None:
        out = common.boolean(values.get("close_child_stdout", "false"))
        err = common.boolean(values.get("close_child_stderr", "false"))
        if out and err:
            self.unit.keys["output"] = "null"
        elif out or err:
            option = "close_child_stdout" if out else "close_child_stderr"
            self.unit.skip(self.section.file, self.section.options[option].line, option,
                           "one stream cannot be closed alone; output: null discards both")

    def environment(self, watcher: str) -> dict:
        env = dict(self.global_env)
        for name in sorted(self.sections):
            if name.lower().startswith("env:"):
                patterns = [p.strip() for p in name.split(":", 1)[1].split(",")]
                if any(fnmatch.fnmatch(watcher, p) for p in patterns):
                    env.update(self.values[name])
        return env

    # -- values

    def integer(self, option: str, default, low):
        text = self.values[self.section.name].get(option)
        if text is None:
            return default
        try:
            value = int(text.strip())
        except ValueError:
            value = None
        if value is None or (low is not None and value < low):
            self.unit.skip(self.section.file, self.section.options[option].line, option,
                           f"{text!r} is not a whole number of at least {low}")
            return default
        return value

    def checked(self, value, option: str, why: str):
        if value is None:
            self.unit.skip(self.section.file, self.section.options[option].line, option, why)
        return value

    def expand(self, text: str, option: str, *, templates: bool, shell_vars: bool = False) -> str:
        """Circus's `$(circus.…)` templates in `text`: env references resolved, the rest kept
        (or, where activator expands nothing, reported)."""
        out, pos = [], 0
        for match in _TEMPLATE.finditer(text):
            out.append(self.plain(text[pos:match.start()], shell_vars, templates))
            pos = match.end()
            body = match.group(1) or match.group(2)
            out.append(self.template(body, match.group(0), option, templates))
        out.append(self.plain(text[pos:], shell_vars, templates))
        return "".join(out)

    def plain(self, text: str, shell_vars: bool, templates: bool) -> str:
        text = common.literal(text) if templates else text
        if shell_vars:  # Circus expands $VAR in env values from its own environment
            text = _SHELL_VAR.sub(lambda m: f"$(env.{m.group(1)})", text)
        return text

    def template(self, body: str, written: str, option: str, templates: bool) -> str:
        kind = body.lower()
        if kind.startswith("circus.env."):
            var = body[len("circus.env."):]  # Circus matches names without case
            known = {k.lower(): v for k, v in self.env.items()}
            if var.lower() in known:
                value = known[var.lower()]
                if not templates or self.depth:
                    return common.literal(value) if templates else value
                # Circus expands the command again when it starts a process: the value's own
                # $(circus.wid) and $(circus.sockets.NAME) count, once.
                self.depth += 1
                try:
                    return self.expand(value, option, templates=True)
                finally:
                    self.depth -= 1
            if templates:
                return f"$(env.{var})"
        elif templates and kind == "circus.wid":
            return "$(circus.wid)"
        elif templates and kind.startswith("circus.sockets."):
            return f"$(circus.sockets.{kind[len('circus.sockets.'):]})"
        line = self.section.options[option].line if option in self.section.options else self.section.line
        self.unit.skip(self.section.file, line, option, f"{written}: activator cannot expand it here")
        return common.literal(written) if templates else written

    def attach_sockets(self, unit: ImportedUnit, command: str) -> None:
        texts = [command] if isinstance(command, str) else list(command)
        texts += list((unit.keys.get("environment") or {}).values())
        named = []
        for text in texts:
            for match in re.finditer(r"\$\(circus\.sockets\.([\w.-]+)\)", text):
                if match.group(1) not in named:
                    named.append(match.group(1))
        for key in named:
            section = self.sockets.get(key)
            if section is None:
                unit.skip(self.section.file, self.section.line, f"$(circus.sockets.{key})",
                          "no [socket:" + key + "] section declares it")
                continue
            spec = self.socket(self.sections[section], unit)
            if key not in self.socket_owner:
                self.socket_owner[key] = unit
                unit.sockets[key] = spec
            else:
                self.share(key, spec, unit)

    def share(self, key: str, spec: dict, unit: ImportedUnit) -> None:
        """A second watcher of one Circus socket: a socket belongs to one unit here, so each
        binds the address with SO_REUSEPORT, and the kernel spreads connections over both."""
        owner = self.socket_owner[key]
        if not str(spec["listen"]).startswith(("tcp://", "udp://")):
            unit.skip(self.section.file, self.section.line, f"$(circus.sockets.{key})",
                      f"the socket belongs to unit {owner.name}, and a unix socket cannot be bound twice")
            return
        own = f"{key}-{unit.name}"
        owner.sockets[key]["reuse_port"] = True
        unit.sockets[own] = {**spec, "reuse_port": True}
        old, new = f"$(circus.sockets.{key})", f"$(sockets.{own})"
        keys = unit.keys
        keys["exec"] = ([a.replace(old, new) for a in keys["exec"]] if isinstance(keys["exec"], list)
                        else keys["exec"].replace(old, new))
        if keys.get("environment"):
            keys["environment"] = {k: v.replace(old, new) for k, v in keys["environment"].items()}
        for other in (owner, unit):
            other.note(f"Circus shared [socket:{key}] between {owner.name} and {unit.name}: "
                       "here each unit binds the address with reuse_port: true")

    def socket(self, section: Section, unit: ImportedUnit) -> dict | None:
        values = self.values[section.name]
        spec: dict = {}
        kind = "udp" if "DGRAM" in values.get("type", "").upper() else "tcp"
        if "path" in values:
            spec["listen"] = "unix:" + values["path"]
            if "umask" in values:
                mode = common.octal_mode(values["umask"], 0o777)
                if mode:
                    spec["mode"] = f"{0o777 & ~int(mode, 8):04o}"
        else:
            host = values.get("host", "localhost")
            host = f"[{host}]" if ":" in host else host
            spec["listen"] = f"{kind}://{host}:{values.get('port', '8080').strip()}"
        if "backlog" in values and values["backlog"].strip().isdigit():
            spec["backlog"] = int(values["backlog"])
        if common.boolean(values.get("so_reuseport", "false")):
            spec["reuse_port"] = True
        for option, why in (("interface", "no binding to a named interface"),
                            ("use_papa", "sockets are held by activator itself")):
            if option in values:
                unit.skip(section.file, section.options[option].line, f"[{section.name}] {option}", why)
        return spec


def _daemon_options(section: Section) -> list[str]:
    return [o for o in section.options if o not in ("include", "include_dir")]


def _section_skip(section: Section, why: str):
    from activator.importing.model import Skipped

    return Skipped(section.file, section.line, f"[{section.name}]", why)
