"""Resource limits and OOM scores: PID 1's own, and what each service starts with (SPEC §11).

PID 1 raises its soft RLIMIT_NOFILE to the hard limit at start, as systemd does: it holds
every socket, two pipes per running process and the stored descriptors. Services get back
the soft limit activator was started with, or their `limits`. When allowed, PID 1 sets its
own `oom_score_adj` to -1000, so that a container's memory limit kills a service, never the
init; services start at the score activator was started with (0, unless the runtime chose
another, as Kubernetes does for its QoS classes), or at their `oom_score_adjust`.

posix_spawn can set neither in the child. What it costs (spawn.py has the details):
- a unit with `limits` or `oom_score_adjust` is started by fork: the child sets them after
  placing its descriptors, before dropping privileges and exec (about +0.6 ms of PID 1's time
  per start, measured as in spawn.py);
- any other unit keeps posix_spawn: PID 1 lowers its own soft RLIMIT_NOFILE to the old value
  for the duration of the call (the child inherits it; a soft limit goes down and up again
  without privilege, two system calls), and when PID 1 has lowered its own OOM score, the
  new process's score is written back right after the call, while its program is still
  being loaded: PID 1 itself is never exposed, not even for a moment.
"""

from __future__ import annotations

import os
import resource

OOM_MIN, OOM_MAX = -1000, 1000
OWN_OOM_SCORE = -1000

# The `limits` keys: RLIMIT_* names in lower case.
LIMITS = {name[len("RLIMIT_"):].lower(): getattr(resource, name) for name in dir(resource)
          if name.startswith("RLIMIT_") and name != "RLIMIT_OFILE"}
INFINITY = resource.RLIM_INFINITY


def parse_limit(value, raw: str | None = None) -> tuple[int, int]:
    """(soft, hard) from a number, `infinity`, or `SOFT:HARD`; ValueError saying what was expected."""
    expected = "expected a number, infinity, or SOFT:HARD (such as 1024:65536)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{expected}, got {raw if raw is not None else repr(value)}")
    text = str(value).strip()
    parts = text.split(":")
    if len(parts) > 2:
        raise ValueError(f"{expected}, got {text!r}")
    numbers = [_limit_number(part.strip(), expected) for part in parts]
    soft, hard = numbers[0], numbers[-1]
    if _above(soft, hard):
        raise ValueError(f"the soft limit {parts[0].strip()} is above the hard limit {parts[1].strip()}")
    return soft, hard


def read_limits(value, raw_of) -> tuple[tuple, list[tuple[tuple, str]]]:
    """`limits: {nofile: 65536, core: 0, nproc: "512:1024", memlock: infinity}` as sorted
    (name, soft, hard), and the problems as (key path, message). `raw_of(name)`: the value's
    text as written."""
    if value is None:
        return (), []
    if not isinstance(value, dict):
        return (), [(("limits",), "limits: expected a mapping such as {nofile: 65536}, got "
                                  + ("a list" if isinstance(value, list) else repr(value)))]
    limits, problems = [], []
    for name, limit in value.items():
        if name not in LIMITS:
            problems.append((("limits", name), f"limits: unknown limit '{name}' (one of "
                                               f"{', '.join(sorted(LIMITS))})"))
            continue
        try:
            soft, hard = parse_limit(limit, raw_of(name))
        except ValueError as e:
            problems.append((("limits", name), f"limits.{name}: {e}"))
            continue
        limits.append((name, soft, hard))
    return tuple(sorted(limits)), problems


def _limit_number(text: str, expected: str) -> int:
    if text in ("infinity", "unlimited"):
        return INFINITY
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{expected}, got {text!r}")
    number = int(text)
    if number >= 2**63:
        raise ValueError(f"{text} is too large (write infinity)")
    return number


def _above(a: int, b: int) -> bool:
    return b != INFINITY and (a == INFINITY or a > b)


class Baseline:
    """What activator was started with, which services get back."""

    def __init__(self, nofile: tuple[int, int], oom_score: int | None, own_oom_score: int | None):
        self.nofile = nofile  # the (soft, hard) RLIMIT_NOFILE activator was started with
        self.oom_score = oom_score  # the oom_score_adj it was started with
        self.own_oom_score = own_oom_score  # its own now

    @property
    def oom_differs(self) -> bool:
        return self.oom_score is not None and self.own_oom_score != self.oom_score


def settle(log) -> Baseline:
    """At start: PID 1's own soft RLIMIT_NOFILE up to the hard limit, its OOM score to -1000."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    if _above(nofile[1], nofile[0]):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile[1], nofile[1]))
        except (OSError, ValueError) as e:
            log.debug(f"cannot raise the descriptor limit to {nofile[1]}: {e}")
    original = read_oom_score("self")
    own = original
    if original is not None and original != OWN_OOM_SCORE:
        try:
            write_oom_score("self", OWN_OOM_SCORE)
            own = OWN_OOM_SCORE
        except OSError as e:  # no CAP_SYS_RESOURCE: the runtime's score stays
            log.debug(f"cannot set activator's own oom_score_adj to {OWN_OOM_SCORE}: {e.strerror}")
    return Baseline(nofile, original, own)


def read_oom_score(pid) -> int | None:
    try:
        with open(f"/proc/{pid}/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def write_oom_score(pid, value: int) -> None:
    fd = os.open(f"/proc/{pid}/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d" % value)
    finally:
        os.close(fd)


def prepare(launch, unit, baseline: Baseline | None) -> None:
    """Fill in what `launch` must set in the new process: the unit's limits and OOM score, and
    what activator changed for itself given back."""
    launch.rlimits = tuple((LIMITS[name], soft, hard) for name, soft, hard in unit.limits)
    launch.oom_score_adj = unit.oom_score_adjust
    if baseline is None:
        return
    if not any(name == "nofile" for name, _, _ in unit.limits):
        launch.nofile = baseline.nofile
    if launch.oom_score_adj is None and baseline.oom_differs:
        launch.oom_score_adj_after = baseline.oom_score


def lower_nofile(nofile: tuple[int, int] | None) -> tuple[int, int] | None:
    """PID 1's soft RLIMIT_NOFILE set to `nofile`'s soft, which posix_spawn's child inherits;
    the limits to restore after the spawn (restore_nofile), or None if nothing moved. Soft
    limits move without privilege. Two plain calls rather than a context manager: this runs
    for every connection of an `accept` unit."""
    if nofile is None:
        return None
    current = resource.getrlimit(resource.RLIMIT_NOFILE)
    if nofile[0] == current[0] or _above(nofile[0], current[1]):
        return None
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile[0], current[1]))
    return current


def restore_nofile(limits: tuple[int, int] | None) -> None:
    if limits is not None:
        resource.setrlimit(resource.RLIMIT_NOFILE, limits)
