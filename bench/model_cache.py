"""What the model cache saves, and what checking it costs.

    model_cache.py fresh      the whole freshness check of a cache (trust, header, checksum,
                              unpickling, every fact asked again) for 20 and 1,000 units of
                              `exec: [sleep, infinity]`, in a fresh interpreter, median of runs
    model_cache.py boot       activator as PID 1 with 20 units: from its own execve to the first
                              service's (strace -f -ttt -e trace=execve), with the cache and
                              with --no-cache, median of runs; and PID 1's VmRSS once every
                              unit runs
    model_cache.py boot-stamps  the same without strace: from starting unshare to the first
                              time a unit's shell writes (date +%s%N)

Run from the repository root with the project's venv; bytecode is used as in an image:
`PYTHONPYCACHEPREFIX=.cache/bench-pycache .venv/bin/python bench/model_cache.py fresh`.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ENV = {**{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
       "PYTHONPATH": str(ROOT)}

_TIME_LOAD = """
import os, sys, time
from activator import discovery, loading  # the init imports them before it looks for a cache
t0 = time.perf_counter()
from activator import modelcache, observed
t1 = time.perf_counter()
directory = sys.argv[1]
path = os.path.join(directory, modelcache.FILE_NAME)
model = modelcache.load(path, [directory], True, os.environ)
t2 = time.perf_counter()
assert model is not None and len(model.units) == int(sys.argv[2])
with open(path, "rb") as f:
    data = f.read()
import _pickle
facts = _pickle.loads(data.split(b"\\n", 2)[2])[2]
t3 = time.perf_counter()
assert observed.stale(facts, os.environ) is None
t4 = time.perf_counter()
print(t1 - t0, t2 - t1, t4 - t3, len(facts))
"""


def units(directory: Path, count: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (directory / f"u{i:04d}.yaml").write_text("exec: [sleep, infinity]\n")
    check = subprocess.run([PYTHON, "-m", "activator", "check", "--units", str(directory)],
                           env=ENV, capture_output=True, text=True, check=True)
    assert "model cache:" in check.stdout, check.stdout + check.stderr
    return directory


def fresh(runs: int = 30) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for count in (20, 1000):
            directory = units(Path(tmp) / f"u{count}", count)
            samples = []
            for _ in range(runs):
                out = subprocess.run([PYTHON, "-c", _TIME_LOAD, str(directory), str(count)], env=ENV,
                                     capture_output=True, text=True, check=True).stdout.split()
                samples.append([float(x) for x in out[:3]] + [int(out[3])])
            imports, load, stale = (statistics.median(s[i] for s in samples) * 1e3 for i in range(3))
            print(f"{count:5d} units, {samples[0][3]:5d} facts: whole check {load:6.2f} ms "
                  f"(facts asked again {stale:6.2f} ms); importing modelcache {imports:5.2f} ms")


def _first_spawn_ms(directory: Path, args: list[str], runtime: Path) -> tuple[float, int]:
    """ms from activator's execve to the first service's; PID 1's VmRSS once all run."""
    trace = runtime / "trace"
    env = {**ENV, "ACTIVATOR_RUNTIME_DIR": str(runtime)}
    argv = ["strace", "-f", "-ttt", "--seccomp-bpf", "-e", "trace=execve", "-qq", "-o", str(trace),
            "unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "activator", "--units",
            str(directory), *args]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)
    status = runtime / "status.json"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = json.loads(status.read_text())
            if data["units"] and all(u["state"] == "running" for u in data["units"].values()):
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.02)
    host = _activator_host_pid(proc.pid)
    with open(f"/proc/{host}/status") as f:
        rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
    os.killpg(proc.pid, 15)
    proc.wait(30)
    start = first = None
    for line in trace.read_text().splitlines():
        fields = line.split()
        if len(fields) < 3 or "execve(" not in line or "= 0" not in line:
            continue
        if start is None and f'"{PYTHON}"' in line:
            start = float(fields[1])
        elif start is not None and ('"/usr/bin/sleep"' in line or '"/bin/sleep"' in line):
            first = float(fields[1])
            break
    (runtime / "status.json").unlink(missing_ok=True)
    return (first - start) * 1e3, rss


def _activator_host_pid(root: int) -> int:
    """The descendant of `root` that is PID 1 of its namespace."""
    todo = [root]
    while todo:
        pid = todo.pop()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
        todo += _children(pid)
    raise RuntimeError("no activator")


def _children(pid: int) -> list[int]:
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        out += [int(p) for p in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return out


def boot(runs: int = 15) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = units(Path(tmp) / "units", 20)
        runtime = Path(tmp) / "run"
        runtime.mkdir()
        for label, args in (("with the cache", []), ("--no-cache", ["--no-cache"])):
            samples = [_first_spawn_ms(directory, args, runtime) for _ in range(runs)]
            ms = statistics.median(s[0] for s in samples)
            rss = statistics.median(s[1] for s in samples)
            print(f"20 units, {label:15}: first service spawned {ms:6.1f} ms after activator's "
                  f"execve (min {min(s[0] for s in samples):.1f}); PID 1 VmRSS {rss / 1024:.2f} MiB")


def _stamp_ms(directory: Path, args: list[str], runtime: Path) -> float:
    """Without strace: ms from just before starting unshare to the moment the first unit's
    shell writes the time (each unit writes its own; the earliest counts)."""
    stamps = runtime / "stamps"
    stamps.mkdir(exist_ok=True)
    env = {**ENV, "ACTIVATOR_RUNTIME_DIR": str(runtime), "STAMPS": str(stamps)}
    start = time.time_ns()
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-m", "activator",
                             "--units", str(directory), *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(os.listdir(stamps)) < 20:
        time.sleep(0.02)
    time.sleep(0.05)
    first = min(int(p.read_text().split()[0]) for p in stamps.iterdir() if p.read_text().strip())
    os.killpg(proc.pid, 15)
    proc.wait(30)
    for p in stamps.iterdir():
        p.unlink()
    (runtime / "status.json").unlink(missing_ok=True)
    return (first - start) / 1e6


def boot_stamps(runs: int = 20) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "units"
        directory.mkdir()
        for i in range(20):
            (directory / f"u{i:02d}.yaml").write_text(
                "exec: [sh, -c, 'date +%s%N > $STAMPS/$0; exec sleep infinity', " + f"u{i:02d}]\n"
                "environment:\n  STAMPS: $(env.STAMPS)\n")
        env = {**ENV, "STAMPS": str(Path(tmp) / "run" / "stamps")}
        subprocess.run([PYTHON, "-m", "activator", "check", "--units", str(directory)], env=env,
                       check=True, capture_output=True)
        runtime = Path(tmp) / "run"
        runtime.mkdir()
        for label, args in (("with the cache", []), ("--no-cache", ["--no-cache"])):
            samples = [_stamp_ms(directory, args, runtime) for _ in range(runs)]
            print(f"20 units, {label:15}: first service's first line {statistics.median(samples):6.1f} ms "
                  f"after starting unshare (min {min(samples):.1f}, max {max(samples):.1f})")


if __name__ == "__main__":
    {"fresh": fresh, "boot": boot, "boot-stamps": boot_stamps}[sys.argv[1]]()
