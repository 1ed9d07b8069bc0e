"""The watchdog: `watchdog_sec`, WATCHDOG=1, WATCHDOG=trigger, WATCHDOG_USEC=. The services
trap SIGABRT, log it and exit 0, so that a restart can only come from activator's verdict
("missed its watchdog"), not from the exit status. Activator runs as PID 1.
"""

from __future__ import annotations

import pytest

from notify_support import Control, agent, events, unit, wait_event, wait_instance

TRAP = "trap:SIGABRT,SIGTERM"


def test_missed_pings_abort_then_restart(activator, tmp_path):
    log = tmp_path / "wd.log"
    # Pings every 0.1 s against a 1 s watchdog: a busy machine may delay a ping by much, not by
    # ten times its interval.
    a = activator({"wd": unit(exec=agent(f"log:{log}", TRAP, "notify:READY=1", "ping:0.1", "sleep:2",
                                         "unping", "forever"),
                              type="notify", watchdog_sec=1, restart_sec=0.1)})
    first, second = wait_event(log, "start", count=2, timeout=30)
    assert first["pid"] != second["pid"]
    for start in (first, second):
        assert start["env"]["WATCHDOG_USEC"] == "1000000"
        assert start["env"]["WATCHDOG_PID"] == str(start["pid"])  # its own pid, as it sees it
    [abort] = [e for e in events(log, "signal") if e["pid"] == first["pid"]]
    unpinged = [e for e in events(log, "unpinged") if e["pid"] == first["pid"]]
    assert unpinged, "aborted while it was still pinging"
    assert abort["signal"] == "SIGABRT"  # first, before any SIGTERM or SIGKILL
    assert abort["time"] > unpinged[0]["time"]
    # Not before the watchdog's second since the last ping; and not so late that the deadline
    # could not have been the cause (the next start is measured in the same clock).
    assert 0.9 <= abort["time"] - unpinged[0]["last"] < 6
    assert second["time"] > abort["time"]
    wait_instance(a, "wd", lambda i: i["restarts"] >= 1)
    assert "no WATCHDOG=1 for 1s" in a.output()


def test_watchdog_trigger_aborts_at_once(activator, tmp_path):
    log = tmp_path / "wd.log"
    a = activator({"wd": unit(exec=agent(f"log:{log}", TRAP, "notify:READY=1", "sleep:0.2",
                                         "notify:WATCHDOG=trigger", "forever"),
                              type="notify", watchdog_sec=30, restart_sec=0.1)})
    first, second = wait_event(log, "start", count=2, timeout=10)
    trigger = [e for e in events(log, "sent") if e["pid"] == first["pid"] and e["message"] == "WATCHDOG=trigger"][0]
    [abort] = [e for e in events(log, "signal") if e["pid"] == first["pid"]]
    assert abort["signal"] == "SIGABRT" and abort["time"] - trigger["time"] < 2
    assert second["pid"] != first["pid"]
    wait_instance(a, "wd", lambda i: i["restarts"] >= 1)


def test_watchdog_usec_from_the_service_changes_the_interval(activator, tmp_path):
    longer, shorter = tmp_path / "longer.log", tmp_path / "shorter.log"
    a = activator({
        # 0.3 s configured, 1.5 s asked for: no ping at all, aborted after the new interval.
        "longer": unit(exec=agent(f"log:{longer}", TRAP, "notify:READY=1", "notify:WATCHDOG_USEC=1500000",
                                  "forever"),
                       type="notify", watchdog_sec=0.3, restart="no"),
        # 30 s configured, 0.3 s asked for.
        "shorter": unit(exec=agent(f"log:{shorter}", TRAP, "notify:READY=1", "notify:WATCHDOG_USEC=300000",
                                   "forever"),
                        type="notify", watchdog_sec=30, restart="no"),
    })
    # The bounds tell the asked-for interval from the configured one, with room for a busy
    # machine: longer aborts after 1.5 s, not 0.3 s; shorter after 0.3 s, not 30 s.
    for log, low, high in ((longer, 1.4, 10.0), (shorter, 0.25, 10.0)):
        [abort] = wait_event(log, "signal", timeout=30)
        [changed] = [e for e in events(log, "sent") if e["message"].startswith("WATCHDOG_USEC=")]
        assert abort["signal"] == "SIGABRT"
        assert low <= abort["time"] - changed["time"] < high, (log.name, abort["time"] - changed["time"])
    for name in ("longer", "shorter"):
        inst = wait_instance(a, name, lambda i: i["state"] == "failed")
        assert a.status()["units"][name]["failure"] == "missed its watchdog"
        assert inst["exit_status"] == 0  # trapped: failed for the watchdog, not the status


def test_pings_keep_it_alive(activator, tmp_path):
    """The negative control of the tests above: pinging in time, nothing happens."""
    log = tmp_path / "wd.log"
    # Pinging every 0.1 s for 3 s, three times the 1 s watchdog.
    a = activator({"wd": unit(exec=agent(f"log:{log}", TRAP, "notify:READY=1", "ping:0.1", "sleep:3",
                                         "notify:STATUS=still pinging", "forever"),
                              type="notify", watchdog_sec=1)})
    inst = wait_instance(a, "wd", lambda i: i.get("status") == "still pinging")
    assert inst["state"] == "running" and inst["restarts"] == 0
    assert events(log, "signal") == []




def test_no_watchdog_once_the_service_is_stopping(activator, tmp_path):
    log = tmp_path / "wd.log"
    # Stopping lasts 2.5 s, well past the 1 s watchdog.
    a = activator({"wd": unit(exec=agent(f"log:{log}", TRAP, "notify:READY=1", "ping:0.1", "sleep:0.3",
                                         "unping", "notify:STOPPING=1", "sleep:2.5", "exit:0"),
                              type="notify", watchdog_sec=1)})
    inst = wait_instance(a, "wd", lambda i: i["state"] in ("exited", "failed", "restarting"), timeout=10)
    assert events(log, "signal") == [], "aborted while shutting down"
    assert inst["state"] == "exited" and inst["exit_status"] == 0




@pytest.mark.parametrize("steps", [
    ("notify:READY=1", "notify:WATCHDOG_USEC=3000000000000"),  # 35 days
    ("notify:EXTEND_TIMEOUT_USEC=3000000000000",),  # the READY=1 that would end it comes later
], ids=["watchdog-usec", "extend-timeout-usec"])
def test_a_far_deadline_from_a_service_is_just_far(activator, tmp_path, steps):
    log, control = tmp_path / "svc.log", Control(tmp_path / "control")
    a = activator({"svc": unit(exec=agent(f"log:{log}", *steps, "notify:STATUS=asked",
                                          f"control:{control.path}"),
                               type="notify", watchdog_sec=30)})
    wait_instance(a, "svc", lambda i: i.get("status") == "asked")
    control.send("notify:READY=1\\nSTATUS=still heard", a=a)
    inst = wait_instance(a, "svc", lambda i: i.get("status") == "still heard")
    assert inst["state"] == "running" and a.proc.poll() is None
    assert "internal error" not in a.output()
