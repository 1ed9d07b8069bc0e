"""A WSGI app for the gunicorn tests: answers with the serving process and what it was given."""

import json
import os


def app(environ, start_response):
    body = json.dumps({
        "pid": os.getpid(), "ppid": os.getppid(), "path": environ.get("PATH_INFO"),
        "remote": [environ.get("REMOTE_ADDR"), environ.get("REMOTE_PORT")],
        "server": environ.get("SERVER_SOFTWARE", ""),
    }).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
