"""activator as a client of the manager that started it (NOTIFY_SOCKET set: a host systemd with
Type=notify, podman --sdnotify=container, or another activator).
"""

from __future__ import annotations

import array
import json
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from activator.notify import parse
from harness import PYTHON, wait_for, write_units
from notify_support import agent, events, instance, unit, wait_event, wait_instance


@dataclass
class Received:
    pid: int
    fields: dict
    text: str
    time: float


class Listener:
    """A notify socket of the test's own, standing in for the outer service manager."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        self.sock.bind(str(path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.messages: list[Received] = []

    def drain(self) -> list[Received]:
        while True:
            try:
                data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12) + socket.CMSG_SPACE(64))
            except BlockingIOError:
                return self.messages
            pid = 0
            for level, kind, payload in ancillary:
                if kind == socket.SCM_CREDENTIALS:
                    pid = array.array("i", payload[:4])[0]
                elif kind == socket.SCM_RIGHTS:  # libsystemd's clients send none here
                    raise AssertionError("unexpected descriptors from activator")
            self.messages.append(Received(pid, parse(data), data.decode(), time.monotonic()))

    def wait(self, predicate, start: int = 0, timeout: float = 15.0, what: str = "a message") -> Received:
        def found():
            return next((m for m in self.drain()[start:] if predicate(m)), None)
        return wait_for(found, timeout, what=f"{what}; got {[m.text for m in self.messages[start:]]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener(tmp_path):
    result = Listener(tmp_path / "outer-notify")
    yield result
    result.close()


def is_ready(m: Received) -> bool:
    return m.fields.get("READY") == "1"


def slow_units(tmp_path):
    gate, slow_log, plain_log = tmp_path / "gate", tmp_path / "slow.log", tmp_path / "plain.log"
    units = {
        "slow": unit(exec=agent(f"log:{slow_log}", "notify:STATUS=waiting", f"wait:{gate}", "notify:READY=1",
                                "forever"), type="notify"),
        "plain": unit(exec=agent(f"log:{plain_log}", "forever")),
    }
    return units, gate, slow_log, plain_log


@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
def test_ready_reload_stop_are_told_to_the_outer_manager(activator, tmp_path, listener, pid1):
    units, gate, slow_log, plain_log = slow_units(tmp_path)
    a = activator(units, pid1=pid1, env={"NOTIFY_SOCKET": str(listener.path)})
    wait_instance(a, "slow", lambda i: i.get("status") == "waiting")
    # Whatever activator said up to here was said before the status.json we just read.
    early = listener.drain()
    assert not any(is_ready(m) for m in early), [m.text for m in early]
    assert any(m.fields.get("STATUS", "").startswith("2 units: ") for m in early)

    gate.touch()
    ready = listener.wait(is_ready, what="READY=1")
    assert a.status()["units"]["slow"]["state"] == "running"
    assert ready.fields["STATUS"] == "2 units: 2 running"
    sent = wait_event(slow_log, "sent", message="READY=1")[0]
    assert ready.time > sent["time"]

    # Services see activator's own notify socket, never the outer one.
    assert events(slow_log, "start")[0]["env"]["NOTIFY_SOCKET"] == str(a.runtime / "notify")
    assert "NOTIFY_SOCKET" not in wait_event(plain_log, "start")[0]["env"]

    mark = len(listener.drain())
    a.signal(signal.SIGHUP)
    reloading = listener.wait(lambda m: m.fields.get("RELOADING") == "1", mark, what="RELOADING=1")
    monotonic = int(reloading.fields["MONOTONIC_USEC"])
    assert abs(monotonic / 1e6 - reloading.time) < 5  # CLOCK_MONOTONIC, for Type=notify-reload
    after = listener.messages.index(reloading)
    listener.wait(is_ready, after + 1, what="READY=1 after the reload")
    a.wait_status(lambda s: s["reload"]["completed"] == 1)

    mark = len(listener.drain())
    assert a.stop() == 0
    stopping = listener.wait(lambda m: m.fields.get("STOPPING") == "1", mark, what="STOPPING=1")
    assert all(m.pid == a.pid for m in listener.drain()), "not sent by activator itself"
    assert not any(is_ready(m) for m in listener.messages[listener.messages.index(stopping):])


def test_reload_before_ready_does_not_announce_readiness(activator, tmp_path, listener):
    units, gate, _, _ = slow_units(tmp_path)
    a = activator(units, env={"NOTIFY_SOCKET": str(listener.path)})
    wait_instance(a, "slow", lambda i: i.get("status") == "waiting")
    a.signal(signal.SIGHUP)
    a.wait_status(lambda s: s["reload"]["completed"] == 1, what="the reload to finish")
    assert instance(a, "slow")["state"] == "starting"
    messages = listener.drain()
    assert not any(is_ready(m) for m in messages), [m.text for m in messages]
    gate.touch()
    listener.wait(is_ready, what="READY=1 once slow is ready")
    assert a.status()["units"]["slow"]["state"] == "running"


def test_nested_activator_is_ready_when_its_units_are(activator, tmp_path):
    units, gate, slow_log, _ = slow_units(tmp_path)
    inner_units, inner_run = write_units(tmp_path / "inner-units", units), tmp_path / "inner-run"
    a = activator({"inner": unit(exec=[PYTHON, "-m", "activator", "--units", str(inner_units)], type="notify",
                                 environment={"ACTIVATOR_RUNTIME_DIR": str(inner_run)})})

    def inner_status():
        return json.loads((inner_run / "status.json").read_text())
    wait_for(lambda: inner_status()["units"]["slow"]["instances"][0]["status"] == "waiting", 15,
             what="the inner slow unit to wait")
    # The inner activator's summaries reach the outer one, but READY=1 does not yet.
    outer = wait_instance(a, "inner", lambda i: i.get("status") == "2 units: 1 running, 1 starting")
    assert outer["state"] == "starting"
    assert outer["pid"] == inner_status()["pid"]  # the inner activator itself is the main process

    gate.touch()
    outer = wait_instance(a, "inner", lambda i: i["state"] == "running")
    assert inner_status()["units"]["slow"]["state"] == "running"
    assert outer["status"] == "2 units: 2 running"
    assert events(slow_log, "start")[0]["env"]["NOTIFY_SOCKET"] == str(inner_run / "notify")
    assert a.stop() == 0
