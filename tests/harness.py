"""Running activator for real: as PID 1 of a new PID namespace, or as a plain child.

`Activator` writes unit files into a temporary directory, starts
`unshare --pid --fork --mount-proc python -m activator --units DIR`, and gives tests what
they need to observe it from outside: its host pid (to signal it, since unshare does not
forward signals), its status.json, its output, the host pids of its services (status.json
holds pids as seen inside the namespace), their open descriptors, zombies. Every wait has a
deadline; nothing sleeps hoping.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
TOOLS = ROOT / ".cache" / "systemd-tools" / "bin"


class Timeout(AssertionError):
    pass


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"):
    """Poll `predicate` until it returns something true; that value, or Timeout."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, ValueError, KeyError) as e:  # a file half-written, a process gone
            last_error = e
        if time.monotonic() > deadline:
            raise Timeout(f"timed out after {timeout}s waiting for {what}"
                          + (f" (last error: {last_error!r})" if last_error else ""))
        time.sleep(interval)


def stays(predicate, seconds: float, what: str, interval: float = 0.02) -> None:
    """Assert that `predicate` holds during a whole observation window (for "never" claims:
    no restart, no extra process). A deliberate window, not a sleep hoping for an event."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert predicate(), what
        time.sleep(interval)


def proc_stat(pid: int) -> dict | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2:].split()
    return {"state": fields[0].decode(), "ppid": int(fields[1]), "pgid": int(fields[2]),
            "sid": int(fields[3])}


def children_of(pid: int) -> list[int]:
    result = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            result.extend(int(p) for p in text.split())
    except OSError:
        pass
    return result


def descendants_of(pid: int) -> list[int]:
    result, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            result.append(child)
            todo.append(child)
    return result


def identities(pids) -> set[tuple[int, int]]:
    """(pid, start time) of each live process: a pid the kernel gives again later is another
    process, with another start time."""
    result = set()
    for pid in pids:
        try:
            data = Path(f"/proc/{pid}/stat").read_bytes()
        except OSError:
            continue
        result.add((pid, int(data[data.rfind(b")") + 2:].split()[19])))  # field 22 of stat(5)
    return result


def still_there(recorded: set[tuple[int, int]]) -> list[int]:
    """Those of the processes recorded by `identities` that still exist, zombies included. (A
    process list read after the fact proves nothing: a dead pid has no children.)"""
    return sorted(pid for pid, _ in recorded & identities(pid for pid, _ in recorded))


def listening_tcp_ports(host: str = "127.0.0.1") -> set[int]:
    """Ports of `host` with an IPv4 TCP socket in state LISTEN, in this network namespace. Asked
    of the kernel through sock_diag (what `ss -l` does), which dumps listening sockets only:
    fast however many connections the machine has (/proc/net/tcp lists them all), and it
    takes no connection from the services."""
    tcp_listen, sock_diag_by_family, request_dump, done, error = 10, 20, 0x301, 3, 2
    request = struct.pack("=BBBBI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0, 1 << tcp_listen) + bytes(48)
    wanted, ports = socket.inet_aton(host), set()
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 4) as s:  # NETLINK_SOCK_DIAG
        s.send(struct.pack("=IHHII", 16 + len(request), sock_diag_by_family, request_dump, 1, 0) + request)
        while True:
            data, offset = s.recv(1 << 16), 0
            while offset < len(data):
                length, kind = struct.unpack_from("=IH", data, offset)
                if kind == done:
                    return ports
                if kind == error:
                    raise OSError("sock_diag refused the request")
                # inet_diag_msg: family, state, timer, retrans (1 byte each), then the socket's
                # id: source port (big-endian), destination port, source address.
                port = struct.unpack_from("!H", data, offset + 20)[0]
                if data[offset + 24:offset + 28] == wanted:
                    ports.add(port)
                offset += (length + 3) & ~3


def zombies_under(pid: int) -> list[int]:
    return [p for p in descendants_of(pid) if (proc_stat(p) or {}).get("state") == "Z"]


def open_fds(pid: int) -> dict[int, str]:
    result = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            result[int(entry)] = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            pass
    return result


def settled_fds(pid: int, expected: list[int], timeout: float = 5.0) -> dict[int, str]:
    """`open_fds` of a process just started, once it shows `expected`. The kernel lets the
    parent of a vfork (posix_spawn) go on when the child's exec has replaced its memory, a
    moment before the child's close-on-exec descriptors are closed: a process read right
    after its start may still show activator's. A descriptor that stays is a leak: it fails
    here, after the deadline."""
    try:
        return wait_for(lambda: sorted(fds := open_fds(pid)) == sorted(expected) and fds, timeout,
                        what=f"pid {pid} with fds {expected}")
    except Timeout:
        raise AssertionError(f"pid {pid} has fds {open_fds(pid)}, not just {expected}") from None


def environ_of(pid: int) -> dict[str, str]:
    data = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.split("=", 1) for item in data.decode(errors="replace").split("\0") if "=" in item)


def ns_pid(host_pid: int) -> int:
    """The pid a process has in its innermost PID namespace."""
    for line in Path(f"/proc/{host_pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise ValueError(f"no NSpid for {host_pid}")


def write_units(directory: Path, units: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        path = directory / name if "." in name else directory / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return directory


class Activator:
    """One activator run. Use as a context manager: it is always cleaned up."""

    def __init__(self, tmp_path: Path, units: dict[str, str] | None = None, *, args=(),
                 command=None, pid1: bool = True, env: dict | None = None, log_format: str = "text",
                 units_dir: Path | None = None, pass_fds=(), prefix=()):
        self.tmp = Path(tmp_path)
        self.units_dir = units_dir or write_units(self.tmp / "units", units or {})
        self.runtime = self.tmp / "run"
        self.out_path = self.tmp / "stdout.log"
        self.err_path = self.tmp / "stderr.log"
        self.pid1 = pid1
        argv = [PYTHON, "-m", "activator", "--units", str(self.units_dir), *args]
        if log_format != "text":
            argv += ["--log-format", log_format]
        if command:
            argv += ["--", *command]
        if pid1:
            argv = ["unshare", "--pid", "--fork", "--mount-proc", *argv]
        self.argv = [*prefix, *argv]
        self.env = {**os.environ, "ACTIVATOR_RUNTIME_DIR": str(self.runtime), "PYTHONPATH": str(ROOT),
                    "PATH": f"{Path(PYTHON).parent}:{os.environ.get('PATH', '')}", **(env or {})}
        self.pass_fds = tuple(pass_fds)
        self.proc: subprocess.Popen | None = None
        self._pid: int | None = None

    # -- life

    def start(self, wait_ready: bool = True) -> "Activator":
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self.out, stderr=self.err, env=self.env,
                                     stdin=subprocess.DEVNULL, pass_fds=self.pass_fds,
                                     start_new_session=True)
        if wait_ready:
            self.wait_status(lambda s: True, what="status.json")
        return self

    def __enter__(self) -> "Activator":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

    @property
    def pid(self) -> int:
        """Activator's host pid (the child of unshare in PID 1 mode)."""
        if self._pid is None:
            if not self.pid1:
                self._pid = self.proc.pid
            else:
                self._pid = wait_for(lambda: (children_of(self.proc.pid) or [None])[0], 10,
                                     what="activator under unshare")
        return self._pid

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def run_inside(self, argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Run a command in activator's PID and mount namespaces, as `docker exec` would."""
        prefix = ["nsenter", "--target", str(self.pid), "--pid", "--mount"] if self.pid1 else []
        return subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout,
                              env={**self.env})

    def wait_exit(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise Timeout(f"activator did not exit within {timeout}s\n{self.output()}") from None

    def stop(self, timeout: float = 30.0) -> int:
        self.signal(signal.SIGTERM)
        return self.wait_exit(timeout)

    def cleanup(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            # Services run in sessions of their own: collect them while activator still holds
            # them, then kill activator (unshare and, with it, the whole namespace) and them.
            stragglers = [] if self.pid1 else descendants_of(self.proc.pid)
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            for pid in stragglers:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(10)
        self.out.close()
        self.err.close()

    # -- observing

    def output(self) -> str:
        self.out.flush()
        self.err.flush()
        return self.out_path.read_text(errors="replace") + self.err_path.read_text(errors="replace")

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def status(self) -> dict:
        return json.loads((self.runtime / "status.json").read_text())

    def wait_status(self, predicate, timeout: float = 15.0, what: str = "a status") -> dict:
        def check():
            if self.proc.poll() is not None:
                raise AssertionError(f"activator exited ({self.proc.returncode}) while waiting for "
                                     f"{what}:\n{self.output()}")
            data = self.status()
            return data if predicate(data) else None
        try:
            return wait_for(check, timeout, what=what)
        except Timeout as e:
            raise Timeout(f"{e}\nlast status: {self._last_status()}\n{self.output()}") from None

    def _last_status(self) -> str:
        try:
            return json.dumps(self.status())
        except (OSError, ValueError):
            return "(none)"

    def wait_state(self, unit: str, state: str, timeout: float = 15.0) -> dict:
        return self.wait_status(lambda s: s["units"].get(unit, {}).get("state") == state, timeout,
                                what=f"unit {unit} {state}")

    def wait_log(self, text: str, timeout: float = 15.0) -> str:
        return wait_for(lambda: text in self.output() and self.output(), timeout, what=repr(text))

    def pids(self, unit: str) -> list[int]:
        """Namespace pids of the unit's instances, from status.json."""
        return [i["pid"] for i in self.status()["units"][unit]["instances"] if i["pid"]]

    def host_pid(self, pid: int) -> int:
        """The host pid of a pid seen inside activator's namespace (identity if not PID 1)."""
        if not self.pid1:
            return pid
        for candidate in [self.pid, *descendants_of(self.pid)]:
            try:
                if ns_pid(candidate) == pid:
                    return candidate
            except (OSError, ValueError):
                continue
        raise ValueError(f"no process with namespace pid {pid}")

    def host_pids(self, unit: str) -> list[int]:
        return [self.host_pid(p) for p in self.pids(unit)]

    def zombies(self) -> list[int]:
        return zombies_under(self.pid)
