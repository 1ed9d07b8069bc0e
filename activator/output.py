"""`output: prefix`: each line a service writes becomes `NAME.INSTANCE | line` on our own stream.

One `OutputPipe` per stream of a process, read by the event loop. Each readiness event reads
at most one chunk, so a service flooding its output gets its turn like everything else and
reaping, signals and other services stay prompt. Lines are bytes: invalid UTF-8 goes through
untouched in text format (JSON needs text: there it is replaced). A line longer than
`MAX_LINE` is cut into pieces instead of being held without bound, and a last line without
its newline is written when the stream ends.
"""

from __future__ import annotations

import os

from activator.log import Log, write_all

CHUNK = 65536
MAX_LINE = 65536


class OutputPipe:
    def __init__(self, fd: int, stream: str, log: Log, unit: str, instance: int, label: str):
        self.fd = fd
        self.stream = stream  # "stdout" or "stderr"
        self.target = 1 if stream == "stdout" else 2
        self.log = log
        self.unit = unit
        self.instance = instance
        self.pid: int | None = None
        self.prefix = label.encode() + b" | "
        self.pending = b""

    def read(self) -> bool:
        """Relay one chunk; False once the stream has ended (every writer closed it)."""
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.flush()
            return False
        self._relay(data)
        return True

    def drain(self, limit: int = 16) -> None:
        """Read what is already there (the process has exited), then write a partial last line."""
        for _ in range(limit):
            try:
                data = os.read(self.fd, CHUNK)
            except OSError:
                break
            if not data:
                break
            self._relay(data)
        self.flush()

    def flush(self) -> None:
        if self.pending:
            self._write([self.pending])
            self.pending = b""

    def close(self) -> None:
        self.flush()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def _relay(self, data: bytes) -> None:
        data = self.pending + data
        lines = data.split(b"\n")
        self.pending = lines.pop()
        if len(self.pending) >= MAX_LINE:
            cut = len(self.pending) - len(self.pending) % MAX_LINE
            lines.extend(self.pending[i:i + MAX_LINE] for i in range(0, cut, MAX_LINE))
            self.pending = self.pending[cut:]
        if lines:
            self._write(lines)

    def _write(self, lines: list[bytes]) -> None:
        long_lines = [line for line in lines if len(line) > MAX_LINE]
        if long_lines:  # a burst of one huge line: pieces, each under the limit
            lines = [piece for line in lines for piece in
                     (line[i:i + MAX_LINE] for i in range(0, max(len(line), 1), MAX_LINE))]
        if self.log.json:
            out = b"".join(self.log.json_line(self.unit, self.instance, self.pid, self.stream, "info",
                                              line.decode("utf-8", "replace")) for line in lines)
        else:
            out = b"".join(self.prefix + line + b"\n" for line in lines)
        write_all(self.target, out)
