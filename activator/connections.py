"""The processes of `accept` units, one per connection: what they leave behind.

A per-connection process is never restarted, so its failures would pass unseen: each unit
counts the connections it served and those whose process failed, keeps the last failure's
exit status for status.json, and logs failures as warnings, at most one a second, the next
one saying how many were not shown in between.
"""

from __future__ import annotations

import time

from activator.log import Log
from activator.service import Process, Service, is_clean

WARN_EVERY_SECONDS = 1.0


class ConnectionLog:
    def __init__(self, log: Log):
        self.log = log
        self.last_warning: dict[str, float] = {}  # unit -> when its last failure was logged
        self.unshown: dict[str, int] = {}  # unit -> failures not logged since

    def ended(self, service: Service, proc: Process) -> None:
        service.connections.pop(proc.pid, None)
        service.connections_served += 1
        status = proc.status or 0
        if is_clean(status, proc.result) or proc.stop_reason is not None:
            return
        service.connections_failed += 1
        service.last_connection_failure = status
        name = service.name
        now = time.monotonic()
        if now - self.last_warning.get(name, -WARN_EVERY_SECONDS) < WARN_EVERY_SECONDS:
            self.unshown[name] = self.unshown.get(name, 0) + 1
            return
        self.last_warning[name] = now
        unshown = self.unshown.pop(name, 0)
        more = f" ({unshown} more failed since the last one shown)" if unshown else ""
        self.log.warning(f"connection process exited ({status}){more}", **proc.where)
