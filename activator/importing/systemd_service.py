"""[Unit], [Service] and [Socket] of one systemd file → the keys of one activator unit."""

from __future__ import annotations

import re

from activator.importing import common
from activator.importing.ini import Option
from activator.importing.model import ImportedUnit
from activator.importing.systemd_keys import (
    RESOURCES, SANDBOX, TARGETS, WHY_SERVICE, Context, command, split_words)

RESTART = {"no": "no", "on-failure": "on-failure", "on-abnormal": "on-abnormal", "always": "always"}
NEAREST_RESTART = {"on-success": "always", "on-abort": "on-abnormal", "on-watchdog": "on-abnormal"}
TYPES = {"simple": "simple", "exec": "exec", "notify": "notify", "oneshot": "oneshot",
         "notify-reload": "notify"}
SPANS = {"RestartSec": "restart_sec", "RestartMaxDelaySec": "restart_max_sec",
         "TimeoutStartSec": "timeout_start_sec", "TimeoutStopSec": "timeout_stop_sec",
         "WatchdogSec": "watchdog_sec", "StartLimitIntervalSec": "start_limit_interval_sec",
         "StartLimitInterval": "start_limit_interval_sec"}
DEPENDENCIES = ("Requires", "Wants", "After", "BindsTo", "Before", "Requisite")
UNIT_SILENT = ("Description", "Documentation", "DefaultDependencies")
SOCKET_FLAGS = {"Accept": "accept", "ReusePort": "reuse_port", "NoDelay": "nodelay",
                "KeepAlive": "keepalive"}
LISTEN = {"ListenStream": "stream", "ListenDatagram": "datagram", "ListenFIFO": "fifo"}


def _assignments(options: list[Option], key: str) -> list[Option]:
    """The effective assignments of a list key: an empty one resets what came before."""
    result: list[Option] = []
    for option in options:
        if option.name == key:
            result = [] if not option.value else result + [option]
    return result


def _last(options: list[Option], key: str) -> Option | None:
    found = [o for o in options if o.name == key]
    return found[-1] if found else None


def _span(value: str):
    """A systemd time span as activator reads it: a bare number is seconds."""
    text = value.strip()
    number = common.number(text)
    return number if number is not None else text


def service_keys(sections: dict, context: Context, names: dict) -> list[ImportedUnit]:
    keys = context.unit.keys
    unit_options = sections.get("Unit", [])
    service = sections.get("Service", [])
    description = _last(unit_options, "Description")
    if description and description.value:
        keys["description"] = context.specifiers(description.value, description, templates=False, quiet=True)
    environment: dict = {}
    for option in _assignments(service, "Environment"):
        for word in split_words(context.specifiers(option.value, option, templates=True)):
            name, equals, value = word.partition("=")
            if equals and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                environment[name] = value
            else:
                context.skip(option, f"{word!r} is not NAME=VALUE")
    env_files = [o.value for o in _assignments(service, "EnvironmentFile")]
    keys["environment"] = {k: common.literal(v).replace("\0instance\0", "$(instance)")
                           for k, v in environment.items()} or None
    keys["environment_file"] = (env_files[0] if len(env_files) == 1 else env_files) or None
    kind = _last(service, "Type")
    type_name = kind.value if kind else "simple"
    keys["type"] = TYPES.get(type_name) if TYPES.get(type_name) != "simple" else None
    if type_name == "notify-reload":
        keys["reload_signal"] = "SIGHUP"
    elif kind is not None and type_name not in TYPES:
        context.skip(kind, f"Type={type_name}: run the program in the foreground (a daemon "
                     "may report itself with MAINPID=); imported as simple")
    starts = _assignments(service, "ExecStart")
    if starts:
        keys["exec"], flags = command(starts[0], context, environment, bool(env_files))
        if "-" in flags:
            context.skip(starts[0], "-: systemd took a failing exit status as success; here it "
                         "is a failure, which restart: decides on", "ExecStart -")
        _socket_stdio(service, context)
        for extra in starts[1:]:
            context.skip(extra, "one command per unit: a oneshot unit for each further command")
    _simple_keys(service, context)
    _dependencies(unit_options, context, names)
    for option in unit_options:
        if option.name.startswith("StartLimit"):
            _simple_keys([option], context)
        elif option.name not in UNIT_SILENT + DEPENDENCIES:
            context.skip(option, "conditions, assertions and other [Unit] settings have no "
                         "equivalent" if option.name.startswith(("Condition", "Assert"))
                         else "no equivalent in activator")
    keys["restart"] = keys.get("restart") or "no"  # systemd's default, not activator's
    if "timeout_stop_sec" not in keys and keys.get("type") != "oneshot":
        keys["timeout_stop_sec"] = "90s"  # systemd's DefaultTimeoutStopSec
    return _pre_units(service, context, environment, env_files)


def _socket_stdio(service: list[Option], context: Context) -> None:
    """StandardInput=socket (inetd style): activator gives the connection as fd 3, so a
    shell moves it to the standard streams the program expects."""
    stdin, stdout = _last(service, "StandardInput"), _last(service, "StandardOutput")
    if stdin is None or stdin.value != "socket":
        return
    keys = context.unit.keys
    argv = keys["exec"] if isinstance(keys["exec"], list) else keys["exec"].split(" ")
    redirect = "0<&3 1>&3" if stdout is None or stdout.value in ("socket", "inherit") else "0<&3"
    keys["exec"] = ["sh", "-c", f'exec "$0" "$@" {redirect} 3<&-', *argv]
    context.unit.note("StandardInput=socket: activator passes the connection as fd 3; sh moves "
                      f"it to the standard streams ({redirect})")


def _simple_keys(service: list[Option], context: Context) -> None:
    keys = context.unit.keys
    handled = {"Type", "ExecStart", "ExecStartPre", "Environment", "EnvironmentFile", "StandardInput"}
    for option in service:
        name, value = option.name, option.value
        if name in handled:
            continue
        if name == "Restart":
            if value in RESTART:
                keys["restart"] = RESTART[value]
            elif value in NEAREST_RESTART:
                keys["restart"] = NEAREST_RESTART[value]
                context.skip(option, f"Restart={value} has no equivalent; restart: "
                             f"{NEAREST_RESTART[value]} restarts in these cases and more")
            else:
                context.skip(option, f"Restart={value} is not a Restart= value")
        elif name in SPANS:
            keys[SPANS[name]] = _span(value)
        elif name == "TimeoutSec":
            keys["timeout_start_sec"] = keys["timeout_stop_sec"] = _span(value)
        elif name == "StartLimitBurst" and value.isdigit():
            keys["start_limit_burst"] = int(value)
        elif name in ("User", "Group"):
            keys[name.lower()] = context.specifiers(value, option, templates=False)  # None: reported
        elif name == "WorkingDirectory":
            _working_directory(option, context)
        elif name == "UMask" and common.octal_mode(value, 0o777):
            keys["umask"] = common.octal_mode(value, 0o777)
        elif name == "KillSignal" and common.signal_name(value):
            keys["kill_signal"] = common.signal_name(value)
        elif name == "NotifyAccess" and value in ("none", "main", "all"):
            keys["notify_access"] = value
        elif name in ("SuccessAction", "FailureAction") and value in ("none", "exit", "exit-force"):
            keys["success_action" if name == "SuccessAction" else "failure_action"] = value.split("-")[0]
        elif name in ("StandardOutput", "StandardError"):
            _output(option, context)
        elif name == "ExecReload" and _reload_signal(value):
            keys["reload_signal"] = _reload_signal(value)
        elif name.startswith("Limit"):
            context.skip(option, "resource limits come from the container runtime (--ulimit)")
        elif name.startswith(SANDBOX):
            context.skip(option, "sandboxing: the container is the sandbox")
        elif name.startswith(RESOURCES):
            context.skip(option, "resource control: the container's own limits")
        else:
            context.skip(option, WHY_SERVICE.get(name, "no equivalent in activator"))


def _working_directory(option: Option, context: Context) -> None:
    value = option.value.lstrip("-")
    if value.startswith("~") or not value.startswith("/"):
        context.skip(option, f"{option.value!r}: give the directory's absolute path")
        return
    context.unit.keys["working_directory"] = context.specifiers(value, option, templates=False)  # None: reported


def _output(option: Option, context: Context) -> None:
    value, keys = option.value, context.unit.keys
    if value in ("journal", "syslog", "kmsg", "journal+console", "syslog+console",
                 "kmsg+console", "inherit", ""):
        return  # to the log: activator's own stdout and stderr
    if value == "null":
        if option.name == "StandardOutput":
            keys["output"] = "null"
            context.unit.note("StandardOutput=null: output: null discards stderr too")
        else:
            context.skip(option, "stderr cannot be discarded alone")
        return
    if value == "socket" and option.name == "StandardOutput":
        return  # handled with StandardInput=socket
    context.skip(option, f"{value}: output goes to activator's stdout and stderr")


def _reload_signal(value: str) -> str | None:
    match = re.fullmatch(r"[-@:+!]*(?:/usr)?(?:/bin/)?kill\s+(?:-s\s+)?-?(\w+)\s+\$\{?MAINPID\}?", value.strip())
    return common.signal_name(match.group(1)) if match else None


def _dependencies(options: list[Option], context: Context, names: dict) -> None:
    keys = context.unit.keys
    own = context.unit.name
    for option in options:
        if option.name not in DEPENDENCIES:
            continue
        kept, dropped = [], []
        for word in option.value.split():
            target = names.get(word)
            if target == own:
                continue  # its own socket: part of this unit
            (kept if target else dropped).append(target or word)
        key = {"Requires": "requires", "BindsTo": "requires", "Requisite": "requires",
               "Wants": "wants", "After": "after", "Before": "_before"}[option.name]
        if kept:
            keys[key] = sorted(set(keys.get(key) or []) | set(kept))
        if option.name == "BindsTo" and kept:
            context.unit.note("BindsTo= is requires: the unit stops if one of them fails for good")
        if dropped:
            targets = [d for d in dropped if d.endswith(TARGETS)]
            why = ("systemd targets, mounts and devices have no equivalent in a container"
                   if len(targets) == len(dropped) else "not among the units imported")
            context.skip(option, why, f"{option.name}={' '.join(dropped)}")


def _pre_units(service: list[Option], context: Context, environment: dict, env_files: list) -> list[ImportedUnit]:
    unit = context.unit
    units: list[ImportedUnit] = []
    previous: tuple[str, bool] | None = None
    for i, option in enumerate(_assignments(service, "ExecStartPre"), 1):
        name = f"{unit.name}-pre" + (f"-{i}" if i > 1 else "")
        pre = ImportedUnit(name, context.path, option.line, f"ExecStartPre= of {context.full_name}")
        pre_context = Context(context.full_name, context.template, pre, context.path)
        exec_value, flags = command(option, pre_context, environment, bool(env_files))
        if exec_value is None:
            continue
        pre.keys.update(description=f"ExecStartPre of {unit.name}", exec=exec_value, type="oneshot",
                        restart="no")
        for key in ("environment", "environment_file", "working_directory", "user", "group", "umask"):
            if unit.keys.get(key) is not None and not (key in ("user", "group") and set(flags) & set("+!")):
                pre.keys[key] = unit.keys[key]
        if previous:
            pre.keys["wants" if previous[1] else "requires"] = [previous[0]]
        pre.note("runs once before the service's first start, not before each restart")
        units.append(pre)
        previous = (name, "-" in flags)
    if previous:
        key = "wants" if previous[1] else "requires"
        unit.keys[key] = sorted(set(unit.keys.get(key) or []) | {previous[0]})
    return units


def socket_keys(sections: dict, context: Context) -> tuple[dict, list]:
    options: dict = {}
    listens = []
    socket = sections.get("Socket", [])
    for option in socket:
        name, value = option.name, option.value
        if name in LISTEN:
            listens = [] if not value else listens + [(LISTEN[name], option)]
        elif name in SOCKET_FLAGS:
            options[SOCKET_FLAGS[name]] = bool(common.boolean(value)) or None
        elif name == "Backlog" and value.isdigit():
            options["backlog"] = int(value)
        elif name == "MaxConnections" and value.isdigit():
            options["max_connections"] = int(value)
        elif name == "FileDescriptorName":
            options["name"] = value
        elif name in ("SocketUser", "SocketGroup"):
            options["user" if name == "SocketUser" else "group"] = value
        elif name == "SocketMode" and common.octal_mode(value):
            options["mode"] = common.octal_mode(value)
        elif name == "BindIPv6Only" and value in ("ipv6-only", "both", "default"):
            options["ipv6_only"] = True if value == "ipv6-only" else None
        elif name != "Service":
            context.skip(option, "no equivalent for activator's sockets")
    return options, listens


def listen_address(kind: str, value: str, context: Context, option: Option) -> str | int | None:
    text = context.specifiers(value.strip(), option, templates=False)
    if text is None:
        return None  # reported
    if kind == "fifo":
        return "fifo:" + text
    scheme = "udp" if kind == "datagram" else "tcp"
    if text.startswith("/") or text.startswith("@"):
        if kind == "datagram":
            context.skip(option, "unix datagram sockets are not among activator's kinds")
            return None
        return "unix:" + text
    if text.isdigit():
        return int(text) if scheme == "tcp" else f"udp://*:{text}"
    match = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[0-9.]+):(\d+)", text)
    if match:
        return f"{scheme}://{match.group(1)}:{match.group(2)}"
    context.skip(option, f"{text!r}: activator listens on tcp, udp, unix and fifo addresses")
    return None
