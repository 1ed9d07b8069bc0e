"""Probes without processes: /proc text parsed, addresses read, HTTP status lines judged, and
when the readiness and health watches run, retry, give up and call back (a fake loop)."""

import socket

import pytest

from activator import listening, probewatch
from activator.probes import http_verdict
from activator.probespec import AddressError, Probe, parse_address, parse_url
from factory import process, service

EPOLL_FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1038
tfd:        3 events:       19 data:     7ffa00000003  pos:0 ino:4695ce sdev:9
tfd:        5 events:       19 data:                5  pos:0 ino:469623 sdev:9
"""


def test_epoll_fdinfo_lists_watched_inodes():
    assert listening.epoll_inodes(EPOLL_FDINFO) == {0x4695ce, 0x469623}
    assert listening.epoll_inodes("pos:\t0\nflags:\t02\n") == set()


def test_accept_syscall_names_its_descriptor():
    accept, accept4 = listening.ACCEPT_SYSCALLS
    assert listening.accepting_fd(f"{accept4} 0x3 0x7ffc 0x7ffd 0x80000 0x0 0x0 0x7ffc 0x7f12\n") == 3
    assert listening.accepting_fd(f"{accept} 0xa 0x0 0x0 0x0 0x0 0x0 0x7ffc 0x7f12\n") == 10
    assert listening.accepting_fd("7 0x55d 0x2 0xffffffff 0x0 0x0 0x0 0x7ffc 0x7f12\n") is None  # poll
    assert listening.accepting_fd("running\n") is None
    assert listening.accepting_fd("-1 0x7ffc 0x7f12\n") is None  # blocked, not in a syscall


def test_socket_links_and_descendants():
    assert listening.socket_inode("socket:[12345]") == 12345
    assert listening.socket_inode("pipe:[12345]") is None
    parents = {10: 1, 11: 10, 12: 10, 13: 12, 20: 1, 21: 20}
    assert sorted(listening.family(10, parents)) == [10, 11, 12, 13]


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8000", (socket.AF_INET, "127.0.0.1", 8000)),
    ("localhost:80", (socket.AF_INET, "127.0.0.1", 80)),
    ("[::1]:9000", (socket.AF_INET6, "::1", 9000)),
])
def test_tcp_addresses(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "example.com:80", "::1:80", "127.0.0.1:0",
                                  "127.0.0.1:65536", "127.0.0.1:http", ":80"])
def test_bad_tcp_addresses(text):
    with pytest.raises(AddressError):
        parse_address(text)


def test_urls():
    assert parse_url("http://127.0.0.1:8000/healthz") == (socket.AF_INET, "127.0.0.1", 8000,
                                                          "127.0.0.1:8000", "/healthz")
    assert parse_url("http://localhost") == (socket.AF_INET, "127.0.0.1", 80, "localhost", "/")
    assert parse_url("http://[::1]:81/a?b=c")[1:] == ("::1", 81, "[::1]:81", "/a?b=c")
    for bad in ("https://127.0.0.1/", "http://example.com/", "http://127.0.0.1:x/", "http://1.2.3.4/a b"):
        with pytest.raises(AddressError):
            parse_url(bad)


def test_http_status_lines():
    assert http_verdict(b"HTTP/1.1 200 OK\r") == (True, "HTTP/1.1 200 OK")
    assert http_verdict(b"HTTP/1.0 302 Found")[0]
    assert not http_verdict(b"HTTP/1.1 503 Service Unavailable")[0]
    assert not http_verdict(b"HTTP/1.1 404 Not Found")[0]
    assert http_verdict(b"") == (False, "closed without an answer")
    assert not http_verdict(b"SSH-2.0-OpenSSH")[0]


# --------------------------------------------------------------------------- the watches

class FakeLoop:
    def __init__(self):
        self.time = 0.0
        self.timers = []

    def now(self):
        return self.time

    def call_later(self, delay, callback):
        timer = FakeTimer(self.time + max(delay, 0.0), callback)
        self.timers.append(timer)
        return timer

    def run_next(self):
        """Jump to the earliest pending timer and run it."""
        pending = [t for t in self.timers if not t.cancelled]
        assert pending, "nothing scheduled"
        timer = min(pending, key=lambda t: t.deadline)
        self.time = max(self.time, timer.deadline)
        timer.cancelled = True
        timer.callback()

    def pending(self):
        return sorted(t.deadline for t in self.timers if not t.cancelled)


class FakeTimer:
    def __init__(self, deadline, callback):
        self.deadline, self.callback, self.cancelled = deadline, callback, False

    def cancel(self):
        self.cancelled = True


class FakeLog:
    def __init__(self):
        self.lines = []

    def debug(self, text, **where):
        self.lines.append(text)

    warning = debug


class FakeProbes(probewatch.Probes):
    """Attempts that end when the test says so."""

    def __init__(self):
        self.loop, self.log, self.changes = FakeLoop(), FakeLog(), 0
        self.attempts = []

    def on_change(self):
        self.changes += 1

    def check(self, proc, probe, done):
        self.attempts.append((self.loop.now(), done))
        return FakeTimer(0, None)

    def answer(self, ok, output="out", after=0.0):
        self.loop.time += after
        self.attempts[-1][1](ok, output)


def health_unit(**fields):
    probe = Probe("http", (), interval=10.0, timeout=2.0, retries=3, **fields)
    svc = service(health=probe)
    return process(svc)


def test_health_counts_failures_in_a_row():
    probes, proc, verdicts = FakeProbes(), health_unit(start_period=5.0), []
    watch = probewatch.HealthWatch(probes, proc, lambda p, output: verdicts.append(output))
    assert watch.state == "starting" and probes.loop.pending() == [5.0]
    probes.loop.run_next()
    probes.answer(False, "refused", after=0.01)
    assert watch.state == "starting" and watch.failures == 1
    assert probes.loop.pending() == [15.0]  # every interval, from the start of the last attempt
    probes.loop.run_next()
    probes.answer(True, "HTTP/1.1 200 OK", after=0.5)
    assert (watch.state, watch.failures, watch.output) == ("healthy", 0, "HTTP/1.1 200 OK")
    for n in range(3):
        probes.loop.run_next()
        probes.answer(False, f"timed out {n}", after=2.0)
    assert watch.state == "unhealthy" and verdicts == ["timed out 2"]
    assert probes.loop.pending() == []  # no further attempt: the instance is being restarted
    assert probes.changes >= 3


def test_watches_give_up_once_the_process_is_stopped():
    probes, proc, verdicts = FakeProbes(), health_unit(), []
    probewatch.HealthWatch(probes, proc, lambda p, output: verdicts.append(output))
    probes.loop.run_next()
    proc.timers["stop"] = FakeTimer(99, None)
    probes.answer(False)
    assert probes.loop.pending() == []
    assert verdicts == []


def test_ready_retries_until_it_passes():
    probes = FakeProbes()
    svc = service(ready=Probe("tcp", (), interval=0.2, timeout=1.0))
    proc, ready = process(svc), []
    watch = probewatch.ReadyWatch(probes, proc, proc.unit.ready, ready.append)
    probes.loop.run_next()
    probes.answer(False, "Connection refused", after=0.001)
    assert probes.loop.pending() == [pytest.approx(0.2)]
    probes.loop.run_next()
    probes.answer(True, "connected")
    assert ready == [proc] and probes.loop.pending() == []
    watch.cancel()


def test_listening_looks_on_a_backoff(monkeypatch):
    loop, looks = FakeLoop(), []
    monkeypatch.setattr(listening, "listening", lambda pid, inodes: looks.append(loop.now()) or len(looks) > 7)
    svc = service(ready=Probe("listening", interval=0.2))
    proc, ready = process(svc), []
    probewatch.ListeningWatch(loop, proc, {1}, 0.2, ready.append)
    while not ready:
        loop.run_next()
    gaps = [round(b - a, 3) for a, b in zip([0.0] + looks, looks)]
    assert gaps == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.2, 0.2]


def test_status_shows_health_per_instance():
    from activator import status

    svc = service(health=Probe("http", (), interval=10.0, timeout=2.0, retries=3), instances=2)
    first = process(svc, 1, pid=1000)
    process(svc, 2, pid=1001)  # ready not yet: no watch
    watch = probewatch.HealthWatch.__new__(probewatch.HealthWatch)
    watch.state, watch.output = "unhealthy", "timed out after 2s"
    first.timers["health"] = watch
    entry = status.unit_snapshot(svc, {})
    assert [(i["health"], i["health_output"]) for i in entry["instances"]] == [
        ("unhealthy", "timed out after 2s"), ("starting", None)]
    text = status.table({"units": {"web": entry}}, with_usage=False)
    assert "health: unhealthy" in text and "health: starting" in text
    plain = status.unit_snapshot(service(), {})  # no health key: no health field
    assert "health" not in plain["instances"][0]
