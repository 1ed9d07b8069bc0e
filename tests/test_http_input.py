"""The HTTP endpoint against bad, slow and many clients (SPEC §9): error codes, timeouts, a
bounded number of connections, and slowloris clients that must not delay probes or reaping."""

import os
import resource
import socket
import statistics
import time
from pathlib import Path

import pytest

from harness import PYTHON, wait_for, zombies_under
from http_support import connect, get, read_response, request

ORPHANS = Path(__file__).parent / "programs" / "orphans.py"
SLEEPER = "exec: [sleep, infinity]\n"
HTTP_ARGS = ["--http", "127.0.0.1:0"]
CLIENT_TIMEOUT = 5.0  # http.CLIENT_TIMEOUT


@pytest.fixture
def many_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, 4096), hard), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_unknown_path_404_other_methods_405_garbage_400(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    assert get(a, "/nothing-here").status == 404
    assert get(a, "/livez/extra").status == 404
    assert get(a, "/livez?verbose=1").status == 200  # a query string does not change the path
    for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS"):
        response = request(a, "/livez", method=method)
        assert response.status == 405, method
        assert response.headers["allow"] == "GET, HEAD"
    assert request(a, "", raw=b"this is not http\r\n\r\n").status == 400
    assert request(a, "", raw=b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n").status == 400
    assert request(a, "", raw=b"GET / HTTP/1.1\r\n\r\n").status == 400  # HTTP/1.1 needs Host
    assert get(a, "/livez").status == 200  # and it still serves


def test_request_line_or_headers_over_8_kib_get_431(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    assert request(a, "", raw=long_target).status == 431
    many_headers = b"GET /livez HTTP/1.1\r\nHost: a\r\n" + b"".join(
        b"X-Header-%d: %s\r\n" % (i, b"v" * 100) for i in range(90)) + b"\r\n"
    assert len(many_headers) > 8192
    assert request(a, "", raw=many_headers).status == 431
    with connect(a) as sock:  # the same in small pieces, as a slow client sends it
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n")
        for _ in range(10):
            sock.sendall(b"X-Filler: " + b"f" * 1000 + b"\r\n")
        assert read_response(sock).status == 431
    fits = b"GET /livez HTTP/1.1\r\nHost: a\r\nX-Filler: " + b"f" * 7000 + b"\r\n\r\n"
    assert request(a, "", raw=fits).status == 200


def test_keep_alive_and_pipelined_requests(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    with connect(a) as sock:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: a\r\n\r\nGET /readyz HTTP/1.1\r\nHost: a\r\n\r\n")
        data = receive_until(sock, lambda d: d.count(b"HTTP/1.1 ") >= 2 and d.endswith(b"}\n"))
        assert data.startswith(b"HTTP/1.1 200 OK") and b"\r\n\r\nok\n" in data
        assert data.count(b"HTTP/1.1 200 OK") == 2 and b'"ready": true' in data
        sock.sendall(b"GET /nope HTTP/1.1\r\nHost: a\r\n\r\n")  # the same connection, kept
        data = receive_until(sock, lambda d: d.endswith(b"not found\n"))
        assert data.startswith(b"HTTP/1.1 404 Not Found")


def receive_until(sock, complete, timeout: float = 10.0) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while not complete(data):
        assert time.monotonic() < deadline, data
        chunk = sock.recv(65536)
        assert chunk, f"closed early: {data!r}"
        data += chunk
    return data


def test_idle_and_slow_clients_are_cut_off(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    idle = connect(a, timeout=CLIENT_TIMEOUT * 4)
    slow = connect(a, timeout=CLIENT_TIMEOUT * 4)
    started = time.monotonic()
    try:
        slow_cut = None
        for byte in b"GET /livez HTTP/1.1\r\nHost: a\r\nX-Slow: " + b"s" * 100:
            try:
                slow.send(bytes([byte]))
            except OSError:
                slow_cut = time.monotonic() - started
                break
            time.sleep(0.2)  # a byte every 200 ms: a slowloris client
        assert slow_cut is not None and slow_cut < CLIENT_TIMEOUT * 3
        assert idle.recv(1) == b""  # closed by activator
        assert time.monotonic() - started < CLIENT_TIMEOUT * 3
    finally:
        idle.close()
        slow.close()


def descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_the_number_of_connections_is_bounded(activator, many_descriptors):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    before = descriptors(a.pid)
    clients = []
    try:
        for _ in range(200):
            clients.append(connect(a))
        assert get(a, "/livez").status == 200  # a new client is still served
        wait_for(lambda: descriptors(a.pid) <= before + 64 + 1, 10, what="at most 64 connections held")
        assert descriptors(a.pid) <= before + 65
    finally:
        for c in clients:
            c.close()


def slowloris(a, count: int) -> list[socket.socket]:
    clients = []
    for _ in range(count):
        sock = connect(a)
        sock.setblocking(False)
        sock.send(b"GET /livez HTTP/1.1\r\nHost: a\r\n")
        clients.append(sock)
    return clients


def trickle(clients: list[socket.socket]) -> None:
    for sock in clients:
        try:
            sock.send(b"X: y\r\n")
        except OSError:
            pass  # cut off: that is the point


def fresh_livez(a) -> float:
    started = time.monotonic()
    response = get(a, "/livez")
    assert response.status == 200
    return time.monotonic() - started


def test_300_slowloris_clients_delay_neither_livez_nor_reaping(activator, tmp_path, many_descriptors):
    done = tmp_path / "done"
    go = tmp_path / "go"
    a = activator({
        "web": SLEEPER,
        "orphans": f"""
            exec: [sh, -c, "while [ ! -e {go} ]; do sleep 0.05; done; exec {PYTHON} {ORPHANS} 300 {done}"]
            type: oneshot
            restart: "no"
        """,
    }, args=HTTP_ARGS)
    unloaded = statistics.median(fresh_livez(a) for _ in range(5))
    clients = slowloris(a, 300)
    try:
        delays = []
        for _ in range(10):
            trickle(clients)
            delays.append(fresh_livez(a))
        assert statistics.median(delays) < unloaded + 0.1, delays
        go.touch()
        wait_for(done.exists, 20, what="the orphan burst")
        trickle(clients)
        started = time.monotonic()
        wait_for(lambda: not zombies_under(a.pid), 2.0, interval=0.01, what="no zombies under the slowloris")
        assert time.monotonic() - started < 1.0
        a.wait_state("orphans", "exited")
    finally:
        for c in clients:
            c.close()
