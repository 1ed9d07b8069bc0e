"""What notify messages do to a unit's life: the start timeout and EXTEND_TIMEOUT_USEC,
RELOADING=1, STOPPING=1, ERRNO=, MAINPID=. Activator runs as PID 1.
"""

from __future__ import annotations

import json
import os
import signal

import pytest

from harness import PYTHON, wait_for
from notify_support import (Control, agent, cli_status, events, instance, program, unit, wait_event,
                            wait_instance, write_whole)


def test_start_timeout_kills_and_hands_over_to_the_restart_policy(activator, tmp_path):
    again, once = tmp_path / "again.log", tmp_path / "once.log"
    never_ready = ("trap:SIGTERM", "forever")  # exits 0 on SIGTERM: only the timeout is a failure
    a = activator({
        "again": unit(exec=agent(f"log:{again}", *never_ready), type="notify", timeout_start_sec=0.5,
                      restart_sec=0.1),
        "once": unit(exec=agent(f"log:{once}", *never_ready), type="notify", timeout_start_sec=0.5,
                     restart="no"),
    })
    first, second = wait_event(again, "start", count=2, timeout=10)
    assert first["pid"] != second["pid"]
    [term] = [e for e in events(again, "signal") if e["pid"] == first["pid"]]
    assert term["signal"] == "SIGTERM"
    # The timeout runs from the spawn; "start" is logged once Python is up, some 0.1 s later.
    assert 0.3 <= term["time"] - first["time"] < 3, "killed long before or after timeout_start_sec"
    assert second["time"] > term["time"]
    wait_instance(a, "again", lambda i: i["restarts"] >= 1)

    a.wait_state("once", "failed")
    once_status = a.status()["units"]["once"]
    assert once_status["failure"] == "did not become ready in time"
    [start] = events(once, "start")
    [term] = events(once, "signal")
    assert term["signal"] == "SIGTERM" and term["time"] - start["time"] >= 0.3
    assert "no READY=1 within 0.5s" in a.output()


def test_extend_timeout_usec_extends_the_start_timeout(activator, tmp_path):
    slow, short = tmp_path / "slow.log", tmp_path / "short.log"
    a = activator({
        # Needs 1.2 s with a 0.5 s timeout: alive only thanks to the extension.
        "slow": unit(exec=agent(f"log:{slow}", "trap:SIGTERM", "notify:EXTEND_TIMEOUT_USEC=2000000",
                                "sleep:1.2", "notify:READY=1", "forever"),
                     type="notify", timeout_start_sec=0.5, restart="no"),
        # Extends to 1 s, then never gets ready: killed once the extension runs out, not before.
        "short": unit(exec=agent(f"log:{short}", "trap:SIGTERM", "notify:EXTEND_TIMEOUT_USEC=1000000",
                                 "forever"),
                      type="notify", timeout_start_sec=0.3, restart="no"),
    })
    a.wait_state("slow", "running")
    [start] = events(slow, "start")
    ready = wait_event(slow, "sent", message="READY=1")[0]
    assert ready["time"] - start["time"] >= 1.2
    assert events(slow, "signal") == [] and instance(a, "slow")["pid"] == start["pid"]
    assert instance(a, "slow")["restarts"] == 0

    a.wait_state("short", "failed")
    extended = wait_event(short, "sent")[0]
    [term] = events(short, "signal")
    assert 0.9 <= term["time"] - extended["time"] < 3


def test_reloading_stopping_errno(activator, tmp_path):
    log, control = tmp_path / "svc.log", Control(tmp_path / "control")
    a = activator({"svc": unit(exec=agent(f"log:{log}", "trap:SIGTERM", "notify:READY=1",
                                          f"control:{control.path}"),
                               type="notify", restart="on-failure")})
    a.wait_state("svc", "running")
    pid = instance(a, "svc")["pid"]

    control.send("notify:RELOADING=1\\nSTATUS=reloading config")
    inst = wait_instance(a, "svc", lambda i: i["state"] == "reloading")
    assert inst["status"] == "reloading config" and a.status()["units"]["svc"]["state"] == "reloading"
    control.send("notify:READY=1\\nSTATUS=config reloaded")
    inst = wait_instance(a, "svc", lambda i: i["status"] == "config reloaded")
    assert inst["state"] == "running" and inst["pid"] == pid

    control.send("notify:ERRNO=5\\nSTATUS=disk trouble")
    inst = wait_instance(a, "svc", lambda i: i["errno"] is not None)
    assert inst["errno"] == 5 and inst["status"] == "disk trouble" and inst["state"] == "running"
    data = json.loads(cli_status(a, "--json").stdout)
    assert data["units"]["svc"]["instances"][0]["errno"] == 5
    control.send("notify:STATUS=still here")  # ERRNO= is kept until the service says otherwise
    inst = wait_instance(a, "svc", lambda i: i["status"] == "still here")
    assert inst["errno"] == 5
    control.send("notify:ERRNO=EACCES")
    wait_instance(a, "svc", lambda i: i["errno"] == 13)

    control.send("notify:STOPPING=1")
    a.wait_state("svc", "stopping")
    control.send("notify:READY=1\\nSTATUS=trying to come back")  # a dying service stays dying
    inst = wait_instance(a, "svc", lambda i: i["status"] == "trying to come back")
    assert inst["state"] == "stopping"
    control.send("exit:0")
    inst = wait_instance(a, "svc", lambda i: i["state"] == "exited")
    assert inst["exit_status"] == 0 and inst["restarts"] == 0




def _daemon_started(a, log):
    """Wait for the unit to run with its daemon as main process, and the first one gone."""
    a.wait_state("d", "running")
    [first] = events(log, "start")
    [daemon] = wait_event(log, "daemon")

    def gone(pid):
        try:
            a.host_pid(pid)
        except ValueError:
            return True
        return False
    wait_for(lambda: gone(first["pid"]), 10, what="the first process to be gone")
    return first, daemon


def test_mainpid_moves_the_main_process(activator, tmp_path):
    log = tmp_path / "d.log"
    a = activator({"d": unit(exec=program("notify_mainpid.py", log), type="notify", restart="always",
                             restart_sec=0.1)})
    first, daemon = _daemon_started(a, log)
    assert daemon["ppid"] == first["pid"]
    # The first process exited 0 right after MAINPID=: the unit goes on with the daemon.
    inst = instance(a, "d")
    assert inst["state"] == "running" and inst["pid"] == daemon["pid"] and inst["restarts"] == 0
    assert inst["status"] == f"daemon {daemon['pid']} running"

    # The daemon (not the process activator started) dies: the restart policy applies.
    os.kill(a.host_pid(daemon["pid"]), signal.SIGKILL)
    inst = wait_instance(a, "d", lambda i: i["restarts"] == 1 and i["state"] == "running"
                         and i["pid"] not in (None, daemon["pid"]), what="d restarted")
    second_start, second_daemon = wait_event(log, "start", 2)[1], wait_event(log, "daemon", 2)[1]
    assert inst["pid"] == second_daemon["pid"] != second_start["pid"]
    assert "internal error" not in a.output()


MAINPID_ALONE = """
import os, sys, time
from systemd import daemon

def wait_file(path):  # bounded: the test makes it once it has seen what it waits for
    deadline = time.monotonic() + 60
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)

go, release = sys.argv[1:3]
child = os.fork()
if child == 0:
    time.sleep(3600)
    os._exit(0)
daemon.notify("READY=1")
wait_file(go)  # the test saw this process running as the main one
daemon.notify(f"MAINPID={child}")  # alone in its datagram: no state changes with it
wait_file(release)  # the test saw the new main pid: now this process may end
"""


def test_mainpid_alone_shows_in_status_json(activator, tmp_path):
    """A lone MAINPID= changes no state, yet status.json must show the new main pid."""
    script, go, release = tmp_path / "mainpid_alone.py", tmp_path / "go", tmp_path / "release"
    script.write_text(MAINPID_ALONE)
    a = activator({"d": unit(exec=[PYTHON, str(script), str(go), str(release)], type="notify")})
    first = wait_instance(a, "d", lambda i: i["state"] == "running")["pid"]
    first_host = a.host_pid(first)
    go.touch()
    inst = wait_instance(a, "d", lambda i: i["pid"] != first, what="the new main pid")
    assert inst["state"] == "running" and inst["restarts"] == 0
    with open(f"/proc/{a.host_pid(inst['pid'])}/cmdline", "rb") as f:
        assert b"mainpid_alone.py" in f.read()  # the forked child, now the main process
    # The first process ends: the unit goes on with its new main process.
    release.touch()
    wait_for(lambda: not os.path.exists(f"/proc/{first_host}"), 10, what="the first process reaped")
    after = instance(a, "d")
    assert (after["state"], after["pid"], after["restarts"]) == ("running", inst["pid"], 0)


def test_mainpid_killed_daemon_is_restarted_on_failure(activator, tmp_path):
    log = tmp_path / "d.log"
    a = activator({"d": unit(exec=program("notify_mainpid.py", log), type="notify", restart_sec=0.1)})
    _, daemon = _daemon_started(a, log)
    os.kill(a.host_pid(daemon["pid"]), signal.SIGKILL)  # on-failure: a death by SIGKILL restarts
    inst = wait_instance(a, "d", lambda i: i["pid"] != daemon["pid"], what="the daemon's end")
    assert inst["state"] in ("restarting", "starting", "running"), inst
    wait_instance(a, "d", lambda i: i["restarts"] == 1 and i["state"] == "running")


def test_mainpid_exit_status_is_the_daemons(activator, tmp_path):
    log = tmp_path / "d.log"
    a = activator({"d": unit(exec=program("notify_mainpid.py", log), type="notify", restart="no")})
    _, daemon = _daemon_started(a, log)
    write_whole(tmp_path / f"d.log.exit.{daemon['pid']}", "3")
    inst = wait_instance(a, "d", lambda i: i["state"] in ("exited", "failed"))
    assert (inst["state"], inst["exit_status"]) == ("failed", 3)


def test_mainpid_daemon_clean_exit_is_not_restarted_on_failure(activator, tmp_path):
    log = tmp_path / "d.log"
    a = activator({"d": unit(exec=program("notify_mainpid.py", log), type="notify")})
    _, daemon = _daemon_started(a, log)
    write_whole(tmp_path / f"d.log.exit.{daemon['pid']}", "0")
    inst = wait_instance(a, "d", lambda i: i["state"] == "exited")
    assert inst["exit_status"] == 0 and inst["restarts"] == 0
    assert "internal error" not in a.output()
