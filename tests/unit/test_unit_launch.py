"""The constant part of a unit's launches, worked out once (activation.UnitLaunch)."""

import os
import stat

import pytest

from activator import templates
from activator.activation import UnitLaunch, prepare
from activator.model import Unit
from activator.spawn import SpawnError


def make_unit(tmp_path, *words, environment=(), **fields) -> Unit:
    return Unit(name="job", exec=tuple(templates.parse(w) for w in words),
                environment=tuple((k, templates.parse(v)) for k, v in environment),
                working_directory=str(tmp_path), **fields)


def program(tmp_path, name="tool"):
    path = tmp_path / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def environ(tmp_path):
    return {"PATH": str(tmp_path / "bin"), "HOME": "/root"}


def test_the_program_is_searched_for_once_then_kept(tmp_path, monkeypatch):
    path = program(tmp_path)
    unit = make_unit(tmp_path, "tool", "--home=$(env.HOME)")
    prepared = UnitLaunch(unit, environ(tmp_path), environ(tmp_path), None)
    searches = []
    import activator.activation as activation
    real = activation.find_program
    monkeypatch.setattr(activation, "find_program", lambda *a: searches.append(a) or real(*a))
    first = prepared.launch(1, [], [])
    second = prepared.launch(2, [], [])
    assert first.program == second.program == str(path)
    assert len(searches) == 1


def test_a_program_that_no_longer_runs_is_searched_for_again(tmp_path):
    path = program(tmp_path)
    prepared = UnitLaunch(make_unit(tmp_path, "tool"), environ(tmp_path), environ(tmp_path), None)
    assert prepared.launch(1, [], []).program == str(path)
    path.unlink()
    prepared.forget_program()  # what the launcher does when the spawn fails
    with pytest.raises(SpawnError):
        prepared.launch(1, [], [])
    program(tmp_path)
    assert prepared.launch(1, [], []).program == str(path)


def test_a_command_line_naming_the_instance_is_expanded_and_searched_each_time(tmp_path):
    program(tmp_path, "tool1")
    program(tmp_path, "tool2")
    prepared = UnitLaunch(make_unit(tmp_path, "tool$(instance)", "-n", "$(instance)"),
                          environ(tmp_path), environ(tmp_path), None)
    one, two = prepared.launch(1, [], []), prepared.launch(2, [], [])
    assert (one.argv, two.argv) == (["tool1", "-n", "1"], ["tool2", "-n", "2"])
    assert os.path.basename(two.program) == "tool2"


def test_each_launch_gets_its_own_environment_and_the_protocol_wins(tmp_path):
    program(tmp_path)
    unit = make_unit(tmp_path, "tool", environment=(("WORKER", "w$(instance)"),
                                                   ("NOTIFY_SOCKET", "/elsewhere"), ("A", "b")),
                     notify_access="main")
    base = environ(tmp_path)
    prepared = UnitLaunch(unit, base, base, "/run/activator/notify")
    one = prepared.launch(1, [], [])
    connection = prepared.launch(7, [], [], {"fd": 9, "REMOTE_ADDR": "::ffff:10.0.0.1", "REMOTE_PORT": 5})
    assert one.env["WORKER"] == "w1" and connection.env["WORKER"] == "w7"
    assert one.env["NOTIFY_SOCKET"] == connection.env["NOTIFY_SOCKET"] == "/run/activator/notify"
    assert one.env["ACTIVATOR_INSTANCE"] == "1" and connection.env["ACTIVATOR_INSTANCE"] == "7"
    assert "REMOTE_ADDR" not in one.env and connection.env["REMOTE_ADDR"] == "10.0.0.1"
    assert connection.env["LISTEN_FDS"] == "1" and connection.fds == [9]
    assert connection.pid_variables == ("LISTEN_PID",) and one.pid_variables == ()
    assert one.env["A"] == "b" and base == environ(tmp_path)  # nothing written back


def test_prepare_gives_what_a_prepared_launch_gives(tmp_path):
    program(tmp_path)
    unit = make_unit(tmp_path, "tool", "$(instance)", environment=(("X", "$(instance)"),))
    base = environ(tmp_path)
    direct = prepare(unit, 3, [], [], base, base, "/n")
    kept = UnitLaunch(unit, base, base, "/n").launch(3, [], [])
    assert (direct.program, direct.argv, direct.env) == (kept.program, kept.argv, kept.env)
