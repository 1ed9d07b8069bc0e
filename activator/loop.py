"""The event loop's machinery: one epoll for readiness, one heap of deadlines.

Nothing here knows about units. `poll` waits for the next event or the earliest deadline and
returns the callbacks that are due; with no deadline pending it waits forever, so an idle
activator never wakes up.
"""

from __future__ import annotations

import heapq
import select
import time


class Timer:
    __slots__ = ("deadline", "callback", "cancelled")

    def __init__(self, deadline: float, callback):
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def __lt__(self, other: "Timer") -> bool:
        return self.deadline < other.deadline


class Loop:
    """epoll plus a heap of deadlines. Nothing here knows about units."""

    def __init__(self):
        self.epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self.readers: dict[int, object] = {}
        self.writers: dict[int, object] = {}
        self.registered: set[int] = set()
        self.timers: list[Timer] = []

    def add_reader(self, fd: int, callback) -> None:
        self.readers[fd] = callback
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, callback) -> None:
        """`callback` runs while `fd` can be written to (for output that would block)."""
        self.writers[fd] = callback
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self.writers.pop(fd, None) is not None:
            self._update(fd)

    def _update(self, fd: int) -> None:
        """Tell epoll what we wait for on `fd` now: reading, writing, both or nothing."""
        mask = (select.EPOLLIN if fd in self.readers else 0) | (select.EPOLLOUT if fd in self.writers else 0)
        registered = fd in self.registered
        try:
            if mask and registered:
                self.epoll.modify(fd, mask)
            elif mask:
                self.epoll.register(fd, mask)
                self.registered.add(fd)
            elif registered:
                self.registered.discard(fd)
                self.epoll.unregister(fd)
        except OSError:  # closed under us: forget it
            self.registered.discard(fd)

    @staticmethod
    def now() -> float:
        return time.monotonic()

    def call_later(self, delay: float, callback) -> Timer:
        timer = Timer(time.monotonic() + max(delay, 0.0), callback)
        if delay != float("inf"):  # `infinity` (a timeout turned off) never fires
            heapq.heappush(self.timers, timer)
        return timer

    def poll(self) -> list:
        """Wait for the next event or deadline; the callbacks that are due, in order."""
        while self.timers and self.timers[0].cancelled:
            heapq.heappop(self.timers)
        timeout = -1.0
        if self.timers:
            # epoll takes at most 2**31 ms; a farther deadline is recomputed after a day.
            timeout = min(max(self.timers[0].deadline - time.monotonic(), 0.0), 86400.0)
        events = self.epoll.poll(timeout)
        due = []
        for fd, mask in events:
            # An error or hang-up wakes both: a reader reads EOF, a writer's write fails.
            if mask & ~select.EPOLLOUT and fd in self.readers:
                due.append(self.readers[fd])
            if mask & (select.EPOLLOUT | select.EPOLLERR | select.EPOLLHUP) and fd in self.writers:
                due.append(self.writers[fd])
        now = time.monotonic()
        while self.timers and (self.timers[0].cancelled or self.timers[0].deadline <= now):
            timer = heapq.heappop(self.timers)
            if not timer.cancelled:
                timer.cancelled = True
                due.append(timer.callback)
        return due

    def close(self) -> None:
        self.epoll.close()
