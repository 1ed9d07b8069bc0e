"""Conversions the three readers share: names, literal text, signals, modes, start order."""

from __future__ import annotations

import re
import signal

from activator.importing.model import ImportedUnit

_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9_.@-]+")
_TEMPLATE_START = re.compile(r"\$(?=[$(])")
TRUE_WORDS = ("1", "yes", "true", "on")
FALSE_WORDS = ("0", "no", "false", "off")


def unit_name(raw: str) -> str:
    """A unit name activator accepts (`[A-Za-z0-9_.@-]+`) for a program's name."""
    return _NOT_IN_NAME.sub("-", raw.strip()).strip("-") or "unnamed"


def literal(text: str) -> str:
    """`text` as activator reads it back unchanged: only `$$` and `$(` mean something to it."""
    return _TEMPLATE_START.sub("$$", text)


def boolean(value: str) -> bool | None:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


def signal_name(value: str) -> str | None:
    """SIGTERM for TERM, SIGTERM, term or 15; None if it is no signal."""
    text = value.strip().upper()
    if text.isdigit():
        try:
            return signal.Signals(int(text)).name
        except ValueError:
            return None
    name = text if text.startswith("SIG") else "SIG" + text
    return name if name.isidentifier() and hasattr(signal.Signals, name) else None


def octal_mode(value: str, high: int = 0o7777) -> str | None:
    text = value.strip()
    text = text[2:] if text[:2].lower() == "0o" else text
    if not re.fullmatch(r"[0-7]{1,5}", text) or int(text, 8) > high:
        return None
    return f"{int(text, 8):04o}"


def number(value: str) -> int | float | None:
    text = value.strip()
    try:
        result = float(text)
    except ValueError:
        return None
    if result != result or result < 0 or result == float("inf"):
        return None
    return int(result) if result.is_integer() else result


def order_by_priority(ranked: list[tuple[int, ImportedUnit]], how: str) -> None:
    """Start order from numeric ranks (lowest starts first): each unit is `after` the units of
    the level that starts just before its own, so levels start one after the other, as they
    did. Circus passes its priorities negated, since it starts the highest first."""
    levels = sorted({priority for priority, _ in ranked})
    if len(levels) < 2:
        return
    by_level = {level: sorted(u.name for p, u in ranked if p == level) for level in levels}
    for priority, unit in ranked:
        index = levels.index(priority)
        if index == 0:
            continue
        earlier = by_level[levels[index - 1]]
        unit.keys["after"] = sorted(set(unit.keys.get("after") or []) | set(earlier))
        unit.note(f"priority {abs(priority)}: started after the units of priority "
                  f"{abs(levels[index - 1])} ({how})")
