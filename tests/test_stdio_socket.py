"""`stdio: socket` (SPEC §1): inetd-style programs that talk on stdin and stdout, as systemd's
`StandardInput=socket` runs them. The connection is fds 0, 1 and 3; LISTEN_FDS=1 stays, so
programs that call sd_listen_fds (Debian's sshd -i) still find it; stderr goes to the log."""

import json
import shutil
import socket
import subprocess

import pytest

from harness import descendants_of, wait_for
from sock_helpers import PY, connect, inet_address, read_all, wait_state

REPORT = r"""
import json, os, stat, sys
ino = lambda fd: os.fstat(fd).st_ino
print(json.dumps({
    "same": ino(0) == ino(1) == ino(3), "socket": stat.S_ISSOCK(os.fstat(0).st_mode),
    "stderr_is_pipe": stat.S_ISFIFO(os.fstat(2).st_mode),
    "listen_fds": os.environ.get("LISTEN_FDS"),
    "own_pid": os.environ.get("LISTEN_PID") == str(os.getpid()),
    "line": sys.stdin.readline()}), flush=True)
print("a line for the log", file=sys.stderr, flush=True)
"""


def test_the_connection_is_stdin_stdout_and_fd_3_and_stderr_goes_to_the_log(activator):
    a = activator({"inetd": f"""
        exec: [{PY}, -c, {json.dumps(REPORT)}]
        stdio: socket
        sockets:
          conn: {{listen: "tcp://127.0.0.1:0", accept: true}}
    """})
    wait_state(a, "inetd", "running")
    with connect(inet_address(a, "inetd")) as c:
        c.sendall(b"hello\n")
        report = json.loads(read_all(c))
    assert report == {"same": True, "socket": True, "stderr_is_pipe": True, "listen_fds": "1",
                      "own_pid": True, "line": "hello\n"}
    a.wait_log("| a line for the log")  # labelled inetd.N, N counting connections
    assert any(line.startswith("inetd.") and line.endswith("| a line for the log")
               for line in a.stderr().splitlines()), a.output()
    wait_for(lambda: descendants_of(a.pid) == [], 10, what="the handler gone")
    assert a.stop() == 0


@pytest.mark.parametrize("user", ["", "user: nobody"], ids=["posix_spawn", "fork"])
def test_cat_echoes_each_connection(activator, user):
    """Both ways of starting a process place the connection: posix_spawn, and fork (which a
    change of user needs)."""
    a = activator({"echo": f"""
        exec: cat
        {user}
        stdio: socket
        sockets:
          conn: {{listen: "tcp://127.0.0.1:0", accept: true}}
    """})
    wait_state(a, "echo", "running")
    address = inet_address(a, "echo")
    for text in (b"first\n", b"second\n" * 1000):
        with connect(address) as c:
            c.sendall(text)
            c.shutdown(socket.SHUT_WR)
            assert read_all(c) == text
    assert a.stop() == 0
    assert a.zombies() == []


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_daemon_inetd_serves_a_repository(activator, tmp_path):
    repos = tmp_path / "repos"
    work = tmp_path / "work"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text("hello\n")
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", "one"], check=True)
    subprocess.run([*git, "clone", "-q", "--bare", str(work), str(repos / "demo.git")], check=True)
    head = subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    a = activator({"git": f"""
        exec: [git, daemon, --inetd, --export-all, --base-path={repos}, {repos}]
        stdio: socket
        sockets:
          git: {{listen: "tcp://127.0.0.1:0", accept: true}}
    """})
    wait_state(a, "git", "running")
    port = inet_address(a, "git")[1]
    listed = subprocess.run(["git", "ls-remote", f"git://127.0.0.1:{port}/demo.git"],
                            capture_output=True, text=True, timeout=30)
    assert listed.returncode == 0, listed.stderr + a.output()
    assert f"{head}\trefs/heads/main" in listed.stdout.splitlines()
    wait_for(lambda: descendants_of(a.pid) == [], 10, what="the handler gone")
    assert a.stop() == 0
    assert a.zombies() == []
