"""Service output and activator's own messages, on activator's stdout and stderr, without
ever blocking the loop.

Design
------
Whoever reads our stdout and stderr (a log driver, a terminal, a pipe) may stop reading. A
blocking write would then stop PID 1: no reaping, no restarts, no SIGTERM. So:

- `Outlet`, one per stream, writes through a description of its own opened non-blocking
  (`/proc/self/fd/N` for a pipe, FIFO or terminal; `send(MSG_DONTWAIT)` for a socket). The
  stream itself stays blocking: services with `output: inherit` share it, and would get
  EAGAIN if we set O_NONBLOCK on it. A regular file never blocks on a reader and is written
  as it is. What cannot be written now waits in a buffer of at most `OUTLET_LIMIT` bytes
  (plus one read's worth), written when epoll says the stream can take more.
- While an outlet's buffer is full, service pipes that go to it are not read: the services
  block in their own writes (back-pressure), nothing is lost or torn. activator's own messages
  cannot wait that way: one that finds no room is counted, and the count is logged when the
  buffer has room again.
- At exit, what is left waits at most a short bounded time (`Outlet.flush`).

Floods: a service writing as fast as it can must not cost a core. Reads are large (64 KiB,
the default pipe capacity), several per wake-up but a bounded share (`READS_PER_WAKE`); the
prefix goes in with one `bytes.replace` per chunk, not Python work per line; one write per
wake-up. And relaying may use at most `CPU_SHARE` of a core: the time spent is charged to a
token bucket, and a pipe that finds it empty waits (its service blocks) until it refills. A
timer exists only while some pipe waits for it.

Lines are bytes: invalid UTF-8 goes through untouched in text format (JSON needs text: there
it is replaced). A line longer than `MAX_LINE` is cut into pieces; a last line without its
newline is written when the stream ends.
"""

from __future__ import annotations

import functools
import os
import select
import socket
import stat
import time

CHUNK = 65536  # one read; never above MAX_LINE, so that only a chunk's first line can be too long
MAX_LINE = 65536
READS_PER_WAKE = 4
OUTLET_LIMIT = 1 << 20
RESUME_BELOW = OUTLET_LIMIT // 2
CPU_SHARE = 0.15  # of one core, for relaying service output
BURST = 0.05  # seconds of relaying allowed at once before the share applies
SHUTDOWN_FLUSH_SECONDS = 2.0


def write_all(fd: int, data: bytes) -> None:
    """A plain blocking write, for short-lived processes (the SIGUSR1 child) and before the
    loop runs."""
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:  # pragma: no cover - PEP 475 retries for us
            continue
        except BlockingIOError:  # someone made the stream non-blocking
            select.select([], [fd], [])
            continue
        except OSError:
            return  # nobody is reading (EPIPE, EBADF): output is lost, activator goes on
        view = view[written:]


def _private_description(fd: int):
    """(fd to write to, sender for a socket or None, whether writes can block)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return fd, None, False
    if stat.S_ISSOCK(mode):
        try:
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            return fd, None, True
        sock.setblocking(True)  # MSG_DONTWAIT per send; the description stays as it was
        return sock.fileno(), lambda data: sock.send(data, socket.MSG_DONTWAIT), True
    if stat.S_ISFIFO(mode) or stat.S_ISCHR(mode):
        try:
            own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
        except OSError:
            return fd, None, True  # e.g. no /proc: blocking writes, as any program does
        os.set_blocking(own, False)  # a terminal device may have ignored O_NONBLOCK at open
        return own, None, True
    return fd, None, False  # a regular file, /dev/null: never waits for a reader


class Outlet:
    """One of activator's output streams (1 or 2), written without blocking once attached."""

    def __init__(self, fd: int):
        self.fd = fd
        self.out = fd
        self.send = None
        self.loop = None
        self.buffer = bytearray()
        self.watching = False
        self.broken = False  # the reader is gone for good (EPIPE): output is lost
        self.lost = 0  # activator's own messages that found no room
        self.on_lost = None  # called with the count once there is room again (Log sets it)
        self.waiting: dict = {}  # key -> callback, for when there is room again

    def attach(self, loop) -> None:
        self.loop = loop
        self.out, self.send, _ = _private_description(self.fd)
        if self.buffer:
            self._watch()

    @property
    def room(self) -> bool:
        return self.broken or len(self.buffer) < OUTLET_LIMIT

    def message(self, data: bytes) -> None:
        """One of activator's own messages: written whole, or counted when there is no room."""
        if not self.room:
            self.lost += 1
            return
        self.take(data)

    def take(self, data: bytes) -> None:
        """Service output; the caller has checked `room` (a pipe is not read without it)."""
        if self.broken or not data:
            return
        if self.loop is None:
            write_all(self.fd, data)
            return
        if not self.buffer:
            written = self._write(data)
            if written >= len(data):
                return
            data = data[written:]
        self.buffer += data
        self._watch()

    def when_room(self, key, callback) -> None:
        self.waiting[key] = callback

    def on_writable(self) -> None:
        written = self._write(self.buffer)
        del self.buffer[:written]
        if not self.buffer and self.watching:
            self.loop.remove_writer(self.out)
            self.watching = False
        if len(self.buffer) < RESUME_BELOW:
            self._room_again()

    def flush(self, timeout: float = SHUTDOWN_FLUSH_SECONDS) -> None:
        """At exit: give what is left at most `timeout` seconds to be written."""
        deadline = time.monotonic() + timeout
        while self.buffer and not self.broken:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            try:
                select.select([], [self.out], [], remaining)
            except (OSError, ValueError):
                return
            del self.buffer[:self._write(self.buffer)]

    def _watch(self) -> None:
        if not self.watching and self.loop is not None and not self.broken:
            self.loop.add_writer(self.out, self.on_writable)
            self.watching = True

    def _write(self, data) -> int:
        try:
            if self.send is not None:
                return self.send(data)
            return os.write(self.out, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self._break()
            return len(data)

    def _break(self) -> None:
        self.broken = True
        self.buffer.clear()
        if self.watching:
            self.loop.remove_writer(self.out)
            self.watching = False
        self._room_again()

    def _room_again(self) -> None:
        waiting, self.waiting = self.waiting, {}
        for callback in waiting.values():
            callback()
        if self.lost and self.on_lost is not None:
            lost, self.lost = self.lost, 0
            self.on_lost(lost)


class OutputPipe:
    """One stream (stdout or stderr) of one process with `output: prefix`."""

    # Two per process: with 1,000 units, slots instead of a __dict__ save about 0.3 MiB.
    __slots__ = ("fd", "stream", "target", "outlet", "log", "unit", "instance", "pid", "prefix",
                 "newline_prefix", "pending", "record")

    def __init__(self, fd: int, stream: str, log, unit: str, instance: int, label: str):
        self.fd = fd
        self.stream = stream  # "stdout" or "stderr"
        self.target = 1 if stream == "stdout" else 2
        self.outlet = log.outlets[self.target]
        self.log = log
        self.unit = unit
        self.instance = instance
        self.pid: int | None = None
        self.prefix = label.encode() + b" | "
        self.newline_prefix = b"\n" + self.prefix
        self.pending = b""
        self.record = None  # called with each block of whole lines (the unit's log buffer)

    def read(self, reads: int = READS_PER_WAKE) -> bool:
        """Relay up to `reads` chunks while the outlet has room; False once the stream has
        ended (every writer closed it)."""
        blocks = []
        alive = True
        for _ in range(reads):
            try:
                data = os.read(self.fd, CHUNK)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                alive = False
                blocks.append(self._end())
                break
            blocks.append(self._lines(data))
            if len(data) < CHUNK or not self.outlet.room:
                break
        self._write(b"".join(blocks))
        return alive

    def drain(self, limit: int = 16) -> None:
        """Read what is already there (the process has exited), as far as the outlet has
        room, then write a partial last line."""
        if self.fd >= 0 and self.outlet.room:
            self.read(limit)
        self._write(self._end())

    def close(self) -> None:
        self._write(self._end())
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _end(self) -> bytes:
        block, self.pending = (self.pending + b"\n" if self.pending else b""), b""
        return block

    def _lines(self, data: bytes) -> bytes:
        """The whole lines that `data` completes, each ending in a newline; the rest waits."""
        last = data.rfind(b"\n")
        if last < 0:
            block, self.pending = b"", self.pending + data
        else:
            block, self.pending = self.pending + data[:last + 1], data[last + 1:]
            first = block.find(b"\n")
            if first > MAX_LINE:  # only the first line can be too long (CHUNK <= MAX_LINE)
                block = _cut(block[:first]) + block[first + 1:]
        if len(self.pending) >= MAX_LINE:
            whole = len(self.pending) - len(self.pending) % MAX_LINE
            block += _cut(self.pending[:whole])
            self.pending = self.pending[whole:]
        return block

    def _write(self, block: bytes) -> None:
        if not block:
            return
        if self.record is not None:
            self.record(self.stream, self.instance, block)
        if self.log.json:
            out = b"".join(self.log.json_line(self.unit, self.instance, self.pid, self.stream, "info",
                                              line.decode("utf-8", "replace"))
                           for line in block[:-1].split(b"\n"))
        else:
            out = self.prefix + block.replace(b"\n", self.newline_prefix)[:-len(self.prefix)]
        self.outlet.take(out)


def _cut(line: bytes) -> bytes:
    """A line without its newline as MAX_LINE pieces, each ending in a newline."""
    return b"".join(line[i:i + MAX_LINE] + b"\n" for i in range(0, max(len(line), 1), MAX_LINE))


class Relay:
    """Service pipes to outlets: reads only while the outlet has room and relaying is within
    its share of the CPU. The manager registers each pipe with the callback the loop should
    run when it is readable (`watch`); `relay` says whether to keep reading it."""

    def __init__(self, loop, log, history=None):
        self.loop = loop
        self.log = log
        log.attach(loop)  # activator's own messages, too, wait for this loop from now on
        self.history = history
        self.callbacks: dict[OutputPipe, object] = {}  # pipes being read, and their callbacks
        self.paused: set[OutputPipe] = set()  # waiting for room or for the share
        self.tokens = BURST
        self.refilled = time.monotonic()
        self.timer = None

    def watch(self, pipe: OutputPipe, callback, buffer_lines: int = 0) -> None:
        if self.history is not None and buffer_lines > 0:
            self.history.configure(pipe.unit, buffer_lines)
            pipe.record = functools.partial(self.history.record, pipe.unit)
        self.callbacks[pipe] = callback
        self.loop.add_reader(pipe.fd, callback)

    def forget(self, pipe: OutputPipe) -> None:
        if self.callbacks.pop(pipe, None) is not None and pipe not in self.paused:
            self.loop.remove_reader(pipe.fd)
        self.paused.discard(pipe)

    def relay(self, pipe: OutputPipe) -> bool:
        """Relay a fair share of `pipe`; False once the stream has ended."""
        if not pipe.outlet.room:
            self._pause(pipe)
            self._resume(pipe)  # once there is room
            return True
        start = time.monotonic()
        self.tokens = min(BURST, self.tokens + (start - self.refilled) * CPU_SHARE)
        self.refilled = start
        if self.tokens <= 0:
            self._pause(pipe)
            if self.timer is None:
                self.timer = self.loop.call_later(-self.tokens / CPU_SHARE + 0.001, self._refilled)
            return True
        alive = pipe.read()
        self.tokens -= time.monotonic() - start
        return alive

    def _pause(self, pipe: OutputPipe) -> None:
        if pipe in self.callbacks and pipe not in self.paused:
            self.paused.add(pipe)
            self.loop.remove_reader(pipe.fd)

    def _resume(self, pipe: OutputPipe) -> None:
        if pipe not in self.paused:
            return
        if not pipe.outlet.room:
            pipe.outlet.when_room(pipe, lambda: self._resume(pipe))
            return
        self.paused.discard(pipe)
        self.loop.add_reader(pipe.fd, self.callbacks[pipe])

    def _refilled(self) -> None:
        self.timer = None
        for pipe in list(self.paused):
            self._resume(pipe)
