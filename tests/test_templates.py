"""Templates in `exec` and `environment` (SPEC §3): parsing, expansion, and checks at load time."""

from __future__ import annotations

import pytest

from activator import templates
from activator.templates import Ref, Template, TemplateError
from unitfiles import Stack, only_unit


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def expand(text: str, fds=None, instance: int = 1, environ=None) -> str:
    return templates.parse(text).expand(fds or {}, instance, environ or {})


# --------------------------------------------------------------------------- parsing

@pytest.mark.parametrize("text, parts", [
    ("", ()),
    ("plain", ("plain",)),
    ("$(sockets.http)", (Ref("socket", "http"),)),
    ("--fd=$(sockets.http)", ("--fd=", Ref("socket", "http"))),
    ("$(circus.sockets.web)", (Ref("socket", "web"),)),
    ("$(instance)", (Ref("instance"),)),
    ("$(circus.wid)", (Ref("instance"),)),
    ("$(env.HOME)", (Ref("env", "HOME"),)),
    ("a$(instance)b$(env.X)c", ("a", Ref("instance"), "b", Ref("env", "X"), "c")),
    ("$$", ("$",)),
    ("$$(sockets.x)", ("$(sockets.x)",)),
    ("$$$(instance)", ("$", Ref("instance"))),
    ("$HOME", ("$HOME",)),
    ("echo $HOME ${USER} $1 $", ("echo $HOME ${USER} $1 $",)),
    ("100$", ("100$",)),
    ("$(sockets.a.b)", (Ref("socket", "a.b"),)),
])
def test_parse(text, parts):
    assert templates.parse(text).parts == parts


@pytest.mark.parametrize("text, message", [
    ("$(", "'$(' without its closing ')' in '$(' (write $$ for a literal $)"),
    ("--fd $(sockets.http", "'$(' without its closing ')' in '--fd $(sockets.http' (write $$ for a literal $)"),
    ("$()", "unknown template '$()'; known: $(sockets.NAME), $(instance), $(env.VAR), "
     "$(circus.sockets.NAME), $(circus.wid), and $$ for a literal $"),
    ("$(socket.http)", "unknown template '$(socket.http)'; known: $(sockets.NAME), $(instance), "
     "$(env.VAR), $(circus.sockets.NAME), $(circus.wid), and $$ for a literal $"),
    ("$(sockets.)", "unknown template '$(sockets.)'; known: $(sockets.NAME), $(instance), $(env.VAR), "
     "$(circus.sockets.NAME), $(circus.wid), and $$ for a literal $"),
    ("$(INSTANCE)", "unknown template '$(INSTANCE)'; known: $(sockets.NAME), $(instance), $(env.VAR), "
     "$(circus.sockets.NAME), $(circus.wid), and $$ for a literal $"),
    ("$(circus.env.HOME)", "unknown template '$(circus.env.HOME)'; known: $(sockets.NAME), $(instance), "
     "$(env.VAR), $(circus.sockets.NAME), $(circus.wid), and $$ for a literal $"),
    ("$(env.)", "'$(env.)': '' is not a valid environment variable name"),
    ("$(env.1X)", "'$(env.1X)': '1X' is not a valid environment variable name"),
    ("$(env.A-B)", "'$(env.A-B)': 'A-B' is not a valid environment variable name"),
])
def test_parse_errors(text, message):
    with pytest.raises(TemplateError) as e:
        templates.parse(text)
    assert str(e.value) == message


@pytest.mark.parametrize("text", ["", "a", "$$", "$HOME", "x$(sockets.y)z", "$(env.A)$(instance)", "$$$", "$$("])
def test_str_is_the_canonical_form_that_parses_back(text):
    template = templates.parse(text)
    assert templates.parse(str(template)) == template


def test_str_escapes_literal_dollars():
    assert str(templates.parse("cost: $5 $$ $(instance)")) == "cost: $$5 $$ $(instance)"
    assert str(templates.parse("$(circus.wid) $(circus.sockets.a)")) == "$(instance) $(sockets.a)"


def test_literal_is_never_expanded():
    template = templates.literal("$(sockets.x) $$ $(nope")
    assert template.expand({}, 1, {}) == "$(sockets.x) $$ $(nope"
    assert template.refs == ()
    assert templates.parse(str(template)) == template
    assert templates.literal("") == Template(())


# --------------------------------------------------------------------------- expansion

def test_expand():
    environ = {"HOME": "/root", "EMPTY": ""}
    assert expand("--fd=$(sockets.b) $(sockets.a)", {"a": 3, "b": 4}) == "--fd=4 3"
    assert expand("worker-$(instance)", instance=7) == "worker-7"
    assert expand("$(circus.wid)/$(circus.sockets.a)", {"a": 5}, 2) == "2/5"
    assert expand("$(env.HOME):$(env.EMPTY):$(env.UNSET):", environ=environ) == "/root:::"
    assert expand("sh -c 'echo $HOME $$'") == "sh -c 'echo $HOME $'"


def test_refs():
    template = templates.parse("$(sockets.a) $(instance) $(env.B) $$")
    assert template.refs == (Ref("socket", "a"), Ref("instance"), Ref("env", "B"))


# --------------------------------------------------------------------------- in unit files

def test_socket_templates_expand_to_the_fd_the_service_sees(stack):
    stack.unit("web", """
        exec: ['true', '--fd', '$(sockets.b)', '$(circus.sockets.a)']
        sockets:
          a: 8000
          b: 8001
        """)
    unit = only_unit(stack.load())
    fds = {s.name: 3 + i for i, s in enumerate(unit.sockets)}
    assert [t.expand(fds, 1, {}) for t in unit.exec] == ["true", "--fd", "4", "3"]


def test_a_socket_template_uses_the_sockets_name_not_its_key(stack):
    stack.unit("web", "exec: ['true', '$(sockets.public)']\nsockets:\n  http: {listen: 8000, name: public}\n")
    stack.load()
    stack.unit("web", "exec: ['true', '$(sockets.http)']\nsockets:\n  http: {listen: 8000, name: public}\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: $(sockets.http) names no socket of "
                             "this unit (its sockets: public)")


def test_a_socket_template_must_name_a_socket_of_this_unit(stack):
    stack.unit("db", "sockets:\n  pg: 5432\n")
    stack.unit("web", """
        exec:
          - 'true'
          - --db-fd=$(sockets.pg)
        sockets:
          http: 8000
        environment:
          DB_FD: $(sockets.pg)
        """)
    assert stack.errors() == [
        "units/web.yaml:3: unit web: exec: $(sockets.pg) names no socket of this unit (its sockets: http)",
        "units/web.yaml:7: unit web: environment: DB_FD: $(sockets.pg) names no socket of this unit "
        "(its sockets: http)",
    ]


def test_a_socket_template_in_a_unit_without_sockets(stack):
    stack.unit("web", "exec: \"true --fd $(sockets.http)\"\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: $(sockets.http) names no socket of "
                             "this unit (it has none)")


def test_instance_and_circus_aliases_are_accepted(stack):
    stack.unit("web", "exec: ['true', '$(instance)', '$(circus.wid)', '$(circus.sockets.h)']\n"
               "instances: 2\nsockets: {h: 8000}\n")
    unit = only_unit(stack.load())
    assert [t.expand({"h": 3}, 2, {}) for t in unit.exec] == ["true", "2", "2", "3"]


def test_an_unknown_template_is_an_error_at_load_time(stack):
    stack.unit("web", "exec: ['true', '$(worker_id)']\n")
    assert stack.error().startswith("units/web.yaml:1: unit web: exec: unknown template '$(worker_id)'; known:")
    stack.unit("web", "environment:\n  ID: $(wid)\n")
    assert stack.error().startswith("units/web.yaml:3: unit web: environment: ID: unknown template '$(wid)'")


def test_an_unterminated_template_is_an_error(stack):
    stack.unit("web", "exec: \"true $(instance\"\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: '$(' without its closing ')' in "
                             "'$(instance' (write $$ for a literal $)")


def test_other_dollars_are_literal(stack):
    stack.unit("web", "exec: sh -c 'echo $HOME ${PATH} $1; exit $$?'\n")
    unit = only_unit(stack.load())
    assert [t.expand({}, 1, {}) for t in unit.exec] == ["sh", "-c", "echo $HOME ${PATH} $1; exit $?"]


def test_an_unset_env_template_is_a_warning_from_load(stack):
    stack.unit("web", """
        exec: ['true', '$(env.API_KEY)', '$(env.API_KEY)', '$(env.SET)']
        environment:
          KEY: $(env.API_KEY)
          TOKEN: $(env.TOKEN)
        """)
    stack.environ["SET"] = "1"
    model = stack.load()
    assert [stack.relative(w) for w in model.warnings] == [
        "units/web.yaml:1: unit web: warning: exec: $(env.API_KEY) is not set here; it expands to an "
        "empty text unless set when the container runs",
        "units/web.yaml:4: unit web: warning: environment: TOKEN: $(env.TOKEN) is not set here; it "
        "expands to an empty text unless set when the container runs",
    ]
    stack.environ.update(API_KEY="k", TOKEN="t")
    assert stack.load().warnings == ()


def test_a_template_naming_a_socket_with_an_error_adds_no_second_error(stack):
    stack.unit("web", "exec: ['true', '$(sockets.http)', '$(sockets.api)']\n"
               "sockets:\n  http: {listen: 99999}\n  x: {listen: 1, name: api, backlog: 0}\n")
    errors = stack.errors()
    assert len(errors) == 2 and "listen" in errors[0] and "backlog" in errors[1]
