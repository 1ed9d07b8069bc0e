"""activator as PID 1: reaping, exit codes, stopping, shutdown, subreaper mode."""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from harness import (PYTHON, Activator, descendants_of, identities, proc_stat, still_there, wait_for,
                     zombies_under)

PROGRAMS = Path(__file__).parent / "programs"
ORPHANS = PROGRAMS / "orphans.py"


def zombies_in_namespace(activator_host_pid: int) -> list[int]:
    return zombies_under(activator_host_pid)


# ---------------------------------------------------------------------- reaping

def test_a_burst_of_1000_orphaned_zombies_is_reaped_within_a_second(activator, tmp_path):
    done = tmp_path / "done"
    a = activator({"orphans": f"""
        exec: [{PYTHON}, {ORPHANS}, "1000", {done}]
        type: oneshot
        restart: no
    """})
    wait_for(done.exists, 20, what="the orphan burst")
    started = time.monotonic()
    wait_for(lambda: not zombies_in_namespace(a.pid), 1.0, interval=0.01, what="no zombies")
    assert time.monotonic() - started < 1.0
    a.wait_state("orphans", "exited")


def test_negative_control_the_zombie_check_sees_zombies_when_pid1_does_not_reap(tmp_path):
    """The same burst under a PID 1 that never reaps (sleep): the check must see the zombies."""
    done = tmp_path / "done"
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c",
         f'"{PYTHON}" "{ORPHANS}" 200 "{done}" & exec sleep 30'], start_new_session=True)
    try:
        wait_for(done.exists, 20, what="the orphan burst")
        pid1 = wait_for(lambda: (descendants_of(proc.pid) or [None])[0], 5)
        zombies = wait_for(lambda: len(zombies_in_namespace(pid1)) >= 200 and zombies_in_namespace(pid1), 5,
                           what="zombies under a non-reaping PID 1")
        assert len(zombies) >= 200
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_subreaper_mode_reaps_orphans_when_not_pid1(activator, tmp_path):
    done = tmp_path / "done"
    a = activator({"orphans": f"""
        exec: [{PYTHON}, {ORPHANS}, "300", {done}]
        type: oneshot
        restart: no
    """, "keeper": "exec: [sleep, infinity]"}, pid1=False)
    assert "child subreaper" in a.wait_log("subreaper")
    wait_for(done.exists, 20, what="the orphan burst")
    wait_for(lambda: not zombies_under(a.pid), 5.0, what="no zombies under the subreaper")
    a.wait_state("orphans", "exited")
    a.wait_state("keeper", "running")
    running = identities([a.pid, *descendants_of(a.pid)])
    assert len(running) >= 2  # activator and the keeper at least
    assert a.stop() == 0
    assert still_there(running) == []


def test_negative_control_a_process_list_read_after_the_fact_sees_nothing(tmp_path):
    """Why the tests record pids while they run: the children of a dead pid are always none,
    while a process it left behind lives on. `still_there` must see that one."""
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & echo $!; read line"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        child = int(parent.stdout.readline())
        recorded = identities([parent.pid, child])
        assert len(recorded) == 2
        parent.stdin.close()  # the shell exits; its sleep goes on, reparented
        parent.wait(10)
        assert descendants_of(parent.pid) == []  # blind: what the old check looked at
        assert still_there(recorded) == [child]
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()


def test_reaping_stays_prompt_while_a_service_floods_its_output(activator, tmp_path):
    done = tmp_path / "done"
    a = activator({
        "flood": f"""
            exec: [{PYTHON}, -c, "import sys\\nwhile True: sys.stdout.write('x' * 200 + '\\\\n')"]
        """,
        "orphans": f"""
            exec: [sh, -c, "sleep 1; exec {PYTHON} {ORPHANS} 500 {done}"]
            type: oneshot
            restart: no
        """,
    }, args=["--log-format", "text"])
    a.wait_state("flood", "running")
    wait_for(done.exists, 20, what="the orphan burst")
    wait_for(lambda: not zombies_in_namespace(a.pid), 2.0, interval=0.01, what="no zombies during the flood")
    started = time.monotonic()
    assert a.stop(timeout=10) == 0
    assert time.monotonic() - started < 5


# ---------------------------------------------------------------------- exit codes

@pytest.mark.parametrize("pid1", [True, False], ids=["pid1", "subreaper"])
def test_exit_0_after_sigterm_and_no_process_left(activator, tmp_path, pid1):
    """Every process activator had, services and a daemon that left its service's session,
    is gone once it has exited. As PID 1 the kernel also ends the namespace with it; as a
    subreaper nothing but activator's own shutdown does."""
    daemon = tmp_path / "daemon.pid"
    a = activator({"one": "exec: [sleep, infinity]",
                   "two": f"exec: [sh, -c, \"setsid sh -c 'echo $$$$ > {daemon}; exec sleep 1000' & "
                          f"exec sleep infinity\"]"}, pid1=pid1)
    a.wait_state("two", "running")
    wait_for(lambda: daemon.exists() and daemon.read_text().strip(), 10, what="the daemon")
    running = identities([a.proc.pid, a.pid, *descendants_of(a.proc.pid)])
    assert len(running) >= 4 + pid1  # (unshare,) activator, two services, the daemon
    assert a.stop() == 0
    assert still_there(running) == []


def test_exit_0_after_sigint(activator):
    a = activator({"one": "exec: [sleep, infinity]"})
    a.wait_state("one", "running")
    a.signal(signal.SIGINT)
    assert a.wait_exit() == 0


def test_exit_0_when_a_success_action_exit_unit_finishes(activator):
    a = activator({
        "job": """
            exec: [sh, -c, "sleep 0.3; exit 0"]
            type: oneshot
            success_action: exit
        """,
        "other": "exec: [sleep, infinity]",
    })
    assert a.wait_exit() == 0
    assert "success_action: exit" in a.output()


def test_a_death_by_sigterm_is_a_clean_end(activator):
    """systemd's clean end: a service killed by SIGTERM is not restarted by `on-failure` and
    counts as a success, not as `failed`."""
    a = activator({
        "job": """
            exec: [sh, -c, "sleep 0.3; kill -TERM $$$$"]
            restart: on-failure
            success_action: exit
        """,
        "other": "exec: [sleep, infinity]",
    })
    assert a.wait_exit() == 0
    assert "success_action: exit" in a.output()


# In unit files `$$` is a literal `$`: the shell's own `$$` is written `$$$$`.
@pytest.mark.parametrize("script, expected", [("exit 7", 7), ("kill -KILL $$$$", 128 + 9),
                                              ("kill -SEGV $$$$", 128 + 11)])
def test_exit_with_the_status_of_a_failure_action_exit_unit(activator, script, expected):
    a = activator({
        "job": f"""
            exec: [sh, -c, "sleep 0.2; {script}"]
            restart: no
            failure_action: exit
        """,
        "other": "exec: [sleep, infinity]",
    })
    assert a.wait_exit() == expected


@pytest.mark.parametrize("script, expected", [("exit 0", 0), ("exit 3", 3), ("kill -TERM $$", 143),
                                              ("kill -KILL $$", 137)])
def test_command_mode_exits_with_the_commands_status(activator, script, expected):
    a = activator({"beside": "exec: [sleep, infinity]"}, command=["sh", "-c", f"sleep 0.3; {script}"])
    assert a.wait_exit() == expected


def test_command_mode_with_no_units_and_a_missing_program_exits_127(activator, tmp_path):
    a = activator({}, command=["no-such-program-here"], wait_ready=False)
    assert a.wait_exit() == 127
    assert "cannot execute 'no-such-program-here': No such file or directory" in a.output()


def test_command_mode_gets_stdin_and_its_arguments_unexpanded(activator, tmp_path):
    out = tmp_path / "args"
    a = activator({}, command=["sh", "-c", 'printf "%s|" "$@" > "$0"', str(out), "$(instance)", "$$", "$HOME"],
                  wait_ready=False)
    assert a.wait_exit() == 0
    assert out.read_text() == "$(instance)|$$|$HOME|"


def test_exit_2_for_invalid_units_and_nothing_starts(activator, tmp_path):
    marker = tmp_path / "started"
    a = activator({
        "good": f"exec: [touch, {marker}]",
        "bad": "exec: [sleep, infinity]\nrestart: sometimes\n",
    }, wait_ready=False)
    assert a.wait_exit() == 2
    assert "bad.yaml:2: unit bad: restart:" in a.output()
    assert not marker.exists()


def test_exit_2_when_a_socket_cannot_be_bound(activator, tmp_path):
    import socket
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    marker = tmp_path / "started"
    a = activator({"web": f"""
        exec: [touch, {marker}]
        sockets:
          http: {{listen: "tcp://127.0.0.1:{port}"}}
    """}, wait_ready=False)
    assert a.wait_exit() == 2
    assert f"unit web: socket http: cannot bind tcp://127.0.0.1:{port}: Address already in use" in a.output()
    assert not marker.exists()
    taken.close()


def test_exit_2_for_a_bad_command_line(tmp_path):
    result = subprocess.run([PYTHON, "-m", "activator", "--no-such-option"], capture_output=True, text=True,
                            cwd=tmp_path)
    assert result.returncode == 2
    assert "usage:" in result.stderr


def test_exit_2_when_the_runtime_directory_cannot_be_made(activator, tmp_path):
    """Checked before anything starts, like a socket that cannot be bound (SPEC §7: 2)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    a = activator({"one": "exec: [sleep, infinity]"}, env={"ACTIVATOR_RUNTIME_DIR": str(blocker / "run")},
                  wait_ready=False)
    assert a.wait_exit() == 2
    assert f"runtime directory {blocker / 'run'}: Not a directory: nothing started" in a.output()


def test_version_and_help():
    version = subprocess.run([PYTHON, "-m", "activator", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("activator ")
    helped = subprocess.run([PYTHON, "-m", "activator", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--units" in helped.stdout and "check" in helped.stdout


# ---------------------------------------------------------------------- stopping

def test_a_service_ignoring_sigterm_is_killed_after_timeout_stop_sec(activator):
    a = activator({"stubborn": """
        exec: [sh, -c, "trap '' TERM; while :; do sleep 0.1; done"]
        timeout_stop_sec: 1
    """, "prompt": "exec: [sleep, infinity]"})
    a.wait_state("stubborn", "running")
    started = time.monotonic()
    assert a.stop() == 0
    elapsed = time.monotonic() - started
    # At least its 1 s, and well short of the 10 s default it would take if the key were lost.
    assert 0.9 < elapsed < 8, elapsed
    assert "sending SIGKILL" in a.output()


def test_kill_signal_goes_to_the_whole_process_group(activator, tmp_path):
    log, ready = tmp_path / "got", tmp_path / "ready"
    a = activator({"family": f"""
        exec: [sh, -c, "trap 'echo parent >> {log}; wait; exit 0' USR1; sh -c 'trap \\"echo child >> {log}; exit 0\\" USR1; touch {ready}; while :; do sleep 0.05; done' & while :; do sleep 0.05; done"]
        kill_signal: SIGUSR1
    """})
    wait_for(ready.exists, 5, what="both shells trapping USR1")
    assert a.stop() == 0
    assert sorted(log.read_text().split()) == ["child", "parent"]


def test_daemonized_orphans_are_killed_and_reaped_at_shutdown(activator, tmp_path):
    pidfile = tmp_path / "daemon.pid"
    a = activator({"daemon": f"""
        exec: [sh, -c, "setsid sh -c 'echo $$$$ > {pidfile}; exec sleep 1000' & sleep infinity"]
    """}, pid1=False)
    pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 10))
    assert proc_stat(pid)["sid"] == pid  # it left the service's session: a real daemon
    running = identities([a.pid, *descendants_of(a.pid)])
    assert pid in {p for p, _ in running} and len(running) >= 4  # activator, sh, sleep, the daemon
    assert a.stop() == 0
    assert proc_stat(pid) is None
    assert still_there(running) == []


def test_second_sigterm_during_shutdown_does_not_skip_the_cleanup(activator):
    a = activator({"slow": """
        exec: [sh, -c, "trap 'sleep 1; exit 0' TERM; while :; do sleep 0.05; done"]
        timeout_stop_sec: 10
    """}, pid1=False)
    a.wait_state("slow", "running")
    pid = a.host_pids("slow")[0]
    a.signal(signal.SIGTERM)
    a.wait_log("shutting down")
    a.signal(signal.SIGTERM)
    assert a.wait_exit() == 0
    assert proc_stat(pid) is None
    assert "stopped (0)" in a.output()


def test_shutdown_stops_units_in_reverse_dependency_order(activator, tmp_path):
    order = tmp_path / "order"
    def unit(name, extra=""):
        return f"""
            exec: [sh, -c, "trap 'echo {name} >> {order}; exit 0' TERM; while :; do sleep 0.02; done"]
            {extra}
        """
    a = activator({"db": unit("db"), "app": unit("app", "requires: [db]"),
                   "web": unit("web", "after: [app]")})
    a.wait_state("web", "running")
    assert a.stop() == 0
    assert order.read_text().split() == ["web", "app", "db"]
