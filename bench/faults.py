"""Faults: what activator costs and how it behaves when its surroundings misbehave (SPEC §11).

- flood: a unit runs `yes` under `output: prefix`; PID 1's CPU over a window, with activator's
  output read by a pipe reader (`cat > /dev/null`, as a log driver would); meanwhile another
  unit crashes and restarts every 0.1 s: its restarts per second with and without the flood,
  and SIGTERM → everything gone.
- stalled: activator's stdout and stderr on a pipe nobody reads; a chatty unit and a crashing
  one: restarts and status.json go on, no zombie stays, SIGTERM → everything gone within the
  stop timeout.

1,000 units (boot, PID 1's RSS, `activator status`, SIGTERM → everything gone) are measured
against the peers by bench/scale.py.

    .venv/bin/python bench/faults.py [--only flood|stalled] [--seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (PYTHON, ROOT, TICK, children_of, cpu_seconds, descendants_of, fmt,  # noqa: E402
                    state_of, table, wait_for)

CRASHER = """
exec: [sh, -c, "sleep 0.1; exit 1"]
restart: always
restart_sec: 0.01
restart_max_sec: 0.01
start_limit_interval_sec: 0
"""


class Run:
    """activator as PID 1 of a new PID namespace, its output going to `stdout`."""

    def __init__(self, units: dict[str, str], stdout):
        self.dir = Path(tempfile.mkdtemp(prefix="activator-faults-"))
        (self.dir / "units").mkdir()
        for name, text in units.items():
            (self.dir / "units" / f"{name}.yaml").write_text(text)
        self.runtime = self.dir / "run"
        self.env = {**os.environ, "ACTIVATOR_RUNTIME_DIR": str(self.runtime), "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "activator", "--units",
             str(self.dir / "units")], stdout=stdout, stderr=stdout, stdin=subprocess.DEVNULL,
            env=self.env, start_new_session=True)
        self.pid1 = wait_for(lambda: (children_of(self.proc.pid) or [None])[0], 10, what="PID 1")

    def status(self) -> dict:
        return json.loads((self.runtime / "status.json").read_text())

    def wait_status(self, predicate, timeout: float = 60.0):
        def check():
            try:
                return predicate(self.status())
            except (OSError, ValueError, KeyError):
                return False
        return wait_for(check, timeout, interval=0.05, what="a status")

    def restarts(self, unit: str) -> int:
        return self.status()["units"][unit]["instances"][0]["restarts"]

    def zombies(self) -> int:
        return sum(1 for pid in descendants_of(self.pid1) if state_of(pid) == "Z")

    def stop(self, timeout: float = 30.0) -> float:
        """SIGTERM → unshare gone (the whole namespace empty), in ms."""
        start = time.monotonic()
        os.kill(self.pid1, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return float("inf")
        return (time.monotonic() - start) * 1000

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.kill(self.pid1, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)


def restart_rate(run: Run, seconds: float) -> float:
    before, start = run.restarts("crasher"), time.monotonic()
    time.sleep(seconds)
    return (run.restarts("crasher") - before) / (time.monotonic() - start)


def flood(seconds: float) -> list[list[str]]:
    rows = []
    for label, units in (("crasher alone", {"crasher": CRASHER}),
                         ("crasher + `yes` flood", {"crasher": CRASHER, "flood": "exec: [yes]\n"})):
        reader = subprocess.Popen(["sh", "-c", "cat > /dev/null"], stdin=subprocess.PIPE)
        run = Run(units, reader.stdin)
        reader.stdin.close()
        try:
            run.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] >= 2)
            cpu0, t0 = cpu_seconds(run.pid1), time.monotonic()
            rate = restart_rate(run, seconds)
            cpu = (cpu_seconds(run.pid1) - cpu0) / (time.monotonic() - t0) * 100
            stop_ms = run.stop()
            rows.append([label, fmt(cpu), fmt(rate), fmt(stop_ms, digits=0)])
        finally:
            run.kill()
            reader.wait(10)
    return rows


def stalled(seconds: float) -> list[list[str]]:
    read_end, write_end = os.pipe()
    units = {"chatty": 'exec: [sh, -c, "while :; do echo some output of chatty; done"]\n',
             "crasher": CRASHER + "timeout_stop_sec: 5\n"}
    run = Run(units, write_end)
    os.close(write_end)
    try:
        run.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] >= 2)
        time.sleep(1.0)  # the pipe is full long before this
        generation_file = run.runtime / "status.json"
        mtime = generation_file.stat().st_mtime
        rate = restart_rate(run, seconds)
        moved = generation_file.stat().st_mtime > mtime
        zombies = run.zombies()
        stop_ms = run.stop()
        return [["stdout and stderr never read", fmt(rate), "yes" if moved else "no", str(zombies),
                 fmt(stop_ms, digits=0)]]
    finally:
        run.kill()
        os.close(read_end)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["flood", "stalled"])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    print(f"# faults ({os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, tick {TICK} Hz)\n")
    if args.only in (None, "flood"):
        print(table(["", "PID 1 CPU %", "crasher restarts/s", "SIGTERM → all gone (ms)"],
                    flood(args.seconds)))
        print("goal: PID 1 ≤ 25 % of a core under the flood; restarts and SIGTERM as prompt as without\n")
    if args.only in (None, "stalled"):
        print(table(["", "crasher restarts/s", "status.json moves", "zombies", "SIGTERM → all gone (ms)"],
                    stalled(args.seconds)))
        print("goal: restarts go on, status.json moves, 0 zombies, gone within the stop timeout (5 s)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
