"""Restarting a gunicorn-served app under load: how many requests fail, how slow they get.

The same WSGI app (wsgi_app.py) is served by gunicorn with sync workers, 4 workers in all,
under each approach below, and restarted --restarts (10) times, one every --interval (2) s,
while wrk keeps it busy and a separate probe client records what newly arriving clients see.

  activator          4 instances of gunicorn (1 sync worker each) on activator's socket
                     (`--bind fd://$(sockets.http)`, `type: notify`: gunicorn sends READY=1);
                     a restart = a changed `environment` value in the unit + SIGHUP to PID 1,
                     then waiting for status.json's `reload.completed` to go up
  activator SIGUSR2  the same stack, rolling restart by SIGUSR2 (no file changes)
  supervisord        one gunicorn with 4 workers that binds the port itself;
                     `supervisorctl restart web`
  supervisord fcgi   `[fcgi-program:web]`: supervisord binds the socket and gives it to 4
                     gunicorns (1 worker each) on fd 0 (`--bind fd://0`);
                     `supervisorctl restart web:*`
  circusd restart    `[socket:web]`, 4 gunicorns (1 worker each) with `use_sockets`,
                     `--bind fd://$(circus.sockets.web)`; `circusctl restart web --waiting`
  circusd reload     the same; `circusctl reload web --waiting` (graceful: new processes
                     first, then the old ones are stopped)
  gunicorn HUP       one gunicorn with 4 workers binding the port, as PID 1; SIGHUP to it
                     (its arbiter forks new workers and stops the old ones); done when none
                     of the old workers is left

Two more, not run unless named with --only, for a server that does not speak sd_notify:

  activator-uvicorn-ready  4 uvicorns on activator's socket (`--fd $(sockets.http)`), an app
                     whose import takes 1 s (asgi_slow.py), `ready: listening`; edit +
                     SIGHUP as for `activator`
  activator-uvicorn  the same without `ready`: each new uvicorn counts as started once forked

Every approach runs as PID 1 of its own PID namespace, in a CPU cgroup of its own when the
machine allows (see CgroupNamespace; --no-cgroup to turn it off). Where one gunicorn must
bind the port itself (supervisord, gunicorn HUP), it runs 4 workers, since only one process
can bind the port; elsewhere 4 gunicorns with 1 worker each: 4 sync workers everywhere.

A trial, for one approach: start it, wait until every gunicorn process is there, warm up
(wrk 1 s), start the probe, then two windows back to back:

  steady     wrk -t2 -c16 --latency for --window seconds, nothing else happening;
  restarts   the same, and 0.5 s into it the first restart, then one every --interval s. A
             restart still running at its slot delays the next, so every approach gets
             --restarts complete restarts; wrk then runs on until 0.5 s after the last
             one completed (stopped by SIGINT, when it prints its summary), so that every
             restart happens under load and wrk's window is the probe's.

The probe (probe.py, a process and session of its own) makes one request at a time, a new
connection each, one every 10 ms (or right after the previous one when it took longer), and
records each request's latency and outcome: refused, reset, timeout (5 s), closed without
answer, non-200. wrk's own error counts are kept in the raw results only: wrk counts a
refused connect on loopback as a write error and retries in a tight loop, so they mislead.
A sequential probe sends nothing while it waits, so a 500 ms stall weighs one request in
its p99; the "open-loop" column adds, for each slow request, the requests that a client
arriving every 10 ms would have sent meanwhile (HdrHistogram's expected-interval
correction): that p99 is what clients arriving at any moment see.

CPU columns: the whole stack's CPU seconds per second of window (every process of the
namespace, with the children each has reaped), and PID 1's own.

Rounds run every approach once, in an order rotated every round; figures are medians over
the rounds, failed probe requests are totals. The load average is printed with the table:
the machine has 2 cores, this benchmark alone keeps them busy (a load average of 4 to 5 is
its own), and other work moves the latencies.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import (BENCH, BENCH_VENV, PYTHON, ROOT, Namespace, cpu_seconds, cpu_seconds_with_children,
                    descendants_of, fmt, free_port, http_ok, median, progress, rotated, table, wait_for)

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
APPROACHES = ["activator", "activator-usr2", "supervisord", "supervisord-fcgi", "circusd-restart",
              "circusd-reload", "gunicorn-hup"]
LABELS = {
    "activator": "activator (edit + SIGHUP)",
    "activator-usr2": "activator SIGUSR2",
    "supervisord": "supervisord `restart`, gunicorn binds",
    "supervisord-fcgi": "supervisord fcgi-program `restart`",
    "circusd-restart": "circusd `restart`",
    "circusd-reload": "circusd `reload` (graceful)",
    "gunicorn-hup": "gunicorn HUP (binds, PID 1)",
}
UVICORN = ROOT / ".venv" / "bin" / "uvicorn"
UVICORN_APPROACHES = ["activator-uvicorn-ready", "activator-uvicorn"]
LABELS.update({"activator-uvicorn-ready": "activator, uvicorn, ready: listening",
               "activator-uvicorn": "activator, uvicorn, no ready"})
GOAL_FAILED = 0
GOAL_P99 = 0.060  # seconds: probe p99 during the restarts
LEAD = 0.5  # seconds into the restart window before the first restart
WRK_SLACK = 600  # seconds wrk may run past the window while restarts are still going on


def gunicorn_argv(bind: str, workers: int) -> list[str]:
    return [str(GUNICORN), "--bind", bind, "--workers", str(workers), "--worker-class", "sync",
            "--no-control-socket", "--chdir", str(BENCH), "wsgi_app:app"]


# ---------------------------------------------------------------------------- CPU cgroup

def cpu_cgroup_parent() -> Path | None:
    """Where a CPU cgroup for one stack can be made: the cgroup v1 `cpu` hierarchy, or the
    cgroup v2 root when its children get the cpu controller; None when neither is writable."""
    v1 = Path("/sys/fs/cgroup/cpu")
    if (v1 / "cpu.shares").exists() and os.access(v1, os.W_OK):
        return v1
    v2 = Path("/sys/fs/cgroup")
    try:
        if "cpu" in (v2 / "cgroup.subtree_control").read_text().split() and os.access(v2, os.W_OK):
            return v2
    except OSError:
        pass
    return None


class CgroupNamespace(Namespace):
    """A Namespace whose every process is in a CPU cgroup of its own, as in a container.

    Why: the kernel's autogroup scheduling (`/proc/sys/kernel/sched_autogroup_enabled`)
    shares the CPU between sessions first, but only for tasks of the root CPU cgroup. activator
    and circusd start every service in a session of its own, supervisord and gunicorn keep
    them in one: without a cgroup, 4 gunicorns under activator get 4 shares of the CPU
    against wrk and the machine's other work where the same 4 workers under supervisord get
    one, which would decide the latencies here, and does not happen in a container (its
    own cgroup, where autogroups do not apply). In a cgroup every stack gets one share.
    """

    def __init__(self, argv: list[str], cgroup: Path | None, **kwargs):
        super().__init__(argv, **kwargs)
        if cgroup is not None:  # sh moves itself into the cgroup, then becomes unshare
            self.argv = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(cgroup / "cgroup.procs"), *self.argv]


# ---------------------------------------------------------------------------- the stacks

class Stack:
    """One approach: its configuration, how it starts, how it restarts the app."""

    def __init__(self, approach: str, directory: Path, port: int, instances: int, workers: int,
                 log_level: str | None = None, log_json: bool = False, cgroup: Path | None = None):
        self.approach = approach
        self.dir = directory
        self.port = port
        self.instances = instances
        self.workers = workers
        self.generation = 0
        env = {}
        if approach.startswith("activator"):
            argv = self.activator_config()
            if log_json:  # timestamps (ms) on activator's lines and on the services' output
                argv[3:3] = ["--log-format", "json"]
            env["ACTIVATOR_RUNTIME_DIR"] = str(directory / "run")
            if log_level:
                env["ACTIVATOR_LOG_LEVEL"] = log_level
        elif approach.startswith("supervisord"):
            argv = self.supervisord_config()
        elif approach.startswith("circusd"):
            argv = self.circusd_config()
        elif approach == "gunicorn-hup":
            argv = gunicorn_argv(f"127.0.0.1:{port}", instances * workers)
        else:
            raise ValueError(approach)
        self.ns = CgroupNamespace(argv, cgroup, env=env, cwd=directory, log=directory / "output.log")

    # ------------------------------------------------------------ configuration

    @property
    def gunicorns(self) -> int:
        """gunicorn processes (arbiters and workers) when everything runs."""
        if self.approach in ("supervisord", "gunicorn-hup"):
            return 1 + self.instances * self.workers
        if self.approach in UVICORN_APPROACHES:
            return self.instances
        return self.instances * (1 + self.workers)

    def activator_unit(self) -> str:
        if self.approach in UVICORN_APPROACHES:
            argv = [str(UVICORN), "--fd", "$(sockets.http)", "--app-dir", str(BENCH), "--no-access-log",
                    "--log-level", "warning", "asgi_slow:app"]
            return (f"exec: {json.dumps(argv)}\n"
                    + ("ready: listening\n" if self.approach.endswith("-ready") else "")
                    + f"instances: {self.instances}\n"
                    f"environment:\n  BENCH_GENERATION: \"{self.generation}\"\n  BENCH_IMPORT_SECONDS: \"1\"\n"
                    f"sockets:\n  http:\n    listen: \"tcp://127.0.0.1:{self.port}\"\n")
        argv = gunicorn_argv("fd://$(sockets.http)", self.workers)
        return (f"exec: {json.dumps(argv)}\n"
                "type: notify\n"
                f"instances: {self.instances}\n"
                f"environment:\n  BENCH_GENERATION: \"{self.generation}\"\n"
                f"sockets:\n  http:\n    listen: \"tcp://127.0.0.1:{self.port}\"\n")

    def activator_config(self) -> list[str]:
        units = self.dir / "units"
        units.mkdir()
        (units / "web.yaml").write_text(self.activator_unit())
        return [PYTHON, "-m", "activator", "--units", str(units)]

    def supervisord_config(self) -> list[str]:
        lines = ["[supervisord]", "nodaemon=true", "user=root", f"logfile={self.dir}/supervisord.log",
                 f"pidfile={self.dir}/supervisord.pid", f"childlogdir={self.dir}", "",
                 "[unix_http_server]", f"file={self.dir}/supervisor.sock", "",
                 "[rpcinterface:supervisor]",
                 "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
                 "[supervisorctl]", f"serverurl=unix://{self.dir}/supervisor.sock", ""]
        if self.approach == "supervisord":
            argv = gunicorn_argv(f"127.0.0.1:{self.port}", self.instances * self.workers)
            lines += ["[program:web]", "command=" + " ".join(argv), "redirect_stderr=true", ""]
        else:
            argv = gunicorn_argv("fd://0", self.workers)
            lines += ["[fcgi-program:web]", f"socket=tcp://127.0.0.1:{self.port}", "command=" + " ".join(argv),
                      f"numprocs={self.instances}", "process_name=%(program_name)s_%(process_num)d",
                      "redirect_stderr=true", ""]
        self.conf = self.dir / "supervisord.conf"
        self.conf.write_text("\n".join(lines))
        return [str(BENCH_VENV / "supervisord"), "-c", str(self.conf)]

    def circusd_config(self) -> list[str]:
        argv = gunicorn_argv("fd://$(circus.sockets.web)", self.workers)
        self.endpoint = f"ipc://{self.dir}/ctrl.sock"
        lines = ["[circus]", f"endpoint = {self.endpoint}", f"pubsub_endpoint = ipc://{self.dir}/pub.sock",
                 "statsd = False", "",
                 "[watcher:web]", f"cmd = {argv[0]}", "args = " + " ".join(argv[1:]),
                 f"numprocesses = {self.instances}", "use_sockets = True", "copy_env = True", "",
                 "[socket:web]", "host = 127.0.0.1", f"port = {self.port}", ""]
        conf = self.dir / "circus.ini"
        conf.write_text("\n".join(lines))
        return [str(BENCH_VENV / "circusd"), str(conf)]

    # ------------------------------------------------------------ running

    def gunicorn_pids(self) -> list[int]:
        pids = []
        for pid in [self.ns.pid1, *descendants_of(self.ns.pid1)]:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if (b"uvicorn" if self.approach in UVICORN_APPROACHES else b"gunicorn") in f.read():
                        pids.append(pid)
            except OSError:
                pass
        return pids

    def start(self) -> None:
        self.ns.start()
        try:
            wait_for(lambda: http_ok(self.port), 60, interval=0.02, what=f"{self.approach} answering")
            wait_for(lambda: len(self.gunicorn_pids()) >= self.gunicorns, 60, interval=0.02,
                     what=f"{self.gunicorns} gunicorn processes")
            if self.approach.startswith("activator"):
                wait_for(lambda: self.activator_status()["units"]["web"]["state"] == "running", 60,
                         interval=0.02, what="web running")
        except (TimeoutError, KeyError) as e:
            raise RuntimeError(f"{e}\n{self.ns.output_tail()}") from None
        time.sleep(0.5)  # the last worker to fork has loaded the app

    def cpu(self) -> tuple[float, float]:
        """CPU seconds of the whole stack and of PID 1 alone.

        The stack: utime + stime + cutime + cstime of every live process of the namespace,
        PID 1 included. A process that exited was reaped by its parent, whose cutime then
        holds it (every process here is reaped by its own parent, up to PID 1)."""
        pid1 = self.ns.pid1
        return (sum(cpu_seconds_with_children(p) for p in [pid1, *descendants_of(pid1)]), cpu_seconds(pid1))

    def activator_status(self) -> dict:
        try:
            return json.loads((self.dir / "run" / "status.json").read_text())
        except (OSError, ValueError):
            return {"units": {}, "reload": {}}

    def restart(self) -> None:
        """One restart, returning once it is complete (as far as the approach tells)."""
        self.generation += 1
        a = self.approach
        if a.startswith("activator"):
            before = self.activator_status()["reload"].get("completed", 0)
            if a != "activator-usr2":
                (self.dir / "units" / "web.yaml").write_text(self.activator_unit())
            self.ns.signal(signal.SIGHUP if a != "activator-usr2" else signal.SIGUSR2)

            def completed():
                record = self.activator_status()["reload"]
                return record if record.get("completed", 0) > before else None
            record = wait_for(completed, 60, interval=0.01, what="reload completed")
            if record.get("outcome") != "applied":
                raise RuntimeError(f"reload {record}\n{self.ns.output_tail()}")
        elif a.startswith("supervisord"):
            target = "web" if a == "supervisord" else "web:*"
            self.run([str(BENCH_VENV / "supervisorctl"), "-c", str(self.conf), "restart", target])
        elif a.startswith("circusd"):
            command = "restart" if a == "circusd-restart" else "reload"
            self.run([str(BENCH_VENV / "circusctl"), "--endpoint", self.endpoint, "--timeout", "60",
                      command, "web", "--waiting"])
        elif a == "gunicorn-hup":
            old = set(descendants_of(self.ns.pid1))
            self.ns.signal(signal.SIGHUP)

            def replaced():
                workers = set(descendants_of(self.ns.pid1))
                return not (workers & old) and len(workers) >= self.instances * self.workers
            wait_for(replaced, 60, interval=0.01, what="gunicorn's workers replaced")

    def run(self, argv: list[str]) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=90)
        if result.returncode != 0 or "ERROR" in result.stdout:
            raise RuntimeError(f"{' '.join(argv[-3:])}: exit {result.returncode}: {result.stdout}{result.stderr}\n"
                               f"{self.ns.output_tail()}")


# ---------------------------------------------------------------------------- load and probe

def seconds_of(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk_argv(port: int, seconds: float, threads: int, connections: int) -> list[str]:
    # --timeout 10s: wrk's default 2 s would drop the slowest answers from its percentiles.
    return ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "10s", "--latency",
            f"http://127.0.0.1:{port}/"]


def parse_wrk(out: str) -> dict:
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
              "requests": int(re.search(r"(\d+) requests in", out).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}%\s+([\d.]+\w+)", out, re.M)
        result[f"p{pct}"] = seconds_of(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["socket_errors"] = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups()))) if m else {}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    result["non_2xx"] = int(m.group(1)) if m else 0
    return result


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


def corrected(latencies: list[float], interval: float) -> list[float]:
    """The latencies an open-loop client, one new request every `interval`, would have seen.

    The probe is sequential: while one request waits 500 ms, it sends no other, so a stall
    counts once however long it lasts, and its p99 can miss stalls that a client arriving at
    any moment would meet. As HdrHistogram's recordValueWithExpectedInterval does, each
    latency L adds L - interval, L - 2 × interval, ... (while ≥ interval): the requests that
    would have arrived, and waited, meanwhile.
    """
    result = []
    for value in latencies:
        result.append(value)
        missing = value - interval
        while missing >= interval:
            result.append(missing)
            missing -= interval
    return result


def probe_figures(requests: list, start: float, end: float, interval: float) -> dict:
    inside = [r for r in requests if start <= r[0] < end]
    ok = [lat for _, lat, outcome in inside if outcome == "ok"]
    failed = Counter(outcome for _, _, outcome in inside if outcome != "ok")
    return {"requests": len(inside), "failed": sum(failed.values()), "outcomes": dict(failed),
            "p50": percentile(ok, 50), "p99": percentile(ok, 99), "max": max(ok) if ok else None,
            "p99_open_loop": percentile(corrected(ok, interval), 99),
            "failed_at": [round(t - start, 3) for t, _, outcome in inside if outcome != "ok"][:200]}


# ---------------------------------------------------------------------------- one trial

def trial(approach: str, workdir: Path, args) -> dict:
    directory = Path(tempfile.mkdtemp(prefix=f"{approach}-", dir=workdir))
    port = free_port()
    cgroup = None
    if args.cgroup_parent is not None:
        cgroup = args.cgroup_parent / f"bench-reload-{os.getpid()}-{approach}"
        cgroup.mkdir()
    stack = Stack(approach, directory, port, args.instances, args.workers, args.log_level, args.log_json,
                  cgroup)
    load_before = os.getloadavg()[0]
    probe = None
    try:
        stack.start()
        subprocess.run(wrk_argv(port, 1, args.threads, args.connections), check=True, capture_output=True)
        probe_file = directory / "probe.json"
        probe = subprocess.Popen([PYTHON, str(BENCH / "probe.py"), str(port), str(probe_file),
                                  "--interval", str(args.probe_interval), "--timeout", str(args.probe_timeout)],
                                 start_new_session=True)  # an autogroup of its own: see the docstring
        time.sleep(0.3)

        cpu0 = stack.cpu()
        steady_start = time.monotonic()
        out = subprocess.run(wrk_argv(port, args.window, args.threads, args.connections), check=True,
                             capture_output=True, text=True).stdout
        steady_end = time.monotonic()
        cpu1 = stack.cpu()
        wrk_steady = parse_wrk(out)

        restart_start = time.monotonic()
        # wrk runs until the window is over and every restart is done (SIGINT: it then
        # prints its summary), so that slow restarts are all under load, and its window and
        # the probe's are the same.
        wrk = subprocess.Popen(wrk_argv(port, args.window + WRK_SLACK, args.threads, args.connections),
                               stdout=subprocess.PIPE, text=True)
        restarts = []
        for i in range(args.restarts):
            slot = restart_start + LEAD + i * args.interval
            now = time.monotonic()
            if now < slot:
                time.sleep(slot - now)
            issued = time.monotonic()
            stack.restart()
            restarts.append((issued - restart_start, time.monotonic() - issued))
        last_done = restart_start + restarts[-1][0] + restarts[-1][1]
        restart_end = max(restart_start + args.window, last_done + 0.5)
        now = time.monotonic()
        if now < restart_end:
            time.sleep(restart_end - now)
        wrk.send_signal(signal.SIGINT)
        out, _ = wrk.communicate()
        restart_end = time.monotonic()
        cpu2 = stack.cpu()
        wrk_restarts = parse_wrk(out)
        probe.send_signal(signal.SIGTERM)
        probe.wait(30)
        requests = json.loads(probe_file.read_text())
        probe = None
        load_after = os.getloadavg()[0]
    finally:
        if probe is not None:
            probe.kill()
            probe.wait()
        stack.ns.kill()
        if cgroup is not None:
            remove_cgroup(cgroup)
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        progress(f"reload: {approach}: kept {directory}")
    return {
        "probe_steady": probe_figures(requests, steady_start, steady_end, args.probe_interval),
        "probe_restarts": probe_figures(requests, restart_start, restart_end, args.probe_interval),
        "wrk_steady": wrk_steady, "wrk_restarts": wrk_restarts,
        "restarts": restarts,  # (seconds into the window when issued, seconds it took)
        # CPU seconds per second of window: the stack, and PID 1 alone
        "cpu_steady": [(b - a) / (steady_end - steady_start) for a, b in zip(cpu0, cpu1)],
        "cpu_restarts": [(b - a) / (restart_end - restart_start) for a, b in zip(cpu1, cpu2)],
        "steady_window": steady_end - steady_start, "restart_window": restart_end - restart_start,
        "load": [load_before, load_after],
        # to place probe.json's requests and the logs' times: monotonic starts, wall − monotonic
        "anchors": {"steady_start": steady_start, "restart_start": restart_start,
                    "wall_minus_monotonic": time.time() - time.monotonic()},
    }


def remove_cgroup(cgroup: Path) -> None:
    """rmdir once the kernel has taken the last process out (unshare exited: all are gone)."""
    for _ in range(200):
        try:
            cgroup.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY for a moment after the last exit
            time.sleep(0.05)
    progress(f"reload: could not remove {cgroup}")


# ---------------------------------------------------------------------------- report

def ms(value) -> str:
    return fmt(None if value is None else value * 1000, "", 0)


def report(results: dict[str, list[dict]], args) -> str:
    rows = []
    for approach, trials in results.items():
        if not trials:
            continue
        n = sum(t["probe_restarts"]["requests"] for t in trials)
        failed = sum(t["probe_restarts"]["failed"] for t in trials)
        outcomes = Counter()
        for t in trials:
            outcomes.update(t["probe_restarts"]["outcomes"])
        failed_text = f"{failed} / {n} ({100 * failed / max(n, 1):.1f} %)"
        if outcomes:
            failed_text += ": " + ", ".join(f"{k} {v}" for k, v in outcomes.most_common())
        med = lambda key, part: median([t[key][part] for t in trials])
        took = median([d for t in trials for _, d in t["restarts"]])
        rows.append([LABELS[approach], failed_text,
                     f"{ms(med('probe_restarts', 'p99'))} ({ms(med('probe_steady', 'p99'))})",
                     f"{ms(med('probe_restarts', 'p99_open_loop'))} ({ms(med('probe_steady', 'p99_open_loop'))})",
                     f"{ms(med('probe_restarts', 'max'))}",
                     f"{fmt(med('wrk_restarts', 'rps'), '', 0)} ({fmt(med('wrk_steady', 'rps'), '', 0)})",
                     f"{ms(med('wrk_restarts', 'p99'))} ({ms(med('wrk_steady', 'p99'))})",
                     f"{fmt(median([t['cpu_restarts'][0] for t in trials]), '', 2)} "
                     f"({fmt(median([t['cpu_steady'][0] for t in trials]), '', 2)})",
                     f"{fmt(median([t['cpu_restarts'][1] for t in trials]) * 1000, '', 0)} "
                     f"({fmt(median([t['cpu_steady'][1] for t in trials]) * 1000, '', 0)})",
                     fmt(took, " s", 2)])
    text = table(["approach", "failed probe requests during restarts", "probe p99 ms: restarts (steady)",
                  "same, open-loop ms", "probe max ms", "wrk req/s: restarts (steady)", "wrk p99 ms: restarts (steady)",
                  "stack CPU/s: restarts (steady)", "PID 1 CPU ms/s", "one restart takes"], rows)
    lines = ["", ""]
    for approach in ("activator", "activator-usr2", "activator-uvicorn-ready"):
        trials = results.get(approach)
        if not trials:
            continue
        failed = sum(t["probe_restarts"]["failed"] for t in trials)
        p99 = median([t["probe_restarts"]["p99"] for t in trials])
        ok = failed <= GOAL_FAILED and p99 is not None and p99 <= GOAL_P99
        lines.append(f"{LABELS[approach]}: {failed} failed, probe p99 during restarts {ms(p99)} ms "
                     f"(goal: 0 failed and p99 ≤ {GOAL_P99 * 1000:.0f} ms: {'ok' if ok else 'MISSED'})")
    loads = [x for trials in results.values() for t in trials for x in t["load"]]
    if loads:
        lines.append(f"load average (1 min) during the trials: {min(loads):.2f} to {max(loads):.2f}")
    longer = [f"{LABELS[a]} {median([t['restart_window'] for t in trials]):.0f} s"
              for a, trials in results.items()
              if trials and median([t["restart_window"] for t in trials]) > args.window + 1]
    if longer:
        lines.append(f"restart windows longer than the steady one ({args.window:g} s), as the restarts "
                     "took longer than their interval: " + ", ".join(longer))
    return text + "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="rounds (default 1: about 6 minutes)")
    parser.add_argument("--only", default=",".join(APPROACHES), help="comma-separated approaches: "
                        + ", ".join(APPROACHES + UVICORN_APPROACHES))
    parser.add_argument("--restarts", type=int, default=10, help="restarts per trial (default 10)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between restarts (default 2)")
    parser.add_argument("--window", type=float,
                        help="seconds of each wrk window (default: long enough for the restarts, +1.5 s)")
    parser.add_argument("--instances", type=int, default=4, help="gunicorn processes (default 4)")
    parser.add_argument("--workers", type=int, default=1, help="sync workers per gunicorn (default 1); "
                        "supervisord and gunicorn HUP run one gunicorn with instances × workers")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (default 16)")
    parser.add_argument("--probe-interval", type=float, default=0.01, help="seconds between probe requests")
    parser.add_argument("--probe-timeout", type=float, default=5.0, help="probe request timeout (default 5 s)")
    parser.add_argument("--log-level", help="ACTIVATOR_LOG_LEVEL for activator (e.g. debug)")
    parser.add_argument("--no-cgroup", action="store_true",
                        help="run the stacks in the root CPU cgroup, where autogroups apply (see CgroupNamespace)")
    parser.add_argument("--log-json", action="store_true",
                        help="activator's log as JSON lines, with times (with --keep: output.log)")
    parser.add_argument("--keep", action="store_true", help="keep each trial's directory (logs, probe.json)")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = parser.parse_args()
    if args.window is None:
        args.window = LEAD + (args.restarts - 1) * args.interval + 1.5
    args.cgroup_parent = None if args.no_cgroup else cpu_cgroup_parent()
    approaches = [a for a in args.only.split(",") if a]
    unknown = set(approaches) - set(APPROACHES + UVICORN_APPROACHES)
    if unknown:
        parser.error(f"unknown approaches: {', '.join(sorted(unknown))}")

    results: dict[str, list[dict]] = {a: [] for a in approaches}
    errors: dict[str, list[str]] = {}
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-reload-") as tmp:
        workdir = Path(tmp)
        if args.keep:
            workdir = Path(tempfile.mkdtemp(prefix="bench-reload-"))
        for r in range(args.rounds):
            order = rotated(approaches, r)
            progress(f"reload: round {r + 1}/{args.rounds}: {', '.join(order)}")
            for approach in order:
                started = time.monotonic()
                try:
                    results[approach].append(trial(approach, workdir, args))
                except Exception as e:  # one approach failing does not end the run
                    progress(f"reload:   {approach} FAILED: {e}")
                    errors.setdefault(approach, []).append(str(e))
                    continue
                t = results[approach][-1]
                progress(f"reload:   {approach}: {t['probe_restarts']['failed']} failed of "
                         f"{t['probe_restarts']['requests']}, probe p99 {ms(t['probe_restarts']['p99'])} ms "
                         f"(steady {ms(t['probe_steady']['p99'])}), load {t['load'][1]:.2f}, "
                         f"{time.monotonic() - started:.0f} s")
    load_end = os.getloadavg()
    print(f"## Reload under load: {args.restarts} restarts at {args.interval:g} s intervals, "
          f"medians of {args.rounds} round{'s' * (args.rounds != 1)}\n")
    print(f"gunicorn sync workers: {args.instances * args.workers} in all ({args.instances} gunicorns × "
          f"{args.workers} worker{'s' * (args.workers != 1)}; one gunicorn × {args.instances * args.workers} "
          f"where it binds the port itself); wrk -t{args.threads} -c{args.connections}, two windows of "
          f"{args.window:g} s (steady, then restarts); probe: a new connection every "
          f"{args.probe_interval * 1000:g} ms, timeout {args.probe_timeout:g} s, p99 of the successful "
          f"requests. Every stack in {'a CPU cgroup of its own' if args.cgroup_parent else 'the root CPU cgroup (autogroups apply)'}. "
          f"Load average at start {' '.join(f'{x:.2f}' for x in load_start)}, at end "
          f"{' '.join(f'{x:.2f}' for x in load_end)}.\n")
    print(report(results, args), flush=True)
    for approach, messages in errors.items():
        print(f"\n{LABELS[approach]}: {len(messages)} trial(s) FAILED: {messages[0].splitlines()[0]}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"results": results, "errors": errors}, indent=1))
    if errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
