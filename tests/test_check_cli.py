"""`activator check [--units DIR]...` (SPEC §6), run as a user runs it: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from unitfiles import Stack

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def check(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "ACTIVATOR_UNITS"}
    environ.update(env or {})
    environ["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "activator", "check", *args], capture_output=True,
                          text=True, env=environ, cwd=cwd or ROOT, timeout=60)


def test_valid_units_exit_0_with_a_one_line_summary(stack):
    stack.unit("db", "sockets:\n  pg: 5432\n")
    stack.unit("web", "instances: 2\nrequires: [db]\nsockets:\n  http: 8000\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 0, result.stdout
    assert result.stdout == (f"ok: 2 units, 2 sockets, 3 processes, 2 start layers in {stack.units}\n"
                             f"model cache: {stack.units}/.activator-model\n")
    assert result.stderr == ""


def test_warnings_are_printed_and_still_exit_0(stack):
    stack.unit("web", "wants: [cache]\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 0
    warning, summary, _ = result.stdout.splitlines()
    assert warning == f"{stack.units}/web.yaml:2: unit web: warning: wants: no unit named 'cache' (ignored)"
    assert summary.startswith("ok: 1 unit, 0 sockets, 1 process, 1 start layer, 1 warning in ")


def test_invalid_units_exit_1_printing_every_error(stack):
    stack.unit("web", "instances: 0\nrestart: sometimes\n")
    stack.write("db.yaml", "exec: [unclosed\n")
    stack.write("api.yaml", "- a list\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 1
    lines = result.stdout.replace(str(stack.root) + "/", "").splitlines()
    assert lines == [
        "units/api.yaml:1: unit api: expected a mapping of keys to values, found a list",
        "units/db.yaml:2: unit db: YAML: did not find expected ',' or ']'; close the '[' on "
        "line 1 with ']', and quote any item that contains ',', ': ', '[', ']', '{' or '}'",
        "units/web.yaml:2: unit web: instances: expected a number from 1 to 4096, got 0",
        "units/web.yaml:3: unit web: restart: expected one of no, on-failure, on-abnormal, always, "
        "got 'sometimes'",
        "4 errors",
    ]
    assert result.stderr == ""


def test_every_problem_line_has_the_file_line_unit_format(stack):
    stack.unit("a", "type: notify\nnotify_access: none\nsockets:\n  x: {listen: 'tcp://[::1]:99999'}\n")
    stack.unit("b", "requires: [nothing]\nexec: ['$(sockets.nope)']\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 1
    *problems, count = result.stdout.splitlines()
    assert count == f"{len(problems)} errors"
    for line in problems:
        file, number, unit, message = line.split(":", 3)
        assert file.startswith(str(stack.units)) and int(number) >= 1
        assert unit.startswith(" unit ") and message.startswith(" "), line


def test_several_units_directories(stack):
    stack.unit("web", "description: base\n", "base")
    stack.unit("web", "instances: 0\n", "derived")
    assert check("--units", str(stack.root / "base")).returncode == 0
    result = check("--units", str(stack.root / "base"), "--units", str(stack.root / "derived"))
    assert result.returncode == 1
    assert "derived/web.yaml:2: unit web: instances:" in result.stdout


def test_activator_units_is_used_without_units_options(stack):
    stack.unit("web", "instances: 0\n", "a")
    stack.unit("db", "", "b")
    result = check(env={"ACTIVATOR_UNITS": f"{stack.root / 'a'}:{stack.root / 'b'}"})
    assert result.returncode == 1 and "a/web.yaml:2: unit web: instances:" in result.stdout
    stack.unit("web", "", "a")
    result = check(env={"ACTIVATOR_UNITS": f"{stack.root / 'a'}:{stack.root / 'b'}"})
    assert result.returncode == 0 and result.stdout.startswith("ok: 2 units")


def test_a_missing_units_directory_exits_1(stack):
    result = check("--units", str(stack.root / "nowhere"))
    assert result.returncode == 1
    assert result.stdout == f"{stack.root / 'nowhere'}: units directory does not exist\n1 error\n"


def test_relative_directories_print_relative_file_names(stack):
    stack.unit("web", "instances: 0\n")
    result = check("--units", "units", cwd=stack.root)
    assert result.returncode == 1
    assert result.stdout.startswith("units/web.yaml:2: unit web: instances:")


@pytest.mark.parametrize("args", [["--bogus"], ["--units"], ["extra-argument"], ["--json"]])
def test_a_bad_command_line_exits_2(stack, args):
    result = check(*args)
    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert result.stdout == ""


def test_help_exits_0():
    result = check("--help")
    assert result.returncode == 0 and "--units DIR" in result.stdout


def test_broken_files_never_produce_a_traceback(stack):
    stack.write("a.yaml", bytes(range(256)))
    stack.write("b.yaml", "a: &a [*a]\n")
    os.symlink("c.yaml", stack.units / "c.yaml")
    (stack.units / "d.yaml").mkdir()
    stack.write("e.yaml", "exec: true\n---\nexec: false\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 1
    assert result.stderr == ""  # no traceback
    assert result.stdout.splitlines()[-1] == "5 errors"


def test_stdio_socket_without_an_accept_socket_is_an_error(stack):
    stack.unit("sshd", "exec: [cat]\nstdio: socket\nsockets:\n  ssh: 2222\n")
    stack.unit("git", "exec: [cat]\nstdio: socket\nsockets:\n  git: {listen: 9418, accept: true}\n")
    result = check("--units", str(stack.units))
    assert result.returncode == 1
    assert result.stdout.replace(str(stack.root) + "/", "").splitlines() == [
        "units/sshd.yaml:2: unit sshd: stdio: socket needs a socket with accept: true (each "
        "connection becomes the process's stdin and stdout)",
        "1 error",
    ]
