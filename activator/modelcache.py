"""The model cache: the Model `activator check` made, kept for the init's boot.

`activator check` writes it after a check without errors (at image build, `RUN activator
check`), beside the unit files by default: `.activator-model` in the first units directory,
a dot-file, which discovery skips. At boot, the init reads it instead of forking the loader
(loading.py), so that it neither waits for the YAML parser and the validators to be imported
(about 40 ms) nor runs them, when every fact the Model was made of (observed.py) still holds.

What is trusted, in this order; the first that fails makes the cache ignored, with one line
saying why, and the units are loaded as without it:

1. the file: a regular file, owned by root or by the init's own uid, writable by no one else;
2. the first line, compared byte for byte with the one this build would write: the magic,
   the format, activator's version, Python's, and a digest of activator's own modules that
   shape a Model (a cache written by another activator build is "written by another
   activator");
3. the checksum (BLAKE2b of the payload): a damaged file is never unpickled;
4. the payload: the units directories, whether they were named, and the facts;
5. every fact, asked again (observed.stale): a unit file, a drop-in, an environment file
   changed, a file appeared in a listing, a program on PATH, an environment variable, the
   account files, the uid. Only then is the Model used.

The checksum detects damage, not an attacker: one who may write the file (2. refuses anyone
but root and the init's own user) could as well write the unit files.

The file: `MAGIC FORMAT VERSION PYTHON BUILD\\n`, the payload's length and hex digest on the
second line, then the payload, pickled: (directories, explicit, facts, model).
"""

from __future__ import annotations

import os
import sys

from activator import __version__, observed

FILE_NAME = ".activator-model"
MAGIC = b"activator-model-cache"
FORMAT = 1
ENVIRONMENT_VARIABLE = "ACTIVATOR_CACHE"
MAX_BYTES = 1 << 28

# activator's modules whose code decides what a Model is made of and what it holds: the
# loader's (tests/unit/test_modelcache.py checks that the loader imports no other).
MODEL_SOURCES = (
    "__init__", "discovery", "envfile", "listen", "model", "modelcache", "observed", "probespec",
    "record", "resources", "templates", "unitfile", "unitkeys", "unitprobes", "units",
    "unitsockets", "yamlhints", "yamlsource")


class Ignored(Exception):
    """Why a cache is not used; str() is the reason, for the log line."""


def location(option: str | None, environ, dirs: list[str]) -> str | None:
    """The cache file: --cache FILE, else $ACTIVATOR_CACHE, else beside the first units
    directory; None when either is `off` (what --no-cache gives as the option)."""
    chosen = option or environ.get(ENVIRONMENT_VARIABLE) or None
    if chosen == "off":
        return None
    if chosen:
        return chosen
    return os.path.join(dirs[0], FILE_NAME) if dirs else None


def _build_digest() -> str:
    """Of the modules that make and define a Model, as this build has them."""
    here = os.path.dirname(os.path.abspath(__file__))
    parts = []
    for name in MODEL_SOURCES:
        data = observed.contents(os.path.join(here, name + ".py"), MAX_BYTES)
        parts.append(data if isinstance(data, bytes) else repr(data).encode())
    return observed.digest(b"\0".join(parts)).hex()


def header() -> bytes:
    python = f"{sys.implementation.cache_tag}-{sys.hexversion:x}"
    return b"%s %d %s %s %s\n" % (MAGIC, FORMAT, __version__.encode(), python.encode(),
                                   _build_digest().encode())


# --------------------------------------------------------------------------- writing

class NotACache(OSError):
    """A file is where the cache should go, and it is no model cache: never replaced."""


def _is_cache_or_absent(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except FileNotFoundError:
        return True


def write(path: str, dirs: list[str], explicit: bool, facts: dict, model) -> None:
    """Atomically (a temporary file renamed over it), mode 0644; OSError if it cannot be, and
    NotACache rather than replace a file that is not a model cache (`--cache` naming the
    wrong file)."""
    import pickle  # `activator check` only: the init reads with pickle's C half

    if not _is_cache_or_absent(path):
        raise NotACache(f"{path} exists and is not a model cache: not replaced")

    payload = pickle.dumps((tuple(dirs), explicit, facts, model), protocol=pickle.HIGHEST_PROTOCOL)
    data = header() + b"%d %s\n" % (len(payload), observed.digest(payload).hex().encode()) + payload
    directory, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        try:
            os.fchmod(fd, 0o644)  # whatever the umask
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def remove(path: str) -> None:
    """After a failed check: no cache is better than one of other files (it would be ignored
    anyway; this saves the boot the look). Only a model cache is removed."""
    try:
        if _is_cache_or_absent(path):
            os.unlink(path)
    except FileNotFoundError:
        pass


# --------------------------------------------------------------------------- reading

def load(path: str, dirs: list[str], explicit: bool, environ):
    """The cached Model if every check passes; None if there is no cache file; Ignored (with
    the reason) for a cache that is there but not to be trusted."""
    data = _read_trusted(path)
    if data is None:
        return None
    first, _, rest = data.partition(b"\n")
    if first + b"\n" != header():
        if first.startswith(MAGIC + b" ") and len(first.split()) == 5:
            raise Ignored(f"written by another activator ({first[len(MAGIC) + 1:].decode(errors='replace')})")
        raise Ignored("damaged (not a model cache)")
    second, _, payload = rest.partition(b"\n")
    if second != b"%d %s" % (len(payload), observed.digest(payload).hex().encode()):
        raise Ignored("damaged (checksum)")
    try:  # pickle's C half alone: the pure-Python module would stay in the init (0.27 MiB)
        import _pickle as pickle
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        import pickle
    try:
        cached_dirs, cached_explicit, facts, model = pickle.loads(payload)
    except Exception as e:  # a checksum that matches a payload of another pickle: a bug
        raise Ignored(f"damaged ({e})") from None
    if list(cached_dirs) != list(dirs) or cached_explicit != explicit:
        raise Ignored(f"written for other units directories ({':'.join(cached_dirs)})")
    changed = observed.stale(facts, environ)
    if changed is not None:
        raise Ignored(observed.describe(changed))
    return model


def _read_trusted(path: str) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Ignored(f"cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 != 0o100000:
            raise Ignored("not a regular file")
        if st.st_uid not in (0, os.geteuid()):
            raise Ignored(f"owned by uid {st.st_uid}, neither root nor activator's user")
        if st.st_mode & 0o022:
            raise Ignored(f"writable by others than its owner (mode {st.st_mode & 0o7777:04o})")
        if st.st_size > MAX_BYTES:
            raise Ignored("damaged (too large)")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_BYTES:
                raise Ignored("damaged (too large)")
    except OSError as e:
        raise Ignored(f"cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)
