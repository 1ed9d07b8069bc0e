"""activator as PID 1 against tini, dumb-init, supervisord and circusd as PID 1.

Each peer runs as PID 1 of a new PID namespace (`unshare --pid --fork --mount-proc`) with the
same 20 services: 19 `sleep infinity` and one tiny HTTP responder (responder.py, ~10 ms to
start). tini and dumb-init run a single child, so they run a shell script that starts the 20
in the background and `wait`s, which is how such images do it.

activator is started as an image starts it: by its console script (the one beside .venv's
python), after `activator check --units DIR` has run once on its units.

Per round, in an order rotated every round:

  first200  the time from starting `unshare` to the first HTTP 200 from the responder, one
            peer at a time, each launch killed once it answered. --launches (9) launches per
            peer in all, spread over the rounds (3 a round by default), the peers' order
            rotated at every launch: the figure is the median of those 9.
  main      each peer is started in turn and waited for, then, with all of them running
            (idle processes do not disturb each other), PID 1's VmRSS and its wake-ups per
            second over --idle seconds: voluntary + involuntary context switches of all its
            threads, from /proc. Then each in turn: SIGTERM to PID 1 → unshare exited
            (unshare exits once PID 1 has, and by then the kernel has killed and reaped the
            whole namespace).
  timeout   the same stop, with one service that ignores SIGTERM and a 2 s stop timeout
            (activator `timeout_stop_sec: 2`, supervisord `stopwaitsecs=2`, circus
            `graceful_timeout = 2`; tini and dumb-init have no such setting). Capped at --cap s.
  zombies   a helper forks --orphans children that exit at once, then exits itself, so all
            the zombies are reparented to PID 1 together; Z-state processes in the namespace
            100 ms after the helper exited (the children of PID 1 besides its services, read
            at an instant), and how long until none is left (polled every 10 ms from then on,
            capped; "≤ 100" when none was left at 100 ms).

Figures are medians over the rounds (first 200: over every launch). Run `bench/pid1.py --help` for the options.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from common import (BENCH, MiB, PYTHON, InNamespace, Namespace, activator_peer, children_of, circusd_peer,
                    comm, context_switches, dumb_init_peer, fmt, free_port, median, progress, rotated,
                    rss_bytes, state_of, supervisord_peer, table, tini_peer, wait_for, wait_http_ok)

SERVICES = 20  # one HTTP responder and 19 sleepers
SLEEP = shutil.which("sleep") or "/bin/sleep"
STOP_TIMEOUT = 2  # seconds, for the service that ignores SIGTERM
SETTLE = 1.5  # seconds after the 20 services run, before measuring an idle PID 1
FIRST_200_MARGIN = 40  # ms: activator's goal, first 200 ≤ tini's + this (medians of --launches)


class Setup:
    """The 20 services of one run, as commands; each peer writes them in its own format."""

    def __init__(self, directory: Path, port: int, stubborn: bool):
        self.dir = directory
        self.port = port
        self.http = [PYTHON, "-S", "-I", str(BENCH / "responder.py"), "http", str(port)]
        self.sleepers = [f"svc{i:02d}" for i in range(1, SERVICES)]
        # With `stubborn`, the last sleeper ignores SIGTERM (the disposition survives exec).
        self.stubborn = self.sleepers[-1] if stubborn else None
        script = directory / "stubborn.sh"
        script.write_text("#!/bin/sh\ntrap '' TERM\nexec sleep infinity\n")
        script.chmod(0o755)
        self.stubborn_cmd = [str(script)]

    def commands(self) -> dict[str, list[str]]:
        """Name → argv, the HTTP responder first (every peer starts it first)."""
        result = {"http": self.http}
        for name in self.sleepers:
            result[name] = self.stubborn_cmd if name == self.stubborn else [SLEEP, "infinity"]
        return result


# ---------------------------------------------------------------------------- the peers
# Each writes the 20 services in its own format (common.py); activator is started by its
# console script after `activator check` has run on its units, as in an image.

def _stop_timeouts(s: Setup) -> dict:
    return {s.stubborn: STOP_TIMEOUT} if s.stubborn else {}


def activator(s: Setup) -> tuple[list[str], dict]:
    return activator_peer(s.dir, s.commands(), _stop_timeouts(s))


def tini(s: Setup) -> tuple[list[str], dict]:
    return tini_peer(s.dir, s.commands())


def dumb_init(s: Setup) -> tuple[list[str], dict]:
    return dumb_init_peer(s.dir, s.commands())


def supervisord(s: Setup) -> tuple[list[str], dict]:
    return supervisord_peer(s.dir, s.commands(), _stop_timeouts(s))


def circusd(s: Setup) -> tuple[list[str], dict]:
    return circusd_peer(s.dir, s.commands(), _stop_timeouts(s))


PEERS = {"activator": activator, "tini": tini, "dumb-init": dumb_init,
         "supervisord": supervisord, "circusd": circusd}


# ---------------------------------------------------------------------------- one run

class Run(InNamespace):
    """One peer as PID 1 with the 20 services, in its own temporary directory."""

    def __init__(self, peer: str, workdir: Path, stubborn: bool = False):
        self.dir = Path(tempfile.mkdtemp(prefix=f"{peer}-", dir=workdir))
        self.setup = Setup(self.dir, free_port(), stubborn)
        argv, env = PEERS[peer](self.setup)
        self.ns = Namespace(argv, env=env, cwd=self.dir, log=self.dir / "output.log")

    def first_200(self) -> float:
        """Seconds from starting unshare to the first HTTP 200."""
        try:
            return wait_http_ok(self.setup.port, 30) - self.ns.started
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.ns.output_tail()}") from None

    def wait_all_running(self) -> None:
        def all_there():
            sleepers = sum(1 for p in self.ns.processes() if comm(p) == "sleep")
            return sleepers == SERVICES - 1
        wait_for(all_there, 30, interval=0.01, what="20 services running")

    def stop(self, cap: float) -> tuple[float | None, int | None]:
        """SIGTERM to PID 1 → unshare exited: seconds (None past `cap`, then SIGKILL)."""
        self.ns.pid1  # looked up before the clock starts
        t0 = time.monotonic()
        self.ns.signal(signal.SIGTERM)
        code = self.ns.wait(cap)
        elapsed = time.monotonic() - t0
        if code is None:
            self.ns.kill()
            return None, None
        return elapsed, code

    def zombies(self) -> int:
        return sum(1 for p in children_of(self.ns.pid1) if state_of(p) == "Z")


def measure_first_200(peers: list[str], workdir: Path, launches: int) -> dict[str, dict]:
    """`launches` starts of each peer, alone on the machine, the order rotated at each: the
    seconds from starting unshare to the first 200, a list per peer."""
    results: dict[str, list] = {p: [] for p in peers}
    for i in range(launches):
        for peer in rotated(peers, i):
            with Run(peer, workdir) as run:
                results[peer].append(run.first_200())
    return {peer: {"first_200": values} for peer, values in results.items()}


def launches_in_round(total: int, rounds: int, r: int) -> int:
    """`total` launches spread over `rounds` rounds as evenly as they go."""
    return total // rounds + (1 if r < total % rounds else 0)


def measure_main(peers: list[str], workdir: Path, idle: float, cap: float) -> dict[str, dict]:
    """Start each peer in turn, then measure all of them idle at once (idle processes do
    not disturb each other, and one window serves five peers), then stop each in turn."""
    results: dict[str, dict] = {p: {} for p in peers}
    with contextlib.ExitStack() as stack:
        runs = {}
        for peer in peers:
            run = stack.enter_context(Run(peer, workdir))
            run.first_200()
            run.wait_all_running()
            runs[peer] = run
        time.sleep(SETTLE)
        before = {}
        for peer, run in runs.items():
            results[peer]["rss"] = rss_bytes(run.ns.pid1)
            before[peer] = context_switches(run.ns.pid1)
        time.sleep(idle)
        for peer, run in runs.items():
            results[peer]["wakeups"] = (context_switches(run.ns.pid1) - before[peer]) / idle
        for peer, run in runs.items():
            results[peer]["stop"], results[peer]["stop_code"] = run.stop(cap)
    return results


def measure_timeout(peer: str, workdir: Path, cap: float) -> dict:
    with Run(peer, workdir, stubborn=True) as run:
        run.first_200()
        run.wait_all_running()
        time.sleep(0.5)
        stop, code = run.stop(cap)
    return {"stop_timeout": stop, "stop_timeout_code": code}


def measure_zombies(peer: str, workdir: Path, orphans: int, reap_cap: float) -> dict:
    with Run(peer, workdir) as run:
        run.first_200()
        run.wait_all_running()
        time.sleep(0.5)
        pid1 = run.ns.pid1
        services = set(children_of(pid1))
        # nsenter forks the helper into the namespace; when the helper exits, its zombies
        # go to the namespace's PID 1 (nsenter, outside, is no reaper for them).
        helper = ["nsenter", "--target", str(pid1), "--pid", "--",
                  PYTHON, "-S", "-I", str(BENCH / "orphans.py"), str(orphans)]
        subprocess.run(helper, check=True)
        burst_end = time.monotonic()
        # The orphans exited before they were reparented: every child of PID 1 that is not
        # one of its services is a zombie. One read of PID 1's children list counts them at
        # an instant (reading 10,000 stat files would take longer than what it measures).
        left = reaped_after = None
        time.sleep(0.1)
        while (now := time.monotonic()) - burst_end < reap_cap:
            zombies = len(set(children_of(pid1)) - services)
            if left is None:
                left = zombies
            if zombies == 0:
                reaped_after = now - burst_end
                break
            time.sleep(0.01)  # light: reading 10,000 children takes CPU from the reaper
        if left is None:
            left = len(set(children_of(pid1)) - services)
        check = run.zombies()  # cross-check: what remains must be in state Z
        if reaped_after is None and check == 0:
            progress(f"pid1: {peer}: the unreaped children are not zombies?")
        alive = run.ns.proc.poll() is None
    return {"zombies": left, "reap_all": reaped_after, "survived_burst": alive}


def warm_up(peers: list[str], workdir: Path) -> None:
    """One start of each peer, not measured: bytecode compiled, files in the page cache."""
    for peer in peers:
        progress(f"pid1: warm-up: {peer}")
        with Run(peer, workdir) as run:
            run.first_200()
            run.wait_all_running()


# ---------------------------------------------------------------------------- report

def report(results: dict[str, list[dict]], args) -> str:
    def med(peer, key, scale=1.0):
        value = median(values(peer, key))
        return None if value is None else value * scale

    def values(peer, key):
        """Every measurement of `key` (a round holds several first 200s)."""
        found = []
        for r in results[peer]:
            v = r.get(key)
            found.extend(v if isinstance(v, list) else [v])
        return found

    def measured(peer, key):
        return any(key in r for r in results[peer])

    def stop_cell(peer, key):
        if not measured(peer, key):
            return "–"
        values = [r.get(key) for r in results[peer] if key in r]
        done = [v for v in values if v is not None]
        if not done:
            return f">{args.cap:g} s (killed)"
        text = fmt(median(done) * 1000, " ms", 0)
        if len(done) < len(values):
            text += f" ({len(values) - len(done)}/{len(values)} >{args.cap:g} s)"
        return text

    def reap_cell(peer):
        if not measured(peer, "zombies"):
            return "–"
        values = [r.get("reap_all") for r in results[peer] if "zombies" in r]
        if any(v is None for v in values) and len([v for v in values if v is None]) * 2 >= len(values):
            return f">{args.reap_cap:g} s"
        text = fmt(median(values) * 1000, "", 0)
        return "≤ 100" if median(values) < 0.11 and med(peer, "zombies") == 0 else text

    launches = max((len([v for v in values(p, "first_200") if v is not None]) for p in results), default=0)
    headers = ["PID 1", "RSS (MiB)", f"first 200 (ms, median of {launches})", f"zombies at 100 ms (of {args.orphans})",
               "all reaped (ms)", "wake-ups/s idle", "SIGTERM → gone", f"same, 1 ignores TERM ({STOP_TIMEOUT} s)"]
    rows = []
    for peer in results:
        rows.append([peer, fmt(med(peer, "rss", 1 / MiB), "", 1), fmt(med(peer, "first_200", 1000), "", 0),
                     fmt(med(peer, "zombies"), "", 0), reap_cell(peer), fmt(med(peer, "wakeups"), "", 1),
                     stop_cell(peer, "stop"), stop_cell(peer, "stop_timeout")])
    text = table(headers, rows)

    if "activator" not in results:
        return text
    a = lambda key, scale=1.0: med("activator", key, scale)
    check = lambda ok: "ok" if ok else "MISSED"
    lines = ["", "activator against its goals (medians):"]
    if a("rss") is not None:
        lines.append(f"- RSS {a('rss', 1 / MiB):.1f} MiB (goal ≤ 15): {check(a('rss', 1 / MiB) <= 15)}")
    if a("first_200") is not None and "tini" in results and med("tini", "first_200") is not None:
        gap = (a("first_200") - med("tini", "first_200")) * 1000
        lines.append(f"- first 200 ≤ tini + {FIRST_200_MARGIN} ms: {gap:+.0f} ms against tini, medians of "
                     f"{launches} (goal ≤ +{FIRST_200_MARGIN}): {check(gap <= FIRST_200_MARGIN)}")
    if a("zombies") is not None:
        lines.append(f"- zombies 100 ms after the burst: {a('zombies'):.0f} (goal 0): {check(a('zombies') == 0)}")
    if a("wakeups") is not None:
        lines.append(f"- idle wake-ups: {a('wakeups'):.2f}/s (goal 0): {check(a('wakeups') == 0)}")
    if a("stop") is not None:
        lines.append(f"- SIGTERM → gone: {a('stop', 1000):.0f} ms (goal < 100): {check(a('stop') < 0.1)}")
    if a("stop_timeout") is not None:
        lines.append(f"- with a service ignoring SIGTERM: {a('stop_timeout', 1000):.0f} ms "
                     f"(goal < {STOP_TIMEOUT * 1000 + 100}): {check(a('stop_timeout') < STOP_TIMEOUT + 0.1)}")
    return text + "\n" + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    parser.add_argument("--peers", default=",".join(PEERS), help="comma-separated (default: all)")
    parser.add_argument("--launches", type=int, default=9,
                        help="launches per peer for the first 200, spread over the rounds (default 9)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to count idle wake-ups (default 10)")
    parser.add_argument("--orphans", type=int, default=10000, help="size of the zombie burst (default 10000)")
    parser.add_argument("--reap-cap", type=float, default=2.0, help="wait at most this for the burst to be reaped")
    parser.add_argument("--cap", type=float, default=10.0, help="seconds before a stop is given up (SIGKILL)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: first200,main,timeout,zombies")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = parser.parse_args()
    peers = [p for p in args.peers.split(",") if p]
    skip = set(args.skip.split(","))
    for p in peers:
        if p not in PEERS:
            parser.error(f"unknown peer {p}; known: {', '.join(PEERS)}")

    results: dict[str, list[dict]] = {p: [] for p in peers}
    with tempfile.TemporaryDirectory(prefix="bench-pid1-") as tmp:
        workdir = Path(tmp)
        warm_up(peers, workdir)
        for r in range(args.rounds):
            order = rotated(peers, r)
            progress(f"pid1: round {r + 1}/{args.rounds}: {', '.join(order)}")
            records: dict[str, dict] = {p: {} for p in order}
            launches = launches_in_round(args.launches, args.rounds, r)
            parts = [("first200", lambda: measure_first_200(order, workdir, launches)),
                     ("main", lambda: measure_main(order, workdir, args.idle, args.cap))]
            for peer in order:
                parts.append(("timeout", lambda peer=peer: {peer: measure_timeout(peer, workdir, args.cap)}))
            for peer in order:
                parts.append(("zombies", lambda peer=peer: {
                    peer: measure_zombies(peer, workdir, args.orphans, args.reap_cap)}))
            for part, measure in parts:
                if part in skip:
                    continue
                try:
                    for peer, figures in measure().items():
                        records[peer].update(figures)
                except Exception as e:  # one failure must not lose every other figure
                    progress(f"pid1: {part} failed: {e!r}")
            for peer in peers:
                results[peer].append(records[peer])
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(f"## PID 1: 20 services, medians of {args.rounds} rounds\n")
    print(report(results, args))


if __name__ == "__main__":
    main()
