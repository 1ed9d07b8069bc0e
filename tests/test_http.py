"""The HTTP endpoint (SPEC §9): probes, status.json, metrics and their counters, addresses."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import pytest

from harness import PYTHON, wait_for
from http_support import base_url, connect, endpoint, get, read_response, request

SLEEPER = """
    description: holds a socket and never accepts
    exec: [sleep, infinity]
    sockets:
      http: {listen: "tcp://127.0.0.1:0"}
"""
HTTP_ARGS = ["--http", "127.0.0.1:0"]


def activator_status(a) -> tuple[int, dict | None]:
    """`activator status --json` run inside activator's namespace: (exit code, its JSON)."""
    result = a.run_inside([PYTHON, "-m", "activator", "status", "--json"])
    try:
        return result.returncode, json.loads(result.stdout)
    except ValueError:
        return result.returncode, None


def families(text: str) -> dict[str, str]:
    """family name -> TYPE, from an exposition."""
    return dict(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))


def sample(text: str, name: str, **labels) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{k}="{v}"' in series for k, v in labels.items()):
            return float(value)
    return None


# ---------------------------------------------------------------------- probes and status


def test_livez_readyz_and_status_json_agree_with_activator_status(activator, tmp_path):
    flag = tmp_path / "may-run"
    a = activator({
        "web": SLEEPER,
        "late": f"""
            exec: [sh, -c, "test -e {flag} && exec sleep infinity; exit 3"]
            restart: always
            restart_sec: 0.2
        """,
    }, args=HTTP_ARGS)
    live = get(a, "/livez")
    assert (live.status, live.text) == (200, "ok\n")
    a.wait_status(lambda s: s["units"]["late"]["instances"][0]["restarts"] >= 1, what="late restarting")
    code, _ = activator_status(a)
    ready = get(a, "/readyz")
    if code == 1:  # caught it between two restarts: not ready, and the body says which and why
        assert ready.status == 503
        body = ready.json()
        assert body["ready"] is False and [u["unit"] for u in body["not_ready"]] == ["late"]
        assert body["not_ready"][0]["why"]
    flag.touch()
    a.wait_state("late", "running")
    assert activator_status(a)[0] == 0
    assert get(a, "/readyz").status == 200 and get(a, "/readyz").json() == {"ready": True, "not_ready": []}

    _, printed = activator_status(a)
    served = get(a, "/status.json")
    assert served.status == 200 and served.headers["content-type"] == "application/json"
    data = served.json()
    assert data.keys() == printed.keys() and data["units"].keys() == printed["units"].keys()
    web = data["units"]["web"]
    assert web["instances"][0]["pid"] == printed["units"]["web"]["instances"][0]["pid"]
    for key in ("cpu_percent", "rss_bytes"):
        assert key in web["instances"][0]
    assert web["instances"][0]["rss_bytes"] > 100_000  # sleep's resident pages, at least
    assert web["sockets"][0]["name"] == "http"


def test_readyz_is_503_with_the_reason_while_a_unit_has_failed(activator):
    a = activator({"web": SLEEPER, "broken": """
        exec: [sh, -c, "echo no config; exit 4"]
        restart: "no"
    """}, args=HTTP_ARGS)
    a.wait_state("broken", "failed")
    assert activator_status(a)[0] == 1
    ready = get(a, "/readyz")
    assert ready.status == 503 and ready.headers["content-type"] == "application/json"
    assert ready.json() == {"ready": False, "not_ready": [
        {"unit": "broken", "state": "failed", "why": "exited with status 4"}]}
    assert get(a, "/livez").status == 200  # the loop answers: alive, not ready


def test_head_requests_get_the_headers_only(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    head = request(a, "/metrics", method="HEAD")
    assert head.status == 200 and int(head.headers["content-length"]) > 100 and head.body == b""


# ---------------------------------------------------------------------- metrics


def test_metrics_list_every_family_and_pass_promtool(activator, tmp_path):
    a = activator({"web": SLEEPER, "echo": """
        exec: [sh, -c, "head -n 1 <&3 >&3"]
        sockets:
          echo: {listen: "tcp://127.0.0.1:0", accept: true}
    """}, args=HTTP_ARGS)
    response = get(a, "/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    found = families(text)
    expected = {
        "activator_build_info": "gauge", "activator_generation": "gauge",
        "activator_reloads_total": "counter", "activator_unit_state": "gauge",
        "activator_unit_instances": "gauge", "activator_unit_restarts_total": "counter",
        "activator_unit_start_time_seconds": "gauge", "activator_unit_cpu_seconds_total": "counter",
        "activator_unit_memory_rss_bytes": "gauge", "activator_socket_queue_length": "gauge",
        "activator_socket_queue_limit": "gauge", "activator_socket_connections_total": "counter",
        "activator_notify_messages_total": "counter", "activator_watchdog_timeouts_total": "counter",
    }
    assert found == expected  # health is absent: no unit has a health check
    for name in expected:
        assert re.search(rf"^# HELP {name} \S", text, re.M), name
    assert sample(text, "activator_unit_state", unit="web", state="running") == 1
    assert sample(text, "activator_unit_state", unit="web", state="failed") == 0
    assert sample(text, "activator_unit_instances", unit="web") == 1
    assert sample(text, "activator_unit_start_time_seconds", unit="web", instance="1") > time.time() - 120
    assert sample(text, "activator_socket_queue_limit", socket="http") == 4096
    assert sample(text, "activator_socket_connections_total", socket="echo") == 0
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_counters_of_reloads_notify_messages_watchdog_and_connections(activator, tmp_path):
    a = activator({
        "web": SLEEPER,
        "dog": f"""
            type: notify
            exec: [{PYTHON}, -c, "import socket,os; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.connect(os.environ['NOTIFY_SOCKET']); s.send(b'READY=1'); import time; time.sleep(60)"]
            watchdog_sec: 0.5
            restart: "no"
        """,
        "echo": """
            exec: [sh, -c, "head -n 1 <&3 >&3"]
            sockets:
              echo: {listen: "tcp://127.0.0.1:0", accept: true}
        """,
    }, args=HTTP_ARGS)
    a.wait_state("dog", "failed")
    echo_port = int(a.status()["units"]["echo"]["sockets"][0]["listen"].rsplit(":", 1)[1])
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", echo_port), timeout=10) as c:
            c.sendall(b"hi\n")
            assert c.recv(10) == b"hi\n"
    stranger = ("import socket; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); "
                f"s.sendto(b'READY=1', {str(a.runtime / 'notify')!r})")
    assert a.run_inside([PYTHON, "-c", stranger]).returncode == 0  # no unit's process
    units = a.units_dir
    (units / "extra.yaml").write_text("exec: [sleep, infinity]\n")
    a.signal(signal.SIGHUP)
    a.wait_status(lambda s: s["generation"] == 2, what="the reload applied")
    (units / "bad.yaml").write_text("exec: [sleep, infinity]\nno_such_key: 1\n")
    a.signal(signal.SIGHUP)
    a.wait_status(lambda s: s["reload"]["outcome"] == "refused", what="the reload refused")

    def counted():
        text = get(a, "/metrics").text
        return text if sample(text, "activator_notify_messages_total", result="refused") >= 1 else None
    text = wait_for(counted, 10, what="the refused notify message counted")
    assert sample(text, "activator_generation") == 2
    assert sample(text, "activator_reloads_total", result="applied") == 1
    assert sample(text, "activator_reloads_total", result="refused") == 1
    assert sample(text, "activator_notify_messages_total", result="accepted") >= 1
    assert sample(text, "activator_watchdog_timeouts_total", unit="dog") == 1
    assert sample(text, "activator_watchdog_timeouts_total", unit="web") == 0
    assert sample(text, "activator_socket_connections_total", socket="echo") == 2


def test_queue_depth_shows_clients_waiting_on_a_socket_nobody_accepts(activator, tmp_path):
    path = tmp_path / "held.sock"
    a = activator({"held": f"""
        exec: [sleep, infinity]
        sockets:
          tcp: {{listen: "tcp://127.0.0.1:0", backlog: 64}}
          local: {{listen: "unix:{path}", backlog: 32}}
    """}, args=HTTP_ARGS)
    port = int(a.status()["units"]["held"]["sockets"][0]["listen"].rsplit(":", 1)[1])
    clients = []
    try:
        for _ in range(5):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=10))
            local = socket.socket(socket.AF_UNIX)
            local.connect(str(path))
            clients.append(local)
        text = get(a, "/metrics").text
        assert sample(text, "activator_socket_queue_length", socket="tcp") >= 5
        assert sample(text, "activator_socket_queue_limit", socket="tcp") == 64
        assert sample(text, "activator_socket_queue_length", socket="local") >= 5
        assert sample(text, "activator_socket_queue_limit", socket="local") == 32
    finally:
        for c in clients:
            c.close()


# ---------------------------------------------------------------------- addresses


def test_unix_socket_and_ipv6_addresses_and_the_environment_variable(activator, tmp_path):
    path = tmp_path / "http.sock"
    a = activator({"web": SLEEPER}, args=["--http", f"unix:{path}"])
    assert endpoint(a) == (socket.AF_UNIX, str(path))
    assert get(a, "/livez").status == 200
    assert a.stop() == 0
    assert not path.exists()  # removed at shutdown

    b = activator({"web": SLEEPER}, env={"ACTIVATOR_HTTP": "127.0.0.1:0"})
    assert get(b, "/livez").status == 200
    if socket.has_ipv6 and os.path.exists("/proc/net/if_inet6"):
        c = activator({"web": SLEEPER}, args=["--http", "[::1]:0"])
        assert base_url(c).startswith("http://[::1]:")
        assert get(c, "/readyz").status == 200


@pytest.mark.parametrize("address,message", [
    ("8080", "expected HOST:PORT"),
    ("::1:80", "in brackets"),
    ("unix:", "no path"),
])
def test_a_bad_address_is_refused_before_anything_starts(activator, tmp_path, address, message):
    marker = tmp_path / "started"
    a = activator({"web": f"exec: [touch, {marker}]\ntype: oneshot\n"}, args=["--http", address],
                  wait_ready=False)
    assert a.wait_exit(30) == 2
    assert message in a.output() and "nothing started" in a.output()
    assert not marker.exists()


def test_an_address_in_use_is_refused_before_anything_starts(activator, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        a = activator({"web": SLEEPER}, args=["--http", f"127.0.0.1:{taken.getsockname()[1]}"],
                      wait_ready=False)
        assert a.wait_exit(30) == 2
        assert "cannot bind" in a.output()
    finally:
        taken.close()


def test_off_by_default(activator):
    a = activator({"web": SLEEPER})
    a.wait_state("web", "running")
    assert "HTTP endpoint" not in a.output()


def context_switches(pid: int) -> int:
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                    total += int(line.split()[1])
    return total


def test_no_wake_up_while_no_request_arrives(activator):
    a = activator({"web": SLEEPER}, args=HTTP_ARGS)
    assert get(a, "/metrics").status == 200  # a connection came and went: its timer goes too
    with connect(a) as sock:  # and a client that is cut off for idling
        assert sock.recv(1) == b""

    def quiet_for(seconds: float):
        before = context_switches(a.pid)
        time.sleep(seconds)
        return context_switches(a.pid) == before
    assert wait_for(lambda: quiet_for(2.0), 20, what="2 s without a wake-up of PID 1")


def test_cpu_and_memory_count_the_descendants_of_an_instance(activator):
    """A shell whose child does the work: the instance's CPU is the child's."""
    busy = f"{PYTHON} -c 'import time; end = time.time() + 60\\nwhile time.time() < end: pass'"
    a = activator({"busy": f"""
        exec: [sh, -c, "{busy} & wait"]
    """}, args=HTTP_ARGS)

    def busy_enough():
        text = get(a, "/metrics").text
        cpu = sample(text, "activator_unit_cpu_seconds_total", unit="busy", instance="1")
        return text if cpu is not None and cpu >= 0.5 else None
    text = wait_for(busy_enough, 30, interval=0.2, what="the child's CPU counted for the instance")
    assert sample(text, "activator_unit_memory_rss_bytes", unit="busy", instance="1") > 5_000_000  # sh + python
    status = get(a, "/status.json").json()["units"]["busy"]["instances"][0]
    assert status["cpu_percent"] > 20  # since the previous reading: the child spins
