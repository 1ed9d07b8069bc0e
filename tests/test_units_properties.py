"""Properties of the loader, checked on generated input.

- Whatever the files hold (YAML-shaped data with real keys and random values, or arbitrary
  bytes), `units.load` returns a Model or raises UnitsError, and every problem is located: it
  names a file, and a line when the file could be parsed. Nothing else: no other exception.
- Environment files: values quoted the systemd way parse back to themselves.
- Templates: `parse(str(t))` is `t`; `$$` is a literal `$`, and text without `$(` is literal.
"""

from __future__ import annotations

import os
import tempfile

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from activator import model as unitmodel
from activator import envfile, templates, unitkeys, units, yamlsource
from activator.templates import TemplateError
from unitfiles import PATH

ENVIRON = {"PATH": PATH, "HOME": "/root"}
UNIT_NAMES = ["web", "db", "api", "worker.1", "x@y"]



def examples(count: int) -> settings:
    # No deadline: a load touches the file system, whose speed varies on a shared machine.
    return settings(max_examples=count, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --------------------------------------------------------------------------- generated unit files

scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
yaml_data = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)

plausible = st.sampled_from([
    "true", "sleep 1", "sh -c 'echo $HOME'", ["true", "--fd", "$(sockets.http)"], "no-such-program",
    "/bin/true", "simple", "exec", "notify", "oneshot", "forking", 0, 1, 2, 4097, -1, 1.5, "2",
    "500ms", "1min 30s", "infinity", "soon", "SIGTERM", "HUP", "SIGNOPE", 9, "0022", "0o777", "999",
    "nobody", "nogroup", "root", "no-such-user", 65534, "/", "/tmp", "/nonexistent", "no", False,
    "on-failure", "always", True, None, "$(sockets.http)", "$(instance)", "$(env.HOME)",
    "$(env.UNSET)", "$(bogus)", "$(", "$$", "eager", "on-demand", "prefix", "inherit", "null",
    "exit", "none", "main", "all", "a.env", "-missing.env", "missing.env", ["a.env", "-b.env"],
    {}, [], "", "web", ["db"], ["web", "db"], ["api", "nothing"],
])
listen_values = st.sampled_from([
    8000, 8001, "8000", 0, 70000, "tcp://127.0.0.1:8000", "tcp://[::1]:8000", "tcp://[::]:8000",
    "tcp://0.0.0.0:8001", "tcp://localhost:8002", "udp://0.0.0.0:8000", "unix:/run/t.sock",
    "unix:@t", "fifo:/run/t.fifo", "inherit:http", "tcp://nowhere", "unix:relative", "bogus",
    None, True, [8000],
]) | st.integers(-5, 70000)
socket_spec = (listen_values | st.fixed_dictionaries(
    {"listen": listen_values},
    optional={k: plausible | listen_values for k in unitkeys.SOCKET_KEYS if k != "listen"},
))
sockets_value = st.dictionaries(st.sampled_from(["http", "api", "admin", "bad name", ""]),
                                socket_spec, max_size=3) | yaml_data


def unit_document():
    """A mapping with real service keys, values mostly plausible, sometimes unknown keys."""
    optional = {k: plausible for k in unitkeys.SERVICE_KEYS if k not in ("exec", "sockets")}
    optional.update({k: yaml_data for k in ("description", "instances", "environment", "bogus")})
    optional["sockets"] = sockets_value
    optional["requires"] = st.lists(st.sampled_from(UNIT_NAMES + ["ghost"]), max_size=3)
    required = {"exec": st.sampled_from(["true", "sleep 1", ["true", "$(instance)"]]) | plausible}
    return st.fixed_dictionaries(required, optional=optional)


documents = unit_document() | yaml_data | st.dictionaries(st.text(max_size=10), yaml_data, max_size=4)
env_texts = st.sampled_from(["A=1\n", "A='x\n", "bad line\n", "", "PATH=/usr/bin\nB=\"q\"\n"]) | st.text(max_size=40)


@st.composite
def stacks(draw):
    """{relative path: bytes} for a units directory: units, sometimes drop-ins and env files."""
    files = {}
    names = draw(st.lists(st.sampled_from(UNIT_NAMES), min_size=1, max_size=3, unique=True))
    for name in names:
        suffix = draw(st.sampled_from([".yaml", ".yml"]))
        files[name + suffix] = dump(draw(documents))
        if draw(st.integers(0, 3)) == 0:
            files[f"{name}.d/10-{draw(st.sampled_from(['a', 'b']))}.yaml"] = dump(draw(documents))
    if draw(st.booleans()):
        files["orphan.d/10.yaml"] = dump(draw(documents))
    if draw(st.booleans()):
        files["a.env"] = draw(env_texts).encode("utf-8", "surrogatepass")
    return files


def dump(data) -> bytes:
    return yaml.safe_dump(data, allow_unicode=True).encode("utf-8", "surrogatepass")


def write(directory: str, files: dict[str, bytes]) -> None:
    for relative, data in files.items():
        path = os.path.join(directory, relative)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)


def parseable(path: str) -> bool:
    """Whether the file can be read and parsed at all (then its problems have a line)."""
    try:
        if path.endswith(".env"):
            envfile.load(path)
        else:
            yamlsource.load(path, empty_ok=os.path.basename(os.path.dirname(path)).endswith(".d"))
    except yamlsource.SourceError:
        return False
    return True


def load_and_check(directory: str) -> None:
    try:
        model = units.load([directory], ENVIRON, True)
    except unitmodel.UnitsError as e:
        assert e.errors, "a UnitsError without errors"
        problems = e.problems
        assert all(p in problems for p in e.errors)
    else:
        assert isinstance(model, unitmodel.Model)
        problems = list(model.warnings)
        assert all(p.warning for p in problems)
        for unit in model.units.values():
            assert unit.fingerprint
        assert sorted(n for layer in model.layers for n in layer) == sorted(model.units)
    for problem in problems:
        file = problem.location.file
        assert file.startswith(directory) or os.path.exists(file), problem  # or a file named in a unit
        assert "\n" not in str(problem), problem
        if os.path.isfile(file) and parseable(file):
            assert problem.location.line >= 1, problem


@examples(1000)
@given(stacks())
def test_generated_unit_files_load_or_give_located_problems(files):
    with tempfile.TemporaryDirectory() as directory:
        write(directory, files)
        load_and_check(directory)


@examples(800)
@given(st.binary(max_size=300), st.binary(max_size=60), st.booleans())
@example(b"exec: true\n\x00", b"", False)
@example(b"\xef\xbb\xbfexec: 'true'\n", b"A=\xff", True)
@example(b"exec: 'true'\nenvironment_file: a.env\n", b"A='open", True)
def test_arbitrary_bytes_load_or_give_located_problems(unit_bytes, env_bytes, with_dropin):
    with tempfile.TemporaryDirectory() as directory:
        files = {"web.yaml": unit_bytes, "a.env": env_bytes}
        if with_dropin:
            files["web.d/10.yaml"] = env_bytes
        write(directory, files)
        load_and_check(directory)


@examples(300)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_arbitrary_text_loads_or_gives_located_problems(text):
    with tempfile.TemporaryDirectory() as directory:
        write(directory, {"web.yaml": ("exec: 'true'\n" + text).encode()})
        load_and_check(directory)


raw_tokens = st.sampled_from([
    "0022", "0o22", "022", "18", "no", "No", "off", "null", "~", "", "yes", "true", "1e3", ".inf",
    "-.inf", ".nan", "0x10", "1_000", "'quoted'", '"dq\\n"', "[a, b]", "{x: 1}", "''", "2001-01-01",
    "!!binary aGk=", "!!str 5", "!!int x", "&a x", "*a", "|\n  block", ">-\n  folded", "500ms",
    "infinity", "SIGTERM", "$(sockets.http)", "nobody", "/tmp", "true --x", "[true, '$(instance)']",
])
raw_lines = st.one_of(
    st.tuples(st.sampled_from(sorted(unitkeys.SERVICE_KEYS)), raw_tokens).map(lambda kv: f"{kv[0]}: {kv[1]}"),
    st.tuples(st.sampled_from(sorted(unitkeys.SOCKET_KEYS)), raw_tokens).map(
        lambda kv: f"sockets:\n  http:\n    listen: 8000\n    {kv[0]}: {kv[1]}"),
)


@examples(300)
@given(st.lists(raw_lines, max_size=6))
def test_yaml_as_written_loads_or_gives_located_problems(lines):
    # Written as text, not dumped: unquoted 0022, no, null, tags and anchors reach the loader.
    with tempfile.TemporaryDirectory() as directory:
        write(directory, {"web.yaml": "\n".join(["exec: 'true'", *lines, ""]).encode()})
        load_and_check(directory)


# --------------------------------------------------------------------------- environment files

env_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
env_values = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=30)


def single_quoted(value: str) -> str | None:
    return None if "'" in value else f"'{value}'"


def double_quoted(value: str) -> str:
    return '"' + "".join("\\" + c if c in '"\\`$' else c for c in value) + '"'


def unquoted(value: str) -> str | None:
    """Every character but letters and digits escaped; newlines cannot be written unquoted."""
    if not value or any(c in value for c in "\n\r"):
        return None
    return "".join(c if c.isascii() and c.isalnum() else "\\" + c for c in value)


@st.composite
def quoted(draw, value: str) -> str:
    """`value` in one to three pieces, each quoted one of the ways systemd reads; an unquoted
    piece can only come last."""
    cuts = sorted(draw(st.lists(st.integers(0, len(value)), max_size=2)))
    pieces = [value[a:b] for a, b in zip([0, *cuts], [*cuts, len(value)])]
    out = []
    for i, piece in enumerate(pieces):
        forms = [double_quoted(piece), single_quoted(piece)]
        if i == len(pieces) - 1:
            forms.append(unquoted(piece))
        out.append(draw(st.sampled_from([f for f in forms if f is not None])))
        if i < len(pieces) - 1:
            out.append(draw(st.sampled_from(["", " ", "\t"])))  # blanks between pieces are dropped
    return "".join(out)


@examples(400)
@given(st.data(), st.dictionaries(env_names, env_values, max_size=6))
def test_environment_files_round_trip(data, variables):
    lines = []
    for key, value in variables.items():
        if data.draw(st.booleans()):
            lines.append(data.draw(st.sampled_from(["# comment", "; comment", "", "   ", "  # x = y"])))
        blank = data.draw(st.sampled_from(["", " ", "\t"]))
        lines.append(f"{blank}{key}{blank}={blank}{data.draw(quoted(value))}{data.draw(st.sampled_from(['', ' ', '  ']))}")
    ending = data.draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(lines) + data.draw(st.sampled_from(["", ending]))
    assert envfile.parse(text) == variables


@examples(300)
@given(st.text(max_size=80))
def test_environment_file_parsing_gives_variables_or_a_located_error(text):
    try:
        result = envfile.parse(text, "x.env")
    except yamlsource.SourceError as e:
        assert e.location.file == "x.env" and 1 <= e.location.line <= text.count("\n") + text.count("\r") + 1
    else:
        assert all(envfile.valid_name(k) and "\0" not in v for k, v in result.items())


# --------------------------------------------------------------------------- templates

template_text = st.lists(st.sampled_from(list("$()ab. {}") + [
    "sockets.", "env.", "instance", "circus.wid", "circus.sockets."]), max_size=20).map("".join) | st.text(max_size=40)


@examples(500)
@given(template_text)
def test_templates_round_trip_through_their_canonical_form(text):
    try:
        template = templates.parse(text)
    except TemplateError:
        return
    assert templates.parse(str(template)) == template
    assert "".join(p for p in template.parts if isinstance(p, str)) == "".join(
        p for p in templates.parse(str(template)).parts if isinstance(p, str))


@examples(300)
@given(st.text(max_size=60))
def test_doubled_dollars_are_literal_text(text):
    escaped = text.replace("$", "$$")
    template = templates.parse(escaped)
    assert template.refs == ()
    assert template.expand({}, 1, {}) == text
    assert str(template) == escaped


@examples(300)
@given(st.text(alphabet=st.sampled_from(list("$ab)x") + [" "]), max_size=40))
def test_without_templates_only_double_dollars_change(text):
    template = templates.parse(text)  # no '(' at all: nothing can be a template
    expected, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            expected.append("$")
            i += 2
        else:
            expected.append(text[i])
            i += 1
    assert template.expand({}, 1, {}) == "".join(expected)


@examples(300)
@given(st.lists(st.one_of(
    st.text(max_size=8).map(lambda t: ("text", t)),
    st.sampled_from(["http", "a.b", "x-1"]).map(lambda n: ("socket", n)),
    st.sampled_from(["HOME", "_X1"]).map(lambda n: ("env", n)),
    st.just(("instance", "")),
), max_size=8))
def test_a_template_built_from_parts_parses_back_and_expands(pieces):
    text = "".join(value.replace("$", "$$") if kind == "text" else
                   {"socket": f"$(sockets.{value})", "env": f"$(env.{value})",
                    "instance": "$(instance)"}[kind] for kind, value in pieces)
    template = templates.parse(text)
    fds, environ = {"http": 3, "a.b": 4, "x-1": 5}, {"HOME": "/home/x", "_X1": "1"}
    expected = "".join(value if kind == "text" else str(fds[value]) if kind == "socket" else
                       environ[value] if kind == "env" else "7" for kind, value in pieces)
    assert template.expand(fds, 7, environ) == expected
    assert templates.parse(str(template)) == template
    assert all(isinstance(p, templates.Ref) or p for p in template.parts)  # no empty literal parts

