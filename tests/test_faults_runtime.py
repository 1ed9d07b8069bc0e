"""SPEC §8 and §11 around the runtime directory: commands never signal a stranger, status.json
damaged or huge is said so, and a full or read-only directory is survived."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from harness import ROOT, wait_for

PYTHON = sys.executable


def command(runtime: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = {**os.environ, "ACTIVATOR_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT)}
    return subprocess.run([PYTHON, "-m", "activator", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)


def stranger(tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A process whose command line holds the word 'activator' and that records a SIGHUP."""
    record = tmp_path / "hup"
    script = tmp_path / "activator-log-follower.py"
    script.write_text(textwrap.dedent(f"""
        import signal, sys, time
        signal.signal(signal.SIGHUP, lambda *_: open({str(record)!r}, "w").write("hup"))
        print("ready", flush=True)
        time.sleep(60)
    """))
    proc = subprocess.Popen([PYTHON, str(script), "activator.log"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "ready\n"
    return proc, record


def test_reload_never_signals_a_process_not_proved_to_be_activator(tmp_path):
    """Defect: with no notify socket to check, a process whose command line held the word
    'activator' was taken for activator: `tail -f activator.log` received SIGHUP."""
    proc, record = stranger(tmp_path)
    runtime = tmp_path / "run"
    runtime.mkdir()
    try:
        (runtime / "activator.pid").write_text(f"{proc.pid}\n")
        (runtime / "status.json").write_text(json.dumps({"pid": proc.pid, "units": {}}))
        result = command(runtime, "reload", "--timeout", "1")
        assert result.returncode == 1
        assert "no running activator" in result.stderr
        status = command(runtime, "status")
        assert status.returncode == 1 and "stale" in status.stderr
        assert proc.poll() is None and not record.exists()
    finally:
        proc.kill()
        proc.wait()


def test_reload_finds_activator_in_another_network_namespace(activator):
    """Its notify socket is not visible from here: the start time it recorded proves it."""
    a = activator({"web": "exec: [sleep, infinity]"}, prefix=["unshare", "--net"])
    a.wait_state("web", "running")
    result = command(a.runtime, "reload", "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert "reload applied" in result.stdout
