"""A real Prometheus server (Debian's package) scrapes activator's /metrics."""

import json
import shutil
import signal
import subprocess
import urllib.parse
import urllib.request

import pytest

from harness import wait_for
from http_support import endpoint

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None,
                                reason="Prometheus is not installed (scripts/setup test installs it)")


def free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prometheus(tmp_path):
    """start(target) runs Prometheus scraping HOST:PORT every 500 ms; query(expr) asks it."""
    started = []
    port = free_port()

    def start(target: str):
        config = tmp_path / "prometheus.yml"
        config.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "500ms", "scrape_timeout": "400ms"},
            "scrape_configs": [{"job_name": "activator", "static_configs": [{"targets": [target]}]}],
        }))
        log = open(tmp_path / "prometheus.log", "wb")
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        started.append((proc, log))
        return query

    def query(expr: str) -> list[dict]:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=5) as response:
            answer = json.load(response)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    yield start
    for proc, log in started:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def value(query, expr: str) -> float | None:
    result = query(expr)
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_generation_and_a_restart(activator, prometheus, tmp_path):
    # Prometheus keeps its own `instance` label (the target) and renames activator's
    # `instance` to `exported_instance`, as it does for any scraped label it sets itself.
    a = activator({
        "web": "exec: [sleep, infinity]\nsockets:\n  http: {listen: 'tcp://127.0.0.1:0'}\n",
        "worker": "exec: [sleep, infinity]\nrestart: always\nrestart_sec: 0.1\n",
    }, args=["--http", "127.0.0.1:0"])
    _, (host, port) = endpoint(a)
    query = prometheus(f"{host}:{port}")
    wait_for(lambda: value(query, 'up{job="activator"}') == 1, 60, interval=0.3, what="up == 1")
    assert value(query, "activator_generation") == 1
    assert value(query, 'activator_unit_state{unit="web",state="running"}') == 1
    assert value(query, 'activator_unit_restarts_total{unit="worker",exported_instance="1"}') == 0

    (a.units_dir / "extra.yaml").write_text("exec: [sleep, infinity]\n")
    a.signal(signal.SIGHUP)
    a.wait_status(lambda s: s["generation"] == 2, what="the reload")
    import os
    os.kill(a.host_pids("worker")[0], signal.SIGKILL)
    a.wait_status(lambda s: s["units"]["worker"]["instances"][0]["restarts"] == 1, what="the restart")
    wait_for(lambda: value(query, 'activator_unit_restarts_total{unit="worker",exported_instance="1"}') == 1, 30,
             interval=0.3, what="the restart in Prometheus")
    wait_for(lambda: value(query, "activator_generation") == 2, 30, interval=0.3, what="generation 2")
    assert value(query, 'activator_reloads_total{result="applied"}') == 1
    assert value(query, 'activator_unit_state{unit="extra",state="running"}') == 1
