"""`status.json`, and `activator status` on top of it.

The running activator writes `$ACTIVATOR_RUNTIME_DIR/status.json` after every loop
iteration that changed a state (never on a timer), atomically: a new file renamed over the
old one, so a reader sees one whole version or the next. Its schema is SPEC §6's:

    {"pid", "version", "started", "generation",
     "units": {NAME: {"state", "description", "type", "start", "healthy", "failure",
                      "instances": [{"instance", "pid", "state", "started", "restarts",
                                     "exit_status", "status", "errno"}],
                      "connections" (accept units: processes running now),
                      "sockets": [{"name", "listen", "fd"}]}},
     "reload": {"requested", "completed", "outcome", "errors", "time", "generation"}}

`activator status` reads it and adds CPU and memory per instance (the instance's process
and its descendants, from psutil, which only this command imports).
"""

from __future__ import annotations

import json
import os
import sys
import time

from activator import __version__
from activator.log import rfc3339
from activator.service import S

STATUS_FILE = "status.json"


def _when(wall: float | None) -> str | None:
    return rfc3339(wall) if wall is not None else None


def unit_snapshot(service, sockets: dict) -> dict:
    unit = service.unit
    instances = []
    for slot in service.slots:
        proc = slot.proc
        instances.append({
            "instance": slot.number,
            "pid": proc.main_pid if proc is not None else None,
            "state": slot.state.value,
            "started": _when(slot.started_wall) if proc is not None else None,
            "restarts": slot.restarts,
            "exit_status": slot.exit_status,
            "status": slot.notify_status,
            "errno": slot.notify_errno,
        })
        if unit.health is not None:  # SPEC §10; the watch (probewatch.py) owns the verdict
            watch = proc.timers.get("health") if proc is not None else None
            instances[-1]["health"] = watch.state if watch else ("starting" if proc else None)
            instances[-1]["health_output"] = watch.output if watch else None
    state = service.state
    healthy = state in (S.RUNNING, S.EXITED, S.RELOADING) or (
        state is S.WAITING and (unit.start == "on-demand" or unit.accepts))
    failure = service.failure or next((s.failure for s in service.slots if s.state is S.FAILED and s.failure), None)
    entry = {
        "state": state.value,
        "description": unit.description,
        "type": unit.type,
        "start": unit.start,
        "healthy": healthy,
        "failure": failure,
        "instances": instances,
        "sockets": [{"name": s.name, "listen": sockets.get(s.name).address if s.name in sockets else str(s.listen),
                     "fd": 3 + i} for i, s in enumerate(unit.sockets)],
    }
    if unit.accepts:
        entry["connections"] = len(service.connections)
    return entry


def snapshot(services: dict, sockets, generation: int, started_wall: float, reload_record: dict) -> dict:
    """status.json's content, from what the running activator knows (read only)."""
    return {
        "pid": os.getpid(),
        "version": __version__,
        "started": rfc3339(started_wall),
        "generation": generation,
        "units": {name: unit_snapshot(service, sockets) for name, service in services.items()},
        "reload": dict(reload_record),
    }


class StatusWriter:
    def __init__(self, runtime_dir: str, log):
        self.log = log
        self.path = os.path.join(runtime_dir, STATUS_FILE)

    def write(self, snapshot: dict) -> None:
        data = json.dumps(snapshot, indent=1).encode() + b"\n"
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, data)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as e:
            self.log.warning(f"cannot write {self.path}: {e.strerror}")


# ---------------------------------------------------------------------- the command

def read(runtime_dir: str) -> dict:
    """The status.json last written, or OSError/ValueError saying why there is none."""
    with open(os.path.join(runtime_dir, STATUS_FILE), "rb") as f:
        data = json.load(f)
    if not isinstance(data.get("pid"), int):
        raise ValueError("status.json has no pid")
    return data  # whether that activator still runs, and where: locate.activator_pid


def add_usage(data: dict, interval: float = 0.1, seen_here=lambda pid: pid) -> None:
    """cpu_percent and rss_bytes per instance: its process tree, sampled over `interval`.
    `seen_here` turns activator's pids into this process's (see locate.py)."""
    import psutil

    trees: dict[tuple[str, int], list] = {}
    for name, unit in data.get("units", {}).items():
        for instance in unit.get("instances", []):
            pid = instance.get("pid") and seen_here(instance["pid"])
            procs = []
            if pid:
                try:
                    root = psutil.Process(pid)
                    procs = [root] + root.children(recursive=True)
                except psutil.Error:
                    procs = []
            trees[(name, instance["instance"])] = procs

    def cpu(procs):
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    before = {key: cpu(procs) for key, procs in trees.items()}
    time.sleep(interval)
    for name, unit in data.get("units", {}).items():
        for instance in unit.get("instances", []):
            procs = trees[(name, instance["instance"])]
            rss = 0
            for p in procs:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            used = cpu(procs) - before[(name, instance["instance"])]
            instance["cpu_percent"] = round(max(used, 0.0) / interval * 100, 1) if procs else None
            instance["rss_bytes"] = rss if procs else None


def healthy(data: dict) -> bool:
    """SPEC: every eager unit running or exited; on-demand units do not count."""
    return all(unit.get("healthy") or unit.get("start") == "on-demand"
               for unit in data.get("units", {}).values())


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return "-"


def _uptime(started: str | None) -> str:
    if not started:
        return "-"
    from datetime import datetime

    seconds = time.time() - datetime.fromisoformat(started.replace("Z", "+00:00")).timestamp()
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:max(width - 1, 0)] + "…"


def table(data: dict, with_usage: bool = True) -> str:
    """The status as a table that fits 100 columns: one line per unit, one per extra instance."""
    header = f"{'UNIT':<16} {'STATE':<10} {'PID':>7} {'RESTARTS':>8} {'UPTIME':>7} "
    header += f"{'CPU%':>5} {'MEM':>6}  DESCRIPTION · SOCKETS · STATUS"
    lines = [header]
    for name, unit in data.get("units", {}).items():
        instances = unit.get("instances") or [{}]
        several = len(instances) > 1
        extra = ", ".join(s["listen"] for s in unit.get("sockets", []))
        if unit.get("connections") is not None:
            extra = f"{extra} ({unit['connections']} connections)"
        extra = " · ".join(t for t in (unit.get("description"), extra) if t)
        if several:
            lines.append(_row(name, unit["state"], {}, "", "", extra, with_usage))
        for i, instance in enumerate(instances):
            label = f"  .{instance.get('instance')}" if several else name
            text = instance.get("status") or ("" if several else "")
            if instance.get("health"):
                text = " · ".join(t for t in (f"health: {instance['health']}", text) if t)
            if unit.get("failure") and not several:
                text = text or unit["failure"]
            info = extra if not several and i == 0 else ""
            info = " · ".join(t for t in (info, text) if t)
            lines.append(_row(label, instance.get("state", unit["state"]) if several else unit["state"],
                              instance, None, None, info, with_usage))
    summary = (f"activator {data.get('version', '?')}, pid {data.get('pid')}, generation "
               f"{data.get('generation')}, up {_uptime(data.get('started'))}")
    return "\n".join(lines + [summary]) + "\n"


def _row(label, state, instance, _a, _b, info, with_usage) -> str:
    pid = instance.get("pid")
    restarts = instance.get("restarts")
    cpu = instance.get("cpu_percent") if with_usage else None
    rss = instance.get("rss_bytes") if with_usage else None
    row = (f"{_cut(label, 16):<16} {state:<10} {pid if pid else '-':>7} "
           f"{restarts if restarts is not None else '':>8} {_uptime(instance.get('started')) if instance else '':>7} "
           f"{(f'{cpu:.1f}' if cpu is not None else '-') if instance else '':>5} "
           f"{_size(rss) if instance else '':>6}  ")
    return row + _cut(info, 100 - len(row))


def command(runtime_dir: str, as_json: bool) -> int:
    try:
        data = read(runtime_dir)
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"activator status: no running activator in {runtime_dir}: {reason}", file=sys.stderr)
        return 1
    from activator import locate

    here = locate.activator_pid(runtime_dir, data["pid"])
    if here is None:  # e.g. pid 1 of a PID namespace that has ended, read from the host
        print(f"activator status: no running activator in {runtime_dir}: activator (pid "
              f"{data['pid']}) is not running here; status.json is stale", file=sys.stderr)
        return 1
    add_usage(data, seen_here=locate.pid_translator(here, data["pid"]))
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        sys.stdout.write(table(data))
    return 0 if healthy(data) else 1
