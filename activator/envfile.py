"""Environment files, read the way systemd reads `EnvironmentFile=`.

- `KEY=VALUE` per line; blanks around the key and after `=` are dropped, and so is trailing
  whitespace of an unquoted value. `\\r` ends a line like `\\n` (files written on Windows).
- Lines whose first non-blank character is `#` or `;` are comments; elsewhere both are text
  (`A=1 # not a comment` sets `1 # not a comment`).
- At the start of a value, and right after a closing quote, a quote opens a quoted piece:
  single quotes keep everything literally (newlines too); double quotes understand `\\"`,
  `\\\\`, `\\$` and `` \\` `` and drop a backslash-newline (any other backslash stays).
  Blanks between pieces are dropped and the pieces concatenate: `A="x" 'y'z` is `xyz`.
  Inside an unquoted piece, quotes are ordinary characters: `A=x"y"` is `x"y"`.
- Outside quotes a backslash takes the next character literally, and a backslash at the end of
  a line continues the value on the next line.

Unlike systemd, which skips them with a log message, a line that is not `KEY=VALUE`, a name
that is not a valid variable name and a quote left open are errors: in a container image they
are far more likely a typo than an intent. So is a NUL character, which no environment can hold.
"""

from __future__ import annotations

import re

from activator.yamlsource import Location, SourceError, read_text

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DOUBLE_QUOTE_ESCAPES = '"\\`$'
_BLANKS = " \t"
_LINE_ENDS = "\n\r"


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name))


def parse(text: str, file: str = "<environment>") -> dict[str, str]:
    """The variables of an environment file; a later assignment wins."""
    return _Parser(text, file).parse()


class _Parser:
    """One pass over the text; `pos` is the next character, `line` the line it is on."""

    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.pos = 0
        self.line = 1

    def error(self, line: int, message: str) -> SourceError:
        return SourceError(Location(self.file, line), message)

    def parse(self) -> dict[str, str]:
        result: dict[str, str] = {}
        text, n = self.text, len(self.text)
        while self.pos < n:
            c = text[self.pos]
            if c in _BLANKS:
                self.pos += 1
            elif c in _LINE_ENDS:
                self.newline()
            elif c in "#;":
                self.skip_line()
            else:
                line = self.line
                key, value = self.assignment()
                if "\0" in value:
                    raise self.error(line, f"{key}: the value contains a NUL character, which an "
                                     "environment cannot hold")
                result[key] = value
        return result

    def newline(self) -> None:
        self.pos += 2 if self.text.startswith("\r\n", self.pos) else 1  # CRLF is one line end
        self.line += 1

    def skip_line(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] not in _LINE_ENDS:
            self.pos += 1

    def assignment(self) -> tuple[str, str]:
        text, start, line = self.text, self.pos, self.line
        while self.pos < len(text) and text[self.pos] not in "=" + _LINE_ENDS:
            self.pos += 1
        key = text[start:self.pos].rstrip(_BLANKS)
        if self.pos >= len(text) or text[self.pos] != "=":
            raise self.error(line, f"expected KEY=VALUE, found '{key}'")
        if not _NAME.match(key):
            raise self.error(line, f"'{key}' is not a valid environment variable name "
                             "(letters, digits and _, not starting with a digit)")
        self.pos += 1
        return key, self.value(key, line)

    def value(self, key: str, line: int) -> str:
        """Quoted pieces and at most one unquoted tail, up to the end of the logical line."""
        text, n = self.text, len(self.text)
        out: list[str] = []
        while self.pos < n:  # between pieces: blanks are dropped, a quote opens a piece
            c = text[self.pos]
            if c in _BLANKS:
                self.pos += 1
            elif c in _LINE_ENDS:
                break
            elif c == "'":
                end = text.find("'", self.pos + 1)
                if end < 0:
                    raise self.error(line, f"{key}: single quote opened here is never closed")
                piece = text[self.pos + 1:end]
                self.line += piece.count("\n")
                out.append(piece)
                self.pos = end + 1
            elif c == '"':
                out.append(self.double_quoted(key, line))
            else:
                out.append(self.unquoted())
                break
        return "".join(out)

    def double_quoted(self, key: str, line: int) -> str:
        text, n = self.text, len(self.text)
        out: list[str] = []
        self.pos += 1
        while True:
            if self.pos >= n:
                raise self.error(line, f"{key}: double quote opened here is never closed")
            c = text[self.pos]
            if c == '"':
                self.pos += 1
                return "".join(out)
            if c == "\\" and self.pos + 1 < n:
                escaped = text[self.pos + 1]
                if escaped == "\n":
                    self.line += 1  # a continuation line: both characters dropped
                elif escaped in _DOUBLE_QUOTE_ESCAPES:
                    out.append(escaped)
                else:
                    out.append("\\" + escaped)  # as the shell does
                self.pos += 2
                continue
            if c == "\n":
                self.line += 1
            out.append(c)
            self.pos += 1

    def unquoted(self) -> str:
        """Up to the end of the line; trailing blanks dropped unless escaped."""
        text, n = self.text, len(self.text)
        out: list[str] = []
        keep = 0  # how much of `out` trimming trailing blanks must leave
        while self.pos < n and text[self.pos] not in _LINE_ENDS:
            c = text[self.pos]
            if c == "\\":
                keep = len(out)  # blanks before a backslash are kept, as systemd does
                if self.pos + 1 < n:
                    escaped = text[self.pos + 1]
                    if escaped in _LINE_ENDS:
                        self.line += escaped == "\n"  # continuation: the value goes on
                    else:
                        out.append(escaped)
                        keep = len(out)
                self.pos += 2
                continue
            out.append(c)
            if c not in _BLANKS:
                keep = len(out)
            self.pos += 1
        return "".join(out[:keep])


def load(path: str) -> dict[str, str]:
    return parse(read_text(path), path)
