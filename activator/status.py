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
and its descendants, from one reading of the process table).
"""

from __future__ import annotations

# json is imported in the functions that use it: PID 1 starts its first service before it needs it.
import contextlib
import os
import sys
import time

from activator import __version__, locate
from activator.log import rfc3339
from activator.service import S

STATUS_FILE = "status.json"
NOT_RUNNING = 3  # the exit status of a command that finds no activator (SPEC §8)
RETRY_FIRST, RETRY_MAX = 1.0, 30.0
MAX_STATUS_BYTES = 64 << 20  # some 100,000 units' worth


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
        if slot.candidate is not None:  # a rolling restart's replacement, while it starts
            instances[-1]["replacement"] = {"pid": slot.candidate.main_pid, "state": "starting",
                                            "started": _when(slot.candidate.started_wall)}
        if unit.health is not None:  # SPEC §10; the watch (probewatch.py) owns the verdict
            watch = proc.timers.get("health") if proc is not None else None
            instances[-1]["health"] = watch.state if watch else ("starting" if proc else None)
            instances[-1]["health_output"] = watch.output if watch else None
    state = service.state
    # WAITING: serving from its socket (on-demand, accept, or an eager unit whose process
    # ended cleanly: the next connection starts it).
    healthy = state in (S.RUNNING, S.EXITED, S.RELOADING, S.STOPPED, S.WAITING)
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
        entry["connections_served"] = service.connections_served
        entry["connections_failed"] = service.connections_failed
        entry["last_failure_status"] = service.last_connection_failure
    if service.scaled is not None:
        entry["scaled"] = {"instances": service.scaled, "in_files": unit.instances}
    return entry


def snapshot(services: dict, sockets, generation: int, started_wall: float, reload_record: dict) -> dict:
    """status.json's content, from what the running activator knows (read only)."""
    return {
        "pid": os.getpid(),
        "version": __version__,
        "started": rfc3339(started_wall),
        "generation": generation,
        "process_start": locate.start_ticks("self"),  # proves who activator is (locate.py)
        "units": {name: unit_snapshot(service, sockets) for name, service in services.items()},
        "reload": dict(reload_record),
    }


class StatusWriter:
    """Writes status.json after changes. When the runtime directory is full (ENOSPC) or
    read-only (EROFS), each cause is logged once, and recovery once; the temporary file is
    removed, and a retry waits on a timer (1 s, doubling up to 30 s) that exists only while
    writing fails: the last status is written as soon as it can be, changes or not."""

    def __init__(self, runtime_dir: str, log, loop):
        self.log = log
        self.loop = loop
        self.path = os.path.join(runtime_dir, STATUS_FILE)
        self.failing: int | None = None  # the errno being reported, while writes fail
        self.retry = None
        self.retry_delay = RETRY_FIRST
        self.last: dict | None = None  # kept only while writing fails, for the retry

    def write(self, snapshot: dict) -> None:
        import json
        # Compact: the json module encodes it in C only without indentation (8 times faster
        # for 1,000 units, where status.json is rewritten after every change).
        data = json.dumps(snapshot, separators=(",", ":")).encode() + b"\n"
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:  # a full disk may take part of it, then refuse the rest
                    view = view[os.write(fd, view):]
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            self.last = snapshot
            self.failed(e)
            return
        self.last = None
        if self.failing is not None:
            self.failing = None
            self.log.info(f"{self.path} is written again")
        if self.retry is not None:
            self.retry.cancel()
            self.retry = None
        self.retry_delay = RETRY_FIRST

    def failed(self, error: OSError) -> None:
        if self.failing != error.errno:
            self.failing = error.errno
            self.log.warning(f"cannot write {self.path}: {error.strerror}; it stays as it "
                                     "was until it can be written again")
        if self.retry is None:
            self.retry = self.loop.call_later(self.retry_delay, self._retry)
            self.retry_delay = min(self.retry_delay * 2, RETRY_MAX)

    def _retry(self) -> None:
        self.retry = None
        self.write(self.last)


def check_runtime_dir(path: str) -> None:
    """At boot: OSError unless `path` exists or can be made, and files can be made in it."""
    os.makedirs(path, mode=0o755, exist_ok=True)
    probe = os.path.join(path, f".activator-{os.getpid()}.probe")
    os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    os.unlink(probe)


# ---------------------------------------------------------------------- the command

class Damaged(ValueError):
    """status.json is there but cannot be what activator wrote: cut short, another shape, huge."""

    def __init__(self, why: str):
        super().__init__(f"status.json is damaged: {why}")


def read(runtime_dir: str, retries: int = 1) -> dict:
    """The status.json last written; OSError when there is none, Damaged when it cannot be
    read. A damaged file is read again once, a moment later: on a filesystem where renaming
    is not atomic, a reader may meet the writer half-way."""
    path = os.path.join(runtime_dir, STATUS_FILE)
    for attempt in range(retries + 1):
        try:
            return _read_once(path)
        except Damaged:
            if attempt == retries:
                raise
            time.sleep(0.05)
    raise AssertionError("not reached")  # pragma: no cover


def _read_once(path: str) -> dict:
    import json
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_STATUS_BYTES:
            raise Damaged(f"{size} bytes, more than activator ever writes ({MAX_STATUS_BYTES})")
        text = f.read(MAX_STATUS_BYTES + 1)
    if len(text) > MAX_STATUS_BYTES:
        raise Damaged(f"more than {MAX_STATUS_BYTES} bytes")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSON or UTF-8 errors, absurd nesting
        raise Damaged(f"not valid JSON ({e.__class__.__name__}): cut short, or not written by activator") from None
    _check_shape(data)
    return data  # whether that activator still runs, and where: locate.activator_pid


_OPTIONAL_TEXT = (str, type(None))
_OPTIONAL_NUMBER = (int, type(None))
_UNIT_KEYS = {"state": (str,), "description": _OPTIONAL_TEXT, "type": _OPTIONAL_TEXT, "start": _OPTIONAL_TEXT,
              "failure": _OPTIONAL_TEXT, "connections": _OPTIONAL_NUMBER, "instances": (list,),
              "sockets": (list,)}
_INSTANCE_KEYS = {"instance": (int,), "pid": _OPTIONAL_NUMBER, "state": (str,), "started": _OPTIONAL_TEXT,
                  "restarts": _OPTIONAL_NUMBER, "exit_status": _OPTIONAL_NUMBER, "status": _OPTIONAL_TEXT,
                  "errno": _OPTIONAL_NUMBER}
_SOCKET_KEYS = {"name": (str,), "listen": (str,), "fd": _OPTIONAL_NUMBER}


def _check_shape(data) -> None:
    """Damaged unless every value `status`, `reload` and the table use has the type they expect."""
    if not isinstance(data, dict):
        raise Damaged("not a JSON object")
    _check_keys(data, {"pid": (int,), "version": _OPTIONAL_TEXT, "started": _OPTIONAL_TEXT,
                       "generation": _OPTIONAL_NUMBER, "process_start": _OPTIONAL_NUMBER,
                       "units": (dict,), "reload": (dict,)}, "")
    if data["pid"] <= 0:
        raise Damaged(f"pid {data['pid']}")
    if data.get("started") is not None:
        _check_time(data["started"], "started")
    for name, unit in data.get("units", {}).items():
        where = f"units.{name}"
        if not isinstance(unit, dict):
            raise Damaged(f"{where} is not an object")
        _check_keys(unit, _UNIT_KEYS, where)
        for i, instance in enumerate(unit.get("instances", [])):
            if not isinstance(instance, dict):
                raise Damaged(f"{where}.instances[{i}] is not an object")
            _check_keys(instance, _INSTANCE_KEYS, f"{where}.instances[{i}]")
            if instance.get("started") is not None:
                _check_time(instance["started"], f"{where}.instances[{i}].started")
        for i, socket in enumerate(unit.get("sockets", [])):
            if not isinstance(socket, dict):
                raise Damaged(f"{where}.sockets[{i}] is not an object")
            _check_keys(socket, _SOCKET_KEYS, f"{where}.sockets[{i}]")
    _check_keys(data.get("reload", {}), {"requested": _OPTIONAL_NUMBER, "completed": _OPTIONAL_NUMBER,
                         "outcome": _OPTIONAL_TEXT, "errors": (list, type(None)),
                         "generation": _OPTIONAL_NUMBER}, "reload")


def _check_keys(mapping: dict, expected: dict, where: str) -> None:
    for key, types in expected.items():
        if key not in mapping:
            if type(None) in types or key in ("instances", "sockets", "units", "reload"):
                continue
            raise Damaged(f"{where + '.' if where else ''}{key} is missing")
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise Damaged(f"{where + '.' if where else ''}{key} is {type(value).__name__}, not "
                          f"{' or '.join(t.__name__ for t in types if t is not type(None))}")


def _check_time(text: str, where: str) -> None:
    from datetime import datetime
    try:
        datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Damaged(f"{where} is not a time: {text[:40]!r}") from None


def _process_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (parent pid, CPU ticks, resident pages) of every process here: one pass over /proc."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat(name)
            if fields is not None:
                table[int(name)] = fields
    return table


def _stat(pid) -> tuple[int, int, int] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        fields = data[data.rindex(b")") + 2:].split()
        return int(fields[1]), int(fields[11]) + int(fields[12]), int(fields[21])
    except (OSError, ValueError, IndexError):
        return None


def add_usage(data: dict, interval: float = 0.1, seen_here=lambda pid: pid) -> None:
    """cpu_percent and rss_bytes per instance: its process and their descendants, sampled
    over `interval`. The process table is read once, whatever the number of units; then only
    the processes that count are read again. `seen_here` turns activator's pids into this
    process's (see locate.py)."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for pid, (parent, _, _) in table.items():
        children.setdefault(parent, []).append(pid)
    trees: dict[tuple[str, int], list[int]] = {}
    for name, unit in data.get("units", {}).items():
        for instance in unit.get("instances", []):
            pid = instance.get("pid") and seen_here(instance["pid"])
            tree = [pid] if pid in table else []
            for member in tree:  # grows while it is walked: every descendant
                tree.extend(children.get(member, ()))
            trees[(name, instance["instance"])] = tree
    time.sleep(interval)
    tick, page = os.sysconf("SC_CLK_TCK"), os.sysconf("SC_PAGE_SIZE")
    for name, unit in data.get("units", {}).items():
        for instance in unit.get("instances", []):
            tree = trees[(name, instance["instance"])]
            now = {pid: fields for pid in tree if (fields := _stat(pid)) is not None}
            used = sum(fields[1] - table[pid][1] for pid, fields in now.items()) / tick
            instance["cpu_percent"] = round(max(used, 0.0) / interval * 100, 1) if tree else None
            instance["rss_bytes"] = sum(fields[2] for fields in now.values()) * page if tree else None


def healthy(data: dict) -> bool:
    """SPEC: every eager unit running or exited; on-demand units do not count."""
    return not not_ready(data)


WHY_NOT_READY = {"starting": "started, not ready yet", "restarting": "exited; waiting to restart",
                 "stopping": "stopping", "waiting": "not started yet: waiting for its dependencies",
                 "failed": "failed", "exited": "exited"}


def not_ready(data: dict) -> list[dict]:
    """The eager units that keep `healthy` false, each with its state and why."""
    result = []
    for name, unit in data.get("units", {}).items():
        if unit.get("healthy") or unit.get("start") == "on-demand":
            continue
        why = unit.get("failure") or next(
            (i["status"] for i in unit.get("instances", []) if i.get("status")), None)
        state = unit.get("state")
        result.append({"unit": name, "state": state, "why": why or WHY_NOT_READY.get(state, state)})
    return result


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


def table(data: dict, with_usage: bool = True, width: int | None = 100) -> str:
    """The status as a table, one line per unit, one per extra instance; each line cut to
    `width` columns (None: never cut, for a pipe, a file, `--wide`)."""
    header = f"{'UNIT':<16} {'STATE':<10} {'PID':>7} {'RESTARTS':>8} {'UPTIME':>7} "
    header += f"{'CPU%':>5} {'MEM':>6}  DESCRIPTION · SOCKETS · STATUS"
    lines = [header]
    for name, unit in data.get("units", {}).items():
        instances = unit.get("instances") or [{}]
        several = len(instances) > 1
        extra = ", ".join(f"{s['name']} {s['listen']}" for s in unit.get("sockets", []))
        if unit.get("scaled"):
            extra = " · ".join(t for t in (f"scaled to {unit['scaled']['instances']} "
                                           f"(files: {unit['scaled']['in_files']})", extra) if t)
        if unit.get("connections") is not None:
            extra = f"{extra} ({unit['connections']} connections)"
        extra = " · ".join(t for t in (unit.get("description"), extra) if t)
        if several:
            lines.append(_row(name, unit["state"], {}, extra, with_usage, width))
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
                              instance, info, with_usage, width))
            if instance.get("replacement"):
                lines.append(_row(f"{label.strip() if several else name} (new)", "starting",
                                  instance["replacement"], "replacement", with_usage, width))
    summary = (f"activator {data.get('version', '?')}, pid {data.get('pid')}, generation "
               f"{data.get('generation')}, up {_uptime(data.get('started'))}")
    return "\n".join(lines + [summary]) + "\n"


def _row(label, state, instance, info, with_usage, width) -> str:
    pid = instance.get("pid")
    restarts = instance.get("restarts")
    cpu = instance.get("cpu_percent") if with_usage else None
    rss = instance.get("rss_bytes") if with_usage else None
    row = (f"{_cut(label, 16):<16} {state:<10} {pid if pid else '-':>7} "
           f"{restarts if restarts is not None else '':>8} {_uptime(instance.get('started')) if instance else '':>7} "
           f"{(f'{cpu:.1f}' if cpu is not None else '-') if instance else '':>5} "
           f"{_size(rss) if instance else '':>6}  ")
    return row + (_cut(info, width - len(row)) if width else info)


def command(runtime_dir: str, as_json: bool, units: list[str] = (), wide: bool = False) -> int:
    import json
    try:
        data = read(runtime_dir)
    except Damaged as e:
        print(f"activator status: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        print(f"activator status: no running activator in {runtime_dir}: {reason}", file=sys.stderr)
        return NOT_RUNNING
    here = locate.activator_pid(runtime_dir, data["pid"], data.get("process_start"))
    if here is None:  # e.g. pid 1 of a PID namespace that has ended, read from the host
        print(f"activator status: no running activator in {runtime_dir}: activator (pid "
              f"{data['pid']}) is not running here; status.json is stale", file=sys.stderr)
        return NOT_RUNNING
    unknown = [u for u in units if u not in data.get("units", {})]
    if unknown:
        print(f"activator status: no unit named {', '.join(unknown)}", file=sys.stderr)
        return 1
    if units:
        data["units"] = {name: data["units"][name] for name in units}
    add_usage(data, seen_here=locate.pid_translator(here, data["pid"]))
    if as_json:
        print(json.dumps(data, indent=2))
    else:
        width = None if wide or not sys.stdout.isatty() else max(os.get_terminal_size().columns, 60)
        sys.stdout.write(table(data, width=width))
    return 0 if healthy(data) else 1
