"""Unit files as a person would write them: SPEC's key order, defaults left out, comments.

Emitted by hand rather than with a YAML library: the order of keys and the comments are the
point of the output, and the values are few kinds (text, numbers, booleans, lists of text, one
level of mappings). A text is written plain where YAML reads it back as the same text, and as
a double-quoted scalar (JSON's escapes are a subset of YAML's) everywhere else.
"""

from __future__ import annotations

import re

from activator.importing.model import ImportedUnit

SERVICE_ORDER = (
    "description", "exec", "type", "instances", "sockets", "socket_env", "start", "requires",
    "wants", "after", "environment", "environment_file", "working_directory", "user", "group",
    "umask", "restart", "restart_sec", "restart_max_sec", "start_limit_burst",
    "start_limit_interval_sec", "timeout_start_sec", "timeout_stop_sec", "kill_signal",
    "reload_signal", "watchdog_sec", "notify_access", "output", "success_action",
    "failure_action",
)
SOCKET_ORDER = (
    "listen", "name", "backlog", "reuse_port", "ipv6_only", "nodelay", "keepalive", "mode",
    "user", "group", "accept", "max_connections",
)
# Words YAML 1.1 reads as something other than text. The choice keys (`restart: no`) are read
# as the words they are (SPEC §1), so they are written plain: see _WORD_KEYS.
_SPECIAL = re.compile(r"(?i:y|n|yes|no|true|false|on|off|null|~|\.nan|\.inf|-\.inf|\+\.inf)\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_/.+$(][A-Za-z0-9_/.@%+$()=,:*-]*(?: [A-Za-z0-9_/.@%+$()=,:*'\"-]+)*\Z")
_NUMBERISH = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)(?:[eE][-+]?[0-9]+)?\Z|0[xob]|[0-9]+:[0-9]")
_WORD_KEYS = {"restart", "notify_access", "output"}


def scalar(value, key: str | None = None) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value) if isinstance(value, float) else str(value)
    text = str(value)
    if key in _WORD_KEYS and text in ("no", "null"):
        return text
    if (_PLAIN.match(text) and not _SPECIAL.match(text) and not _NUMBERISH.match(text)
            and ": " not in text and " #" not in text and not text.endswith(":")):
        return text
    return quoted(text)


# Characters a YAML file may hold as they are inside double quotes: printable, and no line
# break (YAML 1.1 folds NEL and the Unicode line and paragraph separators like newlines).
_KEEP = re.compile("[\\x20-\\x7e\\xa0-\\u2027\\u202a-\\ud7ff\\ue000-\\ufffd\\U00010000-\\U0010ffff]")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def quoted(text: str) -> str:
    """A double-quoted scalar: every character YAML does not keep as it is, escaped."""
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif _KEEP.match(char):
            out.append(char)
        else:
            code = ord(char)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000
                       else f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def _comment_lines(text: str, indent: str = "") -> list[str]:
    """Comment lines for `text`, with what YAML would not read escaped as in a quoted text."""
    lines = []
    for line in text.splitlines() or [""]:
        shown = "".join(c if c == "\t" or _KEEP.match(c) else quoted(c)[1:-1] for c in line)
        lines.append(f"{indent}# {shown}".rstrip())
    return lines


def render(unit: ImportedUnit) -> str:
    lines = _comment_lines(f"{unit.name}: imported by `activator import` from {unit.file}:{unit.line} "
                           f"({unit.origin})")
    for note in unit.notes:
        lines += _comment_lines(note)
    for skipped in unit.skipped:
        lines += _comment_lines(f"not imported: {skipped.option} ({skipped.file}:{skipped.line}): {skipped.why}")
    keys = dict(unit.keys)
    if unit.sockets:
        keys["sockets"] = unit.sockets
    for key in SERVICE_ORDER:
        value = keys.get(key)
        if value is None or value == [] or value == {}:
            continue
        lines += _key_lines(key, value)
    return "\n".join(lines) + "\n"


def _key_lines(key: str, value) -> list[str]:
    if key == "sockets":
        out = ["sockets:"]
        for name, spec in value.items():
            out.append(f"  {name}:")
            for option in SOCKET_ORDER:
                if spec.get(option) is not None:
                    out.append(f"    {option}: {scalar(spec[option], option)}")
        return out
    if isinstance(value, dict):
        out = [f"{key}:"]
        for name, item in value.items():
            out.append(f"  {scalar(str(name))}: {scalar(str(item))}")
        return out
    if isinstance(value, (list, tuple)):
        if key == "exec":
            return [f"exec: [{', '.join(quoted(str(v)) for v in value)}]"]
        return [f"{key}:"] + [f"  - {scalar(item)}" for item in value]
    return [f"{key}: {scalar(value, key)}"]
