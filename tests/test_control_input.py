"""The control socket under bad input and bad clients (SPEC §8): each gets a clear error or is
cut off, nothing changes, and none of them delays reaping or the other clients."""

import json
import os
import socket
import stat
import subprocess
import time

from harness import PYTHON, wait_for
from test_reload import run_cli

ORPHANS = os.path.join(os.path.dirname(__file__), "programs", "orphans.py")


def connect(a) -> socket.socket:
    """A connection, retried while the listen backlog is full (activator takes a batch of
    connections per wake-up, so a client in a hurry may find it full for a moment)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(15)
    wait_for(lambda: _connected(s, a.runtime / "control"), 15, what="a control connection")
    return s


def _connected(s: socket.socket, path) -> bool:
    try:
        s.connect(str(path))
    except BlockingIOError:
        return False
    return True


def replies(s: socket.socket, count: int = 1) -> list[dict]:
    data = b""
    while data.count(b"\n") < count:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_the_socket_is_private_and_speaks_json_lines(activator):
    a = activator({"web": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    mode = os.stat(a.runtime / "control").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    with connect(a) as s:
        s.sendall(b'{"command": "status", "units": ["web"]}\n{"command": "bogus"}\nnot json\n[1]\n{}\n')
        answers = replies(s, 5)
    assert answers[0]["ok"] and list(answers[0]["status"]["units"]) == ["web"]
    assert answers[1] == {"ok": False, "error": "unknown command 'bogus'"}
    assert not answers[2]["ok"] and "not JSON" in answers[2]["error"]
    assert not answers[3]["ok"] and "JSON object" in answers[3]["error"]
    assert not answers[4]["ok"] and "command" in answers[4]["error"]
    assert a.status()["units"]["web"]["state"] == "running"


def test_an_oversized_request_is_refused_and_the_connection_closed(activator):
    a = activator({"web": "exec: [sleep, infinity]"})
    with connect(a) as s:
        try:
            s.sendall(b'{"command": "status", "pad": "' + b"x" * (70 * 1024))
        except OSError:
            pass  # closed under us while sending: also a refusal
        answers = replies(s, 2)
    assert answers and not answers[0]["ok"] and "over 65536 bytes" in answers[0]["error"]
    assert run_cli(a, "status").returncode == 0


def test_another_uid_is_refused(activator, tmp_path):
    a = activator({"web": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    result = a.run_inside([*nobody, PYTHON, "-m", "activator", "stop", "web"])
    assert result.returncode != 0 and "Permission denied" in result.stderr, result  # mode 0600
    # Past the file's mode (a link to the socket where anyone may connect), SO_PEERCRED
    # still says no: one error line, before any request, then the connection is closed.
    public = tmp_path / "public"
    public.mkdir(mode=0o777)
    os.chmod(tmp_path, 0o755)
    for parent in tmp_path.parents:
        if parent == parent.parent or str(parent) == "/tmp":
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
    os.link(a.runtime / "control", public / "control")
    os.chmod(public / "control", 0o666)
    client = ("import socket, sys; s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
              "data = b''\nwhile (c := s.recv(4096)): data += c\nprint(data.decode())")
    result = subprocess.run([*nobody, PYTHON, "-c", client, str(public / "control")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines() if line]
    assert answers == [{"ok": False, "error": answers[0]["error"]}], answers
    assert "uid 65534 may not control this activator" in answers[0]["error"]
    assert a.status()["units"]["web"]["state"] == "running"


def test_a_silent_client_is_cut_off_and_a_stalled_follower_dropped(activator):
    a = activator({"flood": "exec: [sh, -c, 'exec yes 0123456789012345678901234567890123456789']"})
    a.wait_state("flood", "running")
    silent = connect(a)
    follower = connect(a)
    follower.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    follower.sendall(b'{"command": "logs", "units": ["flood"], "lines": 0, "follow": true}\n')
    try:
        start = time.monotonic()
        assert replies(silent) and silent.recv(1) == b""  # told why, then closed
        assert 5 < time.monotonic() - start < 30
        assert run_cli(a, "status").returncode == 0  # answered all along
        # The follower never read: dropped once activator's buffer for it filled (or it read
        # nothing for the write timeout), never waited for. What was sent before is there to
        # read, then the end: a follower still followed would get lines forever.
        follower.settimeout(30)
        received, deadline = 0, time.monotonic() + 30
        while time.monotonic() < deadline:
            chunk = follower.recv(1 << 16)
            if not chunk:
                break
            received += len(chunk)
        else:
            raise AssertionError("the stalled follower was never dropped")
        assert received < 8 << 20  # bounded by what activator keeps for one client
    finally:
        silent.close()
        follower.close()


def test_many_idle_clients_never_delay_reaping(activator, tmp_path):
    done = tmp_path / "done"
    a = activator({"idle": "exec: [sleep, infinity]"})
    a.wait_state("idle", "running")
    clients = []
    try:
        for _ in range(500):
            clients.append(connect(a))
        result = a.run_inside([PYTHON, ORPHANS, "1000", str(done)])
        assert result.returncode == 0
        start = time.monotonic()
        wait_for(lambda: not a.zombies(), 10, what="every orphan reaped")
        assert time.monotonic() - start < 1.0, "reaping took longer than 1 s"
        assert run_cli(a, "status").returncode == 0
    finally:
        for c in clients:
            c.close()
