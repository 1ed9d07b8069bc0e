"""Socket activation's mechanics: watching a unit's listening sockets for traffic, and
accepting connections for `accept` units, a batch per wake-up, within `max_connections`.

This module knows sockets and the loop, not units' lives: what traffic means (start the unit)
and what a connection gets (a process of its own) are the callbacks the supervisor registers,
as it registers any reader with the loop.
"""

from __future__ import annotations

import errno
import os

from activator.log import Log
from activator.model import Unit
from activator.sockets import SocketTable
from activator.states import P, S

ACCEPT_BATCH = 16
ACCEPT_RETRY_SECONDS = 0.5


class SocketWatch:
    def __init__(self, loop, sockets: SocketTable, log: Log):
        self.loop = loop
        self.sockets = sockets
        self.log = log
        self.acceptors: dict[str, object] = {}  # accept socket name -> its reader callback
        self.short: dict[str, str] = {}  # unit -> the shortage that stopped its accepting

    def on_traffic(self, unit: Unit, callback) -> None:
        """`callback()` once any of the unit's sockets is readable (the service accepts)."""
        for spec in unit.sockets:
            self.loop.add_reader(self.sockets.get(spec.name).fd, callback)

    def on_connections(self, unit: Unit, room, spawn, before=None) -> None:
        """Accept connections on the unit's accept socket while `room()` > 0, and hand each
        to `spawn(connection_fd, address)`; `before()` runs first at a wake-up that finds no
        room (it reaps the connections that ended, which frees room)."""
        spec = unit.sockets[0]
        bound = self.sockets.get(spec.name)

        def readable():
            if before is not None and room() <= 0:
                before()
            taken, short = self.accept_batch(bound, room(), unit.name)
            for fd, address in taken:
                try:
                    spawn(fd, address)
                finally:
                    os.close(fd)  # the service has its own copy once started
            if room() <= 0:
                self.loop.remove_reader(bound.fd)  # full: the rest wait in the backlog
            elif short:
                self.pause(spec.name, bound, unit.name, short)

        self.acceptors[spec.name] = readable
        self.loop.add_reader(bound.fd, readable)

    def resume(self, unit: Unit) -> None:
        """A connection ended: accept again if that had stopped for lack of room."""
        spec = unit.sockets[0]
        bound, readable = self.sockets.get(spec.name), self.acceptors.get(spec.name)
        if bound is not None and readable is not None and bound.fd not in self.loop.readers:
            self.loop.add_reader(bound.fd, readable)

    def stop(self, unit: Unit) -> None:
        for spec in unit.sockets:
            bound = self.sockets.get(spec.name)
            if bound is not None:
                self.loop.remove_reader(bound.fd)
            self.acceptors.pop(spec.name, None)

    def accept_batch(self, bound, room: int, unit: str) -> tuple[list, str | None]:
        """Up to `room` (at most ACCEPT_BATCH) new connections as (fd, address), and what ran
        short, if a lack of descriptors or memory stopped the batch (the connection stays in
        the backlog).

        `_accept` is the socket module's own step under `accept()`: the descriptor (blocking,
        close-on-exec) without a socket object around it, which a connection handed straight
        to its process never needs."""
        taken = []
        accept = bound.obj._accept
        while len(taken) < min(room, ACCEPT_BATCH):
            try:
                taken.append(accept())
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    return taken, e.strerror
                continue  # ECONNABORTED and the like: that connection is gone
        if taken and unit in self.short:
            if self.short.pop(unit, None):
                self.log.info("accepting connections again", unit=unit)
        return taken, None

    def pause(self, name: str, bound, unit: str, why: str) -> None:
        """Out of descriptors (EMFILE, ENFILE) or memory: the socket stays readable, so watching
        it would spin. Stop watching it for a while; the connections wait in the backlog. Said
        once per shortage, and once when accepting works again."""
        self.loop.remove_reader(bound.fd)
        if unit not in self.short:
            self.short[unit] = why
            self.log.warning(f"cannot accept connections: {why}; retrying every "
                             f"{ACCEPT_RETRY_SECONDS:g}s, connections wait in the backlog", unit=unit)
        self.loop.call_later(ACCEPT_RETRY_SECONDS, lambda: self.retry(name, bound))

    def retry(self, name: str, bound) -> None:
        readable = self.acceptors.get(name)
        if readable is not None and self.sockets.get(name) is bound and bound.fd not in self.loop.readers:
            self.loop.add_reader(bound.fd, readable)

    # ------------------------------------------------------------------ failed units

    def close_unit(self, unit: Unit) -> list[str]:
        """A unit failed for good: its sockets are closed, so that clients are refused and
        fail over instead of waiting (SPEC §2). Inherited sockets stay: they cannot be bound
        again. The names of the sockets closed."""
        closed = []
        for spec in unit.sockets:
            bound = self.sockets.get(spec.name)
            if bound is None or spec.listen.kind == "inherit":
                continue
            self.loop.remove_reader(bound.fd)
            self.acceptors.pop(spec.name, None)
            self.sockets.pop(spec.name).close()
            closed.append(spec.name)
        return closed

    def close_failed(self, services: dict) -> None:
        """Units failed for good close their sockets until they start again (SPEC §2)."""
        for service in services.values():
            if service.state is S.FAILED and service.phase is not P.STOPPING and not service.has_processes():
                for name in self.close_unit(service.unit):
                    self.log.warning(f"socket {name} closed: the unit failed; clients are refused "
                                     "until it starts again", unit=service.name)

    def reopen(self, service, unit: Unit) -> None:
        for name in self.reopen_unit(unit):
            self.log.info(f"socket {name} bound again", unit=service.name)

    def reopen_unit(self, unit: Unit) -> list[str]:
        """Before a unit starts again: bind the sockets closed when it failed (BindError if
        one cannot be). The names of the sockets bound again."""
        bound = []
        for spec in unit.sockets:
            if spec.name not in self.sockets:
                self.sockets.put(spec.name, self.sockets.bind(spec))
                bound.append(spec.name)
        return bound
