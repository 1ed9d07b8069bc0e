"""SPEC §11: activator's own loop never blocks on its output, and a flood costs bounded CPU."""

from __future__ import annotations

import array
import fcntl
import os
import select
import signal
import termios
import subprocess
import time

from harness import Activator, wait_for


class StalledActivator(Activator):
    """activator with its stdout and stderr on one pipe that nobody reads until `unstall`."""

    def start(self, wait_ready: bool = True) -> "StalledActivator":
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.read_end, write_end = os.pipe()
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=write_end, stderr=write_end, env=self.env,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        os.close(write_end)
        if wait_ready:
            self.wait_status(lambda s: True, what="status.json")
        return self

    def stalled(self) -> bool:
        """Whether the pipe is full: a good part of it is used, and nothing more comes in."""
        def pending():
            count = array.array("i", [0])
            fcntl.ioctl(self.read_end, termios.FIONREAD, count)
            return count[0]
        before = pending()
        time.sleep(0.3)
        return before >= 32768 and pending() == before

    def unstall(self, timeout: float = 10.0) -> bytes:
        """Read everything activator writes from now on, for `timeout` seconds or until EOF."""
        os.set_blocking(self.read_end, False)
        data = bytearray()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            select.select([self.read_end], [], [], 0.2)
            try:
                chunk = os.read(self.read_end, 1 << 20)
            except BlockingIOError:
                continue
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def cleanup(self) -> None:
        super().cleanup()
        if getattr(self, "read_end", -1) >= 0:
            os.close(self.read_end)
            self.read_end = -1


def restarts(a: Activator, unit: str) -> int:
    return a.status()["units"][unit]["instances"][0]["restarts"]


def test_stalled_stdout_never_wedges_the_loop(tmp_path):
    """Defect: with its output on a pipe nobody reads, PID 1 blocked in a write: no reaping,
    no restarts, status.json frozen, SIGTERM ignored."""
    units = {
        "chatty": 'exec: [sh, -c, "while :; do echo line-of-chatty-output; done"]',
        "crasher": """
            exec: [sh, -c, "sleep 0.05; exit 1"]
            restart: always
            restart_sec: 0.05
            restart_max_sec: 0.1
            start_limit_interval_sec: 0
            timeout_stop_sec: 5
        """,
    }
    a = StalledActivator(tmp_path, units)
    try:
        a.start()
        wait_for(a.stalled, 10, what="the output pipe to fill")
        before = restarts(a, "crasher")
        # Restarts go on, each one a message that cannot be written: counted, not waited for.
        wait_for(lambda: restarts(a, "crasher") >= before + 10, 20, what="restarts while stalled")
        assert a.stalled()
        assert not a.zombies()
        a.signal(signal.SIGTERM)
        assert a.wait_exit(15) == 0
        text = a.unstall().decode(errors="replace")  # what was in the pipe: nothing torn
        lines = [line for line in text.splitlines() if line.startswith("chatty")]
        assert lines and all(line == "chatty | line-of-chatty-output" for line in lines[:-1])
    finally:
        a.cleanup()


def test_output_resumes_with_the_count_of_lost_messages(tmp_path):
    units = {
        "chatty": 'exec: [sh, -c, "while :; do echo line-of-chatty-output; done"]',
        "crasher": """
            exec: [sh, -c, "exit 1"]
            restart: always
            restart_sec: 0.05
            restart_max_sec: 0.1
            start_limit_interval_sec: 0
        """,
    }
    a = StalledActivator(tmp_path, units)
    try:
        a.start()
        wait_for(a.stalled, 10, what="the output pipe to fill")
        before = restarts(a, "crasher")
        wait_for(lambda: restarts(a, "crasher") >= before + 5, 20, what="restarts while stalled")
        text = a.unstall(timeout=5).decode(errors="replace")
        # Reading again: activator says how many of its messages it could not write, and
        # the service's lines come through whole, none torn.
        assert "messages of activator's could not be written while its output was not being read" in text
        chatty = [line for line in text.splitlines() if line.startswith("chatty")]
        assert all(line == "chatty | line-of-chatty-output" for line in chatty[:-1])
    finally:
        a.cleanup()


class DiscardingActivator(StalledActivator):
    """activator with its stdout and stderr on /dev/null: writing costs it nothing."""

    def start(self, wait_ready: bool = True) -> "DiscardingActivator":
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     env=self.env, stdin=subprocess.DEVNULL, start_new_session=True)
        if wait_ready:
            self.wait_status(lambda s: True, what="status.json")
        return self


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_flood_costs_a_bounded_share_of_a_core(tmp_path):
    """Defect: a unit running `yes` kept PID 1 busy relaying, a whole core (SPEC §11: bounded
    CPU, other units not delayed). The goal is 25 %; the test allows twice that."""
    units = {"flood": "exec: [yes]", "crasher": """
        exec: [sh, -c, "exit 1"]
        restart: always
        restart_sec: 0.05
        restart_max_sec: 0.05
        start_limit_interval_sec: 0
    """}
    a = DiscardingActivator(tmp_path, units)
    try:
        a.start()
        a.wait_status(lambda s: s["units"]["crasher"]["instances"][0]["restarts"] >= 2)
        before, cpu, start = restarts(a, "crasher"), cpu_seconds(a.pid), time.monotonic()
        time.sleep(3)  # the measurement window itself
        share = (cpu_seconds(a.pid) - cpu) / (time.monotonic() - start)
        assert share <= 0.5, f"PID 1 used {share:.0%} of a core"
        assert restarts(a, "crasher") >= before + 5  # ~20 per second when nothing floods
        a.signal(signal.SIGTERM)
        assert a.wait_exit(10) == 0
    finally:
        a.cleanup()
