"""When probes run, and what their results mean (SPEC §10): readiness while an instance
starts, health while it runs.

The supervisor asks `Probes` for a watch on a process and hands it a callback: `on_ready`
(the process counts as started) or `on_unhealthy` (restart it). A watch is kept in the
process's `timers` under "ready" or "health", so that whatever cancels the process's timers
cancels it too; it also gives up by itself once the process is being stopped or has ended.

Between attempts a watch holds one timer and nothing else: an idle activator with a `health`
every 10 s wakes up once per 10 s per probed instance, for the probe itself.

- `ReadyWatch` (tcp, http, exec): an attempt every `interval` (counted from the start of the
  previous one) until one passes. `timeout_start_sec` (the process's start timer) bounds it.
- `ListeningWatch`: reads /proc (listening.py), a few milliseconds after the start, then
  twice as long each time, up to `interval`.
- `FdWatch`: a newline on the pipe whose writing end the service holds at fd N.
- `HealthWatch`: after `start_period`, an attempt every `interval`; `retries` failures in a
  row make the instance unhealthy.
"""

from __future__ import annotations

import os

from activator import listening
from activator.probes import Children, ExecCheck, NetCheck

FIRST_LOOK = 0.005  # seconds: the first /proc look of `ready: listening`


def gone(proc) -> bool:
    """The process is being stopped or has ended: its probes have nothing left to say."""
    return proc.exited or "stop" in proc.timers or proc.stop_reason is not None


class Probes:
    def __init__(self, loop, log, base_env: dict, environ: dict, on_change, history=None):
        self.loop = loop
        self.log = log
        self.environ = environ
        self.on_change = on_change
        self.children = Children(loop, log, base_env, environ, history)

    @classmethod
    def of(cls, loop, log, launcher, on_change) -> "Probes":
        """Probes that start commands as the launcher does, their output kept with the units'."""
        return cls(loop, log, launcher.base_env, launcher.environ, on_change, launcher.output.history)

    def child_exited(self, pid: int, status: int) -> bool:
        return self.children.exited(pid, status)

    def check(self, proc, probe, done):
        """Start one attempt of `probe` for `proc`; it ends by calling `done(ok, output)`."""
        args = [t.expand({}, proc.number, self.environ) for t in probe.target]
        if probe.kind == "exec":
            return ExecCheck(self.children, proc.unit, proc.number, proc.label, args, probe.timeout, done)
        return NetCheck(self.loop, probe.kind, args[0], probe.timeout, done)

    def watch_ready(self, proc, sockets, on_ready) -> None:
        """`sockets`: the socket table, where `listening` finds the unit's sockets' inodes."""
        probe = proc.unit.ready
        if probe.kind == "listening":
            inodes = {os.fstat(sockets.get(s.name).fd).st_ino for s in proc.unit.sockets}
            watch = ListeningWatch(self.loop, proc, inodes, probe.interval, on_ready)
        elif probe.kind == "fd":
            watch = FdWatch(self.loop, proc, on_ready)
        else:
            watch = ReadyWatch(self, proc, probe, on_ready)
        proc.timers["ready"] = watch

    def watch_health(self, proc, on_unhealthy) -> None:
        proc.timers["health"] = HealthWatch(self, proc, on_unhealthy)


class RepeatedCheck:
    """One probe tried again every `interval` (counted from the start of one attempt to the
    next) until `cancel`; a subclass reads each attempt's `result`."""

    def __init__(self, probes: Probes, proc, probe, first_delay: float):
        self.probes, self.proc, self.probe = probes, proc, probe
        self.attempt = None
        self.began = probes.loop.now()
        self.timer = probes.loop.call_later(first_delay, self.run)

    def run(self) -> None:
        self.timer = None
        if gone(self.proc):
            return
        self.began = self.probes.loop.now()
        self.attempt = self.probes.check(self.proc, self.probe, self.attempted)

    def attempted(self, ok: bool, output: str) -> None:
        self.attempt = None
        if not gone(self.proc) and self.result(ok, output):
            wait = self.began + self.probe.interval - self.probes.loop.now()
            self.timer = self.probes.loop.call_later(wait, self.run)

    def result(self, ok: bool, output: str) -> bool:
        """What an attempt says; whether to try again."""
        raise NotImplementedError

    def cancel(self) -> None:
        for part in (self.timer, self.attempt):
            if part is not None:
                part.cancel()
        self.timer = self.attempt = None


class ReadyWatch(RepeatedCheck):
    def __init__(self, probes: Probes, proc, probe, on_ready):
        super().__init__(probes, proc, probe, 0)
        self.on_ready = on_ready
        self.last_output = ""

    def result(self, ok: bool, output: str) -> bool:
        if ok:
            self.on_ready(self.proc)
            return False
        if output != self.last_output:
            self.probes.log.debug(f"not ready yet ({self.probe.describe()}): {output}", **self.proc.where)
            self.last_output = output
        return True


class ListeningWatch:
    def __init__(self, loop, proc, inodes: set[int], interval: float, on_ready):
        self.loop, self.proc, self.inodes, self.interval, self.on_ready = loop, proc, inodes, interval, on_ready
        self.delay = FIRST_LOOK
        self.timer = loop.call_later(self.delay, self.look)

    def look(self) -> None:
        self.timer = None
        if gone(self.proc):
            return
        if listening.listening(self.proc.main_pid, self.inodes):
            self.on_ready(self.proc)
            return
        self.delay = min(self.delay * 2, self.interval)
        self.timer = self.loop.call_later(self.delay, self.look)

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class FdWatch:
    """The reading end of the service's readiness pipe (`proc.ready_fd`), until a newline."""

    def __init__(self, loop, proc, on_ready):
        self.loop, self.proc, self.on_ready = loop, proc, on_ready
        self.fd, proc.ready_fd = proc.ready_fd, -1
        if self.fd >= 0:
            loop.add_reader(self.fd, self.readable)

    def readable(self) -> None:
        try:
            data = os.read(self.fd, 512)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if b"\n" in data and not gone(self.proc):
            self.cancel()
            self.on_ready(self.proc)
        elif not data:
            self.cancel()  # every writer closed it without a newline: the start timeout decides

    def cancel(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class HealthWatch(RepeatedCheck):
    """"starting" until the first attempt passes, then "healthy" or "unhealthy"."""

    def __init__(self, probes: Probes, proc, on_unhealthy):
        super().__init__(probes, proc, proc.unit.health, proc.unit.health.start_period)
        self.on_unhealthy = on_unhealthy
        self.state = "starting"
        self.output = ""
        self.failures = 0

    def result(self, ok: bool, output: str) -> bool:
        before = (self.state, self.output)
        self.output = output
        self.failures = 0 if ok else self.failures + 1
        if ok:
            self.state = "healthy"
        elif self.failures >= self.probe.retries:
            self.state = "unhealthy"
        if (self.state, self.output) != before:
            self.probes.on_change()
        if self.state == "unhealthy":
            self.on_unhealthy(self.proc, output)
            return False
        if not ok:
            self.probes.log.warning(f"health check failed ({self.failures} of {self.probe.retries}): "
                                    f"{output}", **self.proc.where)
        return True
