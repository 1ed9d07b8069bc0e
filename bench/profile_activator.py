"""Where activator's time and memory go: the evidence behind the benchmark figures.

    profile_activator.py rss       RSS of activator as PID 1 with the 20 services of pid1.py,
                                   by mapping (/proc/PID/smaps); then the modules that activator
                                   had imported (recorded at its exit), imported again in that
                                   order in a fresh interpreter: the RSS each one adds
    profile_activator.py startup   the slowest of those imports (-X importtime), and those of
                                   the unit loader PID 1 forks and waits for at a boot without
                                   a fresh model cache
    profile_activator.py spawn     what one process per connection costs, step by step: a
                                   posix_spawn of `true`, of `sh -c 'exec true'`, and the same
                                   behind the `sh -c 'LISTEN_PID=$$ …; exec "$0" "$@"'` step
                                   activator's spawn.py adds when a service needs LISTEN_PID
    profile_activator.py units     what PID 1's memory and descriptors with 1,000 units are made
                                   of: activator's boot run inside a fresh interpreter as PID 1
                                   of a namespace, with tracemalloc from just before the model
                                   is unpickled: Python memory by module that allocated it, the
                                   descriptors by kind, and VmRSS (anonymous / file-backed)
    profile_activator.py accept    py-spy samples of activator while an `accept: true` unit
                                   takes connections 32 at a time, by function (inclusive and
                                   self), and how many exited handlers wait to be reaped;
                                   py-spy comes from .cache/bench-venv (bench/setup)

Run with the project's venv: `.venv/bin/python bench/profile_activator.py rss`.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (BENCH_VENV, PYTHON, ROOT, Namespace, children_of, free_port, peer_environment, state_of,
                    wait_for)

# Runs activator as PID 1 (argv after the script: activator's own) and, when it exits, writes
# the names of the modules it had imported, in import order, to $MODULES_OUT. The unit-file
# loader that activator forks has its own modules, which die with it: not listed.
_MODULES_PROBE = """
import atexit, os, sys
def dump():
    with open(os.environ["MODULES_OUT"], "w") as f:
        f.write("\\n".join(sys.modules))
atexit.register(dump)
from activator.cli import main
sys.exit(main(sys.argv[1:]))
"""

_MODULE_RSS = """
import importlib, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024
previous = start = rss()
print(f"{'interpreter at start':36} {previous:6.2f} MiB")
small = 0.0
for name in sys.argv[1:]:
    if name in sys.modules:
        continue
    before = set(sys.modules)
    try:
        importlib.import_module(name)
    except Exception:
        continue
    now = rss()
    if now - previous >= 0.1:
        extra = len(set(sys.modules) - before)
        print(f"{'+ ' + name:36} {now - previous:+6.2f} MiB  ({extra} modules, total {now:.2f})")
    else:
        small += now - previous
    previous = now
print(f"{'+ the others (< 0.1 MiB each)':36} {small:+6.2f} MiB")
print(f"{'all of them':36} {previous:6.2f} MiB")
"""


def modules_of_running_activator(workdir: Path) -> list[str]:
    """The modules activator as PID 1 with the 20 services of pid1.py has imported."""
    import pid1
    import signal

    run = pid1.Run("activator", workdir)
    out = workdir / "modules.txt"
    argv = run.ns.argv[4:]  # [activator's console script, --units, DIR]
    run.ns = Namespace([PYTHON, "-c", _MODULES_PROBE, *argv[argv.index("--units"):]],
                       env={**run.ns.env, "MODULES_OUT": str(out)}, cwd=run.dir, log=run.dir / "output.log")
    with run:
        run.first_200()
        run.wait_all_running()
        run.ns.signal(signal.SIGTERM)
        run.ns.wait(30)
    return out.read_text().split()


def smaps_by_mapping(pid: int) -> list[tuple[str, int]]:
    """Resident kB per mapped file ([heap], [anon] and the like for the rest)."""
    totals: collections.Counter = collections.Counter()
    current = "[anon]"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):  # a mapping's header line
                current = parts[5] if len(parts) > 5 else "[anon]"
            elif parts[0] == "Rss:":
                totals[current] += int(parts[1])
    return totals.most_common()


def rss(args) -> None:
    import pid1

    with tempfile.TemporaryDirectory(prefix="profile-rss-") as tmp:
        pid1.warm_up(["activator"], Path(tmp))
        with pid1.Run("activator", Path(tmp)) as run:
            run.first_200()
            run.wait_all_running()
            time.sleep(pid1.SETTLE)
            pid = run.ns.pid1
            with open(f"/proc/{pid}/status") as f:
                status = {l.split(":")[0]: l.split(":")[1].strip() for l in f}
            print(f"activator as PID 1 with 20 services: VmRSS {status['VmRSS']} "
                  f"(RssAnon {status['RssAnon']}, RssFile {status['RssFile']})\n")
            print("resident by mapping:")
            for name, kb in smaps_by_mapping(pid)[:args.top]:
                print(f"  {kb / 1024:6.2f} MiB  {name}")
        modules = modules_of_running_activator(Path(tmp))
    print(f"\nRSS added by each import, replaying the {len(modules)} modules that activator had "
          "imported, in its order, in a fresh interpreter (bytecode compiled):")
    subprocess.run([PYTHON, "-c", _MODULE_RSS, *modules], env=peer_environment(), check=True)


def _importtime(code: str) -> list[tuple[int, int, str]]:
    """(cumulative µs, self µs, indented name) per import, in the order -X importtime prints."""
    out = subprocess.run([PYTHON, "-X", "importtime", "-c", code], env=peer_environment(),
                         capture_output=True, text=True, check=True).stderr
    rows = []
    for line in out.splitlines():
        if line.startswith("import time:") and "self [us]" not in line:
            self_us, cumulative_us, name = line[len("import time:"):].split("|")
            rows.append((int(cumulative_us), int(self_us), name.rstrip()))
    return rows


def _top_level_total(rows) -> int:
    return sum(c for c, _, name in rows if len(name) - len(name.lstrip()) == 1)  # one space: top level


def startup(args) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-startup-") as tmp:
        modules = modules_of_running_activator(Path(tmp))
    code = "import " + ", ".join(m for m in modules if m.startswith("activator"))
    rows = _importtime(code)
    site = sum(c for c, _, n in rows if n.strip() == "site") / 1000
    print(f"PID 1's own imports: {_top_level_total(rows) / 1000:.1f} ms in all ({site:.1f} ms of it the "
          f"interpreter's `site`); the {args.top} slowest, cumulative / self:")
    for cumulative, self_us, name in sorted(rows, reverse=True)[:args.top]:
        print(f"  {cumulative / 1000:7.1f} ms  {self_us / 1000:6.1f} ms  {name}")
    # At a boot without a fresh model cache PID 1 forks the unit loader and waits for it; the
    # loader starts with PID 1's modules and imports the parser and validators on top.
    loader = _importtime(code + "; import activator.units")[len(rows):]
    if loader:
        print(f"\nwithout a fresh model cache, the unit loader that PID 1 forks and waits for imports "
              f"{_top_level_total(loader) / 1000:.1f} ms more; the {args.top} slowest:")
        for cumulative, self_us, name in sorted(loader, reverse=True)[:args.top]:
            print(f"  {cumulative / 1000:7.1f} ms  {self_us / 1000:6.1f} ms  {name}")


def accept(args) -> None:
    import sockets

    spy = BENCH_VENV / "py-spy"
    if not spy.exists():
        sys.exit("py-spy is missing: run bench/setup")
    with tempfile.TemporaryDirectory(prefix="profile-accept-") as tmp:
        port = free_port()
        argv, env = sockets.accept_server("activator", port, Path(tmp))
        raw = Path(tmp) / "samples.txt"
        with Namespace(argv, env=env) as ns:
            wait_for(lambda: sockets.connection_rate(port, 1, 0.01)[0] > 0, 30, what="activator echoing")
            sampler = subprocess.Popen([str(spy), "record", "--pid", str(ns.pid1), "--duration",
                                        f"{args.seconds:g}", "--rate", "1000", "--format", "raw",
                                        "-o", str(raw), "--nonblocking"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)  # py-spy attaching
            # Meanwhile, every 50 ms: how many of PID 1's children are zombies (handlers that
            # have exited and not been reaped yet; they still count against max_connections).
            zombie_counts: list[int] = []
            stop = threading.Event()

            def count_zombies():
                while not stop.wait(0.05):
                    zombie_counts.append(sum(1 for p in children_of(ns.pid1) if state_of(p) == "Z"))
            counter = threading.Thread(target=count_zombies)
            counter.start()
            rate, errors, count = sockets.connection_rate(port, 32, args.seconds - 1)
            stop.set()
            counter.join()
            sampler.wait()
        stacks = []
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            stacks.append((stack.split(";"), int(n)))
    total = sum(n for _, n in stacks)
    idle = sum(n for frames, n in stacks if "Loop.poll" in frames[-1] or frames[-1].startswith("Loop.poll"))
    busy = total - idle
    print(f"{rate:.0f} connections/s (32 in flight, {errors} errors) while sampled; {total} samples, "
          f"{idle} of them in epoll (idle), {busy} busy")
    zombie_counts.sort()
    if zombie_counts:
        print(f"unreaped handlers (zombies) among PID 1's children, sampled every 50 ms: median "
              f"{zombie_counts[len(zombie_counts) // 2]}, max {zombie_counts[-1]}\n")
    inclusive: collections.Counter = collections.Counter()
    own: collections.Counter = collections.Counter()
    for frames, n in stacks:
        if frames[-1].startswith("Loop.poll"):
            continue
        for name in {f.split(" (")[0] for f in frames}:
            inclusive[name] += n
        own[frames[-1].split(" (")[0]] += n
    print(f"busy samples by function, inclusive (top {args.top}):")
    for name, n in inclusive.most_common(args.top):
        print(f"  {100 * n / max(busy, 1):5.1f}%  {name}")
    print(f"\nbusy samples by function, self (top {args.top}):")
    for name, n in own.most_common(args.top):
        print(f"  {100 * n / max(busy, 1):5.1f}%  {name}")


LISTEN_PID_STEP = 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'  # as spawn.py writes it


def spawn(args) -> None:
    import os
    import resource

    def cost(argv: list[str], n: int) -> tuple[float, float, float]:
        """Per process: wall µs, this process's CPU µs, the child's CPU µs (spawn to reaped)."""
        env = {"PATH": "/usr/bin:/bin"}
        c0, s0 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        for _ in range(n):
            os.waitpid(os.posix_spawn(argv[0], argv, env, setsid=True), 0)
        wall = time.perf_counter() - t0
        c1, s1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        cpu = lambda a, b: (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) / n * 1e6
        return wall / n * 1e6, cpu(s0, s1), cpu(c0, c1)

    cases = [("true", ["/bin/true"]),
             ("sh -c 'exec true'", ["/bin/sh", "-c", "exec true"]),
             ("LISTEN_PID step, then true", ["/bin/sh", "-c", LISTEN_PID_STEP, "/bin/true"]),
             ("LISTEN_PID step, then sh -c 'exec true'",
              ["/bin/sh", "-c", LISTEN_PID_STEP, "/bin/sh", "-c", "exec true"])]
    results = {name: [] for name, _ in cases}
    for _ in range(args.repeat):  # interleaved, medians: the machine is noisy
        for name, argv in cases:
            results[name].append(cost(argv, args.count))
    print(f"posix_spawn + waitpid, {args.count} processes × {args.repeat} interleaved repeats, medians:")
    print(f"  {'':42} {'wall µs':>8} {'parent CPU µs':>14} {'child CPU µs':>13}")
    for name, values in results.items():
        wall, mine, child = (sorted(v[i] for v in values)[len(values) // 2] for i in range(3))
        print(f"  {name:42} {wall:8.0f} {mine:14.0f} {child:13.0f}")


# Run as PID 1 of a namespace: the model (as the model cache gives it), then the manager's boot
# and a few loop iterations (status.json written), with tracemalloc watching. Prints JSON.
_UNITS_PROBE = """
import gc, json, os, sys, tracemalloc, _pickle
from activator import units, log as logmod
from activator.manager import Manager
data = _pickle.dumps(units.load([sys.argv[1]], dict(os.environ), True))
gc.collect()
tracemalloc.start(1)
base = tracemalloc.take_snapshot()
model = _pickle.loads(data)
del data
gc.collect()
after_model = tracemalloc.take_snapshot()
manager = Manager(model, logmod.Log(level=logmod.WARNING), os.environ["ACTIVATOR_RUNTIME_DIR"],
                  command=None, explicit_dirs=True)
manager.boot()
for _ in range(3):
    manager.after_changes()
    manager.publish()
gc.collect()
booted = tracemalloc.take_snapshot()
by_file = {}
for stat in booted.compare_to(after_model, "filename"):
    name = os.path.relpath(stat.traceback[0].filename, sys.argv[2])
    name = name if not name.startswith("..") else os.path.basename(stat.traceback[0].filename)
    by_file[name] = by_file.get(name, 0) + stat.size_diff
kinds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        continue
    kind = target.split(":")[0] if ":" in target else ("file" if target.startswith("/") else target)
    kinds[kind] = kinds.get(kind, 0) + 1
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(json.dumps({
    "model": sum(s.size_diff for s in after_model.compare_to(base, "filename")),
    "by_file": by_file, "fds": kinds,
    "rss": {k: status[k].strip() for k in ("VmRSS", "RssAnon", "RssFile", "VmHWM")},
    "status_json": len(json.dumps(manager.snapshot(), separators=(",", ":")))}))
sys.stdout.flush()
os._exit(0)  # PID 1 leaving: the kernel kills the 1,000 services
"""


def units_memory(args) -> None:
    with tempfile.TemporaryDirectory(prefix="profile-units-") as tmp:
        directory = Path(tmp) / "units"
        directory.mkdir()
        for i in range(args.units):
            (directory / f"u{i:04d}.yaml").write_text("exec: [sleep, infinity]\n")
        out = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-c", _UNITS_PROBE,
                              str(directory), str(ROOT)], capture_output=True, text=True, timeout=300,
                             env=peer_environment({"ACTIVATOR_RUNTIME_DIR": str(Path(tmp) / "run")}))
    if out.returncode != 0 or not out.stdout.strip():
        sys.exit(f"the probe failed ({out.returncode}):\n{out.stderr}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    n = args.units
    kib = lambda b: f"{b / 1024:8.0f} KiB ({b / n:5.0f} B a unit)"
    print(f"{n} units of `exec: [sleep, infinity]`, PID 1 after boot and three status writes:")
    print(f"  (this interpreter's VmRSS, {r['rss']['VmRSS']}, is no figure of PID 1's: it also holds "
          f"the unit loader and tracemalloc's own records)")
    print(f"  the model, unpickled: {kib(r['model'])}")
    print(f"  what boot added, by the module that allocated it: {kib(sum(r['by_file'].values()))}")
    for name, size in sorted(r["by_file"].items(), key=lambda kv: -kv[1])[:args.top]:
        if size > 1024:
            print(f"    {name:36} {kib(size)}")
    print(f"  status.json: {r['status_json'] / 1024:.0f} KiB, built and encoded at every write")
    print("  descriptors: " + ", ".join(f"{count} {kind}" for kind, count in
                                        sorted(r["fds"].items(), key=lambda kv: -kv[1])))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("rss", "startup", "spawn", "accept", "units"))
    parser.add_argument("--top", type=int, default=20, help="lines per list (default 20)")
    parser.add_argument("--seconds", type=float, default=6.0, help="accept: sampling time (default 6)")
    parser.add_argument("--count", type=int, default=200, help="spawn: processes per measurement (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="spawn: repeats (default 5)")
    parser.add_argument("--units", type=int, default=1000, help="units: how many (default 1000)")
    args = parser.parse_args()
    {"rss": rss, "startup": startup, "spawn": spawn, "accept": accept, "units": units_memory}[args.what](args)


if __name__ == "__main__":
    main()
