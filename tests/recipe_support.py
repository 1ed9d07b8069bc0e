"""Running the recipes of docs/recipes.md as they are written.

The unit files and configuration files of each recipe are taken from the document itself
(each file is a fenced block right under its path, written as **`PATH`**), so the recipe a user copies is the
one that was tested. A test only moves what a test must move: fixed ports become sockets the
kernel numbers, or unix sockets in a temporary directory, and system paths become temporary
ones; every replacement must match, so a change to the document that a test no longer
follows fails loudly.

Each recipe test then does what a user does: one real request through the socket activator
holds, a reload while a client keeps asking (no request may fail), and a stop after which no
process is left.
"""

from __future__ import annotations

import re
import signal
import socket
import struct
import threading
import time
from pathlib import Path

from harness import ROOT, descendants_of, wait_for

RECIPES = ROOT / "docs" / "recipes.md"
_SECTION = re.compile(r"^## (.+)$", re.M)
_BLOCK = re.compile(r"^\*\*`(\S+)`\*\*\n```[a-z]*\n(.*?)^```$", re.M | re.S)


def recipe_files(title: str) -> dict[str, str]:
    """PATH -> text of every file of the recipe whose `## ` heading starts with `title`."""
    text = RECIPES.read_text()
    starts = [(m.start(), m.group(1)) for m in _SECTION.finditer(text)] + [(len(text), "")]
    for (start, heading), (end, _) in zip(starts, starts[1:]):
        if heading.startswith(title):
            return {m.group(1): m.group(2) for m in _BLOCK.finditer(text, start, end)}
    raise KeyError(f"no recipe '{title}' in {RECIPES}")


def install(title: str, tmp_path: Path, replacements: dict[str, str], also=()) -> dict[str, str]:
    """The recipe's files with `replacements` made (each must match somewhere). Files under
    `units/` are returned for the activator fixture; every other file is written to where
    its (replaced) path says, which must be under `tmp_path` or a directory in `also`."""
    files = recipe_files(title)
    for old in replacements:
        assert any(old in text or old in path for path, text in files.items()), \
            f"recipe {title}: '{old}' is not in its files any more"
    units: dict[str, str] = {}
    for path, text in files.items():
        for old, new in replacements.items():
            text = text.replace(old, new)
            path = path.replace(old, new)
        if path.startswith("units/"):
            units[path[len("units/"):]] = text
        else:
            target = Path(path)
            assert any(target.is_relative_to(root) for root in (tmp_path, *also)), \
                f"recipe {title}: {path} not moved"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    return units


class ClientLoop:
    """A client that asks again and again in a thread, counting answers and failures."""

    def __init__(self, ask, name: str = "client"):
        self.ask = ask  # a function that makes one request and returns its answer
        self.answers: list = []
        self.failures: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, name=name, daemon=True)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.answers.append(self.ask())
            except Exception as e:  # noqa: BLE001 - every failure is counted and shown
                self.failures.append(f"{time.monotonic():.3f} {e!r}")

    def __enter__(self) -> "ClientLoop":
        self.thread.start()
        self.wait_answers(1)
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(60)

    def wait_answers(self, count: int, timeout: float = 30.0, matching=None) -> None:
        """Wait for `count` more answers (that satisfy `matching`, if given)."""
        def matches():
            return [a for a in self.answers if matching is None or matching(a)]
        start = len(matches()) if matching is None else 0
        wait_for(lambda: len(matches()) >= start + count, timeout,
                 what=f"{count} answers{' matching' if matching else ''}; failures: {self.failures[:3]}")


def reload_with_client(a, ask, reload, expect_after, settle: int = 5, timeout: float = 60.0):
    """Run `ask` in a loop, call `reload()`, wait until answers satisfy `expect_after`, a few
    more, and assert that no request failed."""
    with ClientLoop(ask) as client:
        client.wait_answers(3)
        reload()
        try:
            client.wait_answers(settle, timeout, matching=expect_after)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlast answers: {client.answers[-3:]}\n{a.output()}") from None
        client.wait_answers(settle)
    assert client.failures == [], f"{len(client.failures)} failed of " \
        f"{len(client.answers) + len(client.failures)}: {client.failures[:5]}\n{a.output()}"
    return client


def edit_unit(a, name: str, old: str, new: str) -> None:
    """Change a unit file of a running activator and send it SIGHUP."""
    path = a.units_dir / f"{name}.yaml"
    text = path.read_text()
    assert old in text, f"'{old}' not in {path}"
    path.write_text(text.replace(old, new))
    a.signal(signal.SIGHUP)


def stop_leaves_nothing(a, timeout: float = 60.0, idle: bool = False) -> str:
    """No zombie; then SIGTERM to activator: exit 0, every process it had gone, none needed
    SIGKILL.
    `idle`: an accept unit between connections has no process to stop. Returns activator's
    output, for what a test wants to check of the stop."""
    wait_for(lambda: a.zombies() == [], 10, what="no zombie")
    processes = [(pid, _start_time(pid)) for pid in descendants_of(a.pid)]
    assert processes or idle, "no process was running"
    code = a.stop(timeout)
    output = a.output()
    assert code == 0, output
    assert "sending SIGKILL" not in output, output
    assert "could not be reaped" not in output, output
    for pid, started in processes:
        now = _start_time(pid)
        assert now is None or now == "gone" or now != started, f"process {pid} outlived activator"
    return output


def _start_time(pid: int) -> str | None:
    """The start time of a live process (a pid reused later has another one); None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return "gone" if fields[0] == "Z" else fields[19]


def fastcgi_get(address, script: str, family=socket.AF_INET, timeout: float = 20.0) -> str:
    """One FastCGI request (responder role, as a web server sends it); the body it printed."""
    def record(kind: int, content: bytes) -> bytes:
        return struct.pack("!BBHHBx", 1, kind, 1, len(content), 0) + content

    def pair(name: str, value: str) -> bytes:
        def size(n: int) -> bytes:
            return bytes([n]) if n < 128 else struct.pack("!I", n | 0x80000000)
        return size(len(name)) + size(len(value)) + name.encode() + value.encode()

    params = b"".join(pair(k, v) for k, v in {
        "SCRIPT_FILENAME": script, "REQUEST_METHOD": "GET", "SERVER_PROTOCOL": "HTTP/1.1",
        "QUERY_STRING": "", "GATEWAY_INTERFACE": "CGI/1.1"}.items())
    begin = struct.pack("!HB5x", 1, 0)  # FCGI_RESPONDER, do not keep the connection
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        sock.sendall(record(1, begin) + record(4, params) + record(4, b"") + record(5, b""))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    out, pos, ended = b"", 0, False
    while pos + 8 <= len(data):
        _, kind, _, length, padding = struct.unpack("!BBHHBx", data[pos:pos + 8])
        if kind == 6:  # FCGI_STDOUT
            out += data[pos + 8:pos + 8 + length]
        ended = ended or kind == 3  # FCGI_END_REQUEST
        pos += 8 + length + padding
    if not ended:
        raise ConnectionError(f"FastCGI response cut short: {data[:200]!r}")
    return out.decode().split("\r\n\r\n", 1)[-1]
