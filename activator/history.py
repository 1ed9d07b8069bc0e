"""The last lines each unit wrote (SPEC §8, `activator logs`), kept in memory, bounded.

For every unit with `output: prefix` and `log_buffer_lines` above 0, the relay hands over
each block of whole lines it writes, with the time it read them, the stream and the instance.
Blocks are kept as they come (a flood must not cost per-line work here either) and cut into
lines only when someone asks (`recent`). A unit keeps at least its last `log_buffer_lines`
lines, and never more than `log_buffer_lines` KiB (at least 64 KiB, one whole long line):
older blocks are dropped whole.

Followers (`follow`) get every new block as it is recorded. A follower that does not take
what it was given is dropped once it holds more than its limit: a client that stopped
reading never makes activator wait or grow.
"""

from __future__ import annotations

import time
from collections import deque

KIB_PER_LINE = 1024
MIN_BYTES = 65536 + 1  # one line cut at 64 KiB, and its newline
FOLLOWER_LIMIT = 1 << 20


class _UnitLog:
    __slots__ = ("lines", "max_bytes", "blocks", "line_count", "size")

    def __init__(self, lines: int):
        self.lines = lines
        self.max_bytes = max(lines * KIB_PER_LINE, MIN_BYTES)
        # (wall time, stream, instance, block, lines in it); made at the first block: an empty
        # deque costs 0.6 KiB, and most units of a large stack never print a line.
        self.blocks: deque | tuple = ()
        self.line_count = 0
        self.size = 0

    def add(self, entry: tuple) -> None:
        if not self.blocks:
            self.blocks = deque()
        self.blocks.append(entry)
        self.line_count += entry[4]
        self.size += len(entry[3])
        while len(self.blocks) > 1 and (self.line_count - self.blocks[0][4] >= self.lines
                                        or self.size > self.max_bytes):
            old = self.blocks.popleft()
            self.line_count -= old[4]
            self.size -= len(old[3])
        if self.size > self.max_bytes:  # one block alone is too big: keep its last lines
            wall, stream, instance, block, _ = self.blocks.pop()
            start = block.find(b"\n", len(block) - self.max_bytes - 1) + 1
            trimmed = (wall, stream, instance, block[start:], block.count(b"\n", start))
            self.blocks.append(trimmed)
            self.line_count, self.size = trimmed[4], len(trimmed[3])


class Follower:
    """New lines as they are recorded, for one reader (`take` them; `dropped` if too slow)."""

    def __init__(self, history: "History", units, limit: int, on_data):
        self.history = history
        self.units = set(units) if units else None
        self.limit = limit
        self.on_data = on_data
        self.queue: deque = deque()
        self.size = 0
        self.dropped = False

    def offer(self, unit: str, entry: tuple) -> None:
        if self.units is not None and unit not in self.units:
            return
        self.queue.append((unit, entry))
        self.size += len(entry[3])
        if self.size > self.limit:
            self.close()
            self.dropped = True
        elif self.on_data is not None:
            self.on_data()

    def take(self) -> list[tuple]:
        """(unit, wall time, stream, instance, text) of every line given since the last take."""
        queue, self.queue, self.size = self.queue, deque(), 0
        return [(unit, *line) for unit, entry in queue for line in _lines(entry)]

    def close(self) -> None:
        self.queue.clear()
        self.size = 0
        if self in self.history.followers:
            self.history.followers.remove(self)


class History:
    def __init__(self):
        self.units: dict[str, _UnitLog] = {}
        self.followers: list[Follower] = []

    def configure(self, unit: str, lines: int) -> None:
        """Keep `lines` lines of `unit` (0: none, and forget what was kept)."""
        current = self.units.get(unit)
        if lines <= 0:
            self.units.pop(unit, None)
        elif current is None or current.lines != lines:
            kept = _UnitLog(lines)
            for entry in current.blocks if current is not None else ():
                kept.add(entry)
            self.units[unit] = kept

    def retain(self, units) -> None:
        """Forget the units not in `units` (removed by a reload)."""
        for name in set(self.units) - set(units):
            del self.units[name]

    def record(self, unit: str, stream: str, instance: int, block: bytes) -> None:
        kept = self.units.get(unit)
        if kept is None:
            return
        entry = (time.time(), stream, instance, block, block.count(b"\n"))
        kept.add(entry)
        for follower in list(self.followers):
            follower.offer(unit, entry)

    def recent(self, unit: str, n: int) -> list[tuple]:
        """The last `n` lines of `unit`, oldest first: (wall time, stream, instance, text)."""
        kept = self.units.get(unit)
        if kept is None or n <= 0:
            return []
        result: list[tuple] = []
        for entry in reversed(kept.blocks):
            lines = _lines(entry)
            result[:0] = lines[-(n - len(result)):]
            if len(result) >= n:
                break
        return result

    def follow(self, units=None, on_data=None, limit: int = FOLLOWER_LIMIT) -> Follower:
        follower = Follower(self, units, limit, on_data)
        self.followers.append(follower)
        return follower


def _lines(entry: tuple) -> list[tuple]:
    wall, stream, instance, block, _ = entry
    return [(wall, stream, instance, line.decode("utf-8", "replace"))
            for line in block[:-1].split(b"\n")] if block else []
