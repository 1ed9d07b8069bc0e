"""The probe client of reload.py: sequential HTTP requests, a new connection for each.

    python bench/probe.py PORT OUTFILE [--interval 0.01] [--timeout 5]

Runs until SIGTERM or SIGINT, then writes every request to OUTFILE as JSON:
[[start, latency, outcome], ...], start on CLOCK_MONOTONIC (time.monotonic(), the same clock
in every process of the machine), latency in seconds, outcome "ok" or why it failed:
"refused" (ECONNREFUSED), "reset" (ECONNRESET / EPIPE), "timeout" (no complete answer
within --timeout), "closed" (EOF before a status line), "status NNN" (not 200), or
"error ERRNO".

Why not wrk's own error counts: wrk keeps its connections, and on loopback a refused connect
shows as a write error on a socket it then retries in a tight loop, so a second of refusals
counts thousands of "errors". One request at a time, a new connection each, started every
--interval seconds (or right after the previous one ends, when it took longer), counts what a
client that arrives during a restart sees. A process of its own, so that nothing in the
benchmark's own process (subprocesses, polling) delays it.
"""

from __future__ import annotations

import argparse
import errno
import json
import signal
import socket
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n"


def one(address: tuple[str, int], timeout: float) -> str:
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(address)
        s.sendall(REQUEST)
        data = b""
        while True:  # gunicorn's sync workers close the connection after the answer
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            s.settimeout(left)
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        if not data:
            return "closed"
        status = data.split(b"\r\n", 1)[0].split()
        if len(status) < 2:
            return "closed"
        return "ok" if status[1] == b"200" else f"status {status[1].decode(errors='replace')}"
    except socket.timeout:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"
    except OSError as e:
        return f"error {errno.errorcode.get(e.errno, e.errno)}"
    finally:
        s.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("outfile")
    parser.add_argument("--interval", type=float, default=0.01)
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args()

    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    address = ("127.0.0.1", args.port)
    results = []
    next_start = time.monotonic()
    while running:
        now = time.monotonic()
        if now < next_start:
            time.sleep(next_start - now)
            continue  # a signal may have come during the sleep
        start = time.monotonic()
        outcome = one(address, args.timeout)
        results.append((start, time.monotonic() - start, outcome))
        next_start = start + args.interval
    with open(args.outfile, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main()
