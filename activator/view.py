"""A read-only view of the running manager, for the HTTP endpoint.

Everything the endpoint shows comes through here: status.json's dict (status.snapshot), the
CPU and memory of each instance (usage.py, from /proc), the accept queues of the sockets,
the event counters, and each unit's recent output. The view never changes the manager; it
keeps only the previous CPU reading of each instance, to turn CPU seconds into a percentage.
"""

from __future__ import annotations

import time

from activator import status, usage
from activator.log import epoch_of

CPU_WINDOW = 60.0  # seconds: an older previous reading gives a percentage since the start


class View:
    def __init__(self, manager):
        self.manager = manager
        self.cpu_readings: dict[tuple[str, int, int], tuple[float, float]] = {}

    # ------------------------------------------------------------------ status

    def snapshot(self) -> dict:
        """status.json as written now, without CPU and memory."""
        return self.manager.snapshot()

    def status(self) -> dict:
        """What `activator status --json` prints: status.json with `cpu_percent` and
        `rss_bytes` per instance, plus `cpu_seconds` (the counter behind the percentage).
        The percentage covers the time since the previous request that read it (within a
        minute), else the instance's whole life: an endpoint inside PID 1 cannot sample over
        a pause as the command does."""
        data = self.snapshot()
        now = time.monotonic()
        readings = {}
        for name, unit in data["units"].items():
            for instance in unit["instances"]:
                pid = instance.get("pid")
                measured = usage.tree_usage(pid) if pid else None
                if measured is None:
                    instance["cpu_seconds"] = instance["cpu_percent"] = instance["rss_bytes"] = None
                    continue
                cpu, rss = measured
                key = (name, instance["instance"], pid)
                readings[key] = (now, cpu)
                instance["cpu_seconds"] = round(cpu, 2)
                instance["cpu_percent"] = self._percent(key, now, cpu, instance.get("started"))
                instance["rss_bytes"] = rss
        self.cpu_readings = readings  # only what is alive now: bounded by the instances
        return data

    def _percent(self, key, now: float, cpu: float, started: str | None) -> float | None:
        previous = self.cpu_readings.get(key)
        if previous is not None and 0.05 < now - previous[0] < CPU_WINDOW:
            return round(max(cpu - previous[1], 0.0) / (now - previous[0]) * 100, 1)
        if not started:
            return None
        began = epoch_of(started)
        return round(cpu / max(time.time() - began, 0.05) * 100, 1)

    # ------------------------------------------------------------------ readiness

    @staticmethod
    def readiness(data: dict) -> tuple[bool, list[dict]]:
        """As `activator status` exits: ready when every eager unit runs or has exited."""
        missing = status.not_ready(data)
        return not missing, missing

    # ------------------------------------------------------------------ sockets, counters

    def socket_queues(self) -> dict[str, tuple[int, int]]:
        """socket name -> (connections waiting to be accepted, backlog limit)."""
        return usage.accept_queues({name: bound.fd for name, bound in self.manager.sockets.items()})

    def accept_sockets(self) -> list[str]:
        """The names of the sockets whose connections activator accepts itself."""
        return [name for name, bound in self.manager.sockets.items() if bound.spec.accept]

    @property
    def counters(self):
        return self.manager.counters

    # ------------------------------------------------------------------ output

    def recent_output(self, unit: str, lines: int) -> list[dict]:
        """The last `lines` lines `unit` wrote, oldest first, as {time, stream, instance,
        text}, from the unit's in-memory log buffer where the manager keeps one."""
        buffer = getattr(self.manager, "recent_output", None)
        if buffer is None:
            return []
        return list(buffer(unit, lines))
