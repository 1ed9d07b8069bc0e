"""The model cache end to end: `activator check` writes it, activator as PID 1 boots from it
when every file it was made of is unchanged, and loads the unit files otherwise, saying why."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from harness import PYTHON, ROOT, Activator, write_units

CACHE = ".activator-model"
USED = "model from cache"


@pytest.fixture
def stack(tmp_path):
    """A units directory and a factory of PID 1 runs on it, each with the same environment
    as its `check`; every run cleaned up."""
    started = []

    class Stack:
        units = tmp_path / "units"
        cache = units / CACHE

        def write(self, files: dict[str, str]) -> None:
            write_units(self.units, files)

        def run(self, args=(), env=None, command=None) -> Activator:
            run = Activator(tmp_path / f"a{len(started)}", units_dir=self.units, args=list(args),
                            env=env, command=command)
            started.append(run)
            return run

        def check(self, *args, env=None) -> subprocess.CompletedProcess:
            environ = self.run(env=env).env  # what the boot will see
            started.pop()
            return subprocess.run([PYTHON, "-m", "activator", "check", "--units", str(self.units), *args],
                                  capture_output=True, text=True, env=environ, timeout=60)

        def boot(self, args=(), env=None, command=None, wait_ready=True) -> Activator:
            return self.run(args, env, command).start(wait_ready)

    yield Stack()
    for run in started:
        run.cleanup()


def echo_unit(word: str) -> str:
    """A unit that says `said-WORD` (WORD expanded by the shell), then sleeps."""
    return f"exec: [sh, -c, 'echo said-{word}; exec sleep infinity']\n"


def test_check_writes_the_cache_and_the_boot_uses_it(stack):
    stack.write({"web": echo_unit("hello"), "db": echo_unit("db")})
    result = stack.check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"model cache: {stack.cache}"
    assert stack.cache.stat().st_mode & 0o777 == 0o644
    run = stack.boot()
    run.wait_log("said-hello")
    assert f"activator: {USED} {stack.cache}\n" in run.stderr()
    assert "ignored" not in run.stderr()


def test_without_a_cache_nothing_is_said(stack):
    stack.write({"web": echo_unit("hello")})
    run = stack.boot()
    run.wait_log("said-hello")
    assert "model cache" not in run.output() and USED not in run.output()


def test_command_mode_with_a_cached_model(stack):
    stack.write({"web": echo_unit("hello")})
    assert stack.check().returncode == 0
    run = stack.boot(command=["sh", "-c", "echo from-main; exit 7"], wait_ready=False)
    assert run.wait_exit() == 7
    assert "from-main" in run.output() and USED in run.stderr()


def same_size_same_mtime(path: Path, text: str) -> None:
    before = path.stat()
    path.write_text(text)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_size == before.st_size


# Each change: (files before the check, what changes after it, the reason logged, what the
# boot then shows: the stale cache was not used).
CHANGES = {
    "unit file, same size and mtime": (
        {"web": echo_unit("AAAA")},
        lambda s: same_size_same_mtime(s.units / "web.yaml", echo_unit("BBBB")),
        "{units}/web.yaml changed", "said-BBBB"),
    "drop-in added": (
        {"web": echo_unit("$GREETING"), "web.d/10.yaml": "environment:\n  GREETING: one\n"},
        lambda s: s.write({"web.d/20.yaml": "environment:\n  GREETING: two\n"}),
        "files were added to or removed from {units}/web.d", "said-two"),
    "drop-in changed": (
        {"web": echo_unit("$GREETING"), "web.d/10.yaml": "environment:\n  GREETING: one\n"},
        lambda s: s.write({"web.d/10.yaml": "environment:\n  GREETING: six\n"}),
        "{units}/web.d/10.yaml changed", "said-six"),
    "drop-in removed": (
        {"web": echo_unit("${GREETING:-none}"), "web.d/10.yaml": "environment:\n  GREETING: one\n"},
        lambda s: (s.units / "web.d" / "10.yaml").unlink(),
        "files were added to or removed from {units}/web.d", "said-none"),
    "drop-in directory added": (
        {"web": echo_unit("${GREETING:-none}")},
        lambda s: s.write({"web.d/10.yaml": "environment:\n  GREETING: new\n"}),
        "files were added to or removed from {units}", "said-new"),
    "environment file changed": (
        {"web": echo_unit("$GREETING") + "environment_file: ../app.env\n", "../app.env": "GREETING=one\n"},
        lambda s: s.write({"../app.env": "GREETING=two\n"}),
        "{root}/app.env changed", "said-two"),
    "optional environment file appeared": (
        {"web": echo_unit("${GREETING:-none}") + "environment_file: -../app.env\n"},
        lambda s: s.write({"../app.env": "GREETING=here\n"}),
        "{root}/app.env changed", "said-here"),
    "new unit file": (
        {"web": echo_unit("web")},
        lambda s: s.write({"extra": echo_unit("extra-unit")}),
        "files were added to or removed from {units}", "said-extra-unit"),
}


@pytest.mark.parametrize("change", CHANGES)
def test_a_stale_cache_is_ignored_and_the_files_are_loaded(stack, change):
    files, edit, reason, shows = CHANGES[change]
    stack.write(files)
    assert stack.check().returncode == 0
    edit(stack)
    run = stack.boot()
    run.wait_log(shows)
    expected = reason.format(units=stack.units, root=stack.units.parent)
    assert f"activator: model cache {stack.cache} ignored: {expected}\n" in run.stderr()
    assert USED not in run.stderr()


def test_an_environment_variable_the_units_use_changed(stack):
    stack.write({"web": "exec: [sh, -c, 'echo $X; exec sleep infinity']\nenvironment:\n  X: v=$(env.V)\n"})
    assert stack.check(env={"V": "one"}).returncode == 0
    run = stack.boot(env={"V": "one", "UNRELATED": "x"})
    run.wait_log("v=one")
    assert USED in run.stderr()  # a variable no unit names changes nothing
    run = stack.boot(env={"V": "two"})
    run.wait_log("v=two")
    assert f"model cache {stack.cache} ignored: $V changed" in run.stderr()


def test_a_program_on_path_that_appears_or_goes(stack, tmp_path):
    first, second = tmp_path / "bin1", tmp_path / "bin2"
    first.mkdir()
    second.mkdir()
    program = second / "prog"
    program.write_text("#!/bin/sh\necho second; exec sleep infinity\n")
    program.chmod(0o755)
    stack.write({"web": f"exec: [prog]\nenvironment:\n  PATH: {first}:{second}:/usr/bin:/bin\n"})
    assert stack.check().returncode == 0
    shadow = first / "prog"
    shadow.write_text("#!/bin/sh\necho from-first; exec sleep infinity\n")
    shadow.chmod(0o755)
    run = stack.boot()
    run.wait_log("from-first")
    assert f"model cache {stack.cache} ignored: {shadow} changed" in run.stderr()
    shadow.unlink()
    program.unlink()  # gone: a cache that still held it would start a unit that cannot run
    run = stack.boot(wait_ready=False)
    assert run.wait_exit() == 2
    assert f"model cache {stack.cache} ignored: {program} changed" in run.stderr()
    assert "exec: program 'prog' not found" in run.stderr()


def flip_last_byte(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 0x20])


@pytest.mark.parametrize("damage,reason", [
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "damaged (checksum)"),
    (lambda p: p.write_bytes(flip_last_byte(p.read_bytes())), "damaged (checksum)"),
    (lambda p: p.write_bytes(os.urandom(4096)), "damaged (not a model cache)"),
    (lambda p: p.write_bytes(p.read_bytes().replace(b"activator-model-cache 1 ", b"activator-model-cache 9 ", 1)),
     "written by another activator"),
    (lambda p: p.chmod(0o646), "writable by others than its owner (mode 0646)"),
    (lambda p: os.chown(p, 4321, 4321), "owned by uid 4321, neither root nor activator's user"),
])
def test_a_damaged_or_foreign_cache_is_ignored(stack, damage, reason):
    stack.write({"web": echo_unit("loaded")})
    assert stack.check().returncode == 0
    damage(stack.cache)
    run = stack.boot()
    run.wait_log("said-loaded")
    assert f"activator: model cache {stack.cache} ignored: {reason}" in run.stderr()


def test_a_payload_that_would_run_code_behind_a_bad_checksum_is_never_unpickled(stack, tmp_path):
    stack.write({"web": echo_unit("loaded")})
    assert stack.check().returncode == 0
    marker = tmp_path / "unpickled"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")  # pickle protocol 0
    first = stack.cache.read_bytes().split(b"\n", 1)[0]
    stack.cache.write_bytes(first + b"\n%d %s\n" % (len(payload), b"0" * 32) + payload)
    run = stack.boot()
    run.wait_log("said-loaded")
    assert f"model cache {stack.cache} ignored: damaged (checksum)" in run.stderr()
    assert not marker.exists()


@pytest.mark.parametrize("how", ["--no-cache", "ACTIVATOR_CACHE=off"])
def test_the_cache_can_be_turned_off(stack, how):
    stack.write({"web": echo_unit("loaded")})
    assert stack.check().returncode == 0
    run = stack.boot(args=[how] if how.startswith("--") else [], env=dict([how.split("=")]) if "=" in how else None)
    run.wait_log("said-loaded")
    assert "model cache" not in run.stderr() and USED not in run.stderr()


def test_a_cache_elsewhere_by_option_or_environment(stack, tmp_path):
    stack.write({"web": echo_unit("loaded")})
    elsewhere = tmp_path / "cache" / "model"
    elsewhere.parent.mkdir()
    result = stack.check("--cache", str(elsewhere))
    assert result.returncode == 0 and result.stdout.endswith(f"model cache: {elsewhere}\n")
    assert not stack.cache.exists()
    run = stack.boot(args=["--cache", str(elsewhere)])
    run.wait_log("said-loaded")
    assert f"{USED} {elsewhere}" in run.stderr()
    run = stack.boot(env={"ACTIVATOR_CACHE": str(elsewhere)})
    run.wait_log("said-loaded")
    assert f"{USED} {elsewhere}" in run.stderr()


def test_a_failed_check_removes_the_cache(stack):
    stack.write({"web": echo_unit("loaded")})
    assert stack.check().returncode == 0 and stack.cache.exists()
    stack.write({"web": "instances: 0\n" + echo_unit("loaded")})
    result = stack.check()
    assert result.returncode == 1 and "model cache" not in result.stdout
    assert not stack.cache.exists()


def test_a_cache_that_cannot_be_written_is_said_in_one_line_and_check_still_passes(stack, tmp_path):
    stack.write({"web": echo_unit("loaded")})
    result = stack.check("--cache", str(tmp_path / "missing" / "model"))
    assert result.returncode == 0
    assert result.stdout.splitlines()[-1].startswith("ok: 1 unit")
    assert result.stderr == (f"activator check: model cache not written: {tmp_path / 'missing' / 'model'}: "
                             "No such file or directory\n")


def test_check_with_relative_directories_writes_a_cache_for_the_absolute_ones(stack):
    stack.write({"web": echo_unit("loaded")})
    environ = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([PYTHON, "-m", "activator", "check", "--units", "units"], capture_output=True,
                            text=True, env={**environ, "PATH": stack.run().env["PATH"]},
                            cwd=stack.units.parent, timeout=60)
    assert result.returncode == 0 and result.stdout.endswith("model cache: units/.activator-model\n")
    run = stack.boot()
    run.wait_log("said-loaded")
    assert USED in run.stderr()


def test_reload_reads_the_files_whatever_the_cache(stack):
    import signal

    stack.write({"web": echo_unit("before")})
    assert stack.check().returncode == 0
    run = stack.boot()
    run.wait_log("said-before")
    stack.write({"web": echo_unit("after!")})
    run.signal(signal.SIGHUP)
    run.wait_log("said-after!")
    assert run.stderr().count(USED) == 1
