"""Which servers `ready: listening` detects, measured.

For each server: bind a listening socket, hand it over as fd 3, start the server, then ask
activator's own check (activator/listening.py: the socket in an epoll set of the process or a
descendant, or a thread blocked in accept on it) every 5 ms, and GET / on a new connection
every 5 ms. Printed: whether the check ever said yes (within --timeout), how (epoll or
accept), and when, against when the server first answered. "detected before it answered" is
what makes the check worth having: the server is really waiting for connections.

    .venv/bin/python bench/listening.py [--timeout 10]

Needs bench/setup (hypercorn in .cache/bench-venv, nodejs from Debian); a server whose
program is missing is reported as such.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH, BENCH_VENV, ROOT

sys.path.insert(0, str(ROOT))
from activator import listening  # noqa: E402

VENV = ROOT / ".venv" / "bin"
NODE_APP = "require('http').createServer((q, r) => r.end('ok')).listen({fd: 3});"
ASYNCIO_APP = """
import asyncio, socket
async def main():
    s = socket.socket(fileno=3)
    async def serve(r, w):
        await r.readline(); w.write(b"HTTP/1.0 200 OK\\r\\n\\r\\nok"); await w.drain(); w.close()
    server = await asyncio.start_server(serve, sock=s)
    await server.serve_forever()
asyncio.run(main())
"""
ACCEPT_APP = """
import socket
s = socket.socket(fileno=3)
while True:
    c, _ = s.accept(); c.recv(4096); c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nok"); c.close()
"""
POLL_APP = """
import http.server, socket
class Server(http.server.HTTPServer):
    def server_bind(self): pass
    def server_activate(self): pass
server = Server(("", 0), http.server.SimpleHTTPRequestHandler, bind_and_activate=False)
server.socket = socket.socket(fileno=3)
server.serve_forever()  # selectors.PollSelector: waits in poll()
"""


def servers() -> list[tuple[str, list[str]]]:
    gunicorn = [str(VENV / "gunicorn"), "--bind", "fd://3", "--chdir", str(BENCH), "--no-control-socket"]
    return [
        ("uvicorn (asyncio)", [str(VENV / "uvicorn"), "--fd", "3", "--app-dir", str(BENCH), "asgi_slow:app"]),
        ("uvicorn --workers 2", [str(VENV / "uvicorn"), "--fd", "3", "--workers", "2", "--app-dir", str(BENCH),
                                 "asgi_slow:app"]),
        ("hypercorn", [str(BENCH_VENV / "hypercorn"), "--bind", "fd://3", "asgi_slow:app"]),
        ("gunicorn sync, 2 workers", [*gunicorn, "--workers", "2", "wsgi_app:app"]),
        ("gunicorn gthread, 2 workers", [*gunicorn, "--workers", "2", "--worker-class", "gthread",
                                         "--threads", "2", "wsgi_app:app"]),
        ("node http", ["node", "-e", NODE_APP]),
        ("python asyncio.start_server", [sys.executable, "-c", ASYNCIO_APP]),
        ("python blocking accept()", [sys.executable, "-c", ACCEPT_APP]),
        ("python http.server (poll)", [sys.executable, "-c", POLL_APP]),
    ]


def answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
            c.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
            return c.recv(16).startswith(b"HTTP/")
    except OSError:
        return False


def how(pid: int, inode: int) -> str:
    """Which of the two ways saw it, for the table."""
    for p in listening.family(pid, listening.parents()):
        for fd in os.listdir(f"/proc/{p}/fd") if os.path.exists(f"/proc/{p}/fd") else ():
            try:
                if os.readlink(f"/proc/{p}/fd/{fd}") == "anon_inode:[eventpoll]" and \
                        inode in listening.epoll_inodes(Path(f"/proc/{p}/fdinfo/{fd}").read_text()):
                    return "epoll"
            except OSError:
                continue
    return "accept"


def measure(argv: list[str], timeout: float) -> dict:
    if not shutil.which(argv[0]):
        return {"missing": argv[0]}
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(128)
    port = s.getsockname()[1]
    inode = os.fstat(s.fileno()).st_ino
    if s.fileno() != 3:
        os.dup2(s.fileno(), 3)
    env = dict(os.environ, BENCH_IMPORT_SECONDS="0.5", PYTHONPATH=str(BENCH))
    with tempfile.TemporaryDirectory() as tmp:
        began = time.monotonic()
        proc = subprocess.Popen(argv, pass_fds=(3,), cwd=tmp, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if s.fileno() != 3:
            os.close(3)
        s.close()
        detected = answered = None
        way = "-"
        try:
            while time.monotonic() - began < timeout and (detected is None or answered is None):
                if detected is None and listening.listening(proc.pid, {inode}):
                    detected = time.monotonic() - began
                    way = how(proc.pid, inode)
                if answered is None and answers(port):
                    answered = time.monotonic() - began
                time.sleep(0.005)
        finally:
            os.killpg(proc.pid, 9)
            proc.wait()
    return {"detected": detected, "answered": answered, "how": way}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args()
    print("| server | detected | how | detected at | first answer at |")
    print("|---|---|---|---|---|")
    for name, argv in servers():
        r = measure(argv, args.timeout)
        if "missing" in r:
            print(f"| {name} | not measured ({r['missing']} missing) | | | |")
            continue
        ms = lambda v: f"{v * 1000:.0f} ms" if v is not None else "-"
        print(f"| {name} | {'yes' if r['detected'] is not None else 'no'} | "
              f"{r['how'] if r['detected'] is not None else '-'} | {ms(r['detected'])} | {ms(r['answered'])} |",
              flush=True)


if __name__ == "__main__":
    main()
