"""From a unit's instance to a running process: environment, descriptors, output, spawn.

`Launcher.start` builds what the process receives (activation.py), gives it its output pipes
(`output: prefix`), /dev/null or activator's own streams, spawns it (spawn.py) and returns the
new `Process`, or raises SpawnError when the program could not be executed (or OSError when
a resource ran out); nothing is left open then. It decides nothing about units. The output
pipes it hands to the relay (output.py), which reads them as the loop allows.
"""

from __future__ import annotations

import functools
import os

from activator import activation, resources, spawn
from activator.log import Log
from activator.model import Unit
from activator.output import OutputPipe, Relay
from activator.service import Process, Slot


class Launcher:
    def __init__(self, output: Relay, environ: dict, log: Log, notify_path: str | None, is_pid1: bool):
        self.output = output
        self.baseline = None  # resources.Baseline: what services start with, set at boot
        self.environ = environ
        self.base_env = activation.base_environment(environ)
        self.log = log
        self.notify_path = notify_path
        self.devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        # Only as PID 1 is the namespace's next pid ours to predict (spawn.py, step 2).
        self.pid_guess = spawn.PidGuess() if is_pid1 else None
        self.found: dict = {}  # program search -> path, until a reload or a failed exec

    def forget_programs(self) -> None:
        """A reload searches for every program again: one may have been installed since."""
        self.found.clear()

    def start(self, unit: Unit, slot: Slot | None, number: int, label: str, socket_fds: list[int],
              stored: list[tuple[str, int]], connection: dict | None = None) -> Process:
        prepared = self.prepared(unit)
        launch = prepared.launch(number, socket_fds, stored, connection)
        launch.stdin = None if unit.literal_exec else self.devnull
        resources.prepare(launch, unit, self.baseline)
        pipes: list[tuple[int, int, str]] = []
        ready_pipe = self.ready_pipe(unit, launch) if slot is not None else None
        try:
            if unit.output == "null":
                launch.stdout = launch.stderr = self.devnull
            elif unit.output == "prefix":
                # With `stdio: socket` the connection is stdout: only stderr is relayed.
                for stream in ("stderr",) if launch.stdio_socket else ("stdout", "stderr"):
                    r, w = os.pipe2(os.O_CLOEXEC)
                    pipes.append((r, w, stream))
                    setattr(launch, stream, w)
            pid = spawn.spawn(launch, self.pid_guess)
        except spawn.SpawnError:
            prepared.forget_program()
            close_pipes(pipes, ready_pipe)
            raise
        except BaseException:
            close_pipes(pipes, ready_pipe)
            raise
        proc = Process(pid, unit, slot, number, label)
        if ready_pipe:
            os.close(ready_pipe[1])
            proc.ready_fd = ready_pipe[0]
        for r, w, stream in pipes:
            os.close(w)
            os.set_blocking(r, False)
            pipe = OutputPipe(r, stream, self.log, unit.name, number, label)
            pipe.pid = pid
            proc.pipes.append(pipe)
            self.output.watch(pipe, functools.partial(self.relay, pipe, proc), unit.log_buffer_lines)
        return proc

    def prepared(self, unit: Unit) -> activation.UnitLaunch:
        """The unit's constant part of every launch. An `accept` unit, which starts a process
        per connection, keeps it with the unit object itself (it goes when a reload replaces
        the unit); other units start seldom, and 1 KiB each would add up over 1,000 units."""
        prepared = unit.__dict__.get("_launch")
        if prepared is None:
            prepared = activation.UnitLaunch(unit, self.base_env, self.environ, self.notify_path,
                                             self.found)
            if unit.accepts:
                unit.__dict__["_launch"] = prepared
        return prepared

    @staticmethod
    def ready_pipe(unit: Unit, launch) -> tuple[int, int] | None:
        """`ready: {fd: N}`: a pipe whose writing end the service finds at fd N (s6's
        notification-fd); the reading end is the process's, for its readiness watch."""
        if unit.ready is None or unit.ready.kind != "fd":
            return None
        r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(w, True)
        launch.extra_fds[unit.ready.fd] = w
        return r, w

    def relay(self, pipe: OutputPipe, proc: Process) -> None:
        if not self.output.relay(pipe):
            self.output.forget(pipe)
            pipe.close()
            proc.pipes.remove(pipe)


def close_pipes(pipes: list[tuple[int, int, str]], ready_pipe: tuple[int, int] | None) -> None:
    for r, w, _ in pipes + ([(*ready_pipe, "")] if ready_pipe else []):
        os.close(r)
        os.close(w)
