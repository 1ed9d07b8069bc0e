"""What to do about a YAML syntax error: PyYAML's message, the line to look at, and a hint.

PyYAML says what its parser met ("mapping values are not allowed in this context"), which
tells a user little about the mistakes that lead there in a unit file: a command line with
`: ` in it, a tab, a quote left open, a key indented one space too far. `explain` keeps the
parser's own words (they are what a search finds) and adds what to change, showing the
user's own line fixed where that can be done safely. The messages of libyaml and of the
pure-Python parser differ in small ways; both are matched.
"""

from __future__ import annotations

import json
import re

import yaml

Explanation = tuple  # (0-based line to report, message without the "YAML: " prefix)


def explain(error: yaml.MarkedYAMLError, text: str) -> Explanation:
    mark = error.problem_mark or error.context_mark
    line = mark.line if mark else -1
    problem = error.problem or error.context or "invalid YAML"
    context = error.context or ""
    source = _line(text, line)
    message = problem
    hint = None

    if problem.startswith("mapping values are not allowed"):
        hint = _colon_hint(source)
    elif "tab character" in problem or (problem.startswith("found character")
                                        and _char(text, mark) == "\t"):
        message = "found a tab character"
        hint = "YAML indents with spaces only: replace the tab with spaces"
    elif problem.startswith("found character") and "cannot start any token" in problem:
        char = _char(text, mark)
        message = f"found character {char!r} that cannot start any token"
        hint = f"YAML reserves {char!r} at the start of a value: put the value in quotes"
    elif "end of stream" in problem and "quoted scalar" in context and error.context_mark:
        line = error.context_mark.line  # where the quote was opened, not the end of the file
        message = "a quoted value is not closed"
        hint = "add the closing quote at the end of the value that starts on this line"
    elif problem.startswith(("did not find expected ',' or", "expected ',' or")):
        closing = "]" if "sequence" in context else "}"
        opened = (f" on line {error.context_mark.line + 1}" if error.context_mark else "")
        hint = (f"close the '{'[' if closing == ']' else '{'}'{opened} with '{closing}', and quote "
                "any item that contains ',', ': ', '[', ']', '{' or '}'")
    elif "unknown escape character" in problem:
        hint = ("inside double quotes a backslash starts an escape (\\n, \\t, \\\\): use single "
                "quotes for a value with backslashes, or double each backslash")
    elif problem.startswith(("did not find expected key", "expected <block end>")):
        message = f"did not find expected key {context}".strip()
        hint = _key_hint(source)
    elif problem.startswith("could not find expected ':'"):
        hint = ("a line of a mapping is 'key: value': add ': ' after the key, or indent a value "
                "that goes on over several lines more than its key")
    elif "expected node content" in problem and "flow" in context:
        hint = ("a list '[' or mapping '{' is not closed, or has an empty item: close it with "
                "']' or '}', or quote a value that starts with '[' or '{'")
    elif problem.startswith("found undefined alias") or "alias" in context:
        message = "found undefined alias"
        hint = "a value that starts with '*' names an anchor (&name): put the value in quotes"
    elif "anchor" in context or problem.startswith("mapping keys are not allowed"):
        hint = "YAML reserves '&', '!' and '? ' at the start of a value: put the value in quotes"
    return line, f"{message}; {hint}" if hint else message


def _line(text: str, index: int) -> str:
    lines = text.splitlines()
    return lines[index] if 0 <= index < len(lines) else ""


def _char(text: str, mark) -> str:
    if mark is None or not 0 <= mark.index < len(text):
        return ""
    return text[mark.index]


def _colon_hint(source: str) -> str:
    """Quote the value of this line when it holds `: ` or ends with `:`; else indentation."""
    body = source.strip()
    prefix = ""
    if body.startswith("- "):
        prefix, body = "- ", body[2:].lstrip()
    key, sep, value = body.partition(": ")
    value = re.sub(r"\s+#.*", "", value).strip()  # a comment after the value stays outside
    if sep and value and (": " in value or value.endswith(":")) and value[0] not in "'\"[{":
        fixed = f"{prefix}{key}: {_quoted(value)}"
        return f"a value that contains ': ' or ends with ':' must be quoted: {fixed}"
    return ("a value that contains ': ' or ends with ':' must be quoted; if this line is a key, "
            "indent it as the keys beside it")


def _key_hint(source: str) -> str:
    """Where a key was expected: a list item out of place, a value quoted only in part, or
    indentation."""
    body = source.strip()
    if body.startswith("-"):
        return "a list item where a key was expected: indent the list under its key"
    key, sep, value = body.partition(": ")
    value = value.strip()
    if sep and value[:1] in ("'", '"') and not (len(value) > 1 and value.endswith(value[0])):
        fixed = f"{key}: {_quoted(value)}"
        return f"a value that starts with a quote must end with it; quote the whole value: {fixed}"
    return "indent this line as the keys beside it (spaces only), or close what is open above it"


def _quoted(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    return json.dumps(value, ensure_ascii=False)  # a valid YAML double-quoted scalar
