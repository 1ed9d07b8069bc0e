"""`ready:` and `health:` (SPEC §10) with real servers: uvicorn with a slow import, a server
blocked in accept, tcp/http/exec/fd probes, `$(instance)` in an address, a hung worker, a
hanging probe command. activator runs as PID 1."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from pathlib import Path

from harness import proc_stat, wait_for
from sock_helpers import PROGRAMS, PY, port_of

BIN = Path(PY).parent
SERVER = str(PROGRAMS / "probe_server.py")


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel chose, free on 127.0.0.1 and 127.0.0.2 (for `$(instance)`)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        try:
            with socket.socket() as s2:
                s2.bind(("127.0.0.2", port))
            return port
        except OSError:
            continue
    raise AssertionError("no port free on both addresses")


def uvicorn(app: str = "probe_slow_asgi:app") -> str:
    return json.dumps([str(BIN / "uvicorn"), "--fd", "3", "--app-dir", str(PROGRAMS),
                       "--no-access-log", app])


def instance(a, unit: str, number: int = 1) -> dict:
    return a.status()["units"][unit]["instances"][number - 1]


def test_uvicorn_slow_import_is_ready_when_listening(activator, tmp_path):
    ready_dir, plain_dir = tmp_path / "ready", tmp_path / "plain"
    ready_dir.mkdir()
    plain_dir.mkdir()
    a = activator({
        "app": f"""
            exec: {uvicorn()}
            sockets: {{http: {{listen: "tcp://127.0.0.1:0"}}}}
            environment: {{PROBE_IMPORT_SECONDS: "1.5", PROBE_MARKER_DIR: "{ready_dir}"}}
            ready: listening
        """,
        "plain": f"""
            exec: {uvicorn()}
            sockets: {{plain: {{listen: "tcp://127.0.0.1:0"}}}}
            environment: {{PROBE_IMPORT_SECONDS: "1.5", PROBE_MARKER_DIR: "{plain_dir}"}}
        """,
    })
    # Negative control: without `ready`, running comes at once, long before the import ends.
    a.wait_state("plain", "running")
    assert not list(plain_dir.glob("imported-*"))
    assert a.status()["units"]["app"]["state"] == "starting"
    a.wait_state("app", "running", timeout=20)
    assert list(ready_dir.glob("imported-*")), "running before uvicorn listened"
    assert a.stop() == 0


def test_server_blocked_in_accept_is_ready(activator, tmp_path):
    marker = tmp_path / "accepting"
    a = activator({"web": f"""
        exec: {json.dumps([PY, SERVER, "accept", "1", str(marker)])}
        sockets: {{http: {{listen: "tcp://127.0.0.1:0"}}}}
        ready: listening
    """})
    wait_for(lambda: instance(a, "web")["pid"], what="a pid")
    assert instance(a, "web")["state"] == "starting"
    a.wait_state("web", "running", timeout=20)
    assert marker.exists()
    with socket.create_connection(("127.0.0.1", port_of(a, "web")), timeout=10) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert c.recv(100).startswith(b"HTTP/1.0 200")
    assert a.stop() == 0


def test_tcp_probe_and_instance_template(activator, tmp_path):
    """Each instance binds its own address, 127.0.0.$(instance); the second takes longer."""
    port = free_port()
    exec_ = json.dumps([PY, SERVER, "tcp", "127.0.0.$(instance)", str(port), "$(instance)"])
    a = activator({"web": f"""
        exec: {exec_}
        instances: 2
        ready: {{tcp: "127.0.0.$(instance):{port}", interval: 100ms}}
    """})
    a.wait_status(lambda s: s["units"]["web"]["instances"][0]["state"] == "running", what="web.1 running")
    # web.2 binds after 2 s: the probe of web.1's address (127.0.0.1) must not make it ready.
    assert instance(a, "web", 2)["state"] == "starting"
    a.wait_state("web", "running", timeout=20)
    with socket.create_connection(("127.0.0.2", port), timeout=5):
        pass
    assert a.stop() == 0


def test_http_probe_waits_for_2xx(activator, tmp_path):
    port = free_port()
    a = activator({"web": f"""
        exec: {json.dumps([PY, SERVER, "http", "127.0.0.1", str(port), "1.5"])}
        ready: {{http: "http://127.0.0.1:{port}/ready", interval: 100ms}}
    """})
    a.wait_log(f"listening on 127.0.0.1:{port}")
    assert a.status()["units"]["web"]["state"] == "starting"  # answering 503 for 1.5 s
    a.wait_state("web", "running", timeout=20)
    assert a.stop() == 0


def test_exec_probe_runs_with_prefixed_output(activator, tmp_path):
    flag = tmp_path / "flag"
    a = activator({"web": f"""
        exec: sleep 100
        environment: {{FLAG: "{flag}"}}
        ready: {{exec: ["sh", "-c", "echo checking $$FLAG; test -e $$FLAG"], interval: 100ms}}
    """})
    a.wait_log(f"web probe | checking {flag}")
    assert a.status()["units"]["web"]["state"] == "starting"
    logs = a.run_inside([PY, "-m", "activator", "logs", "web"])  # kept in the unit's log buffer
    assert f"probe: checking {flag}" in logs.stdout, logs
    flag.touch()
    a.wait_state("web", "running")
    assert a.zombies() == []
    assert a.stop() == 0


def test_fd_probe_is_a_newline_on_a_pipe(activator, tmp_path):
    marker = tmp_path / "said"
    script = f"sleep 1; touch {marker}; echo >&5; exec sleep 100"
    a = activator({"web": f"""
        exec: {json.dumps(["sh", "-c", script])}
        sockets: {{http: {{listen: "tcp://127.0.0.1:0"}}}}
        socket_env: false
        ready: {{fd: 5}}
    """})
    wait_for(lambda: instance(a, "web")["pid"], what="a pid")
    assert instance(a, "web")["state"] == "starting"
    a.wait_state("web", "running", timeout=20)
    assert marker.exists()
    assert a.stop() == 0


def test_ready_timeout_stops_and_restarts(activator, tmp_path):
    a = activator({"web": """
        exec: sleep 100
        ready: {exec: "false", interval: 100ms}
        timeout_start_sec: 1
        restart_sec: 0.2
    """})
    first = wait_for(lambda: instance(a, "web")["pid"], what="a pid")
    a.wait_log("not ready (exec false) within 1s: stopping it")
    wait_for(lambda: instance(a, "web")["pid"] not in (None, first), timeout=15, what="a new pid")
    assert instance(a, "web")["restarts"] >= 1
    assert a.stop() == 0


def test_hung_worker_is_restarted(activator, tmp_path):
    interval, timeout, retries = 1.0, 1.0, 2
    port = free_port()
    a = activator({"api": f"""
        exec: {uvicorn()}
        sockets: {{http: {{listen: "tcp://127.0.0.1:{port}"}}}}
        environment: {{PROBE_IMPORT_SECONDS: "0"}}
        ready: listening
        health: {{http: "http://127.0.0.1:{port}/healthz", interval: {interval}, timeout: {timeout},
                  retries: {retries}}}
    """})
    a.wait_status(lambda s: s["units"]["api"]["instances"][0].get("health") == "healthy",
                  timeout=20, what="healthy")
    entry = instance(a, "api")
    assert entry["health_output"].startswith("HTTP/1.1 200")
    [host_pid] = a.host_pids("api")
    os.kill(host_pid, signal.SIGSTOP)
    stopped = time.monotonic()
    a.wait_log("unhealthy", timeout=20)
    wait_for(lambda: instance(a, "api")["pid"] not in (None, entry["pid"]), timeout=20, what="a new pid")
    elapsed = time.monotonic() - stopped
    print(f"restarted {elapsed:.2f} s after SIGSTOP")
    assert elapsed <= interval * retries + timeout + 1, elapsed
    assert "failed its health check; restarting" in a.output()
    assert proc_stat(host_pid) is None or proc_stat(host_pid)["state"] == "Z"
    a.wait_status(lambda s: s["units"]["api"]["instances"][0].get("health") == "healthy",
                  timeout=20, what="healthy again")
    assert a.stop() == 0


def probe_processes(marker: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if marker.encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    found.append(int(entry))
            except OSError:
                pass
    return found


def zombie_children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = proc_stat(int(entry))
            if stat and stat["ppid"] == pid and stat["state"] == "Z":
                found.append(int(entry))
    return found


def test_hanging_exec_probe_is_killed_at_its_timeout(activator, tmp_path):
    marker = f"{time.time():.6f}"  # sleep takes it as seconds; it names these processes
    a = activator({"web": f"""
        exec: sleep 100
        health: {{exec: ["sh", "-c", "sleep 1{marker} & sleep 2{marker}"], interval: 30s,
                  timeout: 500ms, retries: 5}}
    """})
    a.wait_log("health check failed (1 of 5)", timeout=20)
    assert "timed out after 0.5s" in a.output()
    wait_for(lambda: not probe_processes(marker), timeout=5, what="the probe's processes gone")
    wait_for(lambda: not zombie_children(a.pid), timeout=5, what="no zombie")
    entry = a.status()["units"]["web"]["instances"][0]
    assert entry["health"] == "starting" and entry["health_output"].endswith("timed out after 0.5s")
    assert a.stop() == 0


def fresh_connections(port: int, stop, results: list, timeout: float) -> None:
    """GET / on a new connection each time until `stop` is set: (ok, seconds) per request."""
    while not stop.is_set():
        began = time.monotonic()
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
                c.sendall(b"GET / HTTP/1.0\r\n\r\n")
                ok = c.recv(100).startswith(b"HTTP/1.1 200")
        except OSError:
            ok = False
        results.append((ok, time.monotonic() - began))
        time.sleep(0.02)


def rolling_restart_under_load(activator, tmp_path, ready: str) -> list:
    import threading

    a = activator({"api": f"""
        exec: {uvicorn()}
        instances: 2
        sockets: {{http: {{listen: "tcp://127.0.0.1:0"}}}}
        environment: {{PROBE_IMPORT_SECONDS: "2"}}
        {ready}
    """})
    a.wait_state("api", "running", timeout=30)
    before = set(a.pids("api"))
    results, stop = [], threading.Event()
    client = threading.Thread(target=fresh_connections, args=(port_of(a, "api"), stop, results, 1.5))
    client.start()
    try:
        wait_for(lambda: len(results) >= 5, timeout=10, what="requests before the restart")
        a.signal(signal.SIGUSR2)
        a.wait_status(lambda s: s["units"]["api"]["state"] == "running"
                      and not set(a.pids("api")) & before, timeout=40, what="both instances replaced")
        count = len(results)
        wait_for(lambda: len(results) >= count + 5, timeout=10, what="requests after the restart")
    finally:
        stop.set()
        client.join(10)
    assert a.stop() == 0
    return results


def test_rolling_restart_waits_for_listening(activator, tmp_path):
    results = rolling_restart_under_load(activator, tmp_path, "ready: listening")
    assert all(ok for ok, _ in results), [r for r in results if not r[0]]


def test_rolling_restart_without_ready_has_an_outage(activator, tmp_path):
    """The negative control: the same restart, each new instance counted as started at once."""
    results = rolling_restart_under_load(activator, tmp_path, "")
    assert not all(ok for ok, _ in results)
