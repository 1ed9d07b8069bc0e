"""Environment files in systemd's syntax, and `environment_file` in unit files."""

from __future__ import annotations

import pytest

from activator import envfile
from activator.yamlsource import SourceError
from unitfiles import Stack, only_unit


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


# --------------------------------------------------------------------------- the syntax

@pytest.mark.parametrize("text, expected", [
    ("", {}),
    ("A=1", {"A": "1"}),
    ("A=1\nB=2\n", {"A": "1", "B": "2"}),
    ("A=", {"A": ""}),
    ("A=\nB=x", {"A": "", "B": "x"}),
    # blanks: around the key, after '=', and trailing ones of an unquoted value are dropped
    ("  A = 1  \n", {"A": "1"}),
    ("\tA=\t1 2\t \n", {"A": "1 2"}),
    ("A=a  b   c", {"A": "a  b   c"}),
    # comments: only at the start of a line
    ("# comment\nA=1", {"A": "1"}),
    ("; comment\nA=1", {"A": "1"}),
    ("   # indented comment\nA=1", {"A": "1"}),
    ("A=1 # not a comment", {"A": "1 # not a comment"}),
    ("A=1;2", {"A": "1;2"}),
    ("# comment ending in a backslash \\\nA=1", {"A": "1"}),
    # single quotes: everything literal, newlines included
    ("A='a b'", {"A": "a b"}),
    ("A='  padded  '", {"A": "  padded  "}),
    ("A='$HOME \\n \\\\ \"'", {"A": "$HOME \\n \\\\ \""}),
    ("A='line 1\nline 2'\nB=x", {"A": "line 1\nline 2", "B": "x"}),
    ("A='#x'", {"A": "#x"}),
    ("A=''", {"A": ""}),
    # double quotes: \" \\ \$ \` are escapes, other backslashes stay
    ('A="a b"', {"A": "a b"}),
    ('A="say \\"hi\\""', {"A": 'say "hi"'}),
    ('A="back\\\\slash"', {"A": "back\\slash"}),
    ('A="\\$HOME \\`cmd\\`"', {"A": "$HOME `cmd`"}),
    ('A="\\n\\t\\x"', {"A": "\\n\\t\\x"}),
    ('A="$HOME"', {"A": "$HOME"}),
    ('A="a\nb"', {"A": "a\nb"}),
    ('A="con\\\ntinued"', {"A": "continued"}),
    ('A=""', {"A": ""}),
    # unquoted: a backslash takes the next character literally
    ("A=a\\ b", {"A": "a b"}),
    ("A=\\\"quoted\\\"", {"A": '"quoted"'}),
    ("A=trailing\\ ", {"A": "trailing "}),
    ("A=\\#not", {"A": "#not"}),
    ("A=back\\\\slash", {"A": "back\\slash"}),
    ("A=\\", {"A": ""}),
    # line continuations
    ("A=one \\\ntwo", {"A": "one two"}),
    ("A=one\\\n  two\nB=3", {"A": "one  two", "B": "3"}),
    ("A=\\\nvalue", {"A": "value"}),
    # concatenation: quoted pieces, then at most one unquoted tail
    ("A=\"x\"'y'z", {"A": "xyz"}),
    ("A=\"x\" 'y' z", {"A": "xyz"}),
    ("A='a'\\ b", {"A": "a b"}),
    ("A='a'  ", {"A": "a"}),
    # inside an unquoted piece, quotes are ordinary characters (as systemd reads them)
    ("A=x\"y\"", {"A": 'x"y"'}),
    ("A=x 'y'", {"A": "x 'y'"}),
    ("A=don't", {"A": "don't"}),
    # \r ends a line as \n does: files written on Windows
    ("A=1\r\nB=2\r\n", {"A": "1", "B": "2"}),
    ("A=\"1\"\r\n", {"A": "1"}),
    # a later assignment wins; anything after the first '=' is the value
    ("A=1\nA=2", {"A": "2"}),
    ("URL=http://x/?a=b&c=d", {"URL": "http://x/?a=b&c=d"}),
    ("_under_score9=1", {"_under_score9": "1"}),
    ("A=héllo wörld", {"A": "héllo wörld"}),
    ("\n\n\nA=1\n\n", {"A": "1"}),
])
def test_parse(text, expected):
    assert envfile.parse(text) == expected


@pytest.mark.parametrize("text, line, message", [
    ("A=1\nnot an assignment\n", 2, "expected KEY=VALUE, found 'not an assignment'"),
    ("A=1\n\nJUSTKEY", 3, "expected KEY=VALUE, found 'JUSTKEY'"),
    ("export A=1", 1, "'export A' is not a valid environment variable name (letters, digits and _, "
     "not starting with a digit)"),
    ("1A=x", 1, "'1A' is not a valid environment variable name (letters, digits and _, not starting "
     "with a digit)"),
    ("A-B=x", 1, "'A-B' is not a valid environment variable name (letters, digits and _, not starting "
     "with a digit)"),
    ("=x", 1, "'' is not a valid environment variable name (letters, digits and _, not starting with "
     "a digit)"),
    ("A=1\nB='open\nstill open", 2, "B: single quote opened here is never closed"),
    ('A=1\nB=2\nC="open', 3, "C: double quote opened here is never closed"),
    ('A="ends in a backslash\\', 1, "A: double quote opened here is never closed"),
    ("A='x'\nB=\"a\nb\"\nC=1\nbad line", 5, "expected KEY=VALUE, found 'bad line'"),
    ("A=a\\\nb\\\nc\nbad", 4, "expected KEY=VALUE, found 'bad'"),
    ("A=x\0y", 1, "A: the value contains a NUL character, which an environment cannot hold"),
    ("A=1\r\nB=2\r\n\r\nbad\r\n", 4, "expected KEY=VALUE, found 'bad'"),
    ("A=1\rbad\r", 2, "expected KEY=VALUE, found 'bad'"),
])
def test_parse_errors_are_located(text, line, message):
    with pytest.raises(SourceError) as e:
        envfile.parse(text, "app.env")
    assert (e.value.location.file, e.value.location.line, e.value.message) == ("app.env", line, message)
    assert str(e.value) == f"app.env:{line}: {message}"


def test_valid_name():
    assert envfile.valid_name("PATH") and envfile.valid_name("_x1")
    assert not envfile.valid_name("") and not envfile.valid_name("1x") and not envfile.valid_name("a b")
    assert not envfile.valid_name("É")


def test_load_reads_a_file(tmp_path):
    (tmp_path / "a.env").write_text("A='1'\n")
    assert envfile.load(str(tmp_path / "a.env")) == {"A": "1"}
    with pytest.raises(SourceError) as e:
        envfile.load(str(tmp_path / "missing.env"))
    assert e.value.message == "cannot read: No such file or directory"


# --------------------------------------------------------------------------- environment_file

def test_environment_files_are_read_into_the_unit(stack):
    stack.write("one.env", "A=1\nB=1\n")
    stack.write("two.env", "B=2\nC=2\n")
    stack.unit("web", "environment_file: [one.env, two.env]\nenvironment: {C: three}\n")
    unit = only_unit(stack.load())
    assert dict(unit.file_environment) == {"A": "1", "B": "2", "C": "2"}  # a later file wins
    assert dict((k, str(t)) for k, t in unit.environment) == {"C": "three"}
    assert unit.environment_file == (str(stack.units / "one.env"), str(stack.units / "two.env"))
    assert unit.files == (str(stack.units / "web.yaml"), str(stack.units / "one.env"),
                          str(stack.units / "two.env"))


def test_a_single_path_is_a_list_of_one(stack):
    stack.write("app.env", "A=1\n")
    stack.unit("web", f"environment_file: {stack.units / 'app.env'}\n")
    assert dict(only_unit(stack.load()).file_environment) == {"A": "1"}


def test_relative_paths_are_taken_from_the_declaring_files_directory(stack):
    stack.write("conf/base.env", "FROM=unit\n", "base")
    stack.write("web.d/extra.env", "FROM=drop-in\n", "derived")
    stack.unit("web", "environment_file: conf/base.env\n", "base")
    stack.load("base")
    stack.write("web.d/10.yaml", "environment_file: [extra.env]\n", "derived")  # beside the drop-in
    unit = stack.load("base", "derived").units["web"]
    assert unit.environment_file == (str(stack.root / "derived/web.d/extra.env"),)
    assert dict(unit.file_environment) == {"FROM": "drop-in"}


def test_a_leading_dash_makes_a_missing_file_not_an_error(stack):
    stack.write("present.env", "A=1\n")
    stack.unit("web", "environment_file: [-missing.env, -present.env]\n")
    unit = only_unit(stack.load())
    assert dict(unit.file_environment) == {"A": "1"}
    assert unit.environment_file == ("-" + str(stack.units / "missing.env"), "-" + str(stack.units / "present.env"))


def test_a_missing_environment_file_is_an_error(stack):
    stack.unit("web", "environment_file:\n  - missing.env\n")
    assert stack.error() == ("units/web.yaml:3: unit web: environment_file: 'units/missing.env' does "
                             "not exist (a leading - makes a missing file not an error)")


def test_a_leading_dash_does_not_hide_a_broken_file(stack):
    stack.write("broken.env", "A=1\nthis is not an assignment\n")
    stack.unit("web", "environment_file: -broken.env\n")
    assert stack.error() == ("units/broken.env:2: unit web: environment_file: expected KEY=VALUE, "
                             "found 'this is not an assignment'")


def test_errors_in_an_environment_file_are_located_in_it(stack):
    stack.write("app.env", "# settings\nGOOD=1\nBAD='unclosed\n")
    stack.unit("web", "environment_file: app.env\n")
    stack.unit("api", "environment_file: app.env\n")  # read once, reported for each unit
    assert stack.errors() == [
        "units/app.env:3: unit api: environment_file: BAD: single quote opened here is never closed",
        "units/app.env:3: unit web: environment_file: BAD: single quote opened here is never closed",
    ]


def test_an_environment_file_that_is_not_utf8(stack):
    stack.write("app.env", b"A=1\nB=\xff\n")
    stack.unit("web", "environment_file: app.env\n")
    assert stack.error() == "units/app.env:2: unit web: environment_file: not UTF-8 text"


def test_an_environment_file_that_is_a_directory(stack):
    (stack.units / "app.env").mkdir()
    stack.unit("web", "environment_file: app.env\n")
    assert stack.error() == ("units/web.yaml:2: unit web: environment_file: 'units/app.env': cannot "
                             "read: it is a directory, not a file")


def test_every_broken_environment_file_is_reported(stack):
    stack.write("a.env", "bad\n")
    stack.unit("web", "environment_file: [a.env, b.env, -c.env]\n")
    assert stack.errors() == [
        "units/a.env:1: unit web: environment_file: expected KEY=VALUE, found 'bad'",
        "units/web.yaml:2: unit web: environment_file: 'units/b.env' does not exist (a leading - "
        "makes a missing file not an error)",
    ]
