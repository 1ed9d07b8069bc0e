"""Unit files (SPEC §1): discovery, drop-ins, dependencies, checks across units, the Model."""

from __future__ import annotations

import os

import pytest

from activator import model as unitmodel
from activator import discovery, templates
from activator import units
from activator.service import backoff
from unitfiles import Stack, only_unit


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


# --------------------------------------------------------------------------- discovery

def test_a_later_units_directory_overrides_a_same_named_unit(stack):
    stack.unit("web", "description: from base\ninstances: 2\n", "base")
    stack.unit("db", "description: only in base\n", "base")
    stack.unit("web", "description: from derived\n", "derived")
    model = stack.load("base", "derived")
    assert model.units["web"].description == "from derived"
    assert model.units["web"].instances == 1  # replaced whole, not merged
    assert model.units["db"].description == "only in base"
    assert model.units["web"].files == (str(stack.root / "derived" / "web.yaml"),)


def test_override_order_follows_the_order_of_the_directories(stack):
    stack.unit("web", "description: a\n", "a")
    stack.unit("web", "description: b\n", "b")
    assert stack.load("b", "a").units["web"].description == "a"


def test_activator_units_is_colon_separated_and_later_overrides(stack):
    stack.unit("web", "description: a\n", "a")
    stack.unit("web", "description: b\n", "b")
    environ = {"PATH": stack.environ["PATH"], "ACTIVATOR_UNITS": f"{stack.root / 'a'}:{stack.root / 'b'}"}
    assert discovery.directories(None, environ) == ([str(stack.root / "a"), str(stack.root / "b")], True)
    assert units.load(None, environ).units["web"].description == "b"


def test_units_flags_win_over_the_environment_variable(stack):
    environ = {"ACTIVATOR_UNITS": "/nonexistent"}
    assert discovery.directories(["/x", "/y"], environ) == (["/x", "/y"], True)


def test_a_directory_in_activator_units_that_is_missing_is_an_error(stack):
    environ = {"PATH": stack.environ["PATH"], "ACTIVATOR_UNITS": str(stack.root / "missing")}
    with pytest.raises(unitmodel.UnitsError) as e:
        units.load(None, environ)
    assert str(e.value) == f"{stack.root / 'missing'}: units directory does not exist"


def test_the_default_directory_may_be_missing(stack, monkeypatch):
    monkeypatch.setattr(discovery, "DEFAULT_DIRECTORY", str(stack.root / "etc-activator-units"))
    dirs, explicit = discovery.directories(None, {})
    assert (dirs, explicit) == ([str(stack.root / "etc-activator-units")], False)
    model = units.load(None, {})
    assert dict(model.units) == {} and model.layers == () and model.warnings == ()


def test_the_default_directory_is_etc_activator_units():
    assert discovery.directories(None, {}) == (["/etc/activator/units"], False)
    assert discovery.directories([], {"ACTIVATOR_UNITS": ""}) == (["/etc/activator/units"], False)


def test_a_units_directory_named_on_the_command_line_must_exist(stack):
    assert stack.error("missing") == "missing: units directory does not exist"


def test_a_units_directory_that_is_a_file_is_an_error(stack):
    stack.write("file", "x", ".")
    assert stack.error("file") == "file: cannot read units directory: Not a directory"


def test_name_yaml_and_name_yml_are_both_units(stack):
    stack.unit("web")
    stack.write("db.yml", "exec: 'true'\n")
    assert sorted(stack.load().units) == ["db", "web"]


def test_the_same_unit_twice_in_one_directory_is_an_error(stack):
    stack.unit("web")
    stack.write("web.yml", "exec: 'true'\n")
    assert stack.error() == "units/web.yml:1: unit web: both web.yaml and web.yml define this unit"


def test_files_starting_with_a_dot_are_ignored(stack):
    stack.unit("web")
    stack.write(".web.yaml", "this is: [not valid\n")
    stack.write(".hidden.yaml", "exec: 'true'\n")
    stack.write("web.d/.swap.yaml", "garbage: [\n")
    assert list(stack.load().units) == ["web"]


def test_other_files_are_ignored(stack):
    stack.unit("web")
    for name in ("README", "web.yaml~", "web.yaml.orig", "notes.txt", "web.json"):
        stack.write(name, "not: [yaml\n")
    (stack.units / "subdir").mkdir()
    assert list(stack.load().units) == ["web"]


@pytest.mark.parametrize("name", ["my web", "wéb", "web+1", "a:b", "web$"])
def test_invalid_unit_names_are_errors(stack, name):
    stack.unit(name)
    assert stack.error() == (f"units/{name}.yaml:1: '{name}' is not a valid unit name "
                             "(letters, digits, _ . @ -)")


@pytest.mark.parametrize("name", ["web", "web-1", "web_1", "web.api", "getty@tty1", "A9"])
def test_valid_unit_names(stack, name):
    stack.unit(name)
    assert list(stack.load().units) == [name]


# --------------------------------------------------------------------------- drop-ins

def test_a_drop_in_is_deep_merged_over_its_unit(stack):
    stack.unit("web", """
        exec: "true"
        description: web
        environment: {A: "1", B: "2"}
        requires: []
        after: [db]
        sockets:
          http: {listen: 8000, backlog: 10}
        """)
    stack.unit("db")
    stack.write("web.d/override.yaml", """
        environment: {B: "two", C: "3"}
        after: [cache]
        sockets:
          http: {backlog: 20}
        """)
    stack.unit("cache")
    web = stack.load().units["web"]
    assert dict(web.environment) == {"A": templates.parse("1"),
                                     "B": templates.parse("two"),
                                     "C": templates.parse("3")}
    assert web.after == ("cache",)  # a list replaces
    assert web.description == "web"
    assert web.sockets[0].backlog == 20 and str(web.sockets[0].listen) == "tcp://*:8000"
    assert web.files[1] == str(stack.units / "web.d" / "override.yaml")


def test_drop_ins_apply_in_file_name_order(stack):
    stack.unit("web", "description: unit\n")
    stack.write("web.d/20-b.yaml", "description: b\n")
    stack.write("web.d/10-a.yaml", "description: a\ninstances: 3\n")
    web = stack.load().units["web"]
    assert (web.description, web.instances) == ("b", 3)


def test_drop_ins_of_every_directory_apply_in_file_name_order(stack):
    stack.unit("web", "description: unit\n", "base")
    stack.write("web.d/30-base.yaml", "description: base 30\n", "base")
    stack.write("web.d/20-derived.yaml", "description: derived 20\ninstances: 2\n", "derived")
    web = stack.load("base", "derived").units["web"]
    assert (web.description, web.instances) == ("base 30", 2)


def test_for_the_same_drop_in_name_the_later_directory_wins(stack):
    stack.unit("web", "", "base")
    stack.write("web.d/10-tune.yaml", "instances: 2\ndescription: base\n", "base")
    stack.write("web.d/10-tune.yaml", "instances: 5\n", "derived")
    web = stack.load("base", "derived").units["web"]
    assert web.instances == 5
    assert web.description == ""  # the earlier file of that name is not applied at all
    assert web.files == (str(stack.root / "base/web.yaml"), str(stack.root / "derived/web.d/10-tune.yaml"))


def test_a_drop_in_also_applies_to_a_unit_that_a_later_directory_overrides(stack):
    stack.unit("web", "", "base")
    stack.write("web.d/10.yaml", "instances: 4\n", "base")
    stack.unit("web", "description: new\n", "derived")
    web = stack.load("base", "derived").units["web"]
    assert (web.description, web.instances) == ("new", 4)


def test_drop_ins_may_end_in_yml(stack):
    stack.unit("web")
    stack.write("web.d/10.yml", "instances: 2\n")
    assert stack.load().units["web"].instances == 2


def test_an_empty_or_comment_only_drop_in_changes_nothing(stack):
    stack.unit("web", "instances: 2\n")
    stack.write("web.d/10-empty.yaml", "")
    stack.write("web.d/20-comments.yaml", "# instances: 9\n")
    assert stack.load().units["web"].instances == 2


def test_a_drop_in_for_a_unit_that_does_not_exist_is_an_error(stack):
    stack.unit("web")
    stack.write("wbe.d/10.yaml", "instances: 2\n")
    error = stack.error()
    assert error.startswith("units/wbe.d/10.yaml:1: unit wbe: drop-in for a unit that does not exist")


def test_drop_in_errors_are_located_in_the_drop_in(stack):
    stack.unit("web", "description: fine\n")
    stack.write("web.d/10.yaml", """
        # tuning
        instances: many
        """)
    assert stack.error() == ("units/web.d/10.yaml:2: unit web: instances: expected a whole number, "
                             "got 'many'")


def test_drop_in_yaml_errors_are_located_in_the_drop_in(stack):
    stack.unit("web")
    stack.write("web.d/10.yaml", "instances: 2\nenvironment: {A: [\n")
    error = stack.error()
    assert error.startswith("units/web.d/10.yaml:3: unit web: drop-in: YAML: "), error


def test_a_drop_in_merged_socket_error_is_located_in_the_drop_in(stack):
    stack.unit("web", "sockets:\n  http: {listen: 8000}\n")
    stack.write("web.d/10.yaml", "sockets:\n  http:\n    backlog: -1\n")
    assert stack.error() == ("units/web.d/10.yaml:3: unit web: sockets.http.backlog: expected a "
                             "number from 1 to 2147483647, got -1")


def test_a_drop_in_may_replace_a_mapping_with_null(stack):
    stack.unit("web", "sockets:\n  http: 8000\nenvironment: {A: b}\n")
    stack.write("web.d/10.yaml", "sockets: null\nenvironment:\n")
    web = stack.load().units["web"]
    assert web.sockets == () and web.environment == ()


# --------------------------------------------------------------------------- dependencies

def test_requires_naming_an_unknown_unit_is_an_error(stack):
    stack.unit("web", "requires: [db, cache]\n")
    stack.unit("db")
    assert stack.error() == "units/web.yaml:2: unit web: requires: no unit named 'cache'"


@pytest.mark.parametrize("key", ["wants", "after"])
def test_wants_and_after_naming_an_unknown_unit_is_a_warning(stack, key):
    stack.unit("web", f"{key}:\n  - db\n  - cache\n")
    stack.unit("db")
    model = stack.load()
    assert [stack.relative(w) for w in model.warnings] == [
        f"units/web.yaml:4: unit web: warning: {key}: no unit named 'cache' (ignored)"]
    assert getattr(model.units["web"], key) == ("db", "cache")
    assert model.dependencies("web") == {"db"}


def test_a_dependency_cycle_is_an_error_that_prints_the_cycle(stack):
    stack.unit("a", "requires: [b]\n")
    stack.unit("b", "after: [a]\n")
    assert stack.error() == "units/a.yaml:2: unit a: requires: dependency cycle: a -> b -> a"


def test_a_longer_cycle_is_reported_once(stack):
    stack.unit("a", "wants: b\n")
    stack.unit("b", "wants: c\n")
    stack.unit("c", "after: [a]\n")
    stack.unit("d", "requires: [a]\n")  # depends on the cycle, not part of it
    assert stack.error() == "units/a.yaml:2: unit a: wants: dependency cycle: a -> b -> c -> a"


def test_two_separate_cycles_are_both_reported(stack):
    stack.unit("a", "after: [b]\n")
    stack.unit("b", "after: [a]\n")
    stack.unit("x", "after: [y]\n")
    stack.unit("y", "after: [x]\n")
    errors = stack.errors()
    assert len(errors) == 2
    assert "dependency cycle: a -> b -> a" in errors[0]
    assert "dependency cycle: x -> y -> x" in errors[1]


@pytest.mark.parametrize("key", ["requires", "wants", "after"])
def test_a_unit_depending_on_itself_is_an_error(stack, key):
    stack.unit("web", f"{key}: [web]\n")
    assert stack.error() == (f"units/web.yaml:2: unit web: {key}: dependency cycle: web -> web "
                             "(a unit cannot depend on itself)")


def test_layers_group_units_that_can_start_in_parallel_in_dependency_order(stack):
    stack.unit("db")
    stack.unit("cache")
    stack.unit("migrate", "type: oneshot\nrequires: [db]\n")
    stack.unit("web", "requires: [migrate]\nwants: [cache]\n")
    stack.unit("worker", "after: [db]\n")
    stack.unit("proxy", "after: [web, worker]\n")
    model = stack.load()
    assert model.layers == (("cache", "db"), ("migrate", "worker"), ("web",), ("proxy",))


def test_a_dependency_named_twice_counts_once(stack):
    stack.unit("db")
    stack.unit("web", "requires: [db, db]\nafter: [db]\n")
    model = stack.load()
    assert model.units["web"].requires == ("db",)
    assert model.layers == (("db",), ("web",))


def test_a_single_name_is_a_list_of_one(stack):
    stack.unit("db")
    stack.unit("web", "requires: db\n")
    assert stack.load().units["web"].requires == ("db",)


@pytest.mark.parametrize("value, expected", [
    ("[1]", "expected unit names, got 1"),
    ("{db: yes}", "expected a list of unit names, got a mapping"),
    ("['my db']", "expected unit names, got 'my db'"),
])
def test_dependencies_must_be_unit_names(stack, value, expected):
    stack.unit("web", f"requires: {value}\n")
    assert stack.error() == f"units/web.yaml:2: unit web: requires: {expected}"


# --------------------------------------------------------------------------- across units

def test_socket_names_are_unique_across_units(stack):
    stack.unit("a", "sockets:\n  http: 8000\n")
    stack.unit("b", "sockets:\n  api:\n    name: http\n    listen: 8001\n")
    assert stack.error() == ("units/b.yaml:3: unit b: sockets.api: the name 'http' is also used by "
                             "unit a (units/a.yaml:3); socket names are global")


def test_socket_names_are_unique_within_a_unit(stack):
    stack.unit("a", "sockets:\n  one: {listen: 8000, name: x}\n  two: {listen: 8001, name: x}\n")
    assert stack.error() == ("units/a.yaml:4: unit a: sockets.two: the name 'x' is also the name "
                             "of socket 'one' (units/a.yaml:3)")


@pytest.mark.parametrize("first, second", [
    ("8000", "8000"),
    ("8000", "tcp://127.0.0.1:8000"),
    ("8000", "tcp://[::1]:8000"),
    ("8000", "tcp://0.0.0.0:8000"),
    ("tcp://0.0.0.0:8000", "tcp://10.1.2.3:8000"),
    ("tcp://[::]:8000", "tcp://[::1]:8000"),
    ("tcp://[::]:8000", "tcp://127.0.0.1:8000"),  # [::] is dual-stack unless ipv6_only
    ("tcp://127.0.0.1:8000", "tcp://127.0.0.1:8000"),
    ("tcp://localhost:8000", "tcp://0.0.0.0:8000"),
    ("tcp://*:8000", "8000"),
    ("udp://0.0.0.0:53", "udp://127.0.0.1:53"),
    ("unix:/run/app.sock", "unix:/run/app.sock"),
    ("unix:/run/app", "fifo:/run/app"),
    ("unix:@app", "unix:@app"),
    ("inherit:http", "inherit:http"),
])
def test_listen_addresses_are_unique_across_units(stack, first, second):
    stack.unit("a", f"sockets:\n  one: {{listen: '{first}'}}\n")
    stack.unit("b", f"sockets:\n  two: {{listen: '{second}'}}\n")
    error = stack.error()
    assert error.startswith("units/b.yaml:3: unit b: sockets.two: "), error
    assert "collides with" in error and "socket 'one' of unit a (units/a.yaml:3)" in error


@pytest.mark.parametrize("first, second", [
    ("8000", "8001"),
    ("tcp://127.0.0.1:8000", "tcp://127.0.0.2:8000"),
    ("tcp://127.0.0.1:8000", "tcp://[::1]:8000"),
    ("tcp://0.0.0.0:8000", "tcp://[::1]:8000"),
    ("8000", "udp://0.0.0.0:8000"),
    ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"),  # the kernel picks a port for each
    ("unix:/run/a.sock", "unix:/run/b.sock"),
    ("unix:@app", "unix:/app"),
    ("inherit:a", "inherit:b"),
])
def test_distinct_listen_addresses_do_not_collide(stack, first, second):
    stack.unit("a", f"sockets:\n  one: {{listen: '{first}'}}\n")
    stack.unit("b", f"sockets:\n  two: {{listen: '{second}'}}\n")
    assert len(stack.load().sockets) == 2


def test_an_ipv6_only_wildcard_leaves_ipv4_free(stack):
    stack.unit("a", "sockets:\n  one: {listen: 'tcp://[::]:8000', ipv6_only: true}\n")
    stack.unit("b", "sockets:\n  two: {listen: 'tcp://0.0.0.0:8000'}\n")
    stack.load()
    stack.unit("b", "sockets:\n  two: {listen: 'tcp://[::1]:8000'}\n")
    assert "collides with" in stack.error()


def test_reuse_port_on_both_sockets_allows_the_same_address(stack):
    stack.unit("a", "sockets:\n  one: {listen: 8000, reuse_port: true}\n")
    stack.unit("b", "sockets:\n  two: {listen: 8000, reuse_port: true}\n")
    assert len(stack.load().sockets) == 2
    stack.unit("b", "sockets:\n  two: {listen: 8000}\n")
    assert "collides with" in stack.error()


def test_two_sockets_of_one_unit_may_not_collide_either(stack):
    stack.unit("a", "sockets:\n  one: 8000\n  two: tcp://127.0.0.1:8000\n")
    assert stack.error() == ("units/a.yaml:4: unit a: sockets.two: tcp://127.0.0.1:8000 collides "
                             "with tcp://*:8000, socket 'one' of this unit (units/a.yaml:3)")


def test_sockets_of_units_with_other_errors_are_still_checked_across_units(stack):
    stack.unit("a", "sockets:\n  one: 8000\ninstances: 0\n")
    stack.unit("b", "sockets:\n  two: 8000\n")
    errors = stack.errors()
    assert len(errors) == 2 and "instances" in errors[0] and "collides" in errors[1]


# --------------------------------------------------------------------------- forbidden combinations

def test_type_notify_with_notify_access_none_is_an_error(stack):
    stack.unit("web", "type: notify\nnotify_access: none\n")
    assert stack.error() == ("units/web.yaml:3: unit web: notify_access: type notify needs main or "
                             "all: with none, its READY=1 could never be received")


def test_notify_access_defaults_to_main_for_notify_and_none_otherwise(stack):
    stack.unit("a", "type: notify\n")
    stack.unit("b", "type: simple\n")
    stack.unit("c", "type: notify\nnotify_access: all\n")
    model = stack.load()
    assert [model.units[n].notify_access for n in "abc"] == ["main", "none", "all"]


def test_an_accept_socket_must_be_the_only_socket(stack):
    stack.unit("web", "sockets:\n  conn: {listen: 8000, accept: true}\n  admin: 8001\n")
    assert stack.error() == ("units/web.yaml:2: unit web: sockets: socket 'conn' has accept: true, "
                             "so it must be the unit's only socket (each process gets its "
                             "connection as fd 3)")


def test_an_accept_socket_needs_one_instance(stack):
    stack.unit("web", "instances: 2\nsockets:\n  conn: {listen: 8000, accept: true}\n")
    error = stack.error()
    assert error.startswith("units/web.yaml:2: unit web: instances: a unit with an accept socket")


def test_an_accept_unit_alone_is_fine(stack):
    stack.unit("web", "sockets:\n  conn: {listen: 8000, accept: true, max_connections: 10}\n")
    web = stack.load().units["web"]
    assert web.accepts and web.sockets[0].max_connections == 10


def test_socket_env_defaults_to_false_when_exec_or_environment_names_a_socket(stack):
    stack.unit("fd", "exec: ['true', --fd, '$(sockets.http)']\nsockets:\n  http: 8000\n")
    stack.unit("plain", "sockets:\n  api: 8001\n")
    stack.unit("forced", "exec: ['true', '$(circus.sockets.admin)']\nsocket_env: true\n"
               "sockets:\n  admin: 8002\n")
    stack.unit("off", "socket_env: false\nsockets:\n  metrics: 8003\n")
    # uWSGI reads UWSGI_HTTP_SOCKET and LISTEN_FDS both: named in environment, it is off too.
    stack.unit("env_only", "environment: {UWSGI_HTTP_SOCKET: 'fd://$(sockets.x)'}\n"
               "sockets:\n  x: 8004\n")
    stack.unit("env_forced", "environment: {FD: '$(sockets.y)'}\nsocket_env: true\n"
               "sockets:\n  y: 8005\n")
    stack.unit("env_other", "environment: {INSTANCE: '$(instance)'}\nsockets:\n  z: 8006\n")
    model = stack.load()
    assert {n: u.socket_env for n, u in model.units.items()} == {
        "fd": False, "plain": True, "forced": True, "off": False, "env_only": False,
        "env_forced": True, "env_other": True}


def test_on_demand_needs_a_socket(stack):
    stack.unit("web", "start: on-demand\n")
    assert stack.error() == "units/web.yaml:2: unit web: start: on-demand needs at least one socket to wait on"


def test_restart_sec_above_restart_max_sec_is_accepted(stack):
    """SPEC: restart_sec is the first delay, doubling up to restart_max_sec; a first delay
    above the cap is no contradiction: every delay is then restart_sec."""
    stack.unit("a", "restart_sec: 5\nrestart_max_sec: 1\n")
    stack.unit("b", "restart_sec: 1min\n")
    units = stack.load().units
    assert (units["a"].restart_sec, units["a"].restart_max_sec) == (5.0, 1.0)
    assert (units["b"].restart_sec, units["b"].restart_max_sec) == (60.0, 10.0)
    assert [backoff(units["b"], n) for n in (1, 2, 5)] == [60.0, 60.0, 60.0]
    assert [backoff(units["a"], n) for n in (1, 2, 5)] == [5.0, 5.0, 5.0]

# --------------------------------------------------------------------------- one pass

def test_every_problem_of_every_file_is_reported_in_one_pass(stack):
    stack.unit("a", "instances: 0\ntype: forking\nbogus: 1\n")
    stack.write("b.yaml", "exec: [\n")
    stack.unit("c", "sockets:\n  http: {listen: 'tcp://nowhere'}\nrequires: [zzz]\n")
    stack.write("orphan.d/10.yaml", "instances: 2\n")
    stack.unit("d", "exec: \"'unterminated\"\nkill_signal: SIGNOPE\n")
    errors = stack.errors()
    assert errors == [
        "units/a.yaml:2: unit a: instances: expected a number from 1 to 4096, got 0",
        "units/a.yaml:3: unit a: type: expected one of simple, exec, notify, oneshot, got 'forking'",
        "units/a.yaml:4: unit a: unknown service key 'bogus'",
        "units/b.yaml:2: unit b: YAML: did not find expected node content; a list '[' or "
        "mapping '{' is not closed, or has an empty item: close it with ']' or '}', or quote a "
        "value that starts with '[' or '{'",
        "units/c.yaml:3: unit c: sockets.http.listen: 'tcp://nowhere': expected tcp://HOST:PORT",
        "units/c.yaml:4: unit c: requires: no unit named 'zzz'",
        "units/d.yaml:1: unit d: exec: cannot split the command line like a shell would: No closing quotation",
        "units/d.yaml:2: unit d: kill_signal: 'SIGNOPE' is not a signal name (SIGTERM, SIGINT, "
        "SIGQUIT, SIGHUP, SIGUSR1, …)",
        "units/orphan.d/10.yaml:1: unit orphan: drop-in for a unit that does not exist (no "
        "orphan.yaml in units)",
    ]


def test_all_template_errors_of_one_exec_are_reported(stack):
    stack.unit("web", "exec: ['true', '$(nope)', '$(sockets.x)', '$(also.bad)']\n")
    errors = stack.errors()
    assert len(errors) == 2 and "$(nope)" in errors[0] and "$(also.bad)" in errors[1]


def test_unknown_keys_are_errors_with_a_suggestion(stack):
    stack.unit("web", "restart_secs: 1\nsockets:\n  http: {listen: 80, backlg: 5}\n")
    assert stack.errors() == [
        "units/web.yaml:2: unit web: unknown service key 'restart_secs'; did you mean 'restart_sec'?",
        "units/web.yaml:4: unit web: unknown socket key 'sockets.http.backlg'; did you mean 'backlog'?",
    ]


def test_errors_and_warnings_print_as_file_line_unit_message(stack):
    stack.unit("web", "wants: [nothing]\ninstances: 0\n")
    failure = stack.failure()
    assert [stack.relative(p) for p in failure.problems] == [
        "units/web.yaml:2: unit web: warning: wants: no unit named 'nothing' (ignored)",
        "units/web.yaml:3: unit web: instances: expected a number from 1 to 4096, got 0",
    ]
    assert len(failure.errors) == 1 and not failure.errors[0].warning
    assert str(failure) == str(failure.errors[0])


# --------------------------------------------------------------------------- the model

def test_the_model_is_frozen(stack):
    stack.unit("web", "sockets:\n  http: 8000\n")
    model = stack.load()
    web = model.units["web"]
    with pytest.raises(AttributeError):
        model.layers = ()
    with pytest.raises(AttributeError):
        web.instances = 3
    with pytest.raises(AttributeError):
        web.sockets[0].backlog = 1
    with pytest.raises(AttributeError):
        web.sockets[0].listen.port = 1
    with pytest.raises(TypeError):
        model.units["other"] = web
    assert isinstance(web.sockets, tuple) and isinstance(web.exec, tuple)
    hash(web)  # frozen all the way down


def test_the_defaults_of_a_minimal_unit(stack):
    stack.write("web.yaml", "exec: 'true'\n")
    web = only_unit(stack.load())
    assert web == unitmodel.Unit(name="web", exec=(templates.parse("true"),),
                             files=(str(stack.units / "web.yaml"),))
    assert (web.type, web.instances, web.restart, web.restart_sec, web.restart_max_sec) == (
        "simple", 1, "on-failure", 0.1, 10.0)
    assert (web.start_limit_burst, web.start_limit_interval_sec) == (5, 10.0)
    assert (web.timeout_start_sec, web.timeout_stop_sec, web.kill_signal) == (30.0, 10.0, 15)
    assert (web.working_directory, web.credentials, web.umask, web.output) == ("/", None, None, "prefix")
    assert (web.notify_access, web.socket_env, web.start) == ("none", True, "eager")


def test_the_summary_counts_units_sockets_processes_and_layers(stack):
    stack.unit("db", "sockets:\n  pg: 5432\n")
    stack.unit("web", "instances: 3\nrequires: [db]\nwants: [x]\nsockets:\n  a: 80\n  b: 81\n")
    assert stack.load().summary() == "2 units, 3 sockets, 4 processes, 2 start layers, 1 warning"


FORMATTED = """
exec: [server, --port, "8000"]
description: the web
instances: 2
environment: {A: "1", B: two}
sockets:
  http: {listen: 8000, backlog: 64}
"""

REFORMATTED = """
# the same unit, written differently
sockets:
  http:
    backlog: 64      # comments change nothing
    listen: 8000
environment:
  B: 'two'
  A: "1"
description: "the web"

instances: 2
exec: server --port 8000
"""


def test_fingerprints_ignore_formatting_comments_and_key_order(stack):
    stack.write("bin/server", "#!/bin/sh\n", ".").chmod(0o755)
    stack.environ["PATH"] = str(stack.root / "bin")
    stack.write("web.yaml", FORMATTED)
    before = stack.load().units["web"]
    stack.write("web.yaml", REFORMATTED)
    after = stack.load().units["web"]
    assert after.fingerprint == before.fingerprint
    assert after.sockets[0].fingerprint == before.sockets[0].fingerprint


def test_fingerprint_of_exec_as_string_or_list_is_the_same(stack):
    stack.unit("a", "exec: sh -c 'echo $HOME; exit 0' $$x\n")
    stack.unit("b", "exec: [sh, -c, 'echo $HOME; exit 0', '$$x']\n")
    model = stack.load()
    a, b = model.units["a"], model.units["b"]
    assert [str(t) for t in a.exec] == ["sh", "-c", "echo $$HOME; exit 0", "$$x"]
    assert a.exec == b.exec
    assert a.replace(name="b", files=b.files).fingerprint == b.fingerprint


@pytest.mark.parametrize("change", [
    "exec: [sleep, '2']", "environment: {A: '2'}", "user: nobody", "working_directory: /tmp",
    "umask: '0077'", "type: exec", "output: inherit", "socket_env: false", "sockets: {http: 8001}",
    "sockets: {http: {listen: 8000, name: web}}", "sockets: {http: {listen: 8000, backlog: 5}}",
    "instances: 3", "restart: always", "restart_sec: 1", "restart_max_sec: 30",
    "timeout_start_sec: 90", "timeout_stop_sec: 1min", "description: new text",
    "start_limit_burst: 9", "start_limit_interval_sec: 60", "kill_signal: SIGINT",
    "reload_signal: SIGHUP", "success_action: exit", "failure_action: exit",
])
def test_every_change_of_meaning_changes_the_fingerprint(stack, change):
    text = "exec: [sleep, '1']\nenvironment: {A: '1'}\nsockets: {http: 8000}\n"
    stack.write("web.yaml", text)
    before = stack.load().units["web"]
    key = change.split(":")[0]
    lines = [line for line in text.splitlines() if not line.startswith(key + ":")] + [change]
    stack.write("web.yaml", "\n".join(lines) + "\n")
    assert stack.load().units["web"].fingerprint != before.fingerprint


def test_socket_options_that_can_change_in_place_keep_the_bind_key(stack):
    stack.unit("web", "sockets: {http: {listen: 8000}}\n")
    before = stack.load().units["web"]
    stack.unit("web", "sockets: {http: {listen: 8000, backlog: 5, nodelay: true}}\n")
    after = stack.load().units["web"]
    assert after.sockets[0].bind_key == before.sockets[0].bind_key
    assert after.sockets[0].fingerprint != before.sockets[0].fingerprint
    assert after.fingerprint != before.fingerprint
    stack.unit("web", "sockets: {http: {listen: 8000, reuse_port: true}}\n")
    assert stack.load().units["web"].sockets[0].bind_key != before.sockets[0].bind_key


def test_a_change_in_a_drop_in_changes_the_fingerprint(stack):
    stack.unit("web")
    stack.write("web.d/10.yaml", "environment: {A: '1'}\n")
    before = stack.load().units["web"]
    stack.write("web.d/10.yaml", "environment: {A: '2'}\n")
    after = stack.load().units["web"]
    assert after.fingerprint != before.fingerprint
    stack.write("web.d/10.yaml", "# a comment\nenvironment:\n  A: '2'\n")
    assert stack.load().units["web"].fingerprint == after.fingerprint


def test_a_change_in_an_environment_file_changes_the_fingerprint(stack):
    stack.unit("web", "environment_file: web.env\n")
    stack.write("web.env", "A=1\n")
    before = stack.load().units["web"]
    stack.write("web.env", "# comment\nA=1\n")
    assert stack.load().units["web"].fingerprint == before.fingerprint
    stack.write("web.env", "A=2\n")
    after = stack.load().units["web"]
    assert after.fingerprint != before.fingerprint


def test_reordering_sockets_changes_the_fingerprint_since_it_changes_the_fds(stack):
    stack.unit("web", "sockets:\n  a: 8000\n  b: 8001\n")
    before = stack.load().units["web"]
    stack.unit("web", "sockets:\n  b: 8001\n  a: 8000\n")
    assert stack.load().units["web"].fingerprint != before.fingerprint


def test_command_unit_runs_beside_the_first_layer(stack):
    stack.unit("db")
    stack.unit("web", "requires: [db]\n")
    model = unitmodel.with_command(stack.load(), ["sh", "-c", "echo $(sockets.x) $$"], "/tmp")
    main = model.units["main"]
    assert model.layers == (("db", "main"), ("web",))
    assert main.literal_exec and main.exec[2].expand({}, 1, {}) == "echo $(sockets.x) $$"
    assert (main.restart, main.success_action, main.failure_action, main.output) == (
        "no", "exit", "exit", "inherit")


def test_a_unit_named_main_and_a_command_conflict(stack):
    stack.unit("main")
    with pytest.raises(unitmodel.UnitsError) as e:
        unitmodel.with_command(stack.load(), ["true"])
    assert "the unit name 'main' is taken by the command given after --" in str(e.value)


def test_a_file_name_that_is_not_utf8_is_reported_printably(stack):
    (stack.units / os.fsdecode(b"\xff.yaml")).write_text("exec: 'true'\n")
    (stack.units / "line\nbreak.yaml").write_text("exec: 'true'\n")
    assert stack.errors() == [
        "units/line\\nbreak.yaml:1: 'line\\nbreak' is not a valid unit name (letters, digits, _ . @ -)",
        "units/\\xff.yaml:1: '\\xff' is not a valid unit name (letters, digits, _ . @ -)",
    ]


def test_drop_ins_of_a_broken_unit_file_are_still_checked(stack):
    stack.write("web.yaml", "exec: [\n")
    stack.write("web.d/10.yaml", "instances: [\n")
    errors = stack.errors()
    assert len(errors) == 2
    assert errors[0].startswith("units/web.d/10.yaml:2: unit web: drop-in: YAML:")
    assert errors[1].startswith("units/web.yaml:2: unit web: YAML:")
