"""YAML syntax errors say what to change (SPEC §1: `FILE:LINE: unit NAME: message`): the
parser's own words, then a hint, at the line the user has to edit."""

from __future__ import annotations

import pytest
import yaml

from activator import yamlhints
from unitfiles import Stack


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


HINTS = [
    # (id, file content, the whole message as printed)
    ("colon at the end of a value", "exec: dbus-daemon --address=systemd:\n",
     "units/web.yaml:1: unit web: YAML: mapping values are not allowed in this context; a value "
     "that contains ': ' or ends with ':' must be quoted: exec: 'dbus-daemon --address=systemd:'"),
    ("colon inside a value", "description: x\nexec: echo a: b\n",
     "units/web.yaml:2: unit web: YAML: mapping values are not allowed in this context; a value "
     "that contains ': ' or ends with ':' must be quoted: exec: 'echo a: b'"),
    ("colon before a comment", "exec: dbus-daemon --address=systemd:  # the bus\n",
     "units/web.yaml:1: unit web: YAML: mapping values are not allowed in this context; a value "
     "that contains ': ' or ends with ':' must be quoted: exec: 'dbus-daemon --address=systemd:'"),
    ("colon in a value with a quote", "exec: a\ndescription: it's: done\n",
     "units/web.yaml:2: unit web: YAML: mapping values are not allowed in this context; a value "
     "that contains ': ' or ends with ':' must be quoted: description: \"it's: done\""),
    ("colon in a list item", "exec:\n  - sh\n  - -c\n  - echo done: ok\n",
     "units/web.yaml:4: unit web: exec: item 3: expected text, got a mapping (YAML reads an "
     "item with ': ' in it as a mapping: quote it)"),
    ("unclosed list at the end", "exec: [\n",
     "units/web.yaml:2: unit web: YAML: did not find expected node content; a list '[' or "
     "mapping '{' is not closed, or has an empty item: close it with ']' or '}', or quote a "
     "value that starts with '[' or '{'"),
    ("key indented too far", "exec: a\n  description: x\n",
     "units/web.yaml:2: unit web: YAML: mapping values are not allowed in this context; a value "
     "that contains ': ' or ends with ':' must be quoted; if this line is a key, indent it as "
     "the keys beside it"),
    ("tab", "exec: a\nsockets:\n\thttp: 80\n",
     "units/web.yaml:3: unit web: YAML: found a tab character; YAML indents with spaces only: "
     "replace the tab with spaces"),
    ("tab after spaces", "exec: a\nenvironment:\n  A: b\n  \tB: c\n",
     "units/web.yaml:4: unit web: YAML: found a tab character; YAML indents with spaces only: "
     "replace the tab with spaces"),
    ("unclosed double quote", "exec: a\ndescription: \"the web\ninstances: 2\n",
     "units/web.yaml:2: unit web: YAML: a quoted value is not closed; add the closing quote at "
     "the end of the value that starts on this line"),
    ("unclosed single quote", "exec: 'a\n",
     "units/web.yaml:1: unit web: YAML: a quoted value is not closed; add the closing quote at "
     "the end of the value that starts on this line"),
    ("quoted in part", "exec: \"/bin/true\" --flag\n",
     "units/web.yaml:1: unit web: YAML: did not find expected key while parsing a block mapping; "
     "a value that starts with a quote must end with it; quote the whole value: "
     "exec: '\"/bin/true\" --flag'"),
    ("unclosed list", "exec: [a, b\ndescription: x\n",
     "units/web.yaml:2: unit web: YAML: did not find expected ',' or ']'; close the '[' on line 1 with ']', and quote any item that contains ',', ': ', "
     "'[', ']', '{' or '}'"),
    ("unclosed mapping", "exec: a\nsockets: {http: 80\n",
     "units/web.yaml:3: unit web: YAML: did not find expected ',' or '}'; close the '{' on line 2 with '}', and quote any item that contains ',', ': ', "
     "'[', ']', '{' or '}'"),
    ("key indented too little", "exec: a\nenvironment:\n  A: b\n B: c\n",
     "units/web.yaml:4: unit web: YAML: did not find expected key while parsing a block mapping; "
     "indent this line as the keys beside it (spaces only), or close what is open above it"),
    ("list item under no key", "exec: a\n- b\n",
     "units/web.yaml:2: unit web: YAML: did not find expected key while parsing a block mapping; "
     "a list item where a key was expected: indent the list under its key"),
    ("missing colon", "exec: a\ninstances 2\nuser: x\n",
     "units/web.yaml:3: unit web: YAML: could not find expected ':'; a line of a mapping is 'key: value': add ': ' after the key, or indent a value that goes "
     "on over several lines more than its key"),
    ("backslash in double quotes", "exec: \"grep a\\.b\"\n",
     "units/web.yaml:1: unit web: YAML: found unknown escape character; inside double quotes a backslash starts an escape (\\n, \\t, \\\\): use single "
     "quotes for a value with backslashes, or double each backslash"),
    ("reserved character", "exec: `date`\n",
     "units/web.yaml:1: unit web: YAML: found character '`' that cannot start any token; YAML "
     "reserves '`' at the start of a value: put the value in quotes"),
    ("at sign", "exec: a\nenvironment: {HOST: @home}\n",
     "units/web.yaml:2: unit web: YAML: found character '@' that cannot start any token; YAML "
     "reserves '@' at the start of a value: put the value in quotes"),
    ("star", "exec: *.txt\n",
     "units/web.yaml:1: unit web: YAML: found undefined alias; a value that starts with '*' "
     "names an anchor (&name): put the value in quotes"),
    ("ampersand", "exec: a\ndescription: & more\n",
     "units/web.yaml:2: unit web: YAML: did not find expected alphabetic or numeric character; "
     "YAML reserves '&', '!' and '? ' at the start of a value: put "
     "the value in quotes"),
    ("duplicate key", "exec: a\ndescription: x\nexec: b\n",
     "units/web.yaml:3: unit web: duplicate key 'exec' (first given on line 1): keep one of them"),
]


@pytest.mark.parametrize("content, expected", [h[1:] for h in HINTS], ids=[h[0] for h in HINTS])
def test_a_yaml_error_says_what_to_change(stack, content, expected):
    stack.write("web.yaml", content)
    assert stack.error() == expected


def test_the_pure_python_parser_gets_the_same_hints():
    """Without libyaml, PyYAML words some messages differently; the hints still apply."""
    for text, hint in (("exec: a: b\n", "must be quoted: exec: 'a: b'"),
                       ("a: 1\n\tb: 2\n", "replace the tab with spaces"),
                       ("a: 1\n- b\n", "indent the list under its key"),
                       ("a: *x\n", "put the value in quotes")):
        loader = yaml.SafeLoader(text)
        try:
            with pytest.raises(yaml.MarkedYAMLError) as e:
                loader.get_single_node()
        finally:
            loader.dispose()
        line, message = yamlhints.explain(e.value, text)
        assert hint in message, message
