"""Bad input never produces a traceback: every broken file becomes a located problem."""

from __future__ import annotations

import os
import signal

import pytest

from activator import yamlsource
from unitfiles import Stack, only_unit


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def billion_laughs(levels: int = 12) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\nexec: 'true'\n"


def merge_bomb(levels: int = 30) -> str:
    lines = ["m0: &m0 {x: 1}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], y{i}: 1}}")
    return "\n".join(lines) + "\nexec: 'true'\n"


BROKEN = [
    # (id, content, expected printed problem without the "units/web.yaml" prefix)
    ("syntax", "exec: [a, b\ndescription: x\n", ":2: unit web: YAML: did not find expected ',' or ']'"),
    ("bad indentation", "exec: a\n  description: x\n", ":2: unit web: YAML: mapping values are not allowed in this context"),
    ("tab indentation", "sockets:\n\thttp: 80\n", ":2: unit web: YAML: found a tab character"),
    ("a list", "- exec: a\n- exec: b\n", ":1: unit web: expected a mapping of keys to values, found a list"),
    ("a scalar", "just some words\n", ":1: unit web: expected a mapping of keys to values, found a single value"),
    ("a number", "42\n", ":1: unit web: expected a mapping of keys to values, found a single value"),
    ("null document", "null\n", ":1: unit web: expected a mapping of keys to values, found a single value"),
    ("several documents", "exec: a\n---\nexec: b\n", ":2: unit web: YAML: several YAML documents in one "
     "file; a unit file holds one"),
    ("empty", "", ":1: unit web: file is empty"),
    ("blank", "  \n\n\t\n", ":1: unit web: file is empty"),
    ("comments only", "# exec: true\n", ":1: unit web: the file holds no keys (an empty YAML document)"),
    ("document marker only", "---\n# nothing\n", ":1: unit web: the file holds no keys (an empty YAML document)"),
    ("binary garbage", bytes(range(256)) * 4, ":2: unit web: not UTF-8 text"),
    ("invalid utf-8 on line 3", b"exec: 'true'\ndescription: ok\nx: \xff\xfe\n", ":3: unit web: not UTF-8 text"),
    ("NUL byte", b"exec: 'true'\ndescription: a\x00b\n", ":2: unit web: YAML: unacceptable character "
     "#x0000: control characters are not allowed"),
    ("control character", "exec: 'true'\n\x07: x\n", ":2: unit web: YAML: unacceptable character "
     "#x0007: control characters are not allowed"),
    ("duplicate key", "exec: a\ndescription: x\nexec: b\n", ":3: unit web: duplicate key 'exec' (first "
     "given on line 1)"),
    ("nested duplicate key", "exec: a\nsockets:\n  http: {listen: 1, listen: 2}\n", ":3: unit web: "
     "duplicate key 'listen' (first given on line 3)"),
    ("recursive alias", "exec: a\nx: &x [*x]\n", ":2: unit web: recursive alias: a value contains itself"),
    ("recursive merge", "exec: a\nx: &x {<<: *x}\n", ":2: unit web: recursive alias: a value contains itself"),
    ("billion laughs", billion_laughs(), ":1: unit web: document has more than 100000 values (aliases expanded)"),
    ("merge bomb", merge_bomb(), None),
    ("deep nesting", "exec: a\nx: " + "[" * 200 + "]" * 200 + "\n", ":2: unit web: values nested more than "
     "50 levels deep"),
    ("very deep nesting", "exec: a\nx: " + "[" * 20000 + "]" * 20000 + "\n", None),
    ("complex key", "? [a, b]\n: c\nexec: a\n", ":1: unit web: a key must be a plain word, not a list or mapping"),
    ("mapping key", "{a: 1}: c\nexec: a\n", ":1: unit web: a key must be a plain word, not a list or mapping"),
    ("python tag", "exec: !!python/object/apply:os.system [ls]\n", ":1: unit web: YAML: unsupported tag "
     "'tag:yaml.org,2002:python/object/apply:os.system'"),
    ("python scalar tag", "exec: !!python/name:os.system ''\n", ":1: unit web: YAML: could not determine "
     "a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'"),
    ("set tag", "exec: 'true'\nenvironment: !!set {a, b}\n", ":2: unit web: YAML: unsupported tag "
     "'tag:yaml.org,2002:set'"),
    ("bad int tag", "exec: a\ninstances: !!int abc\n", ":2: unit web: YAML: 'abc' cannot be read as tag:yaml.org,2002:int"),
    ("bad bool tag", "exec: a\nsocket_env: !!bool maybe\n", ":2: unit web: YAML: 'maybe' cannot be read as tag:yaml.org,2002:bool"),
    ("bad binary", "exec: !!binary '%%%'\n", None),
    ("binary exec", "exec: !!binary aGVsbG8=\n", ":1: unit web: exec: expected text, got binary data (!!binary)"),
    ("unknown tag", "exec: !custom thing\n", ":1: unit web: YAML: could not determine a constructor for the tag '!custom'"),
    ("merge of a scalar", "exec: a\n<<: 5\n", ":2: unit web: YAML: '<<' merges a mapping or a list of mappings"),
    ("huge number", "exec: 'true'\ninstances: 123456789012345678901234567890\n", ":2: unit web: instances: "
     "expected a number from 1 to 4096, got 123456789012345678901234567890"),
    ("undefined alias", "exec: *nothing\n", ":1: unit web: YAML: found undefined alias"),
]


@pytest.mark.parametrize("content, expected", [b[1:] for b in BROKEN], ids=[b[0] for b in BROKEN])
def test_broken_files_are_reported_at_their_file(stack, content, expected):
    stack.write("web.yaml", content)
    stack.unit("ok")  # a good unit beside it changes nothing
    error = stack.error()
    assert error.startswith("units/web.yaml"), error
    if expected is not None:
        assert error.startswith("units/web.yaml" + expected), error
    assert "Traceback" not in error and "\n" not in error


def test_a_file_over_the_size_limit_is_not_read(stack):
    stack.write("web.yaml", "exec: 'true'\n" + "# padding\n" * (10 * 1024 * 1024 // 10))
    assert os.path.getsize(stack.units / "web.yaml") > 10_000_000
    assert stack.error() == f"units/web.yaml:1: unit web: file is larger than the limit of {yamlsource.MAX_FILE_BYTES} bytes"


def test_a_symlink_loop(stack):
    os.symlink("web.yaml", stack.units / "web.yaml")
    assert stack.error() == "units/web.yaml:1: unit web: cannot read: Too many levels of symbolic links"


def test_a_dangling_symlink(stack):
    os.symlink("/nonexistent/web.yaml", stack.units / "web.yaml")
    assert stack.error() == "units/web.yaml:1: unit web: cannot read: No such file or directory"


def test_an_unreadable_unit_file(stack):
    # As root every file is readable: a directory stands for a file that cannot be read.
    (stack.units / "web.yaml").mkdir()
    assert stack.error() == "units/web.yaml:1: unit web: cannot read: it is a directory, not a file"


def test_a_device_is_not_read(stack):
    os.symlink("/dev/zero", stack.units / "web.yaml")
    assert stack.error() == "units/web.yaml:1: unit web: cannot read: not a regular file"


def test_a_fifo_does_not_block_the_loader(stack):
    os.mkfifo(stack.units / "web.yaml")

    def timeout(signum, frame):
        raise TimeoutError("the loader blocked on a fifo")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    try:
        error = stack.error()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert error == "units/web.yaml:1: unit web: cannot read: not a regular file"


def test_a_units_directory_that_is_missing(stack):
    assert stack.error("gone") == "gone: units directory does not exist"


def test_a_drop_in_directory_that_cannot_be_read_is_skipped_like_a_file(stack):
    stack.unit("web")
    (stack.units / "web.d" / "10.yaml").mkdir(parents=True)
    assert stack.error() == "units/web.d/10.yaml:1: unit web: drop-in: cannot read: it is a directory, not a file"


def test_a_byte_order_mark_is_accepted(stack):
    stack.write("web.yaml", "\ufeffexec: 'true'\ndescription: bom\n".encode())
    assert only_unit(stack.load()).description == "bom"


def test_yaml_timestamps_are_text_as_written(stack):
    stack.unit("web", "description: 2001-12-14 21:59:43.10 -5\n")
    assert only_unit(stack.load()).description == "2001-12-14 21:59:43.10 -5"


# --------------------------------------------------------------------------- merge keys

def test_merge_keys_give_defaults_that_explicit_keys_override(stack):
    stack.write("web.yaml", """
        .defaults: &defaults
          umask: 0077
          instances: 2
        exec: 'true'
        """)
    assert "unknown service key '.defaults'" in stack.error()
    stack.write("web.yaml", """
        exec: 'true'
        umask: 0022
        <<: {umask: 0077, instances: 2, description: merged}
        sockets:
          http: &http {listen: 8000, backlog: 5}
          api:
            <<: *http
            listen: 8001
        """)
    web = only_unit(stack.load())
    assert (web.umask, web.instances, web.description) == (0o022, 2, "merged")
    assert [(s.name, s.listen.port, s.backlog) for s in web.sockets] == [("http", 8000, 5), ("api", 8001, 5)]


def test_in_a_list_of_merged_mappings_the_first_wins(stack):
    stack.write("web.yaml", "exec: 'true'\n<<: [{description: first}, {description: second, instances: 3}]\n")
    web = only_unit(stack.load())
    assert (web.description, web.instances) == ("first", 3)


def test_an_explicit_key_after_a_merge_is_not_a_duplicate(stack):
    stack.write("web.yaml", "<<: {exec: 'false', description: base}\nexec: 'true'\n")
    web = only_unit(stack.load())
    assert str(web.exec[0]) == "true" and web.description == "base"


def test_errors_in_merged_values_are_located_where_they_are_written(stack):
    stack.write("web.yaml", "exec: 'true'\n<<:\n  instances: 0\n")
    assert stack.error() == "units/web.yaml:3: unit web: instances: expected a number from 1 to 4096, got 0"
