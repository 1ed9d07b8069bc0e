"""activator as an sd_notify client of whatever started it (podman --sdnotify=container, a
host systemd with Type=notify). Messages go through python-systemd, libsystemd's own client.

NOTIFY_SOCKET stays in activator's environment for libsystemd to read, and is removed from
what services inherit (activation.PROTOCOL_VARIABLES): their notifications go to activator.

The first READY=1 says that every eager unit is started, and nothing may say READY=1 before
it: a reload (SIGHUP) or rolling restart (SIGUSR2) that runs while a unit is still starting
ends with a STATUS= only, since a READY=1 then would tell the outer manager we are up while we
are not. Once we are up, a reload is framed by RELOADING=1 and READY=1.
"""

from __future__ import annotations

import time

from activator.log import Log


class OuterManager:
    def __init__(self, log: Log):
        from systemd import daemon  # loaded only when there is a manager to tell

        self.daemon = daemon
        self.log = log
        self.last_status = None
        self.ready_sent = False  # the first READY=1 (every eager unit started) went out

    def send(self, message: str) -> None:
        try:
            self.daemon.notify(message)
        except Exception as e:  # the outer manager went away: nothing of ours depends on it
            self.log.debug(f"cannot notify the outer manager: {e}")

    @staticmethod
    def summary(services: dict) -> str:
        counts: dict[str, int] = {}
        for service in services.values():
            state = service.state.value
            counts[state] = counts.get(state, 0) + 1
        parts = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return f"{len(services)} units: {parts}" if services else "no units"

    def update(self, services: dict) -> None:
        status = self.summary(services)
        if status != self.last_status:
            self.last_status = status
            self.send(f"STATUS={status}")

    def ready(self, services: dict) -> None:
        self.ready_sent = True
        self.send("READY=1\nSTATUS=" + self.summary(services))

    def reloading(self) -> None:
        if self.ready_sent:  # before it, the outer manager is still waiting for us to start
            self.send(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def reloaded(self, outcome: str) -> None:
        self.send(f"READY=1\nSTATUS={outcome}" if self.ready_sent else f"STATUS={outcome}")

    def stopping(self) -> None:
        self.send("STOPPING=1")
