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
   (posix_spawn cannot change credentials), `limits` or `oom_score_adjust` (nor resource
   limits or the OOM score: see resources.py), `type: exec` with pid variables (the shell
   step would hide whether the program's own exec succeeded), or no /bin/sh in the image.

Descriptors go to 3, 4, … without ever using a number above 3 + 3N for N of them (`_placement`):
a service's soft RLIMIT_NOFILE may be far below the numbers PID 1's own descriptors have
reached, and dup2 onto a number above the limit fails with EBADF.
"""

from __future__ import annotations

import errno
import itertools
import os
import resource
import signal

from activator import resources

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


class _SetupError(OSError):
    """A step of the child's setup failed; its text is the message for the log."""

    def __init__(self, code: int, text: str):
        super().__init__(code, text)
        self.text = text

    def __str__(self) -> str:
        return self.text


class Launch:
    """Everything about one process to start (activation.prepare builds it)."""

    def __init__(self, program: str, argv: list[str], env: dict[str, str], fds: list[int] = (),
                 cwd: str = "/", umask: int | None = None, credentials: Credentials | None = None,
                 pid_variables: tuple[str, ...] = (), confirm_exec: bool = False,
                 stdio_socket: bool = False):
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
        self.rlimits: tuple[tuple[int, int, int], ...] = ()  # (RLIMIT_*, soft, hard), set in the child
        self.oom_score_adj: int | None = None  # set in the child before exec
        self.oom_score_adj_after: int | None = None  # written just after a posix_spawn
        self.nofile: tuple[int, int] | None = None  # the RLIMIT_NOFILE activator started with
        self.extra_fds: dict[int, int] = {}  # target fd -> ours, placed after `fds` (ready: fd)
        self._placement: tuple | None = None

        # inetd style: the first passed fd (a connection) is also 0 and 1, whatever stdin and
        # stdout say; it stays on 3 too, for programs that read LISTEN_FDS (sshd -i does).
        self.stdio_socket = stdio_socket

    def standard_fds(self) -> list[tuple[int, int]]:
        """(target, source) for the fds among 0, 1, 2 that are given a descriptor."""
        sources = [self.stdin, self.stdout, self.stderr]
        if self.stdio_socket:
            sources[0] = sources[1] = self.fds[0]
        return [(target, source) for target, source in enumerate(sources) if source is not None]

    def placements(self) -> list[tuple[int, int]]:
        """(our fd, the fd the service sees) for every descriptor it receives past 0-2."""
        return [(fd, 3 + i) for i, fd in enumerate(self.fds)] + sorted(
            ((fd, target) for target, fd in self.extra_fds.items()), key=lambda p: p[1])

    def placement(self) -> tuple[list[tuple[int, int]], list[int]]:
        """_placement of placements(), worked out once per launch."""
        if self._placement is None:
            self._placement = _placement(self.placements())
        return self._placement

    @property
    def needs_fork(self) -> bool:
        """What posix_spawn cannot do: credentials, limits, an OOM score before exec, or a
        descriptor placement that needs numbers above the service's soft limit."""
        if self.credentials is not None or self.rlimits or self.oom_score_adj is not None:
            return True
        if self.nofile is None:
            return False
        moves, _ = self.placement()
        top = max((target for _, target in moves), default=2)
        return top >= self.nofile[0] != resource.RLIM_INFINITY


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
    if launch.needs_fork:
        return _fork(launch)
    if not launch.pid_variables:
        return _posix_spawn(launch, launch.env, shell=False)
    expected = guess.next() if guess is not None else None
    if expected is not None:
        # The launch's environment is its own: the shell step below sets these again.
        env = launch.env
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

    actions = [(os.POSIX_SPAWN_DUP2, source, target) for target, source in launch.standard_fds()]
    moves, temporaries = launch.placement()
    actions += [(os.POSIX_SPAWN_DUP2, source, target) for source, target in moves]
    actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in temporaries]

    moved = launch.cwd != "/"
    try:
        if moved:
            os.chdir(launch.cwd)
    except OSError as e:
        raise SpawnError(launch.argv[0], e.errno, f"working directory {launch.cwd}: {e.strerror}") from None
    old_umask = os.umask(launch.umask) if launch.umask is not None else None
    raised = resources.lower_nofile(launch.nofile)
    try:
        pid = os.posix_spawn(path, argv, env, file_actions=actions, setsid=True,
                             setsigmask=(), setsigdef=_DEFAULTABLE)
    except OSError as e:
        raise SpawnError(launch.argv[0], e.errno or errno.EIO, e.strerror) from None
    finally:
        resources.restore_nofile(raised)
        if old_umask is not None:
            os.umask(old_umask)
        if moved:
            os.chdir("/")
    if launch.oom_score_adj_after is not None:
        try:  # its program is still being loaded; PID 1's own score never moved
            resources.write_oom_score(pid, launch.oom_score_adj_after)
        except OSError:
            pass  # it has already ended
    return pid


def _placement(placed: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], list[int]]:
    """dup2 steps that put each source on its target ((source, target) pairs: the unit's
    descriptors on 3, 4, …, then any extra ones), and the temporary copies to close afterwards.

    A parallel assignment done one step at a time: a step may overwrite a number only once no
    later step reads it (anything else there is one of activator's close-on-exec descriptors,
    gone at exec anyway). When only cycles are left (3 and 4 to swap), one source goes to the
    first number after the targets first. So no step uses a number above the highest target + 1. A step onto
    itself is kept: glibc's posix_spawn (since 2.29) clears close-on-exec for it, and the
    fork path does so itself.
    """
    end = max((target for _, target in placed), default=2) + 1
    pending = {target: fd for fd, target in placed}  # target -> source
    readers: dict[int, int] = {}  # source -> how many pending steps read it
    for fd, _ in placed:
        readers[fd] = readers.get(fd, 0) + 1
    moves: list[tuple[int, int]] = []
    temporaries: list[int] = []
    while pending:
        ready = [t for t, fd in pending.items() if t == fd or not readers.get(t)]
        if not ready:  # cycles only: every target is still to be read
            target, source = next(iter(pending.items()))
            spare = next(n for n in itertools.count(end) if not readers.get(n))
            moves.append((source, spare))
            temporaries.append(spare)
            for t, fd in pending.items():
                if fd == source:
                    pending[t] = spare
            readers[spare], readers[source] = readers.pop(source), 0
            continue
        for target in ready:
            source = pending.pop(target)
            moves.append((source, target))
            readers[source] -= 1
    return moves, [t for t in temporaries if t >= end]


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
                text = str(e) if isinstance(e, _SetupError) else ""  # else strerror says it
                try:
                    os.write(write_end, code.to_bytes(4, "little") + text.encode()[:500])
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
        raise SpawnError(launch.argv[0], code, report[4:].decode(errors="replace") or None)
    return pid


def _child_setup(launch: Launch) -> None:
    signal.set_wakeup_fd(-1)
    for sig in _DEFAULTABLE:
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    os.setsid()
    for target, source in launch.standard_fds():
        os.dup2(source, target)
    moves, temporaries = launch.placement()
    for source, target in moves:
        os.dup2(source, target)
        os.set_inheritable(target, True)
    for fd in temporaries:
        os.close(fd)
    os.chdir(launch.cwd)
    if launch.umask is not None:
        os.umask(launch.umask)
    # Limits and the OOM score after the descriptors are placed (a lower nofile limit would
    # forbid the numbers used on the way), before privileges are dropped (raising a hard
    # limit, or lowering the score, needs them).
    limits = [(resource.RLIMIT_NOFILE, *launch.nofile)] if launch.nofile is not None else []
    for which, soft, hard in [*limits, *launch.rlimits]:
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as e:  # ValueError: Python's word for EPERM and EINVAL here
            name = next((n for n, r in resources.LIMITS.items() if r == which), str(which))
            raise _SetupError(errno.EPERM, f"limits: cannot set {name} to {soft}:{hard}: {e}") from None
    for score in (launch.oom_score_adj, launch.oom_score_adj_after):
        if score is not None:
            try:
                resources.write_oom_score("self", score)
            except OSError as e:
                raise _SetupError(e.errno, f"cannot set oom_score_adj to {score}: {e.strerror}") from None
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
