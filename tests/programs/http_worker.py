"""A tiny HTTP/1.0 server on the listening socket at fd 3 that drains on SIGTERM.

Each response is `PID VERSION INSTANCE`. Signals only wake the select loop (a wakeup fd), so a
request being answered is always finished: on SIGTERM the worker stops accepting and exits, and
connections still waiting in the shared backlog are taken by the other processes on the socket.
Optional: READY_DELAY seconds before sending READY=1 (for `type: notify`), READY_FILE touched
when serving.
"""
import os
import select
import signal
import socket
import sys
import time

listener = socket.socket(fileno=3)
listener.setblocking(False)  # several processes select on it: only one gets each connection
version = os.environ.get("VERSION", "v0")
instance = os.environ.get("ACTIVATOR_INSTANCE", "?")
wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
signal.set_wakeup_fd(wake_w)
for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
    signal.signal(sig, lambda *_: None)

delay = float(os.environ.get("READY_DELAY", "0"))
if delay:
    time.sleep(delay)
if os.environ.get("NOTIFY_SOCKET"):
    from systemd import daemon
    daemon.notify("READY=1\nSTATUS=serving " + version)

while True:
    ready, _, _ = select.select([listener, wake_r], [], [])
    if wake_r in ready:
        received = os.read(wake_r, 64)
        if signal.SIGHUP in received and os.environ.get("HUP_FILE"):
            with open(os.environ["HUP_FILE"], "a") as f:
                f.write(f"{os.getpid()}\n")
        if signal.SIGTERM in received or signal.SIGINT in received:
            sys.exit(0)
        continue
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        continue
    conn.setblocking(True)
    with conn:
        data = b""
        while b"\r\n\r\n" not in data and b"\n\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
        body = f"{os.getpid()} {version} {instance}\n".encode()
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
