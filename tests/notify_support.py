"""What the test_notify_*.py files share: unit text, the scripted agent and its event log.

The services of these tests are real sd_notify peers: `programs/notify_agent.py` (python-systemd,
libsystemd's own client), systemd-notify, redis-server, gunicorn. The agent writes what it did
and saw as JSON lines (`events`), with CLOCK_MONOTONIC times the test shares, so that the
order of things is checked from both sides rather than guessed from sleeps.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

from harness import PYTHON, ROOT, TOOLS, wait_for

PROGRAMS = Path(__file__).resolve().parent / "programs"
AGENT = PROGRAMS / "notify_agent.py"
SYSTEMD_NOTIFY = TOOLS / "systemd-notify"


def unit(**keys) -> str:
    """A unit file's text. JSON is YAML, and spares every quoting question."""
    return json.dumps(keys)


def agent(*steps: str) -> list[str]:
    """`exec` of a notify_agent.py service running STEPs (see the program's docstring)."""
    return [PYTHON, str(AGENT), *steps]


def program(name: str, *args: str) -> list[str]:
    return [PYTHON, str(PROGRAMS / name), *map(str, args)]


def events(path: Path, name: str | None = None) -> list[dict]:
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    result = []
    for line in lines:
        try:
            result.append(json.loads(line))
        except ValueError:  # the last line, being written right now
            continue
    return [e for e in result if name is None or e["event"] == name]


def wait_event(path: Path, name: str, count: int = 1, timeout: float = 15.0, **match) -> list[dict]:
    """The first `count` events `name` (with fields equal to `match`) in the log at `path`."""
    def found():
        hits = [e for e in events(path, name) if all(e.get(k) == v for k, v in match.items())]
        return hits if len(hits) >= count else None
    return wait_for(found, timeout, what=f"{count} event(s) {name} {match or ''} in {path}")


def instance(a, name: str, number: int = 1) -> dict:
    return a.status()["units"][name]["instances"][number - 1]


def wait_instance(a, name: str, predicate, timeout: float = 15.0, what: str = "") -> dict:
    """Wait until the instance of `name` satisfies `predicate`; that instance."""
    def check(status):
        instances = status["units"].get(name, {}).get("instances") or [{}]
        return predicate(instances[0])
    status = a.wait_status(check, timeout, what=what or f"instance of {name}")
    return status["units"][name]["instances"][0]


def cli_status(a, *args: str) -> subprocess.CompletedProcess:
    """`activator status [ARGS]` against this activator's runtime directory."""
    env = {**os.environ, "ACTIVATOR_RUNTIME_DIR": str(a.runtime), "PYTHONPATH": str(ROOT)}
    return subprocess.run([PYTHON, "-m", "activator", "status", *args], env=env, capture_output=True,
                          text=True, timeout=30)


class Control:
    """The FIFO a notify_agent.py `control:FIFO` step reads its next steps from."""

    def __init__(self, path: Path):
        self.path = Path(path)
        os.mkfifo(self.path)

    def send(self, *steps: str, a=None) -> None:
        """Write STEPs for the agent; with `a`, fail at once should that activator exit."""
        def open_writer():
            if a is not None and a.proc.poll() is not None:
                raise AssertionError(f"activator exited ({a.proc.returncode}):\n{a.output()}")
            try:
                return os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet (the agent is still starting)
                return None
        fd = wait_for(open_writer, 15, what=f"a reader on {self.path}")
        try:
            os.write(fd, "".join(f"{step}\n" for step in steps).encode())  # < PIPE_BUF: one write
        finally:
            os.close(fd)


def write_whole(path: Path, text: str) -> None:
    """Create `path` with `text` in one step: an agent reads it the moment it exists."""
    draft = Path(f"{path}.draft")
    draft.write_text(text)
    draft.rename(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def notify_socket(a) -> str:
    return str(a.runtime / "notify")
