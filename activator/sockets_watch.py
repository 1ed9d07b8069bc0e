"""Socket activation's mechanics: watching a unit's listening sockets for traffic, and
accepting connections for `accept` units, a batch per wake-up, within `max_connections`.

This module knows sockets and the loop, not units' lives: what traffic means (start the unit)
and what a connection gets (a process of its own) are the callbacks the supervisor registers,
as it registers any reader with the loop.
"""

from __future__ import annotations

import errno

from activator.log import Log
from activator.model import Unit
from activator.sockets import SocketTable

ACCEPT_BATCH = 16


class SocketWatch:
    def __init__(self, loop, sockets: SocketTable, log: Log):
        self.loop = loop
        self.sockets = sockets
        self.log = log
        self.acceptors: dict[str, object] = {}  # accept socket name -> its reader callback

    def on_traffic(self, unit: Unit, callback) -> None:
        """`callback()` once any of the unit's sockets is readable (the service accepts)."""
        for spec in unit.sockets:
            self.loop.add_reader(self.sockets.get(spec.name).fd, callback)

    def on_connections(self, unit: Unit, room, spawn, before=None) -> None:
        """Accept connections on the unit's accept socket while `room()` > 0, and hand each
        to `spawn(connection_socket, address)`; `before()` runs first at each wake-up."""
        spec = unit.sockets[0]
        bound = self.sockets.get(spec.name)

        def readable():
            if before is not None:
                before()
            for connection, address in self.accept_batch(bound, room(), unit.name):
                with connection:  # the service has its own copy once started
                    spawn(connection, address)
            if room() <= 0:
                self.loop.remove_reader(bound.fd)  # full: the rest wait in the backlog

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

    def accept_batch(self, bound, room: int, unit: str) -> list:
        """Up to `room` (at most ACCEPT_BATCH) new connections."""
        taken = []
        while len(taken) < min(room, ACCEPT_BATCH):
            try:
                taken.append(bound.obj.accept())
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log.warning(f"cannot accept: {e.strerror}", unit=unit)
                    break
                continue  # ECONNABORTED and the like: that connection is gone
        return taken
