"""Every outside fact the unit file loader consults, recorded as it is consulted.

A Model is made of the unit files and of the machine around them: the directory listings,
the bytes of each unit file, drop-in and environment file, whether a working directory or an
optional file exists, the file a program name resolves to along PATH and its permission
bits, the environment variables looked up, the account files, the uid it ran as. The loader
consults each of these through the functions below; during a recording, each one also notes
what it found (a fact), under a key that says how to ask again. A later process can then ask
every question again (`stale`) and know, without YAML or a validator, whether loading now
would give the same Model: that is what the model cache (modelcache.py) rests on.

Results are recorded, not just the names asked about: a file's content digest (content, not
mtime: `COPY` in an image build keeps mtimes), a listing's names, a stat's type, mode and
owner, an environment variable's value or its absence. An error is a result too ("absent").

The recording is the module's one active dict: the loader is single-threaded and runs one
load at a time, and the checks it records sit deep in code the init shares (model.py's
`find_program` runs at every spawn, where nothing is recorded). Threading a recorder through
every signature would change a dozen of them for one concern. Only `os` is imported here, so
the init can ask the questions again without the loader's imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

ACCOUNT_FILES = ("/etc/passwd", "/etc/group", "/etc/nsswitch.conf")
ACCOUNT_FILE_LIMIT = 1 << 24

_facts: dict | None = None  # the recording in progress, if any


class recording:
    """`with recording() as facts:` every fact consulted inside goes into `facts` (a plain
    dict, picklable: key → result)."""

    def __enter__(self) -> dict:
        global _facts
        _facts = {("identity",): _identity()}
        return _facts

    def __exit__(self, *exc) -> None:
        global _facts
        _facts = None


CHANGED_DURING_THE_LOAD = ("changed during the load",)  # a fact no question ever answers


def _note(key: tuple, result) -> None:
    if _facts is not None:
        # The same question answered two ways in one load (a file rewritten meanwhile): the
        # Model may hold both answers, so no state of the machine is the one it was made of.
        if _facts.setdefault(key, result) != result:
            _facts[key] = CHANGED_DURING_THE_LOAD


# --------------------------------------------------------------------------- the questions

def _identity() -> tuple:
    """Who the checks were made for. Root may search every directory and run any file with
    an execute bit, and its gid never reaches a Model (a `user` or `group` replaces it), so for
    root the uid alone: an image build and the container's boot may differ in groups."""
    uid = os.geteuid()
    if uid == 0:
        return (0,)
    return (uid, os.getegid(), tuple(sorted(set(os.getgroups()))))


def _listing(path: str, suffixes: tuple[str, ...]):
    """(names, fact): the names in `path` that end in one of `suffixes` and do not start with
    a dot, sorted; or (the OSError, its errno). Dot-files never shape a model (discovery skips
    them), so the cache file beside the units is no part of the listing."""
    try:
        names = sorted(n for n in os.listdir(path) if not n.startswith(".") and n.endswith(suffixes))
    except OSError as e:
        return e, ("error", e.errno)
    return names, tuple(names)


def _stat(path: str):
    """(os.stat_result or None, fact): what a permission check reads, following symlinks."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None, None
    return st, (st.st_mode, st.st_uid, st.st_gid)


def _lexists(path: str):
    try:
        os.lstat(path)
    except (OSError, ValueError):
        return False, False
    return True, True


def _contents(path: str, limit: int):
    """(bytes or why not, fact). At most limit + 1 bytes are read (so that the caller can tell
    a file over the limit). Only regular files: O_NONBLOCK makes opening a FIFO return at
    once, so that fstat can tell. Why not: an errno, "directory", "special" or "nul"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        return e.errno, ("error", e.errno)
    except ValueError:  # a NUL character in the path
        return "nul", ("error", "nul")
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 == 0o040000:
            return "directory", ("error", "directory")
        if st.st_mode & 0o170000 != 0o100000:
            return "special", ("error", "special")
        chunks, size = [], 0
        want = st.st_size + 1  # the whole file and its end in one read, as a rule; a buffer
        while size <= limit:  # of the limit's size each time would cost more than the read
            chunk = os.read(fd, min(limit + 1 - size, max(want - size, 1 << 16)))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as e:
        return e.errno, ("error", e.errno)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    return data, ("data", len(data), digest(data))


def digest(data: bytes) -> bytes:
    try:  # the built-in BLAKE2: hashlib would load OpenSSL into the init
        from _blake2 import blake2b
    except ImportError:  # pragma: no cover - a Python built without it
        from hashlib import blake2b
    return blake2b(data, digest_size=16).digest()


_ASK = {"list": _listing, "stat": _stat, "lexists": _lexists, "read": _contents}


# --------------------------------------------------------------------------- for the loader

def listdir(path: str, suffixes: tuple[str, ...]) -> list[str]:
    """The names of `path` that end in `suffixes`, not starting with a dot, sorted; OSError."""
    names, fact = _listing(path, suffixes)
    _note(("list", path, suffixes), fact)
    if isinstance(names, OSError):
        raise names
    return names


def stat(path: str) -> os.stat_result:
    st, fact = _stat(path)
    _note(("stat", path), fact)
    if st is None:
        raise FileNotFoundError(path)  # callers treat every error alike: no such file for them
    return st


def isdir(path: str) -> bool:
    st, fact = _stat(path)
    _note(("stat", path), fact)
    return st is not None and st.st_mode & 0o170000 == 0o040000


def lexists(path: str) -> bool:
    exists, fact = _lexists(path)
    _note(("lexists", path), fact)
    return exists


def contents(path: str, limit: int) -> bytes | int | str:
    """The file's bytes (at most limit + 1), or why not: an errno, "directory", "special",
    "nul" (a NUL character in the path)."""
    data, fact = _contents(path, limit)
    _note(("read", path, limit), fact)
    return data


def accounts() -> None:
    """Before a user or group is looked up: the account files are facts too."""
    if _facts is not None:
        for path in ACCOUNT_FILES:
            contents(path, ACCOUNT_FILE_LIMIT)


class Environ(Mapping):
    """An environment whose every lookup is a fact: the value, or None for absent."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def __getitem__(self, name: str) -> str:
        value = self._environ.get(name)
        _note(("env", name), value)
        if value is None:
            raise KeyError(name)
        return value

    def __contains__(self, name) -> bool:
        return self.get(name) is not None

    def get(self, name, default=None):
        value = self._environ.get(name)
        _note(("env", name), value)
        return default if value is None else value

    def __iter__(self) -> Iterator[str]:  # nothing iterates it today; if it does, all counts
        _note(("environ",), digest(repr(sorted(self._environ.items())).encode()))
        return iter(self._environ)

    def __len__(self) -> int:
        _note(("environ",), digest(repr(sorted(self._environ.items())).encode()))
        return len(self._environ)


# --------------------------------------------------------------------------- asking again

def now(key: tuple, environ: Mapping[str, str]):
    """The fact of `key` as it is now, asked the same way the loader asked it."""
    kind = key[0]
    if kind == "env":
        return environ.get(key[1])
    if kind == "identity":
        return _identity()
    if kind == "environ":
        return digest(repr(sorted(environ.items())).encode())
    return _ASK[kind](*key[1:])[1]


def stale(facts: dict, environ: Mapping[str, str]) -> tuple | None:
    """The key of the first fact that is no longer so, or None when every one still is."""
    for key, fact in facts.items():
        try:
            if now(key, environ) != fact:
                return key
        except (KeyError, TypeError, IndexError):  # a key this build does not know
            return key
    return None


def describe(key: tuple) -> str:
    """What changed, for a log line."""
    kind = key[0] if key else "?"
    if kind == "read":
        return f"{key[1]} changed"
    if kind == "list":
        return f"files were added to or removed from {key[1]}"
    if kind in ("stat", "lexists"):
        return f"{key[1]} changed (type, mode, owner or existence)"
    if kind == "env":
        return f"${key[1]} changed"
    if kind == "identity":
        return "activator runs as another user or group than when it was written"
    return f"{key!r} changed"
