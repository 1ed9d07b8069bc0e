"""Idle wake-ups of activator with `health:` probes (SPEC §10: between probes, none).

Four stacks, each activator as PID 1 of its own PID namespace, measured over --idle seconds
(default 60) once every instance is running and healthy: PID 1's context switches (voluntary
and involuntary: each is a wake-up) per second, and how many probe attempts were made.

  none         4 instances of a sleeping service, no probe (the baseline: 0/s)
  tcp          the same with `health: {tcp: ..., interval: 10s}` on each instance
  http         `health: {http: ..., interval: 10s}` against a tiny HTTP server, 1 instance
  exec         `health: {exec: "true", interval: 10s}` on each of the 4 instances

    .venv/bin/python bench/ready_idle.py [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from pathlib import Path

from common import PYTHON, Namespace, context_switches, wait_for

HTTP_SERVER = ("import http.server,socket,sys\n"
               "class H(http.server.BaseHTTPRequestHandler):\n"
               "    def do_GET(self): self.send_response(200); self.end_headers()\n"
               "    def log_message(self, *a): pass\n"
               "s=http.server.HTTPServer(('', 0), H, bind_and_activate=False)\n"
               "s.socket=socket.socket(fileno=3); s.serve_forever()\n")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unit(kind: str) -> str:
    port = free_port()
    sock = f'sockets: {{s: {{listen: "tcp://127.0.0.1:{port}"}}}}\n'
    if kind == "none":
        return "exec: sleep 100000\ninstances: 4\n"
    if kind == "tcp":
        return f"exec: sleep 100000\ninstances: 4\n{sock}health: {{tcp: \"127.0.0.1:{port}\", interval: 10s}}\n"
    if kind == "http":
        return (f"exec: {json.dumps([PYTHON, '-c', HTTP_SERVER])}\n{sock}"
                f"health: {{http: \"http://127.0.0.1:{port}/\", interval: 10s}}\n")
    return "exec: sleep 100000\ninstances: 4\nhealth: {exec: \"true\", interval: 10s}\n"


def measure(kind: str, idle: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        units = Path(tmp) / "units"
        units.mkdir()
        (units / "svc.yaml").write_text(unit(kind))
        ns = Namespace([PYTHON, "-m", "activator", "--units", str(units)],
                       env={"ACTIVATOR_RUNTIME_DIR": f"{tmp}/run"}, log=Path(tmp) / "out.log")
        ns.start()
        try:
            status = Path(tmp) / "run" / "status.json"

            def settled():
                try:
                    data = json.loads(status.read_text())
                except (OSError, ValueError):
                    return False
                instances = data["units"]["svc"]["instances"]
                return all(i["state"] == "running" and i.get("health") in (None, "healthy")
                           for i in instances)
            wait_for(settled, 30, interval=0.05, what=f"{kind}: running and healthy")
            time.sleep(1.0)
            before = context_switches(ns.pid1)
            time.sleep(idle)
            switches = context_switches(ns.pid1) - before
            instances = len(json.loads(status.read_text())["units"]["svc"]["instances"])
        finally:
            ns.kill()
    probes = 0 if kind == "none" else instances * idle / 10.0
    return {"wakeups_per_s": switches / idle, "probes_per_s": probes / idle,
            "per_probe": switches / probes if probes else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--idle", type=float, default=60.0)
    args = parser.parse_args()
    print("| health | PID 1 wake-ups/s | probes/s | wake-ups per probe |")
    print("|---|---|---|---|")
    for kind in ("none", "tcp", "http", "exec"):
        r = measure(kind, args.idle)
        per = f"{r['per_probe']:.1f}" if r["per_probe"] is not None else "-"
        print(f"| {kind} | {r['wakeups_per_s']:.2f} | {r['probes_per_s']:.2f} | {per} |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
