"""The program of `exec` must be found and executable, as the unit's user would run it."""

from __future__ import annotations

import errno
import grp
import os
import pwd
import shutil
import tempfile

import pytest

from activator import model as unitmodel
from activator import unitfile
from unitfiles import Stack, only_unit

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")


@pytest.fixture
def stack():
    # Not under tmp_path: pytest's directories are 0700, so nobody could reach nothing there.
    root = tempfile.mkdtemp(prefix="activator-test-")
    os.chmod(root, 0o755)
    yield Stack(root)
    shutil.rmtree(root)


def program(stack, relative: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> str:
    path = stack.write(relative, "#!/bin/sh\nexit 0\n", ".")
    path.chmod(mode)
    os.chown(path, *owner)
    return str(path)


def test_a_program_found_in_path(stack):
    stack.unit("web", "exec: sleep 1\n")
    unit = only_unit(stack.load())
    assert unitmodel.find_program("sleep", stack.environ["PATH"], "/", None)[0] in (
        "/usr/local/bin/sleep", "/usr/bin/sleep", "/bin/sleep")
    assert unitfile.check_program(unit, stack.environ) is None


def test_a_program_not_in_path(stack):
    stack.unit("web", "exec: no-such-program --flag\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: program 'no-such-program' not found "
                             f"in PATH ({stack.environ['PATH']})")


def test_an_absolute_program_that_does_not_exist(stack):
    stack.unit("web", "exec: [/opt/app/bin/server]\n")
    assert stack.error() == "units/web.yaml:1: unit web: exec: program '/opt/app/bin/server' not found"


def test_a_file_without_execute_permission(stack):
    path = program(stack, "bin/tool", 0o644)
    stack.unit("web", f"exec: {path}\n")
    assert stack.error() == (f"units/web.yaml:1: unit web: exec: program 'bin/tool' cannot be executed: "
                             f"Permission denied: 'bin/tool' is not executable by uid 0")


def test_a_directory_is_not_a_program(stack):
    (stack.root / "bin" / "tool").mkdir(parents=True)
    stack.unit("web", f"exec: {stack.root / 'bin' / 'tool'}\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: program 'bin/tool' cannot be executed: "
                             "Permission denied: 'bin/tool' is a directory")


def test_a_root_only_program_is_not_executable_for_nobody(stack):
    path = program(stack, "bin/admin", 0o700)
    stack.unit("root", f"exec: {path}\n")
    stack.unit("web", f"exec: {path}\nuser: nobody\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: program 'bin/admin' cannot be "
                             "executed: Permission denied: 'bin/admin' is not executable by user nobody")


def test_a_program_owned_by_the_user_with_the_owner_bit(stack):
    path = program(stack, "bin/mine", 0o700, (NOBODY.pw_uid, 0))
    stack.unit("web", f"exec: {path}\nuser: nobody\n")
    stack.load()


def test_a_program_executable_by_the_users_group(stack):
    path = program(stack, "bin/team", 0o750, (0, NOGROUP.gr_gid))
    stack.unit("a", f"exec: {path}\nuser: nobody\n")  # nobody's primary group is nogroup
    stack.unit("b", f"exec: {path}\nuser: {NOBODY.pw_uid}\ngroup: nogroup\n")
    stack.load()
    stack.unit("c", f"exec: {path}\nuser: 4321\n")  # an id without an entry: not in nogroup
    assert "is not executable by uid 4321" in stack.error()


def test_the_owner_bits_decide_for_the_owner_even_when_others_may(stack):
    path = program(stack, "bin/odd", 0o607, (NOBODY.pw_uid, 0))
    stack.unit("web", f"exec: {path}\nuser: nobody\n")
    assert "is not executable by user nobody" in stack.error()


def test_root_needs_one_execute_bit(stack):
    path = program(stack, "bin/x", 0o001)
    stack.unit("web", f"exec: {path}\n")
    stack.load()


def test_a_directory_on_the_way_that_the_user_cannot_search(stack):
    path = program(stack, "private/bin/tool", 0o755)
    (stack.root / "private").chmod(0o700)
    stack.unit("root", f"exec: {path}\n")
    stack.unit("web", f"exec: {path}\nuser: nobody\n")
    assert stack.error() == ("units/web.yaml:1: unit web: exec: program 'private/bin/tool' cannot be "
                             "executed: Permission denied: user nobody may not search a directory on "
                             "the way to 'private/bin/tool'")


def test_path_from_environment(stack):
    program(stack, "opt/bin/custom-server")
    stack.unit("a", "exec: custom-server\n")
    assert "program 'custom-server' not found in PATH" in stack.error()
    stack.unit("a", f"exec: custom-server\nenvironment:\n  PATH: {stack.root / 'opt/bin'}:/usr/bin\n")
    stack.load()


def test_path_from_environment_may_use_our_path(stack):
    program(stack, "opt/bin/custom-server")
    stack.unit("a", f"exec: custom-server\nenvironment:\n  PATH: {stack.root / 'opt/bin'}:$(env.PATH)\n")
    stack.load()


def test_path_from_an_environment_file(stack):
    program(stack, "opt/bin/custom-server")
    stack.write("app.env", f"PATH={stack.root / 'opt/bin'}\n")
    stack.unit("a", "exec: custom-server\nenvironment_file: app.env\n")
    stack.load()


def test_environment_wins_over_environment_file_for_path(stack):
    program(stack, "opt/bin/custom-server")
    stack.write("app.env", f"PATH={stack.root / 'opt/bin'}\n")
    stack.unit("a", "exec: custom-server\nenvironment_file: app.env\nenvironment: {PATH: /nowhere}\n")
    assert "not found in PATH (/nowhere)" in stack.error()


def test_activators_own_path_is_used_by_default(stack):
    program(stack, "opt/bin/custom-server")
    stack.unit("a", "exec: custom-server\n")
    stack.load(environ={"PATH": str(stack.root / "opt/bin")})


def test_a_relative_program_is_taken_from_the_working_directory(stack):
    program(stack, "app/run.sh")
    stack.unit("a", f"exec: ./run.sh\nworking_directory: {stack.root / 'app'}\n")
    stack.load()
    stack.unit("a", "exec: ./run.sh\n")
    assert stack.error() == "units/a.yaml:1: unit a: exec: program './run.sh' not found"


def test_an_empty_path_entry_is_the_working_directory(stack):
    program(stack, "app/run.sh")
    stack.unit("a", f"exec: run.sh\nworking_directory: {stack.root / 'app'}\nenvironment: {{PATH: ':/bin'}}\n")
    stack.load()


def test_a_program_named_by_an_unset_variable_is_checked_when_it_runs(stack):
    stack.unit("a", "exec: ['$(env.APP_BINARY)', --serve]\n")
    model = stack.load()
    assert [stack.relative(w) for w in model.warnings] == [
        "units/a.yaml:1: unit a: warning: exec: $(env.APP_BINARY) is not set here; it expands to an "
        "empty text unless set when the container runs"]
    stack.environ["APP_BINARY"] = "/no/such/binary"
    assert stack.error() == "units/a.yaml:1: unit a: exec: program '/no/such/binary' not found"


def test_a_program_that_expands_to_nothing(stack):
    stack.unit("a", "exec: ['$(env.EMPTY)']\n")
    stack.environ["EMPTY"] = ""
    assert stack.error() == "units/a.yaml:1: unit a: exec: the program '$(env.EMPTY)' expands to nothing"


def test_the_program_is_not_looked_for_when_user_is_wrong(stack):
    stack.unit("a", "exec: no-such-program\nuser: no-such-user\n")
    assert stack.error() == "units/a.yaml:2: unit a: user: no user named 'no-such-user' in /etc/passwd"


def test_find_program_returns_the_errno_exec_would_give(stack):
    path = program(stack, "bin/x", 0o644)
    assert unitmodel.find_program(path, "", "/", None)[1][0] == errno.EACCES
    assert unitmodel.find_program("nothing-here", "/bin", "/", None) == (None, (errno.ENOENT, os.strerror(errno.ENOENT)))
    assert unitmodel.find_program("a\0b", "/bin", "/", None)[1][0] == errno.ENOENT
    found = program(stack, "bin2/x", 0o755)
    assert unitmodel.find_program("x", f"{stack.root / 'bin'}:{stack.root / 'bin2'}", "/", None) == (found, None)
