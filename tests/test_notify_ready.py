"""Readiness through sd_notify with real peers, activator as PID 1: python-systemd,
systemd-notify (with and without --no-block), redis-server, gunicorn.
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from harness import wait_for
from notify_support import (PROGRAMS, SYSTEMD_NOTIFY, agent, cli_status, events, free_port, instance,
                            unit, wait_event, wait_instance)


def test_dependent_starts_only_after_ready_and_status_is_shown(activator, tmp_path):
    gate, db_log, app_log = tmp_path / "go", tmp_path / "db.log", tmp_path / "app.log"
    a = activator({
        "db": unit(exec=agent(f"log:{db_log}", "notify:STATUS=warming up", f"wait:{gate}",
                              "notify:READY=1\\nSTATUS=up and serving", "forever"),
                   type="notify"),
        "app": unit(exec=agent(f"log:{app_log}", "forever"), requires=["db"]),
    })
    warming = wait_instance(a, "db", lambda i: i.get("status") == "warming up")
    assert warming["state"] == "starting" and warming["pid"]
    status = a.status()["units"]
    assert status["db"]["state"] == "starting"
    assert status["app"]["state"] == "starting" and not status["app"]["instances"][0]["pid"]
    assert not app_log.exists(), "app started before db was ready"

    table = cli_status(a)
    assert table.returncode == 1, table.stdout + table.stderr  # not healthy yet
    [db_row] = [line for line in table.stdout.splitlines() if line.startswith("db ")]
    assert "starting" in db_row and "warming up" in db_row

    gate.touch()
    a.wait_state("app", "running")
    ready = wait_event(db_log, "sent", message="READY=1\nSTATUS=up and serving")[0]
    app_start = wait_event(app_log, "start")[0]
    assert app_start["time"] > ready["time"], "app started before db sent READY=1"
    db = instance(a, "db")
    assert db["state"] == "running" and db["status"] == "up and serving"
    assert db["pid"] == warming["pid"]  # the same process, not a restart

    table = cli_status(a)
    assert table.returncode == 0, table.stdout + table.stderr
    [db_row] = [line for line in table.stdout.splitlines() if line.startswith("db ")]
    assert "running" in db_row and "up and serving" in db_row
    as_json = cli_status(a, "--json")
    assert as_json.returncode == 0
    data = json.loads(as_json.stdout)
    assert data["units"]["db"]["instances"][0]["status"] == "up and serving"
    assert data["units"]["db"]["state"] == "running"


def test_state_is_starting_until_ready(activator, tmp_path):
    """Sampled all along a slow start: never `running` before READY=1 was sent."""
    log = tmp_path / "svc.log"
    a = activator({"svc": unit(exec=agent(f"log:{log}", "sleep:0.8", "notify:READY=1", "forever"),
                               type="notify")})
    seen = []

    def sample():
        inst = instance(a, "svc")
        seen.append((time.monotonic(), inst["state"]))
        return inst["state"] == "running"
    wait_for(sample, 15, interval=0.005, what="svc running")
    [sent] = wait_event(log, "sent")
    [start] = events(log, "start")
    states_before = {state for t, state in seen if t < sent["time"]}
    assert states_before == {"starting"}, seen[:5]
    assert sent["time"] - start["time"] >= 0.8


@pytest.mark.parametrize("no_block", [False, True], ids=["blocking", "no-block"])
def test_systemd_notify_from_a_shell(activator, tmp_path, no_block):
    """systemd-notify run by a shell service (its READY=1 is sent with the shell's pid, its
    BARRIER=1 with its own). Without --no-block it waits (up to 5 s, then fails) for the
    barrier's pipe to be closed by the receiver."""
    result = tmp_path / "result"
    flags = "--ready --no-block" if no_block else "--ready"
    script = (f"sleep 0.2; start=$$(date +%s%N); {SYSTEMD_NOTIFY} {flags} --status=shell-ready; rc=$?; "
              f"end=$$(date +%s%N); echo \"$rc $$(( (end - start) / 1000000 ))\" > {result}; "
              "exec sleep 1000")  # $$ is a literal $ in exec (SPEC §3)
    a = activator({"svc": unit(exec=["sh", "-c", script], type="notify", notify_access="all")})
    a.wait_state("svc", "running")
    assert instance(a, "svc")["status"] == "shell-ready"
    rc, millis = map(int, wait_for(lambda: result.read_text().split(), 10, what="systemd-notify's result"))
    assert rc == 0, f"systemd-notify failed (rc {rc}) after {millis} ms:\n{a.output()}"
    # systemd-notify gives up on the barrier after 5 s: well under that, it was released.
    assert millis < 4500, f"systemd-notify was blocked {millis} ms: the barrier was not released"
    assert a.status()["units"]["svc"]["instances"][0]["restarts"] == 0


def test_systemd_notify_barrier_with_notify_access_main(activator, tmp_path):
    """With `main`, the BARRIER=1 datagram (from systemd-notify's own pid) is not allowed: its
    fd must be closed all the same, or systemd-notify hangs until its timeout and fails."""
    result = tmp_path / "result"
    script = (f"{SYSTEMD_NOTIFY} --ready; echo $? > {result}; exec sleep 1000")
    a = activator({"svc": unit(exec=["sh", "-c", script], type="notify")})
    a.wait_state("svc", "running")  # READY=1 carries the shell's pid: the main process
    started = time.monotonic()
    assert wait_for(lambda: result.read_text().strip(), 10, what="systemd-notify's result") == "0"
    assert time.monotonic() - started < 4.5  # systemd-notify gives up on the barrier after 5 s


def test_redis_accepts_connections_when_running(activator):
    """redis-server --supervised systemd sends READY=1 once it accepts connections. A shell
    step first (exec'd away, so redis keeps the main pid) makes the start slow enough that a
    unit called running too early would be caught with its port still closed."""
    port = free_port()
    redis = (f"redis-server --supervised systemd --daemonize no --port {port} --bind 127.0.0.1 "
             "--save '' --appendonly no")
    a = activator({"redis": unit(exec=["sh", "-c", f"sleep 0.5; exec {redis}"], type="notify")})
    wait_for(lambda: instance(a, "redis")["state"] == "running", 15, interval=0.002, what="redis running")
    # Right now, not a moment later: running must mean accepting connections.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(b"PING\r\n")
        assert conn.recv(64) == b"+PONG\r\n"
    assert "Ready to accept connections" in (instance(a, "redis")["status"] or "")
    assert a.stop() == 0  # redis sends STOPPING=1 on SIGTERM and exits cleanly


def test_gunicorn_is_ready_once_listening(activator, tmp_path):
    """gunicorn's arbiter sends READY=1 (with STATUS=Gunicorn arbiter booted) after it has
    bound its listeners. Its on_starting hook holds it at a gate first, so `starting` is seen."""
    port, gate = free_port(), tmp_path / "gate"
    a = activator({"web": unit(
        exec=["gunicorn", "--config", str(PROGRAMS / "notify_gunicorn_conf.py"), "--bind",
              f"127.0.0.1:{port}", "--workers", "1", "--no-control-socket", "--chdir", str(PROGRAMS),
              "notify_wsgi:app"],
        type="notify", environment={"GUNICORN_GATE": str(gate)})})
    held = wait_instance(a, "web", lambda i: i.get("status") == "held at the gate")
    assert held["state"] == "starting"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    gate.touch()
    wait_for(lambda: instance(a, "web")["state"] == "running", 20, interval=0.002, what="gunicorn running")
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)  # listening now, already
    with conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        reply = b""
        conn.settimeout(10)
        while chunk := conn.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello from gunicorn\n")
    web = instance(a, "web")
    assert web["status"] == "Gunicorn arbiter booted" and web["pid"] == held["pid"]
