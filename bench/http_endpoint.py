"""What the HTTP endpoint (--http) costs PID 1, and what a probe costs through it.

activator runs as PID 1 of a new PID namespace with the 20 services of pid1.py (19 `sleep
infinity` and an HTTP responder), once without --http and once with `--http 127.0.0.1:PORT`,
side by side. Per round:

  rss        PID 1's VmRSS 1.5 s after the 20 services run, both runs; then, with --http,
             again after 200 requests to each of /livez, /readyz, /status.json, /metrics and
             / (what a scraped, probed pod has: the modules and buffers a request uses)
  wakeups    context switches of PID 1 over --idle seconds with --http on and no client
             (after those requests: no connection, no timer is left behind)
  latency    /readyz at --rate requests/s for --seconds, each on a new connection as the
             kubelet makes them, sent on a fixed schedule (open loop): p50, p99, max
  probe cpu  CPU per probe: PID 1's utime+stime over 500 `GET /readyz` (the client's own
             cost, a kubelet's HTTP GET, is not counted), against `activator status` run
             --exec-runs times as an exec probe runs it (a fresh Python process each time:
             its user+system CPU, from the children's rusage, and its wall time)

Figures are medians over the rounds. `.venv/bin/python bench/http_endpoint.py --help` for the options.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pid1
from common import (MiB, PYTHON, InNamespace, Namespace, context_switches, cpu_seconds, fmt, free_port, median,
                    progress, rss_bytes, table, wait_for)

PATHS = ["/livez", "/readyz", "/status.json", "/metrics", "/"]


class Run(InNamespace):
    """activator as PID 1 with pid1.py's 20 services, with or without --http."""

    def __init__(self, workdir: Path, http: bool):
        self.dir = Path(tempfile.mkdtemp(prefix="http-" if http else "plain-", dir=workdir))
        self.setup = pid1.Setup(self.dir, free_port(), stubborn=False)
        argv, env = pid1.activator(self.setup)
        self.port = free_port() if http else None
        if http:
            argv += ["--http", f"127.0.0.1:{self.port}"]
        self.runtime = env["ACTIVATOR_RUNTIME_DIR"]
        self.ns = Namespace(argv, env=env, cwd=self.dir, log=self.dir / "output.log")

    def wait_ready(self) -> None:
        wait_for(lambda: self.get("/readyz")[0] == 200 if self.port else Path(self.runtime, "status.json").exists(),
                 30, interval=0.05, what="activator ready")
        runner = pid1.Run.__new__(pid1.Run)
        runner.ns = self.ns
        runner.wait_all_running()

    def get(self, path: str) -> tuple[int, float]:
        """(status, seconds) of one GET on a new connection."""
        started = time.perf_counter()
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
                data = b""
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        except OSError:
            return 0, time.perf_counter() - started
        status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
        return status, time.perf_counter() - started


def latency(run: Run, rate: float, seconds: float) -> list[float]:
    period = 1.0 / rate
    count = int(rate * seconds)
    start = time.perf_counter()
    results = []
    for i in range(count):
        due = start + i * period
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        status, took = run.get("/readyz")
        if status != 200:
            raise RuntimeError(f"/readyz answered {status}")
        results.append(took)
    return results


def exec_probe_cost(run: Run, runs: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per `activator status`, as an exec probe runs it."""
    env = {**run.ns.env, "ACTIVATOR_RUNTIME_DIR": run.runtime}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    for _ in range(runs):
        subprocess.run([PYTHON, "-m", "activator", "status"], env=env, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu / runs, wall / runs


def one_round(workdir: Path, args) -> dict:
    result: dict = {}
    with Run(workdir, http=False) as plain, Run(workdir, http=True) as served:
        plain.wait_ready()
        served.wait_ready()
        time.sleep(pid1.SETTLE)
        result["rss_plain"] = rss_bytes(plain.ns.pid1)
        result["rss_http_idle"] = rss_bytes(served.ns.pid1)
        for path in PATHS:
            for _ in range(200):
                status, _ = served.get(path)
                assert status == 200, (path, status)
        result["rss_http_used"] = rss_bytes(served.ns.pid1)
        time.sleep(0.5)
        before = context_switches(served.ns.pid1)
        time.sleep(args.idle)
        result["wakeups"] = (context_switches(served.ns.pid1) - before) / args.idle
        times = latency(served, args.rate, args.seconds)
        ordered = sorted(times)
        result["p50_ms"] = ordered[len(ordered) // 2] * 1000
        result["p99_ms"] = ordered[int(len(ordered) * 0.99) - 1] * 1000
        result["max_ms"] = ordered[-1] * 1000
        cpu_before = cpu_seconds(served.ns.pid1)
        for _ in range(500):
            served.get("/readyz")
        result["http_probe_cpu_ms"] = (cpu_seconds(served.ns.pid1) - cpu_before) / 500 * 1000
        cpu, wall = exec_probe_cost(served, args.exec_runs)
        result["exec_probe_cpu_ms"] = cpu * 1000
        result["exec_probe_wall_ms"] = wall * 1000
        result["rss_http_end"] = rss_bytes(served.ns.pid1)
    return result


def report(rounds: list[dict], args) -> str:
    def med(key, scale=1.0):
        return median([r[key] * scale for r in rounds])

    rows = [
        ["PID 1 RSS, 20 services, no --http", fmt(med("rss_plain", 1 / MiB), "", 2)],
        ["PID 1 RSS, --http, before any request", fmt(med("rss_http_idle", 1 / MiB), "", 2)],
        ["PID 1 RSS, --http, after 1,000 requests", fmt(med("rss_http_used", 1 / MiB), "", 2)],
        ["PID 1 RSS, --http, at the end of the round", fmt(med("rss_http_end", 1 / MiB), "", 2)],
        [f"idle wake-ups/s, --http, no client ({args.idle:g} s)", fmt(med("wakeups"), "", 2)],
        [f"/readyz p50 at {args.rate:g} req/s (ms)", fmt(med("p50_ms"), "", 2)],
        [f"/readyz p99 at {args.rate:g} req/s (ms)", fmt(med("p99_ms"), "", 2)],
        [f"/readyz max at {args.rate:g} req/s (ms)", fmt(med("max_ms"), "", 2)],
        ["CPU per httpGet /readyz probe, in PID 1 (ms)", fmt(med("http_probe_cpu_ms"), "", 3)],
        ["CPU per exec `activator status` probe (ms)", fmt(med("exec_probe_cpu_ms"), "", 1)],
        ["wall time per exec `activator status` probe (ms)", fmt(med("exec_probe_wall_ms"), "", 1)],
    ]
    lines = [f"### The HTTP endpoint ({len(rounds)} rounds, medians)", "",
             table(["measure", "value"], rows), ""]

    def check(ok):
        return "met" if ok else "NOT met"
    lines.append(f"- RSS with --http after requests ≤ 15 MiB: {check(med('rss_http_used') <= 15 * MiB)}")
    lines.append(f"- idle wake-ups 0: {check(med('wakeups') == 0)}")
    lines.append(f"- /readyz p99 ≤ 5 ms at {args.rate:g} req/s: {check(med('p99_ms') <= 5)}")
    lines.append(f"- an httpGet probe costs {med('exec_probe_cpu_ms') / max(med('http_probe_cpu_ms'), 1e-6):.0f}× "
                 "less CPU than an exec probe")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to count idle wake-ups (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="/readyz requests per second (default 200)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of /readyz at that rate (default 10)")
    parser.add_argument("--exec-runs", type=int, default=20, help="`activator status` runs (default 20)")
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    rounds = []
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        pid1.warm_up(["activator"], Path(tmp))
        progress("http: warm-up: activator --http")  # h11's bytecode compiled before measuring
        with Run(Path(tmp), http=True) as run:
            run.wait_ready()
            run.get("/metrics")
        for n in range(args.rounds):
            progress(f"http: round {n + 1}/{args.rounds}")
            rounds.append(one_round(Path(tmp), args))
    if args.json:
        Path(args.json).write_text(json.dumps(rounds, indent=1))
    print(report(rounds, args))


if __name__ == "__main__":
    sys.exit(main())
