"""What the benchmarks share: reading /proc, running a program as PID 1 of a new PID
namespace, probing HTTP, statistics and markdown tables.

Nothing here knows about activator: every peer is started and observed the same way.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable  # .venv's python: activator is installed there
BENCH_VENV = ROOT / ".cache" / "bench-venv" / "bin"
# activator's console script, as an image runs it: the one beside .venv's python. It runs
# the tree under test (ROOT, put first on PYTHONPATH by activator_environment).
ACTIVATOR = str(Path(PYTHON).parent / "activator")
SYSTEMD_TOOLS = ROOT / ".cache" / "systemd-tools" / "bin"
TICK = os.sysconf("SC_CLK_TCK")
MiB = 1024 * 1024
PYCACHE = ROOT / ".cache" / "bench-pycache"


def peer_environment(extra: dict | None = None) -> dict:
    """The environment every peer runs in.

    Python peers must start from compiled bytecode, as they do in an image (pip and apt
    compile at install time). This project's checkout is an editable install and the
    developers' shells set PYTHONDONTWRITEBYTECODE, which would make activator compile its
    sources at every start (+40 ms, +3 MiB) while supervisor and circus have their .pyc.
    So: bytecode allowed, kept apart under .cache/bench-pycache, and a warm-up run first.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    env.update(extra or {})
    return env


def activator_environment(runtime: str | Path, extra: dict | None = None) -> dict:
    """What activator's console script needs beyond peer_environment: its runtime directory,
    and the tree under test first on the path (so a worktree measures its own sources)."""
    path = os.environ.get("PYTHONPATH")
    env = {"ACTIVATOR_RUNTIME_DIR": str(runtime),
           "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    env.update(extra or {})
    return env


def activator_check(units: str | Path) -> None:
    """`activator check --units DIR`, once, as an image build does before activator first
    starts: it validates the units (and writes beside them whatever cache boot can use)."""
    result = subprocess.run([ACTIVATOR, "check", "--units", str(units)], env=peer_environment(
        activator_environment(Path(units).parent / "run")), capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"activator check --units {units} failed ({result.returncode}):\n"
                           f"{result.stdout}{result.stderr}")


def activator_has_option(option: str) -> bool:
    """Whether `activator --help` mentions `option` (options that not every version has)."""
    result = subprocess.run([ACTIVATOR, "--help"], env=peer_environment(activator_environment("/nonexistent")),
                            capture_output=True, text=True, timeout=60)
    return option in result.stdout


# ---------------------------------------------------------------------------- peers' configurations
#
# Each peer gets the same services, `commands` (name → argv, started in that order), written
# in its own format, and returns (argv to run as PID 1, extra environment). `stop_timeouts`
# (name → seconds) gives a service a stop timeout where the peer has such a setting.

def sh_quote(arg: str) -> str:
    return "'" + arg.replace("'", "'\\''") + "'"


def activator_peer(directory: Path, commands: dict[str, list[str]], stop_timeouts: dict | None = None,
                   options: list[str] | None = None) -> tuple[list[str], dict]:
    """One unit file per service; activator's console script, after `activator check`."""
    units = directory / "units"
    units.mkdir()
    for name, argv in commands.items():
        text = f"exec: {json.dumps(argv)}\n"
        if name in (stop_timeouts or {}):
            text += f"timeout_stop_sec: {stop_timeouts[name]}\n"
        (units / f"{name}.yaml").write_text(text)
    activator_check(units)
    return [ACTIVATOR, *(options or []), "--units", str(units)], activator_environment(directory / "run")


def shell_script(directory: Path, commands: dict[str, list[str]]) -> Path:
    """For tini and dumb-init: a script that starts everything in the background, then waits."""
    lines = ["#!/bin/sh"]
    lines += [" ".join(sh_quote(a) for a in argv) + " &" for argv in commands.values()]
    lines.append("wait")
    script = directory / "services.sh"
    script.write_text("\n".join(lines) + "\n")
    return script


def tini_peer(directory: Path, commands: dict[str, list[str]], stop_timeouts=None) -> tuple[list[str], dict]:
    return ["/usr/bin/tini", "--", "/bin/sh", str(shell_script(directory, commands))], {}


def dumb_init_peer(directory: Path, commands: dict[str, list[str]], stop_timeouts=None) -> tuple[list[str], dict]:
    return ["/usr/bin/dumb-init", "/bin/sh", str(shell_script(directory, commands))], {}


def supervisord_conf(directory: Path) -> Path:
    return directory / "supervisord.conf"


def supervisord_peer(directory: Path, commands: dict[str, list[str]], stop_timeouts: dict | None = None,
                     control: bool = False) -> tuple[list[str], dict]:
    """One [program:] section per service. With `control`, the unix socket and RPC interface
    that `supervisorctl -c CONF` needs, and enough descriptors for every program's pipes."""
    lines = ["[supervisord]", "nodaemon=true", "user=root", f"logfile={directory}/supervisord.log",
             f"pidfile={directory}/supervisord.pid", f"childlogdir={directory}"]
    if control:
        lines += [f"minfds={max(1024, 8 * len(commands) + 64)}", "",
                  "[unix_http_server]", f"file={directory}/supervisor.sock", "",
                  "[rpcinterface:supervisor]",
                  "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
                  "[supervisorctl]", f"serverurl=unix://{directory}/supervisor.sock"]
    lines.append("")
    for name, argv in commands.items():
        lines += [f"[program:{name}]", "command=" + " ".join(argv)]
        if name in (stop_timeouts or {}):
            lines.append(f"stopwaitsecs={stop_timeouts[name]}")
        lines.append("")
    conf = supervisord_conf(directory)
    conf.write_text("\n".join(lines))
    return [str(BENCH_VENV / "supervisord"), "-c", str(conf)], {}


def circus_endpoint(directory: Path) -> str:
    return f"ipc://{directory}/ctrl.sock"


def circusd_peer(directory: Path, commands: dict[str, list[str]], stop_timeouts: dict | None = None
                 ) -> tuple[list[str], dict]:
    """One [watcher:] per service."""
    lines = ["[circus]", f"endpoint = {circus_endpoint(directory)}", f"pubsub_endpoint = ipc://{directory}/pub.sock",
             "statsd = False", ""]
    for name, argv in commands.items():
        lines += [f"[watcher:{name}]", f"cmd = {argv[0]}"]
        if argv[1:]:
            lines.append("args = " + " ".join(argv[1:]))
        if name in (stop_timeouts or {}):
            lines.append(f"graceful_timeout = {stop_timeouts[name]}")
        lines.append("")
    conf = directory / "circus.ini"
    conf.write_text("\n".join(lines))
    return [str(BENCH_VENV / "circusd"), str(conf)], {}


# ---------------------------------------------------------------------------- /proc

def children_of(pid: int) -> list[int]:
    """Direct children of `pid`, whichever of its threads is their parent."""
    result = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                result.extend(int(p) for p in f.read().split())
    except OSError:
        pass
    return result


def descendants_of(pid: int) -> list[int]:
    result, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            result.append(child)
            todo.append(child)
    return result


def stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, ...]; None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data[data.rfind(b")") + 2:].decode().split()


def state_of(pid: int) -> str | None:
    fields = stat_fields(pid)
    return fields[0] if fields else None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), in seconds; 0 if it is gone."""
    fields = stat_fields(pid)
    if not fields:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def cpu_seconds_with_children(pid: int) -> float:
    """cpu_seconds plus that of the children it has reaped (cutime + cstime)."""
    fields = stat_fields(pid)
    if not fields:
        return 0.0
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICK  # fields 14-17 of stat(5)


def status_field(pid: int, name: str) -> int:
    """A number from /proc/PID/status (VmRSS is in kB)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise KeyError(name)


def rss_bytes(pid: int) -> int:
    return status_field(pid, "VmRSS") * 1024


def context_switches(pid: int) -> int:
    """Voluntary + involuntary context switches of every thread of `pid`: its wake-ups."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                        total += int(line.split()[1])
        except OSError:
            pass  # a thread that just ended
    return total


def comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


# ---------------------------------------------------------------------------- waiting

def wait_for(predicate, timeout: float, interval: float = 0.005, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- PID 1

class Namespace:
    """`argv` run as PID 1 of a new PID namespace: `unshare --pid --fork --mount-proc argv`.

    unshare forwards no signal, so signals go to the namespace's PID 1 by its host pid
    (`pid1`). unshare exits only when PID 1 has exited, and the kernel has killed and reaped
    every other process of the namespace by then: unshare's exit means "everything gone".
    """

    def __init__(self, argv: list[str], *, env: dict | None = None, cwd: str | Path | None = None,
                 log: str | Path | None = None):
        self.argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
        self.env = peer_environment(env)
        self.cwd = cwd
        self.log_path = log
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self._pid1: int | None = None

    def start(self) -> "Namespace":
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.started = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        if out is not subprocess.DEVNULL:
            out.close()
        return self

    @property
    def pid1(self) -> int:
        if self._pid1 is None:
            self._pid1 = wait_for(lambda: (children_of(self.proc.pid) or [None])[0], 10,
                                  interval=0.001, what="PID 1 under unshare")
        return self._pid1

    def output_tail(self, lines: int = 15) -> str:
        """The end of what the namespace wrote, for error messages."""
        try:
            text = Path(self.log_path).read_text(errors="replace") if self.log_path else ""
        except OSError:
            return ""
        exited = "" if self.proc.poll() is None else f" (exited with {self.proc.returncode})"
        return f"{self.argv[4]}{exited}, last output:\n" + "\n".join(text.splitlines()[-lines:])

    def processes(self) -> list[int]:
        """Host pids of every process in the namespace but PID 1."""
        return descendants_of(self.pid1)

    def signal(self, signum: int) -> None:
        os.kill(self.pid1, signum)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL PID 1: the kernel then kills the whole namespace."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            if self._pid1 is not None or children_of(self.proc.pid):
                os.kill(self.pid1, signal.SIGKILL)
        except (ProcessLookupError, TimeoutError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def __enter__(self) -> "Namespace":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.kill()


class InNamespace:
    """A benchmark's run of one peer, its Namespace in `self.ns`: `with` starts it, and kills
    whatever is left of it at the end."""

    ns: Namespace

    def __enter__(self):
        self.ns.start()
        return self

    def __exit__(self, *exc) -> None:
        self.ns.kill()


# ---------------------------------------------------------------------------- network

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(port: int, timeout: float = 0.5) -> bool:
    """One GET /; True on a 200 response, False if refused or anything else."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n")
            return s.recv(64).startswith((b"HTTP/1.1 200", b"HTTP/1.0 200"))
    except OSError:
        return False


def wait_http_ok(port: int, timeout: float, interval: float = 0.001) -> float:
    """Poll until a GET gets 200; the monotonic time it did."""
    wait_for(lambda: http_ok(port), timeout, interval, what=f"HTTP 200 on port {port}")
    return time.monotonic()


# ---------------------------------------------------------------------------- figures

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}{unit}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A markdown table, columns padded so that it also reads well as plain text."""
    cells = [headers] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def rotated(items: list, round_number: int) -> list:
    """Round r starts with item r: no peer always runs first (or just after a noisy one)."""
    k = round_number % len(items)
    return items[k:] + items[:k]
