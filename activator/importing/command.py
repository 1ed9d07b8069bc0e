"""`activator import FILE... [--out DIR] [--force]`: recognise, read, report, write.

Exit 0 when everything was imported; 1 when some option was not (the files are written all
the same); 2 when an input cannot be read or parsed, or a unit file exists and --force was not
given (nothing is written then).
"""

from __future__ import annotations

import os
import re
import sys

from activator.importing import writer
from activator.importing.ini import read_text
from activator.importing.model import ImportedUnit, ImportFailed, Result, Skipped

_HEADER = re.compile(r"^\s*\[([^\]\n]+)\]", re.MULTILINE)
CIRCUS_SECTIONS = ("watcher:", "socket:", "plugin:", "env:")
SUPERVISORD_SECTIONS = ("program:", "fcgi-program:", "eventlistener:", "group:", "rpcinterface:")
SYSTEMD_SECTIONS = ("Unit", "Service", "Socket", "Install")


def detect(text: str, path: str) -> str:
    """circus, supervisord or systemd, from the section headers of `text`."""
    headers = [h.strip() for h in _HEADER.findall(text)]
    votes = {"circus": 0, "supervisord": 0, "systemd": 0}
    for header in headers:
        lower = header.lower()
        if lower.startswith(CIRCUS_SECTIONS) or lower in ("circus", "env"):
            votes["circus"] += 1
        elif lower.startswith(SUPERVISORD_SECTIONS) or lower in (
                "supervisord", "include", "unix_http_server", "inet_http_server", "supervisorctl"):
            votes["supervisord"] += 1
        elif header in SYSTEMD_SECTIONS:
            votes["systemd"] += 1
    best = max(votes, key=votes.get)
    if not votes[best]:
        raise ImportFailed(path, "not a Circus, supervisord or systemd configuration (no "
                           "[watcher:…], [program:…], [Service] or [Socket] section)")
    return best


def translate(paths: list[str]) -> Result:
    """Every input read and translated, or ImportFailed for the first that cannot be."""
    from activator.importing import circus, supervisord, systemd

    result = Result()
    systemd_files = []
    for path in paths:
        if os.path.realpath(path) == os.devnull:  # a masked systemd unit
            result.skipped.append(Skipped(path, 1, os.path.basename(path),
                                          "masked (a link to /dev/null): nothing to import"))
            continue
        kind = detect(read_text(path), path)
        if kind == "systemd":
            systemd_files.append(path)
            continue
        part = circus.read(path) if kind == "circus" else supervisord.read(path)
        _merge(result, part)
    if systemd_files:
        _merge(result, systemd.read(systemd_files))
    return result


def _merge(result: Result, part: Result) -> None:
    taken = {u.name: u for u in result.units}
    for unit in part.units:
        if unit.name in taken:
            other = taken[unit.name]
            result.skipped.append(_duplicate(unit, other))
            continue
        taken[unit.name] = unit
        result.units.append(unit)
    result.skipped.extend(part.skipped)


def _duplicate(unit: ImportedUnit, other: ImportedUnit):
    return Skipped(unit.file, unit.line, unit.origin, f"unit {unit.name} already comes from "
                   f"{other.file}:{other.line}")


def write(units: list[ImportedUnit], out: str, force: bool) -> list[str]:
    targets = [(u, os.path.join(out, f"{u.name}.yaml")) for u in units]
    if not force:
        existing = [t for _, t in targets if os.path.lexists(t)]
        if existing:
            raise ImportFailed(existing[0], "exists; nothing written (--force replaces it)")
    os.makedirs(out, exist_ok=True)
    written = []
    for unit, target in targets:
        temporary = os.path.join(out, f".{unit.name}.yaml.tmp")
        with open(temporary, "w", encoding="utf-8") as f:
            f.write(writer.render(unit))
        os.replace(temporary, target)
        written.append(target)
    return written


DESCRIPTION = ("Write one unit file per watcher, program or service. Exit 0: all imported; 1: "
               "some options were not (each is listed); 2: an input cannot be read (nothing "
               "written).")


def arguments(parser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="circus.ini, supervisord.conf, or systemd .service and .socket "
                             "files (the format is read from the content)")
    parser.add_argument("--out", default="units", metavar="DIR", help="where to write (default units)")
    parser.add_argument("--force", action="store_true", help="replace unit files that exist")


def run(args) -> int:
    try:
        result = translate(args.files)
        if not result.units and not result.skipped:
            raise ImportFailed(args.files[0], "no watcher, program or service to import")
        skipped = sorted(result.skipped + [s for u in result.units for s in u.skipped],
                         key=lambda s: (s.file, s.line))
        written = write(result.units, args.out, args.force)
    except ImportFailed as e:
        print(f"activator import: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"activator import: {e.filename or args.out}: {e.strerror}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: said in one line, and nothing half-written is claimed
        print(f"activator import: cannot import {' '.join(args.files)}: internal error: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        return 2
    for item in skipped:
        print(item)
    if written:
        print(f"wrote {len(written)} unit file{'s' * (len(written) != 1)} in {args.out}: "
              + ", ".join(os.path.basename(w) for w in written))
    else:
        print("no watcher, program or service to write a unit for")
    return 1 if skipped else 0
