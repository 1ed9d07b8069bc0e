"""The demo stack of units/, run from the checkout as `make demo` does, under the harness.

It needs what `scripts/setup` installs: redis-server, curl, and gunicorn in .venv. The web
socket moves to a free port through a drop-in in a second units directory, so the test does
not collide with a `make demo` running on 8000; redis listens on a unix socket in the run's
own ACTIVATOR_RUNTIME_DIR.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from harness import PYTHON, ROOT, proc_stat, wait_for, write_units

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("curl") and (Path(PYTHON).parent / "gunicorn").exists()),
    reason="the demo needs redis-server, curl and gunicorn in .venv (scripts/setup test)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def curl(port: int) -> str:
    return subprocess.run(["curl", "-sS", "--max-time", "10", f"http://127.0.0.1:{port}/"],
                          capture_output=True, text=True, check=True).stdout


def all_running(status: dict) -> bool:
    return all(u["state"] in ("running", "exited") for u in status["units"].values())


@pytest.fixture
def demo(activator, tmp_path):
    port, api_port = free_port(), free_port()
    local = write_units(tmp_path / "local", {
        "web.d/port.yaml": f"sockets:\n  http:\n    listen: tcp://127.0.0.1:{port}\n",
        "api.d/port.yaml": f"sockets:\n  api:\n    listen: tcp://127.0.0.1:{api_port}\n"
                           f"health:\n  http: http://127.0.0.1:{api_port}/healthz\n"})
    run = activator(units_dir=ROOT / "units", args=["--units", str(local)])
    run.wait_status(all_running, timeout=30, what="the demo stack running")
    run.port, run.api_port = port, api_port
    return run


def test_units_check_from_the_checkout():
    env = {**os.environ, "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}",
           "ACTIVATOR_RUNTIME_DIR": "/run/activator"}
    result = subprocess.run([PYTHON, "-m", "activator", "check", "--units", str(ROOT / "units")],
                            env=env, capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # not even a warning
    assert result.stdout.startswith("ok: 4 units, 2 sockets, 8 processes")


def test_demo_serves_hits_counted_in_redis(demo):
    status = demo.status()
    assert {name: u["state"] for name, u in status["units"].items()} == {
        "redis": "running", "migrate": "exited", "web": "running", "api": "running"}
    arbiters = set(demo.host_pids("web"))
    assert len(arbiters) == 4

    bodies = [curl(demo.port) for _ in range(12)]
    hits = [int(b.split(": hit ")[1].split()[0]) for b in bodies]
    assert hits == list(range(1, 13)), bodies  # the migration's counter, counted in redis
    for body in bodies:
        # "hello from worker pid N (web instance I): ..." with N a gunicorn worker of web.I
        worker = demo.host_pid(int(body.split("worker pid ")[1].split()[0]))
        assert proc_stat(worker)["ppid"] in arbiters, body

    # Dependencies in order: redis ready, then the migration finished, then web started.
    # (activator's own lines all go to one stream; services' lines to their own.)
    log = demo.stderr()
    redis_ready = log.index("unit redis (pid")
    assert log.index("ready", redis_ready) < log.index("unit migrate (pid") < log.index("unit web.1 (pid")
    # Output prefixed with the unit (and instance) name.
    assert "migrate | migration done: hit counter created at 0" in demo.stdout()
    assert "redis | " in demo.stdout() and "web.1 | " in demo.stderr()


def test_reload_signals_gunicorn_and_stop_is_clean(demo):
    before = demo.host_pids("web")
    demo.signal(signal.SIGHUP)  # no file changed: web gets its reload_signal, SIGHUP
    demo.wait_status(lambda s: s["generation"] == 2 and s["reload"].get("outcome") == "applied",
                     what="the reload applied")
    wait_for(lambda: demo.output().count("Handling signal: hup") == 4, 15,
             what="every gunicorn handling SIGHUP")
    assert demo.host_pids("web") == before  # reloaded in place, not restarted
    assert "hello from worker pid" in curl(demo.port)

    redis_socket = demo.runtime / "redis.sock"
    assert redis_socket.exists()
    assert demo.stop() == 0
    assert not redis_socket.exists()  # redis removed it: it was stopped, not killed
    assert "exiting with status 0" in demo.output()


def test_demo_api_is_uvicorn_ready_when_listening(demo):
    """units/api.yaml: uvicorn, no sd_notify; `ready: listening` and an HTTP health check."""
    body = curl(demo.api_port)
    assert body.startswith("hello from uvicorn pid") and "(api instance " in body
    status = demo.wait_status(lambda s: all(i.get("health") == "healthy"
                                            for i in s["units"]["api"]["instances"]),
                              timeout=30, what="api healthy")
    assert [i["health_output"] for i in status["units"]["api"]["instances"]] == ["HTTP/1.1 200 OK"] * 2
