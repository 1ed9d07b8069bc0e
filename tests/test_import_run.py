"""Imported configurations run for real: each format imported, started under activator as
PID 1, and answering on the socket it declared."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from harness import Activator, wait_for
from sock_helpers import PY, SERVE, inet_address, read_all, request, wait_state

ROOT = Path(__file__).resolve().parent.parent
FD0_SERVER = Path(__file__).resolve().parent / "fixtures" / "import" / "fd0_server.py"


def imported(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    out = tmp_path / "units"
    result = subprocess.run([sys.executable, "-m", "activator", "import",
                             *[str(tmp_path / n) for n in files], "--out", str(out)],
                            capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stdout + result.stderr
    return out


def started(tmp_path: Path, units: Path) -> Activator:
    """activator on the imported units; `with` starts it, once, and cleans it up."""
    return Activator(tmp_path / "run", units_dir=units)


def test_circus_watcher_with_a_socket_answers(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    units = imported(tmp_path, {"circus.ini": f"""
[watcher:web]
cmd = {PY} {SERVE} {reports} --fd $(circus.sockets.web) --instance $(circus.wid)
numprocesses = 2
use_sockets = True

[socket:web]
host = 127.0.0.1
port = 0
"""})
    with started(tmp_path, units) as a:
        wait_state(a, "web", "running")
        wait_for(lambda: len(list(reports.glob("*.json"))) == 2, 15, what="both instances")
        answers = [request(inet_address(a, "web")) for _ in range(6)]
        assert {answer["pid"] for answer in answers} <= {json.loads(p.read_text())["pid"]
                                                         for p in reports.glob("*.json")}
        instances = {json.loads(p.read_text())["argv"][-1] for p in reports.glob("*.json")}
        assert instances == {"1", "2"}  # $(circus.wid) kept: 1 and 2, as Circus numbers them


def test_supervisord_fcgi_program_answers_on_fd_0(tmp_path):
    units = imported(tmp_path, {"supervisord.conf": f"""
[supervisord]
nodaemon=true

[fcgi-program:app]
command={PY} {FD0_SERVER}
socket=tcp://127.0.0.1:0
numprocs=2
process_name=%(program_name)s_%(process_num)s
numprocs_start=1
"""})
    with started(tmp_path, units) as a:
        wait_state(a, "app", "running")
        address = inet_address(a, "app")
        answers = []
        for _ in range(4):
            with socket.create_connection(address, timeout=10) as sock:
                answers.append(json.loads(read_all(sock)))
        # The socket reached the program as fd 0, and fd 3 was closed behind it.
        assert all(answer["fd0"] == "socket" and answer["fd3"] == "closed" for answer in answers)
        assert len(a.pids("app")) == 2


def test_systemd_socket_activated_service_answers(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    units = imported(tmp_path, {
        "echo.socket": "[Socket]\nListenStream=127.0.0.1:0\n\n[Install]\nWantedBy=sockets.target\n",
        "echo.service": f"[Unit]\nDescription=echo\nRequires=echo.socket\n\n[Service]\n"
                        f"ExecStart={PY} {SERVE} {reports}\nRestart=on-failure\n",
    })
    with started(tmp_path, units) as a:
        wait_state(a, "echo", "waiting")
        assert not list(reports.glob("*.json")), "started before any connection"
        answer = request(inet_address(a, "echo"), timeout=20)
        [report] = [json.loads(p.read_text()) for p in reports.glob("*.json")]
        assert answer["pid"] == report["pid"]
        assert report["listen_fds_with_names"] == {"3": "echo"}


def test_systemd_inetd_style_service_gets_the_connection_on_stdin_and_stdout(tmp_path):
    units = imported(tmp_path, {
        "upper.socket": "[Socket]\nListenStream=127.0.0.1:0\nAccept=yes\n",
        "upper@.service": "[Service]\nExecStart=tr a-z A-Z\nStandardInput=socket\n",
    })
    with started(tmp_path, units) as a:
        address = inet_address(a, "upper")
        with socket.create_connection(address, timeout=10) as sock:
            sock.sendall(b"hello from a client\n")
            sock.shutdown(socket.SHUT_WR)
            assert read_all(sock) == b"HELLO FROM A CLIENT\n"
