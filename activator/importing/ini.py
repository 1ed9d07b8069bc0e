"""Reading the INI dialects of Circus and supervisord, and systemd's unit file syntax.

Both INI readers are the standard library's format with the settings each program really
uses, written out here because an import must say on which line every option stands:

- supervisord reads with Python 3's `RawConfigParser(inline_comment_prefixes=(';', '#'),
  strict=False)`: comment lines start with `#` or `;` after any indentation, an inline comment
  is `;` or `#` after a blank, option names are lower-cased, a repeated section or option
  merges and the later value wins. Its `%(name)s` expansions are its own (supervisord.py).
- Circus reads with its own `_read`: comment lines start with `#` or `;` in the first column
  (or `rem`), only `;` after a blank starts an inline comment, names keep their case, a value
  `""` is empty, a repeated section merges and the first value of an option wins. Values then
  go through ConfigParser's `%(name)s` interpolation (circus.py).

In both, an indented line continues the value above it. systemd's syntax is its own
(`parse_systemd`): a line ending in a backslash continues on the next, comment lines inside
such a value are skipped, and every assignment is kept in order, since repeated keys
accumulate and an empty assignment resets a list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from activator.importing.model import ImportFailed

MAX_INPUT_BYTES = 1 << 20  # far above any real configuration; a 10 MB file is a mistake


@dataclass
class Option:
    name: str
    value: str
    line: int


@dataclass
class Section:
    name: str
    file: str
    line: int
    options: dict = field(default_factory=dict)  # name -> Option


@dataclass(frozen=True)
class Dialect:
    continuation_deeper_than_option: bool  # Python 3's rule; else any indented line continues
    comment_in_first_column_only: bool
    inline_comment_prefixes: tuple
    first_value_wins: bool
    lower_case_names: bool
    empty_quotes_are_empty: bool


SUPERVISORD = Dialect(True, False, (";", "#"), False, True, False)
CIRCUS = Dialect(False, True, (";",), True, False, True)

_SECTION = re.compile(r"\[(?P<name>.+)\]")
_OPTION = re.compile(r"(?P<name>.*?)\s*[=:]\s*(?P<value>.*)$")


def read_text(path: str) -> str:
    """The file's text, or ImportFailed saying why it cannot be had (binary data included)."""
    from activator.yamlsource import SourceError, read_text as read

    try:
        text = read(path, MAX_INPUT_BYTES)
    except SourceError as e:
        raise ImportFailed(str(e.location), e.message) from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ImportFailed(f"{path}:{line}", "binary data (a NUL byte), not a configuration file")
    return text


def _strip_inline_comment(value: str, prefixes: tuple) -> str:
    """Cut at the first prefix that follows a blank, as ConfigParser and Circus do."""
    cut = len(value)
    for prefix in prefixes:
        start = 0
        while True:
            pos = value.find(prefix, start)
            if pos < 0:
                break
            if pos > 0 and value[pos - 1].isspace():
                cut = min(cut, pos)
                break
            start = pos + 1
    return value[:cut]


def parse_ini(text: str, file: str, dialect: Dialect, sections: dict) -> list[str]:
    """Add the sections of `text` to `sections` (name -> Section), merging repeated ones.
    Returns the names of the sections this file declared, in order."""
    declared: list[str] = []
    current: Section | None = None
    last: Option | None = None
    last_indent = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped:
            continue
        comment_text = raw if dialect.comment_in_first_column_only else stripped
        if comment_text[:1] in ("#", ";"):
            continue
        if dialect.comment_in_first_column_only and raw[:1] in "rR" and raw.split(None, 1)[0].lower() == "rem":
            continue
        content = _strip_inline_comment(raw, dialect.inline_comment_prefixes).rstrip()
        indent = len(raw) - len(raw.lstrip())
        deeper = indent > last_indent if dialect.continuation_deeper_than_option else indent > 0
        if deeper and last is not None:
            if content.strip():
                last.value = f"{last.value}\n{content.strip()}" if last.value else content.strip()
            continue
        match = _SECTION.match(content.strip())
        if match:
            name = match.group("name").strip()
            current = sections.get(name)
            if current is None:
                current = sections[name] = Section(name, file, number)
            declared.append(name)
            last = None
            continue
        if current is None:
            raise ImportFailed(f"{file}:{number}", f"no [section] header before this line: {stripped[:60]!r}")
        match = _OPTION.match(content.strip())
        if not match or not match.group("name"):
            raise ImportFailed(f"{file}:{number}", f"not an INI line (name = value): {stripped[:60]!r}")
        name = match.group("name").strip()
        if dialect.lower_case_names:
            name = name.lower()
        value = match.group("value").strip()
        if dialect.empty_quotes_are_empty and value == '""':
            value = ""
        if name in current.options and dialect.first_value_wins:
            last = Option(name, "", number)  # its continuation lines go nowhere, as in Circus
            last_indent = indent
            continue
        last = current.options[name] = Option(name, value, number)
        last_indent = indent
    return declared


IGNORED = ""  # the section of lines systemd would ignore


def parse_systemd(text: str, file: str) -> dict[str, list[Option]]:
    """Section name -> its assignments in order, continuation lines joined; lines that are no
    assignment under IGNORED."""
    sections: dict[str, list[Option]] = {}
    current: list[Option] | None = None
    pending: Option | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if pending is not None:
            if stripped[:1] in ("#", ";"):
                continue  # a comment inside a continued value is skipped
            more = stripped
            if more.endswith("\\"):
                pending.value += " " + more[:-1].strip()
                continue
            pending.value = (pending.value + " " + more).strip()
            pending = None
            continue
        if not stripped or stripped[:1] in ("#", ";"):
            continue
        if stripped.startswith("["):
            if not stripped.endswith("]") or len(stripped) < 3:
                raise ImportFailed(f"{file}:{number}", f"not a [Section] header: {stripped[:60]!r}")
            current = sections.setdefault(stripped[1:-1], [])
            continue
        key, equals, value = stripped.partition("=")
        key = key.strip()
        if not equals or not re.fullmatch(r"[A-Za-z0-9_-]+", key):
            # systemd logs such a line and ignores it: so does the import, and says so
            sections.setdefault(IGNORED, []).append(Option(stripped[:60], "", number))
            continue
        if current is None:
            raise ImportFailed(f"{file}:{number}", "an assignment before any [Section] header")
        option = Option(key, value.strip(), number)
        current.append(option)
        if option.value.endswith("\\"):
            option.value = option.value[:-1].strip()
            pending = option
    return sections
