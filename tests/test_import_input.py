"""`activator import` on input it cannot take: a clear error, exit 2, nothing written, never a
traceback; and arbitrary INI-shaped text never raises anything but ImportFailed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings, strategies as st

from activator.importing import command
from activator.importing.model import ImportFailed

ROOT = Path(__file__).resolve().parent.parent


def run_import(tmp_path, *files, extra=()):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "activator", "import", *map(str, files),
                             "--out", str(out), *extra], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return result, out


def assert_refused(result, out, words):
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert words in result.stderr, result.stderr
    assert not out.exists() or not list(out.iterdir())


def test_unreadable_file(tmp_path):
    result, out = run_import(tmp_path, tmp_path / "missing.ini")
    assert_refused(result, out, "cannot read")


def test_none_of_the_formats(tmp_path):
    (tmp_path / "x.ini").write_text("[database]\nhost = db\n")
    result, out = run_import(tmp_path, tmp_path / "x.ini")
    assert_refused(result, out, "not a Circus, supervisord or systemd configuration")


def test_broken_ini(tmp_path):
    (tmp_path / "s.conf").write_text("[program:a]\ncommand=sleep 1\nthis line is no option\n")
    result, out = run_import(tmp_path, tmp_path / "s.conf")
    assert_refused(result, out, "s.conf:3: not an INI line")


def test_include_loop(tmp_path):
    (tmp_path / "a.conf").write_text("[program:a]\ncommand=sleep 1\n[include]\nfiles = b.conf\n")
    (tmp_path / "b.conf").write_text("[program:b]\ncommand=sleep 1\n[include]\nfiles = a.conf\n")
    result, out = run_import(tmp_path, tmp_path / "a.conf")
    assert_refused(result, out, "include loop")


def test_ten_megabytes(tmp_path):
    (tmp_path / "big.conf").write_text("[program:a]\ncommand=sleep 1\n" + "; padding\n" * 1_000_000)
    result, out = run_import(tmp_path, tmp_path / "big.conf")
    assert_refused(result, out, "larger than the limit")


def test_binary_garbage(tmp_path):
    (tmp_path / "g.ini").write_bytes(os.urandom(4096))
    result, out = run_import(tmp_path, tmp_path / "g.ini")
    assert_refused(result, out, "g.ini")


def test_nothing_written_when_one_input_fails(tmp_path):
    (tmp_path / "good.conf").write_text("[program:a]\ncommand=sleep 1\n")
    (tmp_path / "bad.conf").write_text("[program:b]\ncommand=sleep 1\n%%%\n")
    result, out = run_import(tmp_path, tmp_path / "good.conf", tmp_path / "bad.conf")
    assert_refused(result, out, "bad.conf:3")


def test_existing_file_needs_force(tmp_path):
    (tmp_path / "s.conf").write_text("[program:a]\ncommand=sleep 1\n")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.yaml").write_text("exec: mine\n")
    result, _ = run_import(tmp_path, tmp_path / "s.conf")
    assert result.returncode == 2 and "--force" in result.stderr
    assert (out / "a.yaml").read_text() == "exec: mine\n"
    result, _ = run_import(tmp_path, tmp_path / "s.conf", extra=("--force",))
    assert result.returncode == 0, result.stderr
    assert "exec: sleep 1" in (out / "a.yaml").read_text()


def test_options_not_imported_exit_1_and_are_comments(tmp_path):
    (tmp_path / "s.conf").write_text("[program:a]\ncommand=sleep 1\nautostart=false\n")
    result, out = run_import(tmp_path, tmp_path / "s.conf")
    assert result.returncode == 1
    assert f"{tmp_path / 's.conf'}:3: option autostart: not imported: " in result.stdout
    assert "# not imported: autostart" in (out / "a.yaml").read_text()


SECTION = st.sampled_from(["[program:a]", "[fcgi-program:f]", "[watcher:w]", "[socket:s]",
                           "[Service]", "[Socket]", "[Unit]", "[include]", "[env]", "[circus]",
                           "[supervisord]", "[group:g]", "[x"])
KEY = st.sampled_from(["command", "cmd", "args", "numprocs", "numprocesses", "socket",
                       "environment", "ExecStart", "ExecStartPre", "ListenStream", "Accept",
                       "priority", "user", "files", "host", "port", "Environment", "Type",
                       "Restart", "process_name", "stopsignal", "umask", "Requires"])
VALUE = st.text(alphabet=st.sampled_from(list("abc019 %()$@:;#=\"'\\/-_.,*{}[]\t")), max_size=30)
LINE = st.one_of(SECTION, st.builds(lambda k, v: f"{k}={v}", KEY, VALUE), VALUE)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, max_size=25))
def test_ini_shaped_text_never_raises_anything_else(tmp_path, lines):
    path = tmp_path / "fuzz.conf"
    path.write_text("\n".join(lines) + "\n")
    try:
        result = command.translate([str(path)])
    except ImportFailed:
        return
    from activator.importing import writer

    for unit in result.units:
        writer.render(unit)


def test_the_init_never_loads_the_importer():
    probe = ("import sys, activator.cli, activator.manager, activator.loading; "
             "print(sorted(m for m in sys.modules if m.startswith('activator.importing')))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
