"""Who may notify: `notify_access`, judged by the pid the kernel reports (SCM_CREDENTIALS).

Every test here synchronises on something the same datagram (or a later one of the same
sender) changed, so "ignored" is checked after the message was certainly read, never after a
sleep.
"""

from __future__ import annotations

import array
import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
from pathlib import Path

import pytest

from harness import Activator, wait_for
from notify_support import (PROGRAMS, agent, events, instance, notify_socket, unit, wait_event,
                            wait_instance, write_whole)


def test_child_of_main_is_refused_with_notify_access_main(activator, tmp_path):
    log, gate = tmp_path / "db.log", tmp_path / "gate"
    a = activator({"db": unit(
        exec=agent(f"log:{log}", "descendant:1:READY=1\\nSTATUS=from the child",
                   "notify:STATUS=main after the child", f"wait:{gate}", "notify:READY=1", "forever"),
        type="notify")}, env={"ACTIVATOR_LOG_LEVEL": "debug"})
    # The main process sends its STATUS only after the child has sent and exited: once it
    # shows, the child's datagram was read before it.
    db = wait_instance(a, "db", lambda i: i.get("status") == "main after the child")
    [child] = [e for e in events(log, "sent") if "from the child" in e["message"]]
    [start] = events(log, "start")
    assert child["ppid"] == start["pid"] != child["pid"]
    assert db["state"] == "starting", "READY=1 from a child counted with notify_access: main"
    # ... and refused for the right reason: it was known to be db's, and not its main process.
    assert f"notify message from pid {child['pid']} ignored: notify_access is main" in a.output()
    gate.touch()
    a.wait_state("db", "running")  # the main process itself is heard


def test_grandchild_counts_with_notify_access_all(activator, tmp_path):
    log = tmp_path / "db.log"
    a = activator({"db": unit(
        exec=agent(f"log:{log}", "descendant:2:READY=1\\nSTATUS=from the grandchild", "forever"),
        type="notify", notify_access="all")})
    a.wait_state("db", "running")
    assert instance(a, "db")["status"] == "from the grandchild"
    [start], [sent] = events(log, "start"), events(log, "sent")  # the grandchild's only
    assert sent["pid"] != start["pid"] and sent["ppid"] != start["pid"]  # a grandchild
    assert instance(a, "db")["pid"] == start["pid"]  # READY=1 did not move the main pid


def test_another_units_process_cannot_make_this_one_ready(activator, tmp_path):
    db_log, message = tmp_path / "db.log", tmp_path / "message"
    a = activator({
        "db": unit(exec=agent(f"log:{db_log}", "notify:STATUS=waiting", "forever"), type="notify"),
        "other": unit(exec=agent(f"notify-file:{message}", "forever"), type="notify",
                      notify_access="all"),
    })
    db = wait_instance(a, "db", lambda i: i.get("status") == "waiting")
    other_pid = instance(a, "other")["pid"]
    # READY=1 for itself, plus an attempt to take db's main process and to set its status.
    write_whole(message, f"READY=1\nMAINPID={db['pid']}\nSTATUS=from other")
    a.wait_state("other", "running")  # read and applied to `other`, in one datagram
    status = a.status()["units"]
    assert status["db"]["state"] == "starting"
    assert status["db"]["instances"][0]["status"] == "waiting"
    assert status["db"]["instances"][0]["pid"] == db["pid"]
    assert status["other"]["instances"][0]["pid"] == other_pid  # MAINPID= of db's pid refused
    assert status["other"]["instances"][0]["status"] == "from other"
    assert f"MAINPID={db['pid']} ignored" in a.output()


def test_notify_access_none_unit_cannot_notify(activator, tmp_path):
    """A `simple` unit has notify_access none and gets no NOTIFY_SOCKET; even writing to the
    socket directly does nothing for it."""
    log = tmp_path / "s.log"
    a = activator({"s": unit(exec=agent(f"log:{log}", "forever"))}, env={"ACTIVATOR_LOG_LEVEL": "debug"})
    [start] = wait_event(log, "start")
    assert "NOTIFY_SOCKET" not in start["env"]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # as root, posing as it
        _send_as(sock, notify_socket(a), b"STATUS=posing", a.host_pid(start["pid"]))
    wait_for(lambda: "notify_access is none" in a.output() or None, 10,
             what="the message to be refused")  # ACTIVATOR_LOG_LEVEL=debug shows why
    assert instance(a, "s")["status"] is None


@pytest.fixture
def public_tmp():
    """A directory every user can reach (pytest's tmp_path is 0700: `nobody` could not even
    get to the notify socket, and a refusal would prove nothing)."""
    path = Path(tempfile.mkdtemp(prefix="activator-notify-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _runnable_by_anyone(path: str) -> bool:
    real = Path(os.path.realpath(path))
    if not real.is_file() or not real.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


def _python_for_nobody() -> str | None:
    for candidate in (sys.executable, "/usr/bin/python3"):
        if _runnable_by_anyone(candidate):
            return candidate
    return None


def _send_as(sock, path: str, data: bytes, pid: int) -> None:
    credentials = array.array("i", [pid, 0, 0]).tobytes()
    sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)], 0, path)


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a unit as nobody and to fake credentials")
@pytest.mark.skipif(_python_for_nobody() is None, reason="no Python that `nobody` may execute")
def test_faked_pid_from_unprivileged_sender_is_refused(public_tmp):
    """A service that dropped privileges cannot pose as another unit's main process: the
    kernel refuses its SCM_CREDENTIALS pid and libsystemd resends with its real one. Root can
    fake it (the second half), which is why notify_access protects only against services
    running as another user."""
    shared = public_tmp / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    pidfile, result = shared / "pid", shared / "result"
    units = {
        "db": unit(exec=agent("notify:STATUS=waiting", "forever"), type="notify"),
        "faker": unit(exec=[_python_for_nobody(), str(PROGRAMS / "notify_fake_pid.py"), str(pidfile),
                            str(result)], user="nobody", notify_access="all"),
    }
    with Activator(public_tmp, units, env={"ACTIVATOR_LOG_LEVEL": "debug"}) as a:
        db = wait_instance(a, "db", lambda i: i.get("status") == "waiting")
        write_whole(pidfile, str(db["pid"]))
        outcome = json.loads(wait_for(result.read_text, 15, what="the faker's result"))
        assert outcome["uid"] != 0 and outcome["target"] == db["pid"]
        assert outcome["faked"] == errno.EPERM and outcome["resent"] == "sent"
        # The datagram came with the faker's real pid: it was heard as the faker's own.
        wait_instance(a, "faker", lambda i: i.get("status") == "faked")
        assert instance(a, "db")["state"] == "starting"
        assert instance(a, "db")["status"] == "waiting"

        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:  # root: believed
            _send_as(sock, notify_socket(a), b"READY=1\nSTATUS=faked by root", a.host_pid(db["pid"]))
        a.wait_state("db", "running")
        assert instance(a, "db")["status"] == "faked by root"
