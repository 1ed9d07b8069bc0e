"""Starting a service process: one fixed child setup, several ways to get there.

What every process gets, however it is started: a new session (so its own process group),
every signal disposition at its default (but for glibc's posix_spawn, which leaves the two
signals it reserves, 32 and 33, ignored: no libc program can use them) and an empty signal mask, fds 0-2 as asked, the
unit's descriptors on 3, 4, … and no other descriptor of activator's (all of ours are
close-on-exec), its environment, working directory, umask and credentials.

How, measured on a 2-core VM with activator at ~15 MiB: `os.fork()` from Python costs about
1 ms of activator's time per process (page tables copied, then copy-on-write faults), while
`os.posix_spawn` (glibc's vfork-style clone) costs about 0.4 ms, and every exec about 0.6 ms
of the child's; that decides how many connections per second an `accept` unit can take. So:

1. `posix_spawn` straight into the program whenever it can express the setup. Working
   directory and umask are set in activator around the call (we are single-threaded and
   posix_spawn returns only once the child has exec'd, or failed to).
2. A service must see its own pid in LISTEN_PID (and WATCHDOG_PID), which nobody knows before
   the process exists. As PID 1 of its namespace activator knows it all the same, nearly
   always: the kernel hands out the pid after the last one given (`ns_last_pid`), and in a
   container activator is the one starting processes. So it reads that pid, writes the next
   one into the environment, spawns as in 1, and checks. A wrong guess (another process of
   the container forked in between) is killed at once: microseconds after its exec, while the
   program is still being loaded, so in practice before it ran any code of its own. The
   reaper collects it, and the next step starts the service instead.
3. The sure way for pid variables: posix_spawn runs `/bin/sh -c 'LISTEN_PID=$$ …; exec "$0"
   "$@"'`, and the shell's pid becomes the program's with the exec. It costs one more exec.
   The program is found (and checked executable) by activator first, so a missing program is
   reported with its errno just as in 1.
4. `os.fork()` with the setup written out in Python when nothing else fits: `user`/`group`
   (posix_spawn cannot change credentials), `type: exec` with pid variables (the shell step
   would hide whether the program's own exec succeeded), or no /bin/sh in the image.
"""

from __future__ import annotations

import errno
import os
import signal

from activator.model import Credentials

SHELL = "/bin/sh"
_DEFAULTABLE = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))


class SpawnError(Exception):
    def __init__(self, program: str, error: int, text: str | None = None):
        self.program = program
        self.errno = error
        self.text = text or os.strerror(error)
        super().__init__(f"cannot execute '{program}': {self.text}")

    @property
    def exit_status(self) -> int:
        """What a shell would report: 127 for a missing program, 126 for one that cannot run."""
        return 127 if self.errno == errno.ENOENT else 126


class Launch:
    """Everything about one process to start (activation.prepare builds it)."""

    def __init__(self, program: str, argv: list[str], env: dict[str, str], fds: list[int] = (),
                 cwd: str = "/", umask: int | None = None, credentials: Credentials | None = None,
                 pid_variables: tuple[str, ...] = (), confirm_exec: bool = False):
        self.program = program  # the resolved path; activator's own working directory is always /
        self.argv = argv
        self.env = env
        self.fds = list(fds)  # become 3, 4, …
        self.stdin: int | None = None  # fds to place on 0, 1, 2; None keeps activator's
        self.stdout: int | None = None
        self.stderr: int | None = None
        self.cwd = cwd
        self.umask = umask
        self.credentials = credentials
        self.pid_variables = pid_variables  # set to the process's own pid
        self.confirm_exec = confirm_exec  # the caller needs the program's own exec confirmed
        self.extra_fds: dict[int, int] = {}  # target fd -> ours, placed after `fds` (ready: fd)

    def placements(self) -> list[tuple[int, int]]:
        """(our fd, the fd the service sees) for every descriptor it receives past 0-2."""
        return [(fd, 3 + i) for i, fd in enumerate(self.fds)] + sorted(
            ((fd, target) for target, fd in self.extra_fds.items()), key=lambda p: p[1])


class PidGuess:
    """The pid the kernel will give the next new process of our PID namespace (step 2)."""

    def __init__(self):
        try:
            self.fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = -1

    def next(self) -> int | None:
        if self.fd < 0:
            return None
        try:
            return int(os.pread(self.fd, 32, 0)) + 1
        except (OSError, ValueError):
            return None


def spawn(launch: Launch, guess: PidGuess | None = None) -> int:
    """Start the process; its pid, or SpawnError if the program could not be executed."""
    if launch.credentials is not None:
        return _fork(launch)
    if not launch.pid_variables:
        return _posix_spawn(launch, launch.env, shell=False)
    expected = guess.next() if guess is not None else None
    if expected is not None:
        env = dict(launch.env)
        env.update((name, str(expected)) for name in launch.pid_variables)
        pid = _posix_spawn(launch, env, shell=False)
        if pid == expected:
            return pid
        os.kill(pid, signal.SIGKILL)  # it holds another pid's LISTEN_PID; the reaper collects it
    if launch.confirm_exec or not os.access(SHELL, os.X_OK):
        return _fork(launch)
    return _posix_spawn(launch, launch.env, shell=True)


def _posix_spawn(launch: Launch, env: dict[str, str], shell: bool) -> int:
    path, argv = launch.program, launch.argv
    if shell:
        assignments = " ".join(f"{name}=$$" for name in launch.pid_variables)
        script = f'{assignments}; export {" ".join(launch.pid_variables)}; exec "$0" "$@"'
        path, argv = SHELL, ["sh", "-c", script, launch.program, *launch.argv[1:]]

    actions = []
    for target, source in ((0, launch.stdin), (1, launch.stdout), (2, launch.stderr)):
        if source is not None:
            actions.append((os.POSIX_SPAWN_DUP2, source, target))
    # Two steps, so that placing one fd never overwrites another not yet placed: first above
    # every fd involved, then down to 3, 4, … and any `extra_fds` number (dup2 also clears
    # close-on-exec on the copy).
    placed = launch.placements()
    top = max([2 + len(launch.fds), *(a for p in placed for a in p), *(s for s in (
        launch.stdin, launch.stdout, launch.stderr) if s is not None)]) + 1
    for i, (fd, _) in enumerate(placed):
        actions.append((os.POSIX_SPAWN_DUP2, fd, top + i))
    for i, (_, target) in enumerate(placed):
        actions.append((os.POSIX_SPAWN_DUP2, top + i, target))
        actions.append((os.POSIX_SPAWN_CLOSE, top + i))

    moved = launch.cwd != "/"
    try:
        if moved:
            os.chdir(launch.cwd)
    except OSError as e:
        raise SpawnError(launch.argv[0], e.errno, f"working directory {launch.cwd}: {e.strerror}") from None
    old_umask = os.umask(launch.umask) if launch.umask is not None else None
    try:
        return os.posix_spawn(path, argv, env, file_actions=actions, setsid=True,
                              setsigmask=(), setsigdef=_DEFAULTABLE)
    except OSError as e:
        raise SpawnError(launch.argv[0], e.errno or errno.EIO, e.strerror) from None
    finally:
        if old_umask is not None:
            os.umask(old_umask)
        if moved:
            os.chdir("/")


def _fork(launch: Launch) -> int:
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    # Signals stay blocked across fork so that no handler of activator's runs in the child
    # before its dispositions are reset; the child unblocks them just before exec.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFAULTABLE)
    try:
        pid = os.fork()
        if pid == 0:  # the child: nothing here may return or raise into activator's code
            try:
                os.close(read_end)
                _child_setup(launch)
                os.execve(launch.program, launch.argv, launch.env)
            except BaseException as e:
                code = getattr(e, "errno", None) or errno.EIO
                try:
                    os.write(write_end, code.to_bytes(4, "little") + str(e).encode()[:500])
                finally:
                    os._exit(127 if code == errno.ENOENT else 126)
            os._exit(127)  # not reached
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(write_end)
    try:
        report = b""
        while chunk := os.read(read_end, 1024):  # EOF when exec succeeded (close-on-exec)
            report += chunk
    finally:
        os.close(read_end)
    if report:
        os.waitpid(pid, 0)  # our own child that just failed; nothing else waits for it
        code = int.from_bytes(report[:4], "little")
        raise SpawnError(launch.argv[0], code, os.strerror(code))
    return pid


def _child_setup(launch: Launch) -> None:
    signal.set_wakeup_fd(-1)
    for sig in _DEFAULTABLE:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    os.setsid()
    for target, source in ((0, launch.stdin), (1, launch.stdout), (2, launch.stderr)):
        if source is not None:
            os.dup2(source, target)
    placed = launch.placements()
    top = max([2 + len(launch.fds), *(a for p in placed for a in p)]) + 1
    moved = [(os.dup2(fd, top + i), target) for i, (fd, target) in enumerate(placed)]
    for fd, target in moved:
        os.dup2(fd, target)
        os.set_inheritable(target, True)  # dup2 onto itself would have left close-on-exec set
        os.close(fd)
    os.chdir(launch.cwd)
    if launch.umask is not None:
        os.umask(launch.umask)
    credentials = launch.credentials
    if credentials is not None:  # privileges dropped last
        os.setgroups(list(credentials.groups))
        os.setresgid(credentials.gid, credentials.gid, credentials.gid)
        os.setresuid(credentials.uid, credentials.uid, credentials.uid)
    if launch.pid_variables:
        own = str(os.getpid())
        for name in launch.pid_variables:
            launch.env[name] = own
    signal.pthread_sigmask(signal.SIG_SETMASK, ())
