"""activator's own messages, and the one writer that service output goes through too.

Text format: `activator: unit web.2 (pid 42): message` on stderr. JSON format (`--log-format
json`): one object per line with the keys of SPEC §6, for activator's messages and for service
output alike. Writes are plain blocking writes to fd 1 or 2: a reader that stops reading stalls
activator, as it would any program writing to it, but never loses or reorders lines.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}


def rfc3339(wall: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if wall is None else wall, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except BlockingIOError:
            # Someone made our stdout non-blocking (a service with output: inherit shares it).
            import select
            select.select([], [fd], [])
            continue
        except OSError:
            return  # nobody is reading (EPIPE, EBADF): output is lost, activator goes on
        view = view[written:]


class Log:
    def __init__(self, json_format: bool = False, level: int = INFO):
        self.json = json_format
        self.level = level
        # unit name -> its number of instances; set by the manager so that a message about a
        # single-instance unit says instance 1 in JSON, as its output lines do
        self.instances_of = lambda unit: None

    def debug(self, message: str, **where) -> None:
        if self.level <= DEBUG:
            self.emit(DEBUG, message, **where)

    def info(self, message: str, **where) -> None:
        self.emit(INFO, message, **where)

    def warning(self, message: str, **where) -> None:
        self.emit(WARNING, message, **where)

    def error(self, message: str, **where) -> None:
        self.emit(ERROR, message, **where)

    def emit(self, level: int, message: str, unit: str | None = None, instance: int | None = None,
             pid: int | None = None, label: str | None = None) -> None:
        """`label` is how text names the unit: `web`, or `web.2` for one of several instances."""
        if level < self.level:
            return
        if self.json:
            if instance is None and unit is not None and self.instances_of(unit) == 1:
                instance = 1
            line = self.json_line(unit, instance, pid, "activator", _LEVEL_NAMES[level], message)
        else:
            who = ""
            if unit is not None:
                who = f"unit {label or unit}"
                who += f" (pid {pid}): " if pid is not None else ": "
            prefix = "" if level == INFO else _LEVEL_NAMES[level] + ": "
            line = f"activator: {prefix}{who}{message}\n".encode("utf-8", "replace")
        write_all(2, line)

    @staticmethod
    def json_line(unit, instance, pid, stream: str, level: str, message: str) -> bytes:
        record = {"time": rfc3339(), "unit": unit, "instance": instance, "pid": pid,
                  "stream": stream, "level": level, "message": message}
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "replace")
