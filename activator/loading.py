"""Reading unit files for PID 1, in a short-lived child process.

The init forks; the child imports the YAML parser and every validator (units.py), loads the
unit files and writes the result, pickled, into a pipe; the init reads it and gets a finished
Model (model.py) with the facts it was made of (observed.py, for the model cache), or the list
of problems. Two reasons:

- memory: the parser, the loader and what they import (about 3 MiB resident) live in the child
  only, never in the process that stays up for the life of the container;
- isolation: whatever unit files hold (a FIFO posing as an environment file, a pathological
  YAML document, a bug in a validator), the worst the child can do is fail or hang; the init
  refuses that load and goes on.

At boot the init simply waits for the child. On reload (reload.py) the pipe is one more reader
of the event loop, and the child, once it exits, is reaped like any orphan.
"""

from __future__ import annotations

import os


class LoadFailed(Exception):
    """The loader itself broke (not the unit files): what it said, or how it ended."""


def start(dirs: list[str], environ: dict, explicit: bool) -> tuple[int, int]:
    """Fork the loader; (its pid, the read end of its pipe, non-blocking).

    At boot this runs before the init has imported anything heavy or set a signal handler, so
    the child's imports and parsing overlap the init's own imports (two cores, half the wait)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the loader: nothing here may return into the init's code
        try:
            import pickle
            import signal

            signal.set_wakeup_fd(-1)  # the init's wakeup pipe (on reload) is not ours
            for signum in signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}:
                try:
                    signal.signal(signum, signal.SIG_DFL)
                except (OSError, ValueError):
                    pass
            os.close(read_end)
            _write_all(write_end, pickle.dumps(_load(dirs, environ, explicit)))
        finally:
            os._exit(0)
    os.close(write_end)
    os.set_blocking(read_end, False)
    return pid, read_end


def _load(dirs, environ, explicit):
    from activator import units
    from activator.model import UnitsError

    try:
        return ("model", units.load_observed(dirs, environ, explicit))
    except UnitsError as e:
        return ("problems", e.problems)
    except BaseException:  # a bug in the loader: report it, never hang the init on it
        import traceback
        return ("crash", traceback.format_exc())


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def result(data: bytes):
    """The Model from what the loader wrote; UnitsError or LoadFailed otherwise. (The facts
    it was made of come with it; the init writes no cache, so it leaves them.)"""
    try:  # pickle's C half alone: the pure-Python module would stay in PID 1 (0.27 MiB)
        import _pickle as pickle
    except ImportError:  # pragma: no cover - an interpreter without the C accelerator
        import pickle

    from activator.model import UnitsError

    if not data:
        raise LoadFailed("the unit file loader ended without an answer")
    try:
        kind, value = pickle.loads(data)
    except Exception as e:
        raise LoadFailed(f"the unit file loader's answer is unreadable: {e}") from None
    if kind == "model":
        return value[0]
    if kind == "problems":
        raise UnitsError(value)
    raise LoadFailed(f"the unit file loader broke:\n{value}")


def wait(pid: int, fd: int):
    """The loader's Model (or UnitsError, LoadFailed), waiting for it: for boot, before the
    event loop runs."""
    import select

    chunks = []
    try:
        while True:
            select.select([fd], [], [])
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)  # our own child, before any reaper exists
    return result(b"".join(chunks))
