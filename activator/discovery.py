"""Where unit files are: the units directories, and the files and drop-ins found in them.

Only `os` is needed here, so PID 1 can ask for the directories without the loader's imports.
Listings and the `NAME.d` checks go through observed.py: they are facts a Model is made of.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from activator import observed
from activator.model import Location, Problem

_UNIT_NAME_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.@-"
DEFAULT_DIRECTORY = "/etc/activator/units"
UNIT_SUFFIXES = (".yaml", ".yml")


def is_unit_name(text: str) -> bool:
    """Letters, digits, `_`, `.`, `@` and `-` only: checked without `re`, which PID 1 booting
    from a model cache does not import before its first service starts."""
    return bool(text) and not text.strip(_UNIT_NAME_CHARS)


def directories(given: list[str] | None, environ: Mapping[str, str]) -> tuple[list[str], bool]:
    """The units directories in override order, and whether they were named explicitly."""
    if given:
        return list(given), True
    if environ.get("ACTIVATOR_UNITS"):
        return [d for d in environ["ACTIVATOR_UNITS"].split(":") if d], True
    return [DEFAULT_DIRECTORY], False


def at_line(location: Location) -> Location:
    """A problem with a unit file as a whole (empty, unreadable, too large) is put on its first
    line, so that every problem of a unit reads FILE:LINE: unit NAME: message."""
    return location if location.line else location.replace(line=1)


class Found:
    def __init__(self):
        self.units: dict[str, str] = {}  # name -> file
        self.dropins: dict[str, dict[str, str]] = {}  # name -> {basename: file}
        self.problems: list[Problem] = []


def discover(dirs: list[str], explicit: bool) -> Found:
    found = Found()
    for directory in dirs:
        try:
            entries = observed.listdir(directory, UNIT_SUFFIXES + (".d",))
        except FileNotFoundError:
            if explicit:
                found.problems.append(Problem(Location(directory), None, "units directory does not exist"))
            continue
        except OSError as e:
            found.problems.append(Problem(Location(directory), None, f"cannot read units directory: {e.strerror}"))
            continue
        here: dict[str, str] = {}
        for entry in entries:  # dot-files and other endings are left out already
            path = os.path.join(directory, entry)
            if entry.endswith(".d") and observed.isdir(path):
                _discover_dropins(entry[:-2], path, found)
                continue
            stem, suffix = os.path.splitext(entry)
            if suffix not in UNIT_SUFFIXES:
                continue
            if not is_unit_name(stem):
                found.problems.append(Problem(Location(path, 1), None,
                                              f"'{stem}' is not a valid unit name (letters, digits, _ . @ -)"))
                continue
            if stem in here:
                found.problems.append(Problem(Location(path, 1), stem,
                                              f"both {os.path.basename(here[stem])} and {entry} define this unit"))
                continue
            here[stem] = path
        found.units.update(here)  # a later directory overrides a same-named unit
    return found


def _discover_dropins(name: str, directory: str, found: Found) -> None:
    try:
        entries = observed.listdir(directory, UNIT_SUFFIXES)
    except OSError as e:
        found.problems.append(Problem(Location(directory), name, f"cannot read drop-in directory: {e.strerror}"))
        return
    for entry in entries:  # for the same file name, the later directory wins
        found.dropins.setdefault(name, {})[entry] = os.path.join(directory, entry)

