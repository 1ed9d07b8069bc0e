"""1,000 services: activator as PID 1 against tini, dumb-init, supervisord and circusd.

Each peer runs as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`) with
--units (1,000) services, all `sleep infinity`:

  activator    one unit file each, `exec: [sleep, infinity]`; `activator check --units DIR`
               run once first, as an image build does (it writes beside the units whatever
               cache boot can use), then activator's console script (common.ACTIVATOR). A row
               `activator --no-cache` is added when `activator --help` offers that option.
  tini,        a shell script that starts the N sleeps in the background and `wait`s (so
  dumb-init    these rows are also the floor of a shell spawning them one after another)
  supervisord  one [program:] section each (with the unix socket supervisorctl needs, and
               `minfds` raised for N programs' pipes)
  circusd      one [watcher:] each
  posix_spawn  the machine's floor, when gcc is there: a small C program, compiled at run
  ×N (C)       time, that posix_spawnp()s the N sleeps one after another, then waits for
               SIGTERM (and reaps). It prints how long its own spawning loop took.

Per round, one peer at a time, in an order rotated every round (--rounds, 3):

  boot         from starting `unshare` until N processes whose /proc/PID/comm is `sleep`
               descend from PID 1: the tree is walked every 5 ms through
               /proc/PID/task/*/children, the same way for every peer. The walk is kept
               cheap: a process seen as `sleep` is counted and never read again.
  RSS, fds     PID 1's VmRSS and its open descriptors (/proc/PID/fd), 1 s after all run.
  status       wall time of the peer's status command with all N running: `activator status`,
               `supervisorctl -c CONF status`, `circusctl --endpoint ... status`; its exit
               code and line count are kept. tini and dumb-init have none.
  SIGTERM      to PID 1 (by its host pid) → `unshare` exited, which means every process of
               the namespace is gone (the kernel kills and reaps them when PID 1 exits).
               Capped at --cap (10 s), then SIGKILL. Then the sleeps seen at boot are looked
               up again (pid and start time): none may be left.

Figures are medians over the rounds. On the reference machine (2 cores, shared) a C program
doing 1,000 posix_spawn of /usr/bin/sleep takes about 0.55 s, two processes spawning 500 each
about 0.52 s (measured again on 2026-12-04: 0.50 s and 0.43 s at best, up to 1.1 s and 0.7 s
at a load average of 7): an execve of a dynamic binary costs about 0.5 ms here, so no init
can bring 1,000 services up much faster than half a second. The `posix_spawn ×N (C)` row
re-measures that floor in every run.

    .venv/bin/python bench/scale.py [--units 1000] [--rounds 3] [--peers ...] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import (ACTIVATOR, BENCH_VENV, MiB, InNamespace, Namespace, activator_has_option,
                    activator_peer, children_of, circus_endpoint, circusd_peer, comm, dumb_init_peer, fmt,
                    median, peer_environment, progress, rotated, rss_bytes, stat_fields, supervisord_conf,
                    supervisord_peer, table, tini_peer)

SLEEP = ["sleep", "infinity"]  # as a unit file says it; every peer gets the same argv
SETTLE = 1.0  # seconds after all run, before PID 1's RSS and descriptors are read
POLL = 0.005  # seconds between two walks of the tree at boot
GOALS = {"boot": 0.5, "stop": 1.0, "status": 1.0}  # activator's, in seconds
FLOOR = "posix_spawn"  # the C row's key

SPAWN_C = r"""
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

/* PID 1 that posix_spawnp()s argv[1] × `sleep infinity`, then reaps until SIGTERM or SIGINT. */
int main(int argc, char **argv) {
    int n = argc > 1 ? atoi(argv[1]) : 1000;
    sigset_t wanted, none;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGTERM);
    sigaddset(&wanted, SIGINT);
    sigaddset(&wanted, SIGCHLD);
    sigprocmask(SIG_BLOCK, &wanted, NULL);
    sigemptyset(&none);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
    char *args[] = {"sleep", "infinity", NULL};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < n; i++) {
        pid_t pid;
        if (posix_spawnp(&pid, "sleep", NULL, &attr, args, environ) != 0) {
            perror("posix_spawnp");
            return 1;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    fprintf(stderr, "spawned %d in %.6f s\n", n, (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
    for (;;) {
        int sig;
        sigwait(&wanted, &sig);
        if (sig != SIGCHLD)
            return 0;
        while (waitpid(-1, NULL, WNOHANG) > 0)
            ;
    }
}
"""


def compile_floor(workdir: Path) -> str | None:
    """The C floor program, compiled with gcc; None without gcc (or if it does not build)."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if not gcc:
        return None
    source, binary = workdir / "spawn_floor.c", workdir / "spawn_floor"
    source.write_text(SPAWN_C)
    result = subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], capture_output=True, text=True)
    if result.returncode != 0:
        progress(f"scale: the C floor does not build, row skipped:\n{result.stderr}")
        return None
    return str(binary)


# ---------------------------------------------------------------------------- one run

class Run(InNamespace):
    """One peer as PID 1 with `units` sleeps, in its own temporary directory."""

    def __init__(self, peer: str, workdir: Path, units: int, floor: str | None = None):
        self.peer, self.units = peer, units
        self.dir = Path(tempfile.mkdtemp(prefix=f"{peer.split()[0]}-", dir=workdir))
        commands = {f"u{i:04d}": SLEEP for i in range(units)}
        if peer == "activator":
            argv, env = activator_peer(self.dir, commands)
        elif peer == "activator --no-cache":
            argv, env = activator_peer(self.dir, commands, options=["--no-cache"])
        elif peer == "tini":
            argv, env = tini_peer(self.dir, commands)
        elif peer == "dumb-init":
            argv, env = dumb_init_peer(self.dir, commands)
        elif peer == "supervisord":
            argv, env = supervisord_peer(self.dir, commands, control=True)
        elif peer == "circusd":
            argv, env = circusd_peer(self.dir, commands)
        elif peer == FLOOR:
            argv, env = [floor, str(units)], {}
        else:
            raise ValueError(peer)
        self.env = env
        self.ns = Namespace(argv, env=env, cwd=self.dir, log=self.dir / "output.log")
        self.sleepers: set[int] = set()

    def count_sleepers(self) -> int:
        """Walk the tree under PID 1; a process seen as `sleep` is counted once and not read
        again (nor are its children: a sleep has none). Processes not yet exec'd are read
        at every walk until they are."""
        todo = [self.ns.pid1]
        while todo:
            for child in children_of(todo.pop()):
                if child in self.sleepers:
                    continue
                if comm(child) == "sleep":
                    self.sleepers.add(child)
                else:
                    todo.append(child)
        return len(self.sleepers)

    def boot(self, cap: float) -> float | None:
        """Seconds from starting unshare until all the sleeps exist; None past `cap`."""
        self.ns.pid1  # noqa: B018 (waits for PID 1 to exist)
        deadline = self.ns.started + cap
        while self.count_sleepers() < self.units:
            if time.monotonic() > deadline or self.ns.proc.poll() is not None:
                progress(f"scale: {self.peer}: {len(self.sleepers)} of {self.units} running after "
                         f"{time.monotonic() - self.ns.started:.1f} s\n{self.ns.output_tail()}")
                return None
            time.sleep(POLL)
        return time.monotonic() - self.ns.started

    def status_command(self) -> list[str] | None:
        if self.peer.startswith("activator"):
            return [ACTIVATOR, "status"]
        if self.peer == "supervisord":
            return [str(BENCH_VENV / "supervisorctl"), "-c", str(supervisord_conf(self.dir)), "status"]
        if self.peer == "circusd":
            return [str(BENCH_VENV / "circusctl"), "--endpoint", circus_endpoint(self.dir), "--timeout", "60",
                    "status"]
        return None

    def status(self) -> dict:
        argv = self.status_command()
        if argv is None:
            return {}
        env = peer_environment(self.env)
        t0 = time.monotonic()
        try:
            result = subprocess.run(argv, env=env, cwd=self.dir, capture_output=True, text=True, timeout=120)
        except subprocess.TimeoutExpired:
            return {"status": None, "status_code": None, "status_lines": None}
        elapsed = time.monotonic() - t0
        return {"status": elapsed, "status_code": result.returncode, "status_lines": len(result.stdout.splitlines())}

    def stop(self, cap: float) -> dict:
        """SIGTERM to PID 1 → unshare exited (None past `cap`, then SIGKILL); then how many
        of the sleeps seen at boot still exist (same pid, same start time)."""
        started = {pid: (stat_fields(pid) or [None] * 20)[19] for pid in self.sleepers}
        t0 = time.monotonic()
        self.ns.signal(signal.SIGTERM)
        code = self.ns.wait(cap)
        elapsed = time.monotonic() - t0
        if code is None:
            self.ns.kill()
            elapsed = None
        left = sum(1 for pid, start in started.items()
                   if start is not None and (stat_fields(pid) or [None] * 20)[19] == start)
        return {"stop": elapsed, "stop_code": code, "left": left}


def measure(peer: str, workdir: Path, units: int, cap: float, boot_cap: float, floor: str | None) -> dict:
    record: dict = {}
    with Run(peer, workdir, units, floor) as run:
        record["boot"] = run.boot(boot_cap)
        if record["boot"] is None:
            return record
        time.sleep(SETTLE)
        pid1 = run.ns.pid1
        record["rss"] = rss_bytes(pid1)
        record["fds"] = len(os.listdir(f"/proc/{pid1}/fd"))
        record.update(run.status())
        record.update(run.stop(cap))
        if peer == FLOOR:
            for line in (run.dir / "output.log").read_text(errors="replace").splitlines():
                if line.startswith("spawned "):
                    record["spawn_loop"] = float(line.split()[3])
    return record


def warm_up(peers: list[str], workdir: Path, floor: str | None) -> None:
    """One small start of each peer, not measured: bytecode compiled, files in the page cache."""
    for peer in peers:
        progress(f"scale: warm-up: {peer}")
        with Run(peer, workdir, 20, floor) as run:
            run.boot(60)
            run.status()


# ---------------------------------------------------------------------------- report

def report(results: dict[str, list[dict]], args) -> str:
    def values(peer, key):
        return [r.get(key) for r in results[peer] if key in r]

    def med(peer, key, scale=1.0):
        value = median(values(peer, key))
        return None if value is None else value * scale

    def capped(peer, key, cap, digits=2):
        found = values(peer, key)
        done = [v for v in found if v is not None]
        if not found:
            return "–"
        if not done:
            return f">{cap:g} (killed)" if key == "stop" else f">{cap:g}"
        text = fmt(median(done), "", digits)
        if len(done) < len(found):
            text += f" ({len(found) - len(done)}/{len(found)} >{cap:g})"
        return text

    def status_cell(peer):
        found = values(peer, "status")
        if not found:
            return "—"
        codes = sorted({r.get("status_code") for r in results[peer] if "status" in r}, key=str)
        lines = median(values(peer, "status_lines"))
        return (f"{capped(peer, 'status', 120)} (exit {'/'.join(map(str, codes))}, "
                f"{fmt(lines, '', 0)} lines)")

    rows = []
    for peer in results:
        label = f"posix_spawn ×{args.units} (C)" if peer == FLOOR else peer
        rows.append([label, capped(peer, "boot", args.boot_cap), fmt(med(peer, "rss", 1 / MiB), "", 1),
                     fmt(med(peer, "fds"), "", 0), status_cell(peer), capped(peer, "stop", args.cap),
                     fmt(max(values(peer, "left"), default=None), "", 0)])
    text = table(["PID 1", "boot → all running (s)", "RSS (MiB)", "fds", "status (s)", "SIGTERM → gone (s)",
                  "left after"], rows)
    notes = []
    if FLOOR in results and med(FLOOR, "spawn_loop") is not None:
        notes.append(f"The C program's own loop of {args.units} posix_spawnp: {med(FLOOR, 'spawn_loop'):.2f} s "
                     f"({med(FLOOR, 'spawn_loop') / args.units * 1000:.2f} ms a spawn): the machine's floor.")
    if "activator" in results:
        check = lambda ok: "ok" if ok else "MISSED"
        lines = ["activator against its goals (medians):"]
        for key, what in (("boot", "boot → all running"), ("stop", "SIGTERM → gone"), ("status", "`activator status`")):
            value = med("activator", key)
            if value is None and values("activator", key):
                lines.append(f"- {what}: over the cap (goal ≤ {GOALS[key]:g} s): MISSED")
            elif value is not None:
                lines.append(f"- {what}: {value:.2f} s (goal ≤ {GOALS[key]:g} s): {check(value <= GOALS[key])}")
        rss, fds = med("activator", "rss", 1 / MiB), med("activator", "fds")
        if rss is not None:
            lines.append(f"- PID 1's RSS with {args.units} units: {rss:.1f} MiB, {fds:.0f} descriptors (measured; no goal)")
        notes.append("\n".join(lines))
    return text + ("\n\n" + "\n\n".join(notes) if notes else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1000, help="services per peer (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--peers", default="activator,tini,dumb-init,supervisord,circusd",
                        help="comma-separated (default: all; `activator --no-cache` and the C floor are "
                             "added when available)")
    parser.add_argument("--no-floor", action="store_true", help="without the C posix_spawn row")
    parser.add_argument("--cap", type=float, default=10.0, help="seconds before a stop is given up (SIGKILL)")
    parser.add_argument("--boot-cap", type=float, default=60.0, help="seconds before a boot is given up")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = parser.parse_args()
    known = ["activator", "activator --no-cache", "tini", "dumb-init", "supervisord", "circusd", FLOOR]
    peers = [p for p in args.peers.split(",") if p]
    for p in peers:
        if p not in known:
            parser.error(f"unknown peer {p}; known: {', '.join(known)}")
    if "activator" in peers and "activator --no-cache" not in peers and activator_has_option("--no-cache"):
        peers.insert(peers.index("activator") + 1, "activator --no-cache")

    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        workdir = Path(tmp)
        floor = None if args.no_floor else compile_floor(workdir)
        if floor and FLOOR not in peers:
            peers.append(FLOOR)
        elif not floor and FLOOR in peers:
            peers.remove(FLOOR)
        results = {p: [] for p in peers}
        warm_up(peers, workdir, floor)
        for r in range(args.rounds):
            order = rotated(peers, r)
            progress(f"scale: round {r + 1}/{args.rounds}: {', '.join(order)}")
            for peer in order:
                try:
                    record = measure(peer, workdir, args.units, args.cap, args.boot_cap, floor)
                except Exception as e:  # one failure must not lose every other figure
                    progress(f"scale: {peer} failed: {e!r}")
                    record = {"error": repr(e)}
                progress(f"scale:   {peer}: " + ", ".join(
                    f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in record.items()))
                results[peer].append(record)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"units": args.units, "cap": args.cap, "results": results}, indent=1))
    print(f"## {args.units:,} services of `sleep infinity`, medians of {args.rounds} rounds\n")
    print(report(results, args))


if __name__ == "__main__":
    main()
