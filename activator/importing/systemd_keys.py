"""The keys of systemd's [Unit], [Service] and [Socket] sections, one translation each."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from activator.importing import common
from activator.importing.ini import Option
from activator.importing.model import ImportedUnit

_SPECIFIER = re.compile(r"%(.)")
_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_SIMPLE_ARG = re.compile(r"[A-Za-z0-9_./=:,+@%$()-]+\Z")
SANDBOX = ("Protect", "Private", "ReadOnly", "ReadWrite", "Inaccessible", "NoNewPrivileges",
           "Capability", "AmbientCapabilities", "SystemCall", "Restrict", "Lock", "MemoryDeny",
           "DevicePolicy", "DeviceAllow", "SecureBits", "RootDirectory", "RootImage")
RESOURCES = ("CPU", "Memory", "IO", "Tasks", "Slice", "Nice", "OOMScoreAdjust", "Delegate")
TARGETS = (".target", ".mount", ".slice", ".device", ".path", ".timer", ".swap", ".automount", ".scope")
WHY_SERVICE = {
    "PIDFile": "activator follows the process it started (a daemon may report MAINPID=)",
    "ExecStartPost": "no command after start; a oneshot unit that is after this one covers it",
    "ExecStop": "activator stops a service with kill_signal, then SIGKILL",
    "ExecStopPost": "no command after stop",
    "ExecReload": "only reload_signal (a signal, such as ExecReload=kill -HUP $MAINPID)",
    "RemainAfterExit": "a oneshot unit that exited 0 stays exited and satisfies its dependents",
    "KillMode": "the whole process group is always stopped",
    "SendSIGKILL": "SIGKILL always follows timeout_stop_sec",
    "SupplementaryGroups": "the user's groups come from its account",
    "DynamicUser": "no dynamic users: name a user that exists in the image",
    "RuntimeDirectory": "create the directory in the image, or in a oneshot unit",
    "StateDirectory": "create the directory in the image, or in a oneshot unit",
    "LogsDirectory": "create the directory in the image, or in a oneshot unit",
    "CacheDirectory": "create the directory in the image, or in a oneshot unit",
    "ConfigurationDirectory": "create the directory in the image, or in a oneshot unit",
    "SyslogIdentifier": "output lines are prefixed with the unit's name",
    "GuessMainPID": "activator follows the process it started",
    "StandardInput": "stdin is /dev/null",
    "TimeoutAbortSec": "a watchdog timeout aborts with SIGABRT, then timeout_stop_sec",
    "RestartPreventExitStatus": "exit 0 is success, any other a failure",
    "SuccessExitStatus": "exit 0 is success (and death by SIGHUP, SIGINT, SIGTERM or SIGPIPE is clean)",
}


@dataclass
class Context:
    full_name: str  # web.service, web@.service, web.socket
    template: bool
    unit: ImportedUnit
    path: str

    def skip(self, option: Option, why: str, name: str | None = None) -> None:
        self.unit.skip(self.path, option.line, name or option.name, why)

    def specifiers(self, text: str, option: Option, templates: bool, quiet: bool = False) -> str | None:
        """`text` with systemd's %-specifiers resolved; None (and reported) where one cannot be
        and the key takes no template."""
        unresolved: list[str] = []
        result = self._specifiers(text, option, templates, quiet, unresolved)
        return None if unresolved and not templates and not quiet else result

    def _specifiers(self, text: str, option: Option, templates: bool, quiet: bool,
                    unresolved: list) -> str:
        stem = self.full_name.rsplit(".", 1)[0]
        prefix, _, instance = stem.partition("@")
        known = {"n": self.full_name, "N": stem, "p": prefix, "P": prefix, "t": "/run",
                 "S": "/var/lib", "C": "/var/cache", "L": "/var/log", "E": "/etc", "T": "/tmp",
                 "V": "/var/tmp", "%": "%"}
        if instance or not self.template:
            known.update(i=instance, I=instance, j=prefix.rsplit("-", 1)[-1], J=prefix)

        def replace(match):
            letter = match.group(1)
            if letter in known:
                return known[letter]
            if letter in "iI" and templates:
                return "\0instance\0"
            if quiet:
                return match.group(0)
            unresolved.append(letter)
            self.skip(option, f"%{letter} is the instance, and {option.name}= takes no template"
                      if letter in "iI" else f"the specifier %{letter} has no equivalent here")
            return match.group(0)

        return _SPECIFIER.sub(replace, text)


def split_words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _templated(text: str) -> str:
    return common.literal(text).replace("\0instance\0", "$(instance)")


def command(option: Option, context: Context, environment: dict, has_env_file: bool):
    """(exec value, prefix flags) of an Exec*= line, or None if it cannot be carried over."""
    value = option.value
    flags = ""
    while value[:1] in "-@:+!":
        flags += value[0]
        value = value[1:]
    value = context.specifiers(value, option, templates=True)
    argv = split_words(value)
    if not argv:
        return None, flags
    if "@" in flags:
        argv = [argv[0]] + argv[2:]
        context.skip(option, "@: the program is given its own name as argv[0]", f"{option.name} @")
    if "+" in flags or "!" in flags:
        context.unit.note(f"{option.name}: the {flags} prefix ran it with full privileges; "
                          "here it runs as the unit's user")
    names = {m.group(1) or m.group(2) for arg in argv for m in _VARIABLE.finditer(arg)}
    if ":" in flags or not names:
        return _exec_value([_templated(a) for a in argv]), flags
    outside = names - set(environment)
    if outside and has_env_file:
        context.unit.note(f"{option.name}: ${', $'.join(sorted(outside))} may come from "
                          "EnvironmentFile=, so a shell expands it when the service starts")
        return ["sh", "-c", "exec " + " ".join(_shell_word(a) for a in argv)], flags
    expanded: list[str] = []
    for arg in argv:
        whole = re.fullmatch(r"\$(\w+)", arg)
        if whole and whole.group(1) in environment:
            expanded += [_templated(w) for w in split_words(environment[whole.group(1)])]  # $VAR: words
            continue
        expanded.append(_expand_variables(arg, environment))
    return _exec_value(expanded), flags


def _expand_variables(arg: str, environment: dict) -> str:
    out, pos = [], 0
    for match in _VARIABLE.finditer(arg):
        out.append(_templated(arg[pos:match.start()]))
        name = match.group(1) or match.group(2)
        out.append(_templated(environment[name]) if name in environment else f"$(env.{name})")
        pos = match.end()
    out.append(_templated(arg[pos:]))
    return "".join(out)


def _shell_word(arg: str) -> str:
    """One argument for `sh -c`: literal parts quoted, ${VAR} expanded by the shell as one
    word, a bare $VAR split into words as systemd splits it."""
    if re.fullmatch(r"\$(\w+)", arg):
        return _templated(arg)
    out, pos = [], 0
    for match in _VARIABLE.finditer(arg):
        if match.start() > pos:
            out.append(shlex.quote(arg[pos:match.start()]))
        out.append('"${%s}"' % (match.group(1) or match.group(2)))
        pos = match.end()
    if pos < len(arg) or not out:
        out.append(shlex.quote(arg[pos:]))
    return _templated("".join(out))


def _exec_value(argv: list[str]):
    if all(_SIMPLE_ARG.match(a) for a in argv):
        return " ".join(argv)
    return argv


