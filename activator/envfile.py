"""Environment files, read the way systemd reads `EnvironmentFile=`.

- `KEY=VALUE` per line; blanks around the key and before the value are dropped, and so is
  trailing whitespace of an unquoted value.
- Lines starting with `#` or `;` (after blanks) are comments.
- Single quotes keep everything literally; double quotes understand `\\"`, `\\\\`, `\\$` and
  `` \\` `` (any other backslash stays); outside quotes a backslash takes the next character
  literally. Quoted and unquoted pieces concatenate: `A="x"'y'z` is `xyz`.
- A backslash at the end of a line continues the value on the next line.

Unlike systemd, which skips them silently, a line that is not `KEY=VALUE` or has an invalid
name is an error: in a container image it is far more likely a typo than an intent.
"""

from __future__ import annotations

import re

from activator.yamlsource import Location, SourceError, read_text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SHELL_ESCAPES = '"\\`$'


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def parse(text: str, file: str = "<environment>") -> dict[str, str]:
    """The variables of an environment file, in order; a later assignment wins."""
    result: dict[str, str] = {}
    i, n, line = 0, len(text), 1

    while i < n:
        # Start of a logical line: skip blanks, then a comment, an empty line or a key.
        while i < n and text[i] in " \t\r":
            i += 1
        if i >= n:
            break
        c = text[i]
        if c == "\n":
            i += 1
            line += 1
            continue
        if c in "#;":
            end = text.find("\n", i)
            if end < 0:
                break
            i = end + 1
            line += 1
            continue

        start_line = line
        eq = i
        while eq < n and text[eq] not in "=\n":
            eq += 1
        key = text[i:eq].strip(" \t\r")
        if eq >= n or text[eq] != "=":
            raise SourceError(Location(file, start_line), f"expected KEY=VALUE, found '{text[i:eq].strip()}'")
        if not _NAME.match(key):
            raise SourceError(Location(file, start_line), f"'{key}' is not a valid environment variable name")

        value: list[str] = []
        i = eq + 1
        keep = 0  # length of `value` that trailing-whitespace trimming must not touch
        i = _skip_blanks(text, i)
        while i < n and text[i] != "\n":
            c = text[i]
            if c == "'":
                end = text.find("'", i + 1)
                if end < 0:
                    raise SourceError(Location(file, start_line), f"{key}: unterminated single quote")
                chunk = text[i + 1:end]
                line += chunk.count("\n")
                value.append(chunk)
                keep = len(value)
                i = _skip_blanks(text, end + 1)
            elif c == '"':
                i += 1
                while True:
                    if i >= n:
                        raise SourceError(Location(file, start_line), f"{key}: unterminated double quote")
                    c = text[i]
                    if c == '"':
                        i = _skip_blanks(text, i + 1)
                        break
                    if c == "\\" and i + 1 < n:
                        nxt = text[i + 1]
                        if nxt == "\n":
                            line += 1
                        elif nxt in _SHELL_ESCAPES:
                            value.append(nxt)
                        else:
                            value.append("\\" + nxt)
                        i += 2
                        continue
                    if c == "\n":
                        line += 1
                    value.append(c)
                    i += 1
                keep = len(value)
            elif c == "\\":
                if i + 1 < n:
                    if text[i + 1] == "\n":
                        line += 1
                    else:
                        value.append(text[i + 1])
                        keep = len(value)
                i += 2
            else:
                value.append(c)
                if c not in " \t\r":
                    keep = len(value)
                i += 1
        result[key] = "".join(value[:keep])  # trailing blanks of an unquoted tail dropped
    return result


def _skip_blanks(text: str, i: int) -> int:
    """After `=` and after a closing quote, blanks are skipped, as systemd does."""
    while i < len(text) and text[i] in " \t\r":
        i += 1
    return i


def load(path: str) -> dict[str, str]:
    return parse(read_text(path), path)
