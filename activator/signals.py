"""Signals are commands: the table, and the wakeup fd that brings them to the loop.

Handler context does nothing at all: Python's C-level handler writes the signal number to
the wakeup pipe (`signal.set_wakeup_fd`), which wakes the loop's epoll; the Python-level
handler is a no-op. The loop reads the numbers, turns them into a set (so a burst of the
same signal is one command), and acts. No logging, I/O or state change ever happens in a
handler, so there is nothing a signal can interrupt halfway.

PID 1 of a PID namespace gets no signal it has no handler for (SIGTERM included), so every
signal of the table has one.
"""

from __future__ import annotations

import fcntl
import os
import signal

COMMANDS = {
    signal.SIGCHLD: "reap",
    signal.SIGTERM: "stop",
    signal.SIGINT: "stop",
    signal.SIGHUP: "reload",
    signal.SIGUSR1: "status",
    signal.SIGUSR2: "restart",
}
IGNORED = (signal.SIGPIPE, signal.SIGTTIN, signal.SIGTTOU)
_F_SETPIPE_SZ = 1031


def signal_received(signum, frame) -> None:
    """Handler context: the wakeup byte is already written; nothing else to do here."""


class SignalReceiver:
    def __init__(self):
        self.read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:  # room for a long burst before a wakeup byte could be dropped
            fcntl.fcntl(self.write_fd, _F_SETPIPE_SZ, 1 << 20)
        except OSError:
            pass
        signal.set_wakeup_fd(self.write_fd, warn_on_full_buffer=False)
        for signum in COMMANDS:
            signal.signal(signum, signal_received)
        for signum in IGNORED:
            signal.signal(signum, signal.SIG_IGN)

    def commands(self) -> set[str]:
        """The commands of every signal that arrived since the last call."""
        received: set[int] = set()
        while True:
            try:
                data = os.read(self.read_fd, 65536)
            except BlockingIOError:
                break
            received.update(data)
            if len(data) < 65536:  # drained: a byte written since wakes the loop again
                break
        return {COMMANDS[s] for s in received if s in COMMANDS}

    def close(self) -> None:
        signal.set_wakeup_fd(-1)
        os.close(self.read_fd)
        os.close(self.write_fd)
