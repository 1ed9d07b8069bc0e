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
        assert result.returncode == 3  # SPEC §8: no activator is running there
        assert "no running activator" in result.stderr
        status = command(runtime, "status")
        assert status.returncode == 3 and "stale" in status.stderr
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


# ---------------------------------------------------------------------- reading status.json

DAMAGED = [
    ("truncated", lambda good: good[:len(good) // 2]),
    ("empty", lambda good: b""),
    ("a list", lambda good: b"[1, 2, 3]"),
    ("units a list", lambda good: good.replace(b'"units": {', b'"units": [{', 1)[:0] + b'{"pid": 1, "units": []}'),
    ("pid a text", lambda good: b'{"pid": "1", "units": {}}'),
    ("instances of numbers", lambda good: b'{"pid": 1, "units": {"w": {"state": "running", "instances": [1]}}}'),
    ("state a number", lambda good: b'{"pid": 1, "units": {"w": {"state": 3}}}'),
    ("started not a time", lambda good: b'{"pid": 1, "started": "yesterday", "units": {}}'),
    ("not UTF-8", lambda good: b'{"pid": 1, "units": {"\xff": {}}}'),
    ("deep", lambda good: b"[" * 100000 + b"]" * 100000),
]


def test_a_damaged_status_json_is_said_so_never_with_a_traceback(activator):
    """Defect: cut short, it read as 'no running activator'; another shape gave a traceback."""
    a = activator({"web": "exec: [sleep, infinity]\nrestart: no"})
    a.wait_state("web", "running")
    a.signal(signal.SIGSTOP)  # no new status.json while we damage it
    try:
        path = a.runtime / "status.json"
        good = path.read_bytes()
        for label, damage in DAMAGED:
            path.write_bytes(damage(good))
            for args in (["status"], ["status", "--json"]):
                result = command(a.runtime, *args)
                assert result.returncode == 1, (label, args, result)
                assert "status.json is damaged" in result.stderr, (label, args, result.stderr)
                assert "Traceback" not in result.stderr, (label, args, result.stderr)
        # reload asks the control socket, not status.json: a stopped activator does not answer
        result = command(a.runtime, "reload", "--timeout", "1")
        assert result.returncode == 1 and "Traceback" not in result.stderr, result
    finally:
        a.signal(signal.SIGCONT)


def test_a_huge_status_json_is_not_read_whole(tmp_path):
    runtime = tmp_path / "run"
    runtime.mkdir()
    with open(runtime / "status.json", "wb") as f:
        f.write(b'{"pid": 1, "units": {}, "padding": "')
        f.truncate(300 << 20)  # sparse: 300 MiB that take no room
    start = time.monotonic()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", PYTHON, "-m", "activator", "status"],
                            env={**os.environ, "ACTIVATOR_RUNTIME_DIR": str(runtime), "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "status.json is damaged: 314572800 bytes" in result.stderr
    max_rss_kib = int(result.stderr.strip().splitlines()[-1])
    assert max_rss_kib < 100 * 1024, max_rss_kib
    assert time.monotonic() - start < 30


# ---------------------------------------------------------------------- status with many units

def test_status_reads_the_process_table_once_whatever_the_number_of_units(monkeypatch):
    """Defect: each instance's descendants were found by reading the whole process table
    again: 30 s for 1,000 units."""
    from activator import status

    roots = [subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60; wait"], start_new_session=True)
             for _ in range(20)]
    try:
        wait_for(lambda: all(len(Path(f"/proc/{p.pid}/task/{p.pid}/children").read_text().split()) == 2
                             for p in roots), 10, what="every sh with its two sleeps")
        data = {"pid": 1, "units": {f"u{i}": {"state": "running", "instances": [
            {"instance": 1, "pid": p.pid, "state": "running"}]} for i, p in enumerate(roots)}}
        listings = []
        real_listdir = os.listdir
        monkeypatch.setattr(os, "listdir", lambda path=".": (listings.append(path), real_listdir(path))[1])
        status.add_usage(data, interval=0.05)
        assert sum(1 for path in listings if os.fsdecode(path).rstrip("/") == "/proc") <= 1
        for unit in data["units"].values():
            assert unit["instances"][0]["rss_bytes"] > 0  # sh and both of its sleeps
            assert unit["instances"][0]["cpu_percent"] is not None
    finally:
        for p in roots:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


# ---------------------------------------------------------------------- runtime directory faults

class Tmpfs:
    """A small tmpfs of our own, unmounted at the end."""

    def __init__(self, path: Path, size: str = "512k", read_only: bool = False):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        options = f"size={size}" + (",ro" if read_only else "")
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)

    def remount(self, mode: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def fill(self) -> Path:
        filler = self.path / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError:
            pass
        finally:
            os.close(fd)
        return filler

    def __enter__(self) -> "Tmpfs":
        return self

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


CRASHER = """
exec: [sh, -c, "sleep 0.1; exit 1"]
restart: always
restart_sec: 0.05
restart_max_sec: 0.05
start_limit_interval_sec: 0
"""


def test_a_full_or_read_only_runtime_directory_is_logged_once_per_cause_and_survived(activator, tmp_path):
    """Defect: a full directory logged a warning on every state change and left `.tmp` files."""
    with Tmpfs(tmp_path / "a0" / "run") as fs:  # where the first activator of the test runs
        a = activator({"crasher": CRASHER})
        a.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] >= 1)
        filler = fs.fill()
        wait_for(lambda: "No space left on device" in a.output(), 10, what="the warning")
        frozen = a.status()["units"]["crasher"]["instances"][0]["restarts"]
        time.sleep(1.0)  # restarts go on meanwhile: each a state change that cannot be written
        assert a.output().count("No space left on device") == 1
        # A write attempt holds its .tmp for microseconds (each restart tries one): a glob may
        # catch one in flight. A leftover is one that stays.
        wait_for(lambda: not list(fs.path.glob("*.tmp")), 5, what="no .tmp file left behind")
        filler.unlink()
        a.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] > frozen + 3)
        assert a.output().count("is written again") == 1
        fs.remount("ro")
        wait_for(lambda: "Read-only file system" in a.output(), 10, what="the warning")
        time.sleep(1.0)
        assert a.output().count("Read-only file system") == 1
        frozen = a.status()["units"]["crasher"]["instances"][0]["restarts"]
        fs.remount("rw")
        a.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] > frozen + 3)
        assert a.output().count("is written again") == 2
        assert "Traceback" not in a.output()
        assert a.stop() == 0


def test_a_read_only_runtime_directory_at_boot_is_a_clear_error(tmp_path):
    """Defect: a traceback."""
    with Tmpfs(tmp_path / "run", read_only=True) as fs:
        units = tmp_path / "units"
        units.mkdir()
        (units / "web.yaml").write_text("exec: [sleep, infinity]\n")
        result = subprocess.run([PYTHON, "-m", "activator", "--units", str(units)], capture_output=True,
                                text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT),
                                                            "ACTIVATOR_RUNTIME_DIR": str(fs.path)})
        assert result.returncode == 2
        assert result.stderr == (f"activator: error: runtime directory {fs.path}: Read-only file system: "
                                 "nothing started\n")


DAEMON = """
import os, signal, sys, time
if os.fork():                     # the unit's main process stays
    signal.pause()
os.setsid()                       # leave the unit's process group and session
if os.fork():
    os._exit(0)                   # the daemon is reparented to activator
def stopped(*_):
    open(sys.argv[1], "w").write(signal.Signals(_[0]).name)
    os._exit(0)
signal.signal(signal.SIGTERM, stopped)
open(sys.argv[2], "w").write(str(os.getpid()))
while True:
    time.sleep(1)
"""


def test_a_daemon_that_left_its_unit_gets_the_units_stop_signal(activator, tmp_path):
    """Defect: a double-forking daemon outlived its unit's removal by a reload, and at
    shutdown never received SIGTERM, only the final SIGKILL."""
    from harness import PYTHON, wait_for
    script = tmp_path / "daemon.py"
    script.write_text(DAEMON)
    stopped, pidfile = tmp_path / "stopped", tmp_path / "pid"
    a = activator({"d": f"exec: [{PYTHON}, {script}, {stopped}, {pidfile}]",
                   "other": "exec: [sleep, infinity]"})
    wait_for(pidfile.exists, 10, what="the daemon")
    (a.units_dir / "d.yaml").unlink()
    a.signal(signal.SIGHUP)  # removed by a reload
    wait_for(stopped.exists, 15, what="the daemon told to stop")
    assert stopped.read_text() == "SIGTERM"
    assert a.output().count("left its process group") == 1
    assert a.stop() == 0
