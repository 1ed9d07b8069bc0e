"""The demo's WSGI app: which process answered, and how many hits so far (kept in redis).

Served by gunicorn from units/web.yaml: several instances share one listening socket that
activator bound, so successive requests may be answered by different processes.
"""

import os

import resp

INSTANCE = os.environ.get("ACTIVATOR_INSTANCE", "?")


def application(environ, start_response):
    if environ.get("PATH_INFO", "/") != "/":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    hits = resp.command("INCR", "hits")
    migrated = resp.command("GET", "demo:migrated")
    # redis keeps nothing across its own restarts (no persistence): after one, the migration's
    # mark is gone until the migration runs again
    origin = f"counter set up {migrated}" if migrated else "redis restarted since the migration"
    body = f"hello from worker pid {os.getpid()} (web instance {INSTANCE}): hit {hits} ({origin})\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
