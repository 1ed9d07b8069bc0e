"""The keys of a unit file: one table per kind of mapping (service, socket), each key with the
converter that checks and reads its value, and its default.

A converter takes the value as YAML read it and the text as written (for messages such as
"got off (read by YAML as false)") and returns the value activator uses, or raises Invalid
with what was expected. Defaults that depend on other keys are derived by the unit reader.
"""

from __future__ import annotations

import re
import shlex
import signal
from collections.abc import Callable

from activator.discovery import is_unit_name  # socket names follow unit names too
from activator.listen import ascii_digits
from activator.model import INFINITY

FDNAME = re.compile(r"[\x21-\x39\x3b-\x7e]{1,255}\Z")  # printable ASCII, no ':' (sd_listen_fds)
MAX_INSTANCES = 4096

class Invalid(ValueError):
    """A value is not acceptable; the message says what was expected."""


# Names useradd would take, and a little more (Samba's `name$`); never ':', '/', blanks or NUL.
_ACCOUNT_NAME = re.compile(r"[A-Za-z0-9_.][A-Za-z0-9_.@$-]{0,255}\Z")
MAX_ID = 2**32 - 2  # (uid_t)-1 means "no change" to the kernel


def describe(value, raw: str | None = None) -> str:
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


def as_text(value, raw: str | None) -> str:
    """A scalar as text, numbers and booleans as written (`PORT: 8000`, `DEBUG: yes`)."""
    if isinstance(value, str):
        return _no_nul(value)
    if value is None or isinstance(value, (dict, list, bytes)):
        raise Invalid(f"expected text, got {describe(value, raw)}")
    return raw if raw is not None else str(value)


def _string(value, raw):
    if not isinstance(value, str):
        raise Invalid(f"expected text, got {describe(value, raw)}")
    return _no_nul(value)


def _path(value, raw):
    if not isinstance(value, str) or not value:
        raise Invalid(f"expected a path, got {describe(value, raw)}")
    return _no_nul(value)


def _boolean(value, raw):
    if not isinstance(value, bool):
        raise Invalid(f"expected true or false, got {describe(value, raw)}")
    return value


def _integer(low: int, high: int | None = None):
    def convert(value, raw):
        if isinstance(value, bool) or not isinstance(value, int):
            raise Invalid(f"expected a whole number, got {describe(value, raw)}")
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
        raise Invalid(f"expected one of {', '.join(choices)}, got {describe(value, raw)}")
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
        raise Invalid(f"{expected}; got {describe(value, raw)}")
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
        raise Invalid(f"{expected}; got {describe(value, raw)}")
    if seconds == INFINITY and not infinity:
        raise Invalid(f"expected a finite number of seconds, got {describe(value, raw)}")
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
        raise Invalid(f"expected a signal name such as SIGTERM, got {describe(value, raw)}")
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
            raise Invalid(f"expected an octal mode such as {example}, got {describe(value, raw)}")
        number = int(m.group(1), 8)
        if number > high:
            raise Invalid(f"expected an octal mode up to {high:04o}, got {text}")
        return number
    return convert


def _names(value, raw):
    """A list of unit names (a single name is accepted for a list of one)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid(f"expected a list of unit names, got {describe(value, raw)}")
    names = []
    for item in items:
        if not isinstance(item, str) or not is_unit_name(item):
            raise Invalid(f"expected unit names, got {describe(item)}")
        if item not in names:
            names.append(item)
    return tuple(names)


def _user_or_group(value, raw):
    """A name, or a number (given as a number or as digits), checked to exist later."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and ascii_digits(value):
        number = int(value)
    elif isinstance(value, str) and _ACCOUNT_NAME.match(value):
        return value
    else:
        raise Invalid(f"expected a user or group name or id, got {describe(value, raw)}")
    if not 0 <= number <= MAX_ID:
        raise Invalid(f"expected an id from 0 to {MAX_ID}, got {number}")
    return number


# Service keys: converter and default. Defaults that depend on other keys are derived later;
# None as converter: the key is read by a method of its own.
SERVICE_KEYS: dict[str, tuple[Callable | None, object]] = {
    "description": (as_text, ""),
    "exec": (None, None),
    "type": (_choice("simple", "exec", "notify", "oneshot"), "simple"),
    "instances": (_integer(1, MAX_INSTANCES), 1),
    "sockets": (None, None),
    "socket_env": (_boolean, None),
    "start": (_choice("eager", "on-demand"), "eager"),
    "stdio": (_choice("inherit", "socket"), "inherit"),
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
    "log_buffer_lines": (_integer(0, 1_000_000), 1000),
    "oom_score_adjust": (_integer(-1000, 1000), None),
    "limits": (None, None),
    "ready": (None, None),  # unitprobes.py
    "health": (None, None),
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
DEFAULTS = {id(table): {key: default for key, (converter, default) in table.items() if converter}
             for table in (SERVICE_KEYS, SOCKET_KEYS)}


def split_command(command: str) -> list[str]:
    """A command line split like a shell would (shlex), without shlex's cost when no quote or
    backslash could make a difference."""
    if any(c in command for c in "'\"\\"):
        return shlex.split(command)
    return _SHELL_BLANKS.split(command.strip(" \t\r\n")) if command.strip(" \t\r\n") else []


_SHELL_BLANKS = re.compile(r"[ \t\r\n]+")  # shlex's whitespace, not str.split's


def lookup_account(by_name, by_id, value):
    """A passwd or group entry, or None."""
    try:
        return by_name(value) if isinstance(value, str) else by_id(value)
    except (KeyError, ValueError, OverflowError):
        return None


def key_name(path: tuple, key: str) -> str:
    if path and path[0] == "sockets" and len(path) == 2:
        return f"sockets.{path[1]}.{key}"
    return key
