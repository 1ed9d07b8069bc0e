"""How long `units.load` takes for a large stack: 1,000 units with 1,000 sockets.

Each unit owns one TCP socket on a port of its own; the keys vary from unit to unit (string
and list `exec`, templates, environment, users, timeouts, signals, dependencies), one unit in
ten has a drop-in and one in ten reads an environment file. The files are written once into a
temporary directory, then loaded several times; the median is printed.

    .venv/bin/python bench/load_units.py [--units N] [--runs N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from activator import units  # noqa: E402

BASE_PORT = 20000


def unit_text(i: int) -> str:
    """One unit file; `i` picks which optional keys it has."""
    name = f"svc{i:04d}"
    lines = [f"# unit {i} of the benchmark", f"description: benchmark service {i}"]
    if i % 3 == 0:
        lines.append(f"exec: [python3, -m, http.server, --fd, '$(sockets.http-{i})']")
    elif i % 3 == 1:
        lines.append("exec: sleep infinity")
    else:
        lines.append("exec: sh -c 'exec sleep $$1' sh 3600")
    # Socket names are global: half are named by their key, half by `name:`.
    if i % 2:
        lines += ["sockets:", f"  http-{i}:", f"    listen: {BASE_PORT + i}"]
    else:
        lines += ["sockets:", "  http:", f"    name: http-{i}", f"    listen: {BASE_PORT + i}"]
    if i % 4 == 0:
        lines += ["    backlog: 128", "    nodelay: true"]
    if i % 5 == 0:
        lines += [f"  # a comment inside the sockets mapping"]
    if i % 2 == 0:
        lines += ["environment:", f"  PORT: {BASE_PORT + i}", "  MODE: production",
                  "  INSTANCE: $(instance)"]
    if i % 7 == 0:
        lines.append("user: nobody")
    if i % 11 == 0:
        lines.append("type: notify")
        lines.append("watchdog_sec: 30s")
    if i % 6 == 0:
        lines += ["instances: 2", "restart: always", "restart_sec: 500ms", "restart_max_sec: 1min"]
    if i % 8 == 0:
        lines += ["kill_signal: SIGINT", "reload_signal: SIGHUP", "timeout_stop_sec: 1min 30s",
                  "umask: 0022"]
    if i % 9 == 0:
        lines.append("working_directory: /tmp")
    if i >= 10:
        # A dependency graph with depth: each unit waits for one of the ten before it.
        lines.append(f"after: [svc{i - 10:04d}]")
        if i % 10 == 3:
            lines.append(f"requires: svc{i - 7:04d}")
    if i % 10 == 5:
        lines.append("environment_file: [shared.env, -/nonexistent/optional.env]")
    if i % 10 == 6:
        lines.append(f"environment_file: env/{name}.env")
    return "\n".join(lines) + "\n"


def write_stack(directory: str, count: int) -> None:
    os.makedirs(os.path.join(directory, "env"))
    with open(os.path.join(directory, "shared.env"), "w") as f:
        f.write("# shared settings\nLOG_LEVEL=info\nGREETING=\"hello, world\"\nPATH=/usr/local/bin:/usr/bin:/bin\n")
    for i in range(count):
        name = f"svc{i:04d}"
        with open(os.path.join(directory, f"{name}.yaml"), "w") as f:
            f.write(unit_text(i))
        if i % 10 == 6:
            with open(os.path.join(directory, "env", f"{name}.env"), "w") as f:
                f.write(f"UNIT_ID={i}\nSECRET='s3cr3t {i}'\n")
        if i % 10 == 2:
            os.makedirs(os.path.join(directory, f"{name}.d"))
            with open(os.path.join(directory, f"{name}.d", "10-tuning.yaml"), "w") as f:
                f.write("instances: 3\nenvironment:\n  TUNED: 'yes'\nsockets:\n  http:\n    backlog: 1024\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1000, help="number of units (default 1000)")
    parser.add_argument("--runs", type=int, default=7, help="timed loads (default 7)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one load")
    args = parser.parse_args()

    environ = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    with tempfile.TemporaryDirectory(prefix="activator-bench-") as directory:
        write_stack(directory, args.units)
        model = units.load([directory], environ, True)  # also warms the OS caches
        sockets = sum(len(u.sockets) for u in model.units.values())
        assert len(model.units) == args.units and sockets == args.units, model.summary()
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(units.load, [directory], environ, True)
            pstats.Stats(profile).sort_stats("cumulative").print_stats(30)
        times, cpu_times = [], []
        for _ in range(args.runs):
            start, cpu_start = time.perf_counter(), time.process_time()
            units.load([directory], environ, True)
            times.append(time.perf_counter() - start)
            cpu_times.append(time.process_time() - cpu_start)
    print(f"units.load: {model.summary()}")
    # CPU time too: on a shared machine the wall clock also counts other processes' turns.
    print(f"median {statistics.median(times) * 1000:.0f} ms over {args.runs} runs "
          f"(min {min(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms; "
          f"CPU median {statistics.median(cpu_times) * 1000:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
