"""Test servers for readiness probes, none of which speaks sd_notify.

    probe_server.py accept DELAY MARKER      fd 3 is a listening socket: after DELAY seconds,
                                             touch MARKER, then block in accept() on it
    probe_server.py http HOST PORT DELAY     bind HOST:PORT; answer GET with 503 for DELAY
                                             seconds after the start, then 200
    probe_server.py tcp HOST PORT DELAY      after DELAY seconds, bind and listen on HOST:PORT
"""

import socket
import sys
import time

START = time.monotonic()


def answer(conn: socket.socket, status: str) -> None:
    conn.recv(4096)
    conn.sendall(f"HTTP/1.0 {status}\r\nContent-Length: 2\r\n\r\nok".encode())
    conn.close()


def main() -> None:
    mode = sys.argv[1]
    if mode == "accept":
        time.sleep(float(sys.argv[2]))
        open(sys.argv[3], "w").close()
        listener = socket.socket(fileno=3)
        listener.setblocking(True)
        while True:
            conn, _ = listener.accept()
            answer(conn, "200 OK")
    host, port, delay = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if mode == "tcp":
        time.sleep(delay)
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)
    print(f"listening on {host}:{port}", flush=True)
    while True:
        conn, _ = listener.accept()
        answer(conn, "503 Service Unavailable" if time.monotonic() - START < delay else "200 OK")


main()
