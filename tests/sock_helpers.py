"""Helpers shared by the socket tests (tests/test_sockets*.py): real clients, the test
service's reports, addresses read back from status.json."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from harness import stays, wait_for  # noqa: F401 (stays: for the socket tests)

PY = sys.executable
PROGRAMS = Path(__file__).resolve().parent / "programs"
SERVE = PROGRAMS / "sock_serve.py"
CLIENT = PROGRAMS / "sock_client.py"


def ipv6_loopback() -> bool:
    """Whether this machine can bind IPv6's loopback: the one probe of every IPv6 test."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# Skipped tests are counted and their reasons listed at the end of a run (conftest.py).
needs_ipv6 = pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 on this machine (cannot bind ::1)")


def serve(report_dir: Path, *extra: str) -> str:
    """The `exec:` of a unit running tests/programs/sock_serve.py, as a YAML flow list."""
    return json.dumps([PY, str(SERVE), str(report_dir), *extra])


def reports(report_dir: Path) -> list[dict]:
    result = []
    for path in sorted(Path(report_dir).glob("*.json")):
        result.append(json.loads(path.read_text()))
    return result


def wait_reports(report_dir: Path, count: int, timeout: float = 15.0) -> list[dict]:
    return wait_for(lambda: len(r := reports(report_dir)) >= count and r, timeout,
                    what=f"{count} report(s) in {report_dir}")


def listen_of(a, unit: str, index: int = 0) -> str:
    return a.status()["units"][unit]["sockets"][index]["listen"]


def inet_address(a, unit: str, index: int = 0) -> tuple[str, int]:
    """(host, port) of a tcp/udp socket as bound (port 0 resolved); '*' for a bare port."""
    listen = listen_of(a, unit, index)
    rest = listen.split("://", 1)[1]
    host, _, port = rest.rpartition(":")
    return host.strip("[]"), int(port)


def port_of(a, unit: str, index: int = 0) -> int:
    return inet_address(a, unit, index)[1]


def connect(address, family=socket.AF_INET, timeout: float = 10.0) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def request(address, family=socket.AF_INET, timeout: float = 10.0) -> dict:
    """One new connection to a sock_serve socket; its JSON answer (with our own address)."""
    with connect(address, family, timeout) as sock:
        local = sock.getsockname()
        answer = json.loads(read_all(sock))
    answer["local"] = list(local) if isinstance(local, tuple) else local
    return answer


def udp_request(address, payload: bytes, family=socket.AF_INET, timeout: float = 10.0) -> dict:
    """One datagram to a sock_serve UDP socket; its JSON answer. Resends are not needed: the
    socket exists from boot, so the datagram waits in its queue."""
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, address)
        data, _ = sock.recvfrom(65536)
    return json.loads(data)


def wait_state(a, unit: str, state: str, timeout: float = 15.0, watch: tuple = ()) -> dict:
    """`a.wait_state`, but fails at once, with activator's output, when `unit` or one of the
    units in `watch` has failed instead (rather than after the whole timeout)."""
    def check(s):
        for name in (unit, *watch):
            u = s["units"][name]
            if u["state"] == "failed" and (name, state) != (unit, "failed"):
                raise AssertionError(f"unit {name} failed ({u.get('failure')}) while waiting for "
                                     f"{unit} to be {state}:\n{a.output()}")
        return s["units"][unit]["state"] == state
    return a.wait_status(check, timeout, what=f"unit {unit} {state}")
