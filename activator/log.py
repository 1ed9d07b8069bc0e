"""activator's own messages, and the one writer that service output goes through too.

Text format: `activator: unit web.2 (pid 42): message` on stderr. JSON format (`--log-format
json`): one object per line with the keys of SPEC §6, for activator's messages and for service
output alike. Messages go to stderr through an `Outlet` (output.py): once the loop runs, a
reader that stops reading never stalls activator; a message that finds the outlet full is
counted, and the count is logged when writing resumes.
"""

from __future__ import annotations

# json is imported in the functions that use it: PID 1 starts its first service before it needs it.
import os
import time

from activator.output import SHUTDOWN_FLUSH_SECONDS, Outlet, write_all  # noqa: F401 - write_all: for forked children

DEBUG, INFO, WARNING, ERROR = 10, 20, 30, 40
_LEVEL_NAMES = {DEBUG: "debug", INFO: "info", WARNING: "warning", ERROR: "error"}


def rfc3339(wall: float | None = None) -> str:
    """UTC to the millisecond, `2026-12-04T16:21:39.123Z`. With `time` rather than
    `datetime`, which would cost PID 1 half a MiB for the life of the container."""
    micros = round((time.time() if wall is None else wall) * 1_000_000)  # as datetime rounds
    seconds, micros = divmod(micros, 1_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{micros // 1000:03d}Z"


def epoch_of(text: str) -> float:
    """The seconds since the epoch of an `rfc3339` time (the inverse, without `datetime`)."""
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    seconds = int(text[11:13]) * 3600 + int(text[14:16]) * 60 + float(text[17:].rstrip("Z"))
    year -= month <= 2  # days from the civil date, counted from a March 1st
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return (era * 146097 + day_of_era - 719468) * 86400 + seconds


def traceback_text() -> str:
    """The exception being handled, as a traceback; `traceback` is imported only then."""
    import traceback

    return traceback.format_exc().rstrip()


def _same_file(a: int, b: int) -> bool:
    try:
        first, second = os.fstat(a), os.fstat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


class Log:
    def __init__(self, json_format: bool = False, level: int = INFO):
        self.json = json_format
        self.level = level
        # unit name -> its number of instances; set by the manager so that a message about a
        # single-instance unit says instance 1 in JSON, as its output lines do
        self.instances_of = lambda unit: None
        # One outlet when stdout and stderr are the same pipe (`2>&1`): two would tear lines
        # where one's partial write is followed by the other's.
        stdout = Outlet(1)
        self.outlets = {1: stdout, 2: stdout if _same_file(1, 2) else Outlet(2)}
        self.outlets[2].on_lost = self._report_lost

    def attach(self, loop) -> None:
        """From now on, never block on output: write when the streams can take it."""
        for outlet in self._distinct_outlets():
            outlet.attach(loop)

    def flush(self, timeout: float = SHUTDOWN_FLUSH_SECONDS) -> None:
        """At exit: what is left of our output gets at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        for outlet in self._distinct_outlets():
            outlet.flush(max(deadline - time.monotonic(), 0.0))

    def _distinct_outlets(self) -> list:
        return list({id(outlet): outlet for outlet in self.outlets.values()}.values())

    def _report_lost(self, count: int) -> None:
        self.warning(f"{count} message{'s' * (count != 1)} of activator's could not be written "
                     "while its output was not being read")

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
        self.outlets[2].message(line)

    @staticmethod
    def json_line(unit, instance, pid, stream: str, level: str, message: str) -> bytes:
        import json
        record = {"time": rfc3339(), "unit": unit, "instance": instance, "pid": pid,
                  "stream": stream, "level": level, "message": message}
        return (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8", "replace")
