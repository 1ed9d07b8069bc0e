"""What an sd_notify message means for the process that sent it.

notify.py receives and parses datagrams; this module reads their fields and returns effects,
in the order the manager must apply them (the main pid first, so that the rest of the message
is about the right process; READY=1 last, so that a message saying STATUS=... and READY=1
shows its status when the unit turns running). Nothing here changes a process or arms a
timer: `effects` is a pure function, tested without processes, and the manager applies the
list in one place (`Manager.apply_notify`).
"""

from __future__ import annotations

import enum


class Effect(enum.Enum):
    MAIN_PID = "MAINPID"  # value: the new main pid
    STATUS = "STATUS"  # value: the text
    ERRNO = "ERRNO"  # value: the number
    EXTEND_START = "EXTEND_TIMEOUT_USEC"  # value: seconds from now
    WATCHDOG_INTERVAL = "WATCHDOG_USEC"  # value: microseconds
    WATCHDOG_PING = "WATCHDOG=1"
    WATCHDOG_TRIGGER = "WATCHDOG=trigger"
    FDSTORE = "FDSTORE=1"  # value: the name of the descriptors that came with the message
    FDSTORE_REMOVE = "FDSTOREREMOVE=1"  # value: the name
    STOPPING = "STOPPING=1"
    RELOADING = "RELOADING=1"
    READY = "READY=1"


def _number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def effects(fields: dict[str, str], with_fds: bool) -> list[tuple[Effect, object]]:
    """The effects of one message's fields; `with_fds`: descriptors came with it."""
    result: list[tuple[Effect, object]] = []
    pid = _number(fields.get("MAINPID", ""))
    if pid is not None and pid > 0:
        result.append((Effect.MAIN_PID, pid))
    if "STATUS" in fields:
        result.append((Effect.STATUS, fields["STATUS"]))
    errno = _number(fields.get("ERRNO", ""))
    if errno is not None:
        result.append((Effect.ERRNO, errno))
    extension = _number(fields.get("EXTEND_TIMEOUT_USEC", ""))
    if extension is not None:
        result.append((Effect.EXTEND_START, extension / 1e6))
    interval = _number(fields.get("WATCHDOG_USEC", ""))
    if interval is not None:
        result.append((Effect.WATCHDOG_INTERVAL, interval))
    if fields.get("WATCHDOG") == "1":
        result.append((Effect.WATCHDOG_PING, None))
    elif fields.get("WATCHDOG") == "trigger":
        result.append((Effect.WATCHDOG_TRIGGER, None))
    if fields.get("FDSTORE") == "1" and with_fds:
        result.append((Effect.FDSTORE, fields.get("FDNAME") or "stored"))
    if fields.get("FDSTOREREMOVE") == "1" and fields.get("FDNAME"):
        result.append((Effect.FDSTORE_REMOVE, fields["FDNAME"]))
    for flag in (Effect.STOPPING, Effect.RELOADING, Effect.READY):
        name, value = flag.value.split("=")
        if fields.get(name) == value:
            result.append((flag, None))
    return result


def allowed(access: str, sender_pid: int, main_pid: int) -> bool:
    """notify_access: who of a unit's processes may send (judged by the kernel's pid)."""
    return access == "all" or (access == "main" and sender_pid == main_pid)
