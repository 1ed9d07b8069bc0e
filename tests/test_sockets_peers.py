"""Real servers on activator's sockets (gunicorn, uvicorn), and sockets that stay open while
the processes using them are killed and restarted. activator runs as PID 1."""

import http.client
import json
import os
import signal
import socket
import threading
from pathlib import Path

import gunicorn

from harness import environ_of, proc_stat, wait_for
from sock_helpers import PROGRAMS, PY, inet_address, port_of, request, serve, wait_reports

BIN = Path(PY).parent
GUNICORN_VERSION = tuple(int(p) for p in gunicorn.__version__.split(".")[:2])
# Since 25.1 gunicorn opens a control socket under $XDG_RUNTIME_DIR or $HOME unless told not
# to: tests running side by side would fight over it.
NO_CONTROL_SOCKET = ["--no-control-socket"] if GUNICORN_VERSION >= (25, 1) else []


def http_get(host: str, port: int, path: str = "/", timeout: float = 20.0) -> tuple[int, dict]:
    """One GET on a new connection; (status, JSON body)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def gunicorn_exec(*args: str) -> str:
    return json.dumps([str(BIN / "gunicorn"), "--workers", "2", "--chdir", str(PROGRAMS),
                       *NO_CONTROL_SOCKET, *args, "sock_wsgi:app"])


def test_gunicorn_on_a_templated_fd(activator):
    a = activator({"web": f"""
        exec: {gunicorn_exec("--bind", "fd://$(sockets.http)")}
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    a.wait_state("web", "running")
    port = port_of(a, "web")
    status, body = http_get("127.0.0.1", port, "/hello")
    assert status == 200 and body["path"] == "/hello"
    [master] = a.pids("web")
    assert body["ppid"] == master  # a worker of the gunicorn that activator started
    assert "gunicorn" in body["server"]
    # socket_env defaulted to false: gunicorn was not also given the socket by LISTEN_FDS
    # (it would take fd 3 twice).
    env = environ_of(a.host_pid(master))
    assert not [k for k in env if k.startswith("LISTEN_")]
    a.wait_log(f"Listening at: http://127.0.0.1:{port}")
    assert a.output().count("Listening at:") == 1
    assert a.stop() == 0


def test_gunicorn_takes_its_socket_from_listen_fds(activator):
    """No --bind at all: gunicorn finds the socket through LISTEN_FDS/LISTEN_PID (it checks
    that LISTEN_PID is its own pid), instead of binding its default 127.0.0.1:8000."""
    a = activator({"web": f"""
        exec: {gunicorn_exec()}
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    a.wait_state("web", "running")
    port = port_of(a, "web")
    a.wait_log(f"Listening at: http://127.0.0.1:{port}")
    assert "127.0.0.1:8000" not in a.output()
    answered = set()
    for _ in range(4):
        status, body = http_get("127.0.0.1", port)
        assert status == 200
        answered.add(body["ppid"])
    assert answered == set(a.pids("web"))
    env = environ_of(a.host_pid(a.pids("web")[0]))
    assert env["LISTEN_FDS"] == "1" and env["LISTEN_PID"] == str(a.pids("web")[0])
    assert a.stop() == 0


def test_uvicorn_on_a_templated_fd(activator):
    a = activator({"api": f"""
        exec: [{BIN / "uvicorn"}, --fd, "$(sockets.http)", --app-dir, "{PROGRAMS}", "sock_asgi:app"]
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    a.wait_state("api", "running")
    port = port_of(a, "api")
    status, body = http_get("127.0.0.1", port, "/asgi")
    assert status == 200 and body["path"] == "/asgi"
    assert body["pid"] == a.pids("api")[0]
    assert body["client"][0] == "127.0.0.1"
    # uvicorn re-raises SIGTERM after its clean shutdown: still a clean stop.
    assert a.stop() == 0


def kill_under_load(a, unit: str, address, rounds: int, all_every: int = 0):
    """Run a client loop (a new connection per request) against `unit` while SIGKILLing its
    instances `rounds` times, one at a time (all at once every `all_every`-th round), each
    time waiting until the instance is back and has answered again. The answers (pids) and
    the errors the client met.

    The kills fall between two requests of the client (it holds a lock per request, and the
    killer holds it until the killed processes are dead): a process killed while it holds an
    accepted connection loses that connection whatever the init does, and that is not what is
    under test here."""
    lock = threading.Lock()
    stop = threading.Event()
    answers: list[int] = []
    errors: list[str] = []

    def client():
        while not stop.is_set():
            with lock:
                try:
                    answers.append(request(address, timeout=10)["pid"])
                except (OSError, ValueError) as e:
                    errors.append(f"{type(e).__name__}: {e}")

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        for round_ in range(rounds):
            instances = a.status()["units"][unit]["instances"]
            everyone = all_every and round_ % all_every == all_every - 1
            victims = instances if everyone else [instances[round_ % len(instances)]]
            hosts = [a.host_pid(v["pid"]) for v in victims]
            old = {v["instance"]: v["pid"] for v in victims}
            with lock:
                for host in hosts:
                    os.kill(host, signal.SIGKILL)
                # Until it is dead, a killed process that was blocked in accept() may still
                # take the next connection from the queue (the kernel checks the queue before
                # the pending signal) and then die with it.
                wait_for(lambda: all((proc_stat(h) or {"state": "X"})["state"] in "ZX" for h in hosts),
                         10, interval=0.001, what="the killed processes dead")
                before = len(answers)

            def replaced(s):
                now = {i["instance"]: i for i in s["units"][unit]["instances"]}
                return all(now[n]["pid"] not in (None, pid) and now[n]["state"] == "running"
                           for n, pid in old.items())
            a.wait_status(replaced, what=f"round {round_}: instances {sorted(old)} restarted")
            # The client went on while they restarted, and is answered by the new ones too.
            new_pids = {i["pid"] for i in a.status()["units"][unit]["instances"]} - set(old.values())
            wait_for(lambda: len(answers) >= before + 3 and new_pids & set(answers[before:]), 20,
                     interval=0.005, what=f"round {round_}: answers after the kill")
    finally:
        stop.set()
        thread.join(30)
    return answers, errors


def test_sockets_stay_open_while_instances_are_killed_and_restarted(activator, tmp_path):
    """A client makes request after request, each on a new connection, while instances of a
    4-instance service are SIGKILLed 20 times (every 5th time all four at once): not one
    connection is refused or reset, because the listening socket lives in activator and
    connections wait in its backlog while no instance accepts."""
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out)}
        instances: 4
        restart: always
        restart_sec: 0.05
        restart_max_sec: 0.1
        start_limit_burst: 1000
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    a.wait_status(lambda s: [i["state"] for i in s["units"]["web"]["instances"]] == ["running"] * 4,
                  what="four instances running")
    wait_reports(out, 4)
    answers, errors = kill_under_load(a, "web", inet_address(a, "web"), rounds=20, all_every=5)
    assert errors == []
    assert len(answers) >= 60
    assert len(set(answers)) >= 1 + 20  # each round, a restarted process answered
    restarts = sum(i["restarts"] for i in a.status()["units"]["web"]["instances"])
    assert restarts == 4 * 4 + 16 * 1  # 4 rounds of 4, 16 rounds of 1


SELF_BINDING = """
import json, os, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(64)
while True:
    c, peer = s.accept()
    c.sendall(json.dumps({"pid": os.getpid(), "peer": list(peer)}).encode() + b"\\n")
    c.close()
"""


def test_negative_control_a_service_binding_its_own_port_refuses_while_restarting(activator):
    """The same client loop and kills against a service that binds its port itself, as
    without socket activation: connections are refused while it restarts. Proves the test
    above can see what it claims never happens."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    a = activator({"web": f"""
        exec: [{PY}, -c, {json.dumps(SELF_BINDING)}, "{port}"]
        restart: always
        restart_sec: 0.2
        restart_max_sec: 0.2
    """})
    a.wait_state("web", "running")
    wait_for(lambda: request(("127.0.0.1", port)), 10, what="the service listening")
    answers, errors = kill_under_load(a, "web", ("127.0.0.1", port), rounds=3)
    assert any(e.startswith("ConnectionRefusedError") for e in errors), errors
