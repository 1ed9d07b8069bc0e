"""The HTTP endpoint in the real image (container/Dockerfile) run by podman, turned on as
container/kubernetes.yaml turns it on: ACTIVATOR_HTTP in the environment. The endpoint is a
unix socket in a mounted directory, so that the container needs no network. Slow, like
test_container.py, whose image and helpers it shares."""

from __future__ import annotations

import json
import socket

from harness import wait_for
from http_support import Response, read_response
from test_container import Container, image, pytestmark  # noqa: F401 - the fixture and the marks


def fetch(path: str, where: str) -> Response | None:
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(where)
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: pod\r\nConnection: close\r\n\r\n".encode())
            return read_response(sock)
    except OSError:
        return None


def test_the_image_serves_probes_and_metrics(image, tmp_path):
    shared = tmp_path / "http"
    shared.mkdir()
    where = str(shared / "http.sock")
    container = Container(tmp_path, network="none",
                          run_args=["-v", f"{shared}:/http", "-e", "ACTIVATOR_HTTP=unix:/http/http.sock"])
    try:
        container.start()
        assert wait_for(lambda: (r := fetch("/livez", where)) and r.status == 200, 60, interval=0.2,
                        what="/livez")
        ready = wait_for(lambda: (r := fetch("/readyz", where)) and r.status == 200 and r, 60, interval=0.2,
                         what="/readyz 200 once the demo stack runs")
        assert json.loads(ready.body) == {"ready": True, "not_ready": []}
        assert container.exec("activator", "status", check=False).returncode == 0  # the same verdict
        metrics = fetch("/metrics", where)
        assert metrics.status == 200 and "\nactivator_generation 1\n" in metrics.text
        assert 'activator_unit_state{unit="web",state="running"} 1' in metrics.text
    finally:
        container.remove()
