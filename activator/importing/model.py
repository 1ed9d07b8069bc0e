"""The neutral description of what an import produces, shared by the readers and the writer.

Each reader (circus.py, supervisord.py, systemd.py) turns its format into `ImportedUnit`s: the
activator keys of one unit as plain values, where it came from, and what could not be carried
over. The writer only formats them; the command only decides what to write and what to say.
"""

from __future__ import annotations

from dataclasses import dataclass, field


class ImportFailed(Exception):
    """An input cannot be read or parsed: nothing is written (exit 2)."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


@dataclass
class Skipped:
    """An option with no equivalent: `FILE:LINE: option NAME: not imported: why`."""

    file: str
    line: int
    option: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: option {self.option}: not imported: {self.why}"


@dataclass
class ImportedUnit:
    name: str
    file: str  # where its definition starts, for the header comment
    line: int
    origin: str  # "[watcher:web]", "web.service", ...
    keys: dict = field(default_factory=dict)  # activator key -> value (None: not written)
    sockets: dict = field(default_factory=dict)  # socket key -> {socket key: value}
    notes: list[str] = field(default_factory=list)  # how the meaning was kept, where it changed
    skipped: list[Skipped] = field(default_factory=list)

    def skip(self, file: str, line: int, option: str, why: str) -> None:
        self.skipped.append(Skipped(file, line, option, why))

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


@dataclass
class Result:
    """What one format's reader made of its files."""

    units: list[ImportedUnit] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)  # not tied to a unit written
