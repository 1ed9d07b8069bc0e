"""Event counts since boot, for `/metrics`: what status.json does not keep.

The manager bumps these where the events happen (one line each); nothing else writes them.
Plain dicts and ints: the counters cost PID 1 nothing when the HTTP endpoint is off.
"""

from __future__ import annotations


class Counters:
    __slots__ = ("reloads", "notify_messages", "watchdog_timeouts", "connections")

    def __init__(self):
        self.reloads = {"applied": 0, "refused": 0}
        self.notify_messages = {"accepted": 0, "refused": 0}
        self.watchdog_timeouts: dict[str, int] = {}  # unit -> count
        self.connections: dict[str, int] = {}  # accept socket -> connections accepted

    def reload_finished(self, command: str, outcome: str | None) -> None:
        """A reload of the unit files ended: applied (with or without unit errors) or refused.
        A rolling restart (SIGUSR2) reads no files and is not a reload."""
        if command == "reload" and outcome is not None:
            self.reloads["refused" if outcome == "refused" else "applied"] += 1

    def notify_message(self, accepted: bool) -> None:
        self.notify_messages["accepted" if accepted else "refused"] += 1

    def watchdog_timeout(self, unit: str) -> None:
        self.watchdog_timeouts[unit] = self.watchdog_timeouts.get(unit, 0) + 1

    def connection(self, socket_name: str) -> None:
        self.connections[socket_name] = self.connections.get(socket_name, 0) + 1
