"""One attempt of a probe (SPEC §10): a TCP connect, an HTTP GET, a command; none blocks.

Each check is started, lives in the loop as a reader, writer or timer of its own, and ends by
calling `done(ok, output)` exactly once, from the loop (never from inside its constructor), or
never if it is cancelled first. A check never outlives its timeout.

- `NetCheck`: a non-blocking socket; connect, wait until it can be written to, read SO_ERROR.
  For `http` it then sends a minimal `GET PATH HTTP/1.0` and reads the status line: 2xx and
  3xx pass.
- `ExecCheck`: a child spawned like a service (spawn.py: its own session, the unit's user,
  environment and working directory), its stdout and stderr one pipe relayed as
  `NAME probe | line`. Its exit reaches it from the one reaper: pids that are not a service's
  are offered to `Children.exited` before being taken for orphans. At its timeout its whole
  process group is SIGKILLed; when it exits, what is left of its group is SIGKILLed too, so
  no probe leaves a process behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket

from activator import activation, spawn
from activator.model import find_program, service_path
from activator.output import OutputPipe
from activator.probespec import parse_address, parse_url

KEPT_OUTPUT = 4096  # the last bytes of a probe's output, for status.json's health_output
MAX_STATUS_LINE = 8192


class NetCheck:
    def __init__(self, loop, kind: str, target: str, timeout: float, done):
        self.loop = loop
        self.done = done
        self.sock: socket.socket | None = None
        self.request = b""
        self.received = b""
        self.timer = loop.call_later(timeout, lambda: self.finish(False, f"timed out after {timeout:g}s"))
        try:
            if kind == "http":
                family, host, port, authority, path = parse_url(target)
                self.request = (f"GET {path} HTTP/1.0\r\nHost: {authority}\r\nUser-Agent: activator "
                                "probe\r\nConnection: close\r\n\r\n").encode()
            else:
                family, host, port = parse_address(target)
            self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
            code = self.sock.connect_ex((host, port))
        except (OSError, ValueError) as e:
            self.later(False, str(e))
            return
        if code not in (0, errno.EINPROGRESS):
            self.later(False, os.strerror(code))
            return
        loop.add_writer(self.sock.fileno(), self.connected)

    def later(self, ok: bool, output: str) -> None:
        self.timer.cancel()
        self.timer = self.loop.call_later(0, lambda: self.finish(ok, output))

    def connected(self) -> None:
        fd = self.sock.fileno()
        self.loop.remove_writer(fd)
        code = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self.finish(False, os.strerror(code))
        elif not self.request:
            self.finish(True, "connected")
        else:
            try:
                self.sock.send(self.request)  # a few dozen bytes: a fresh socket takes them whole
            except OSError as e:
                self.finish(False, e.strerror or str(e))
                return
            self.loop.add_reader(fd, self.readable)

    def readable(self) -> None:
        try:
            data = self.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as e:
            self.finish(False, e.strerror or str(e))
            return
        self.received += data
        line, found, _ = self.received.partition(b"\n")
        if not found and data and len(self.received) < MAX_STATUS_LINE:
            return
        self.finish(*http_verdict(line))

    def finish(self, ok: bool, output: str) -> None:
        if self.done is None:
            return
        done, self.done = self.done, None
        self.close()
        done(ok, output)

    def cancel(self) -> None:
        self.done = None
        self.close()

    def close(self) -> None:
        self.timer.cancel()
        if self.sock is not None:
            self.loop.remove_writer(self.sock.fileno())
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


def http_verdict(line: bytes) -> tuple[bool, str]:
    """A status line: 2xx and 3xx pass."""
    text = line.rstrip(b"\r").decode("latin-1")
    parts = text.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        return False, f"not an HTTP answer: {text[:200]!r}" if text else "closed without an answer"
    return 200 <= int(parts[1]) < 400, text


# ---------------------------------------------------------------------- exec

class ProbeOutput(OutputPipe):
    """The probe's output relayed like a service's, its last bytes kept."""

    kept = b""

    def _relay(self, data: bytes) -> None:
        self.kept = (self.kept + data)[-KEPT_OUTPUT:]
        super()._relay(data)


class Children:
    """The probe commands running now, by pid: what the reaper hands back."""

    def __init__(self, loop, log, base_env: dict, environ: dict, history=None):
        self.loop = loop
        self.log = log
        self.base_env = base_env
        self.environ = environ
        self.history = history  # the units' log buffers (history.py): probe output is kept too
        self.running: dict[int, "ExecCheck"] = {}

    def exited(self, pid: int, status: int) -> bool:
        """The reaper collected `pid`: True if it was a probe's."""
        check = self.running.pop(pid, None)
        if check is None:
            return False
        check.exited(status)
        return True

    def spawn(self, unit, number: int, label: str, argv: list[str]) -> tuple[int, ProbeOutput]:
        launch = activation.prepare(unit, number, [], [], self.base_env, self.environ, None)
        path, error = find_program(argv[0], launch.env.get("PATH") or service_path(unit, self.environ),
                                   unit.working_directory, unit.credentials)
        if path is None:
            raise spawn.SpawnError(argv[0], error[0], error[1])
        launch.program, launch.argv, launch.pid_variables = path, argv, ()
        launch.confirm_exec = False
        r, w = os.pipe2(os.O_CLOEXEC)
        try:
            launch.stdin = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
            launch.stdout = launch.stderr = w
            try:
                pid = spawn.spawn(launch)
            finally:
                os.close(launch.stdin)
        except BaseException:
            os.close(r)
            os.close(w)
            raise
        os.close(w)
        os.set_blocking(r, False)
        pipe = ProbeOutput(r, "stdout", self.log, unit.name, number, f"{label} probe")
        pipe.pid = pid
        if self.history is not None and unit.log_buffer_lines > 0 and unit.output == "prefix":
            self.history.configure(unit.name, unit.log_buffer_lines)
            pipe.record = lambda _, instance, block, name=unit.name: self.history.record(
                name, "probe", instance, block)  # shown by `activator logs` as stream "probe"
        return pid, pipe


class ExecCheck:
    def __init__(self, children: Children, unit, number: int, label: str, argv: list[str],
                 timeout: float, done):
        self.children = children
        self.loop = children.loop
        self.done = done
        self.pid = 0
        self.pipe: ProbeOutput | None = None
        try:
            self.pid, self.pipe = children.spawn(unit, number, label, argv)
        except (spawn.SpawnError, OSError) as e:
            why = str(e)  # `e` itself is gone once the except clause ends
            self.timer = self.loop.call_later(0, lambda: self.finish(False, why))
            return
        children.running[self.pid] = self
        self.loop.add_reader(self.pipe.fd, self.relay)
        self.timer = self.loop.call_later(timeout, lambda: self.timed_out(timeout))

    def relay(self) -> None:
        if self.pipe is not None and not self.pipe.read():
            self.close_pipe()

    def close_pipe(self) -> None:
        if self.pipe is not None:
            self.loop.remove_reader(self.pipe.fd)
            self.pipe.close()

    def output(self) -> str:
        return self.pipe.kept.decode("utf-8", "replace").strip() if self.pipe else ""

    def exited(self, status: int) -> None:
        self.kill()  # what it left in its group
        if self.pipe is not None:
            self.pipe.drain()
            self.close_pipe()
        self.finish(status == 0, self.output() or f"exited ({status})")

    def timed_out(self, timeout: float) -> None:
        self.kill()
        self.finish(False, (self.output() + "\n" if self.output() else "") + f"timed out after {timeout:g}s")

    def kill(self) -> None:
        if self.pid:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def finish(self, ok: bool, output: str) -> None:
        self.timer.cancel()
        if self.done is not None:
            done, self.done = self.done, None
            done(ok, output)

    def cancel(self) -> None:
        """Not wanted any more: killed now; the reaper still hands its exit back here."""
        self.done = None
        self.timer.cancel()
        self.kill()
