"""`ready:` and `health:` in unit files (SPEC §10): the forms read, and every error that
`activator check` reports with FILE:LINE."""

from __future__ import annotations

import pytest

from activator.probespec import Probe
from unitfiles import Stack, only_unit

SOCKET = 'sockets: {http: {listen: "tcp://127.0.0.1:0"}}\n'


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def read(stack, text: str):
    stack.unit("web", text)
    unit = only_unit(stack.load())
    return unit.ready, unit.health


def error_of(stack, text: str) -> tuple[int, str]:
    stack.unit("web", text)
    error = stack.error()
    prefix = "units/web.yaml:"
    assert error.startswith(prefix), error
    line, rest = error[len(prefix):].split(": unit web: ", 1)
    return int(line), rest


def test_forms(stack):
    ready, health = read(stack, SOCKET + "ready: listening\n")
    assert ready == Probe("listening", interval=0.2) and health is None
    ready, _ = read(stack, 'ready: {tcp: "127.0.0.1:80$(instance)", interval: 50ms, timeout: 2}\n')
    assert (ready.kind, str(ready.target[0]), ready.interval, ready.timeout) == (
        "tcp", "127.0.0.1:80$(instance)", 0.05, 2.0)
    ready, _ = read(stack, "ready: {http: \"http://[::1]:8080/ready\"}\n")
    assert (ready.kind, ready.interval, ready.timeout) == ("http", 0.2, 1.0)
    ready, _ = read(stack, "ready: {exec: [\"sh\", \"-c\", \"test -e /tmp/x$(instance)\"]}\n")
    assert ready.kind == "exec" and len(ready.target) == 3
    ready, _ = read(stack, SOCKET + "ready: {fd: 4}\n")
    assert (ready.kind, ready.fd) == ("fd", 4)
    _, health = read(stack, 'health: {http: "http://127.0.0.1:8000/healthz"}\n')
    assert (health.interval, health.timeout, health.retries, health.start_period) == (10.0, 2.0, 3, 0.0)
    _, health = read(stack, 'health: {exec: "true", interval: 1min, retries: 1, start_period: 30s}\n')
    assert (health.kind, health.interval, health.retries, health.start_period) == ("exec", 60.0, 1, 30.0)


def test_a_probe_change_is_a_unit_change(stack):
    stack.unit("web", 'ready: {tcp: "127.0.0.1:80"}\n')
    before = only_unit(stack.load()).fingerprint
    stack.unit("web", 'ready: {tcp: "127.0.0.1:81"}\n')
    assert only_unit(stack.load()).fingerprint != before


ERRORS = [
    ("ready: soon\n", 2, "ready: expected listening, or a mapping"),
    ("ready: {ping: 127.0.0.1}\n", 2, "ready: unknown key 'ping'"),
    ("ready: {interval: 1s}\n", 2, "ready: expected exactly one of tcp, http, exec, fd; got none"),
    ("ready: {tcp: \"127.0.0.1:80\", http: \"http://127.0.0.1/\"}\n", 2, "got tcp, http"),
    ("ready: listening\n", 2, "ready: listening needs a socket of this unit"),
    ("type: notify\nready: {tcp: \"127.0.0.1:80\"}\n", 3, "ready: does not apply to type notify"),
    ("type: oneshot\nready: {tcp: \"127.0.0.1:80\"}\n", 3, "ready: does not apply to type oneshot"),
    ("ready: {tcp: \"example.com:80\"}\n", 2, "ready.tcp: 'example.com:80': the host must be an IP"),
    ("ready: {tcp: \"127.0.0.1\"}\n", 2, "ready.tcp: '127.0.0.1' is not HOST:PORT"),
    ("ready: {tcp: \"127.0.0.1:99999\"}\n", 2, "the port must be a number from 1 to 65535"),
    ("ready: {http: \"https://127.0.0.1/\"}\n", 2, "ready.http: 'https://127.0.0.1/' is not an http:// URL"),
    ("ready: {exec: \"\"}\n", 2, "ready.exec: the command is empty"),
    ("ready: {exec: \"echo $(sockets.http)\"}\n", 2, "means nothing to a probe"),
    ("ready: {exec: \"echo $(nope)\"}\n", 2, "ready.exec: unknown template"),
    ("ready: {tcp: \"127.0.0.1:80\", interval: soon}\n", 2, "ready.interval: expected seconds"),
    ("ready: {tcp: \"127.0.0.1:80\", timeout: 0}\n", 2, "ready.timeout: must be more than 0"),
    (SOCKET + "ready: {fd: 3}\n", 3, "ready.fd: 3 is taken (the service has 0-2 and its sockets 3-3); use 4"),
    ("ready: {fd: 2}\n", 2, "ready.fd: expected a descriptor number from 3"),
    ("ready: {fd: 5, interval: 1s}\n", 2, "ready.interval: does not apply to fd"),
    ("health: {listening: true}\n", 2, "health: unknown key 'listening'"),
    ("health: {fd: 4}\n", 2, "health: unknown key 'fd'"),
    ("health: {tcp: \"127.0.0.1:80\", retries: 0}\n", 2, "health.retries: expected a whole number of at least 1"),
    ("health: {tcp: \"127.0.0.1:80\", start_period: -1}\n", 2, "health.start_period: expected seconds"),
    ("health: 10s\n", 2, "health: expected a mapping"),
    ("type: oneshot\nhealth: {tcp: \"127.0.0.1:80\"}\n", 3, "health: does not apply to type oneshot"),
]


@pytest.mark.parametrize("text, line, message", ERRORS)
def test_errors(stack, text, line, message):
    found_line, found = error_of(stack, text)
    assert message in found, found
    assert found_line == line, (found_line, found)


def test_accept_units_take_neither(stack):
    stack.unit("web", 'sockets: {c: {listen: "tcp://127.0.0.1:0", accept: true}}\n'
                      "ready: listening\nhealth: {tcp: \"127.0.0.1:80\"}\n")
    errors = stack.errors()
    assert any("ready: a unit with an accept socket" in e for e in errors), errors
    assert any("health: does not apply to a unit with an accept socket" in e for e in errors), errors


def test_check_command_reports_them(stack, tmp_path):
    import subprocess
    import sys

    stack.unit("web", "type: notify\nready: {tcp: \"127.0.0.1:80\"}\n")
    done = subprocess.run([sys.executable, "-m", "activator", "check", "--units", str(stack.units)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert f"{stack.units}/web.yaml:3: unit web: ready: does not apply to type notify" in done.stdout + done.stderr
