"""Service supervision: types, dependencies, restart policies, output, what a process gets."""

import json
import os
import signal
import time
from pathlib import Path

import pytest

from harness import PYTHON, settled_fds, stays, wait_for


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# ---------------------------------------------------------------------- restart policy

def test_restart_backoff_doubles_up_to_restart_max_sec(activator, tmp_path):
    times = tmp_path / "times"
    a = activator({"crash": f"""
        exec: [sh, -c, "date +%s.%N >> {times}; exit 1"]
        restart_sec: 0.3
        restart_max_sec: 1.2
        start_limit_burst: 20
        start_limit_interval_sec: 60
    """})
    wait_for(lambda: len(lines(times)) >= 6, 30, what="six starts")
    stamps = [float(t) for t in lines(times)[:6]]
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    # Never shorter than the delay (so it doubles); at most 0.8 s later on a busy machine,
    # which still tells the cap (1.2 s) from a delay that went on doubling (2.4 s).
    for gap, expected in zip(gaps, [0.3, 0.6, 1.2, 1.2, 1.2]):
        assert expected * 0.9 <= gap <= expected + 0.8, (gaps, expected)
    assert a.status()["units"]["crash"]["instances"][0]["restarts"] >= 5


def test_backoff_is_back_at_restart_sec_after_a_long_enough_run(activator, tmp_path):
    starts, ends = tmp_path / "starts", tmp_path / "ends"
    a = activator({"crash": f"""
        exec: [sh, -c, "date +%s.%N >> {starts}; sleep 1; date +%s.%N >> {ends}; exit 1"]
        restart_sec: 0.2
        restart_max_sec: 0.8
        start_limit_burst: 20
    """})
    wait_for(lambda: len(lines(starts)) >= 5, 30, what="five starts")
    began = [float(t) for t in lines(starts)[:5]]
    ended = [float(t) for t in lines(ends)[:4]]
    # The delay is from an end to the next start. Each run lasts 1 s, longer than
    # restart_max_sec: every delay is restart_sec (0.2 s) again, where a backoff that never
    # reset would have been 0.4, 0.8, 0.8 s by the fourth.
    delays = [start - end for end, start in zip(ended, began[1:])]
    assert all(0.18 <= d for d in delays), delays
    assert sum(delays) < 0.2 * 4 + 0.8, delays  # a backoff that never reset: 2.2 s


def test_start_limit_makes_the_unit_failed(activator, tmp_path):
    times = tmp_path / "times"
    a = activator({"crash": f"""
        exec: [sh, -c, "echo x >> {times}; exit 1"]
        restart_sec: 0.05
        restart_max_sec: 0.05
        start_limit_burst: 3
        start_limit_interval_sec: 30
    """})
    data = a.wait_state("crash", "failed")
    assert len(lines(times)) == 3
    assert "start limit" in data["units"]["crash"]["failure"]
    assert data["units"]["crash"]["instances"][0]["restarts"] == 2  # the refused start is none
    assert "giving up" in a.output()


@pytest.mark.parametrize("policy, script, restarts", [
    ("no", "exit 1", False),
    ("on-failure", "exit 0", False),
    ("on-failure", "exit 3", True),
    ("on-failure", "kill -TERM $$$$", False),  # a clean signal, as in systemd
    ("on-failure", "kill -KILL $$$$", True),
    ("on-abnormal", "exit 3", False),
    ("on-abnormal", "kill -SEGV $$$$", True),
    ("always", "exit 0", True),
])
def test_restart_policies_follow_systemd(activator, tmp_path, policy, script, restarts):
    count = tmp_path / "count"
    a = activator({"svc": f"""
        exec: [sh, -c, "echo run >> {count}; sleep 0.1; {script}"]
        restart: {policy}
        restart_sec: 0.05
        start_limit_burst: 100
    """})
    if restarts:
        wait_for(lambda: len(lines(count)) >= 3, 10, what="restarts")
    else:
        data = a.wait_status(lambda s: s["units"]["svc"]["state"] in ("exited", "failed"))
        assert len(lines(count)) == 1
        expected = "exited" if script in ("exit 0", "kill -TERM $$$$") else "failed"  # clean ends
        assert data["units"]["svc"]["state"] == expected


def test_a_failed_exec_at_start_is_reported_with_status_127(activator, tmp_path):
    program = tmp_path / "prog.sh"
    program.write_text("#!/bin/sh\nsleep 100\n")
    program.chmod(0o755)
    a = activator({
        "remover": f"""
            exec: [rm, {program}]
            type: oneshot
        """,
        "prog": f"""
            exec: [{program}]
            type: exec
            after: [remover]
            restart: no
        """})
    data = a.wait_state("prog", "failed")
    assert data["units"]["prog"]["instances"][0]["exit_status"] == 127
    assert f"unit prog: cannot execute '{program}': No such file or directory" in a.output()
    assert "(pid 0)" not in a.output()  # no process ever existed


def test_a_program_that_is_not_executable_fails_with_126(activator, tmp_path):
    program = tmp_path / "prog.sh"
    program.write_text("#!/bin/sh\nsleep 100\n")
    program.chmod(0o755)
    a = activator({
        "chmodder": f"""
            exec: [chmod, "0644", {program}]
            type: oneshot
        """,
        "prog": f"""
            exec: [{program}]
            after: [chmodder]
            restart: no
        """})
    data = a.wait_state("prog", "failed")
    assert data["units"]["prog"]["instances"][0]["exit_status"] == 126
    assert "Permission denied" in a.output()


# ---------------------------------------------------------------------- types and order

def wait_file(path: Path, seconds: int = 30) -> str:
    """Shell: wait (bounded) until `path` exists; exit 3 if it never does."""
    return f"i=0; while [ ! -e {path} ]; do i=$$((i+1)); [ $$i -gt {seconds * 50} ] && exit 3; sleep 0.02; done"


def not_started(a, *units: str):
    """A predicate for `stays`: none of `units` has a process yet."""
    return lambda: all(i["pid"] is None for u in units for i in a.status()["units"][u]["instances"])


def test_a_oneshot_that_requires_waits_and_dependents_start_after_it(activator, tmp_path):
    log, go = tmp_path / "log", tmp_path / "go"
    a = activator({
        "migrate": f"""
            exec: [sh, -c, "{wait_file(go)}; echo migrate-done >> {log}"]
            type: oneshot
        """,
        "web": f"""
            exec: [sh, -c, "echo web-start >> {log}; exec sleep infinity"]
            requires: [migrate]
        """,
        "side": f"""
            exec: [sh, -c, "echo side-start >> {log}; exec sleep infinity"]
        """})
    # The migration runs until the test says so: side, independent, starts meanwhile (in
    # parallel), and web, which requires it, does not.
    wait_for(lambda: "side-start" in lines(log), 10, what="side started during the migration")
    a.wait_state("migrate", "starting")
    stays(not_started(a, "web"), 0.5, "web started before the oneshot it requires finished")
    go.touch()
    a.wait_state("web", "running")
    events = wait_for(lambda: "web-start" in lines(log) and lines(log), 10, what="web's first line")
    assert events == ["side-start", "migrate-done", "web-start"]
    assert a.status()["units"]["migrate"]["state"] == "exited"


def test_wants_waits_but_survives_a_failure_and_requires_does_not(activator, tmp_path):
    log, go = tmp_path / "log", tmp_path / "go"
    a = activator({
        "broken": f"""
            exec: [sh, -c, "echo broken-start >> {log}; {wait_file(go)}; echo broken-end >> {log}; exit 1"]
            type: oneshot
            restart: no
        """,
        "wanting": f"""
            exec: [sh, -c, "echo wanting-start >> {log}; exec sleep infinity"]
            wants: [broken]
        """,
        "requiring": """
            exec: [sleep, infinity]
            requires: [broken]
        """})
    # While the unit they name runs, neither starts: `wants` waits as `requires` does.
    wait_for(lambda: "broken-start" in lines(log), 10, what="the wanted unit running")
    stays(not_started(a, "wanting", "requiring"), 0.5, "a unit started before the one it wants finished")
    go.touch()
    data = a.wait_state("requiring", "failed")
    assert "broken" in data["units"]["requiring"]["failure"]
    a.wait_state("wanting", "running")
    wait_for(lambda: "wanting-start" in lines(log), 10, what="wanting's first line")
    assert lines(log) == ["broken-start", "broken-end", "wanting-start"]
    assert a.status()["units"]["requiring"]["instances"][0]["pid"] is None


def test_after_only_orders(activator, tmp_path):
    log = tmp_path / "log"
    a = activator({
        "first": f"""
            exec: [sh, -c, "sleep 0.4; echo first >> {log}"]
            type: oneshot
            restart: no
        """,
        "second": f"""
            exec: [sh, -c, "echo second >> {log}; exec sleep infinity"]
            after: [first]
        """})
    a.wait_state("second", "running")  # simple: running once forked, maybe before its echo
    wait_for(lambda: len(lines(log)) == 2, 10, what="both lines")
    assert lines(log) == ["first", "second"]


def test_a_permanent_failure_of_a_required_unit_stops_its_dependents(activator, tmp_path):
    a = activator({
        "db": """
            exec: [sleep, infinity]
            restart: no
        """,
        "app": """
            exec: [sleep, infinity]
            requires: [db]
        """,
        "front": """
            exec: [sleep, infinity]
            requires: [app]
        """})
    a.wait_state("front", "running")
    app_pid = a.host_pids("app")[0]
    os.kill(a.host_pids("db")[0], signal.SIGKILL)
    data = a.wait_state("front", "failed")
    assert data["units"]["db"]["state"] == "failed"
    assert data["units"]["app"]["state"] == "failed"
    wait_for(lambda: not Path(f"/proc/{app_pid}").exists(), 5, what="app stopped")


def test_simple_units_start_in_parallel_in_layers(activator, tmp_path):
    """Five oneshots with no dependencies form the first layer: each waits until all five have
    started, so they finish only if activator started them together (one at a time, the first
    would wait for the others forever and fail). Five units `after` all of them form the
    second layer: none starts before every unit of the first has finished."""
    log, started = tmp_path / "log", tmp_path / "started"
    started.mkdir()
    first = [f"first{i}" for i in range(5)]
    every_first_started = " && ".join(f"[ -e {started / name} ]" for name in first)
    units = {name: f"""
        exec: [sh, -c, "touch {started / name}; i=0; until {every_first_started}; do i=$$((i+1)); [ $$i -gt 1500 ] && exit 3; sleep 0.02; done; echo {name}-done >> {log}"]
        type: oneshot
        restart: no
    """ for name in first}
    units.update({f"second{i}": f"""
        exec: [sh, -c, "echo second{i}-start >> {log}; exec sleep infinity"]
        after: [{", ".join(first)}]
    """ for i in range(5)})
    a = activator(units)
    a.wait_status(lambda s: all(u["state"] == ("exited" if n in first else "running") for n, u in s["units"].items()),
                  30, what="the first layer exited, the second running")
    events = wait_for(lambda: len(lines(log)) == 10 and lines(log), 10, what="ten lines")
    assert sorted(events[:5]) == sorted(f"{n}-done" for n in first), events
    assert sorted(events[5:]) == [f"second{i}-start" for i in range(5)], events


# ---------------------------------------------------------------------- what a process gets

def test_a_service_sees_only_fds_0_1_2(activator):
    a = activator({"plain": "exec: [sleep, infinity]", "other": "exec: [sleep, infinity]\noutput: inherit"})
    a.wait_state("other", "running")
    for unit in ("plain", "other"):
        fds = settled_fds(a.host_pids(unit)[0], [0, 1, 2])
        assert fds[0] == "/dev/null"


def test_environment_working_directory_and_umask(activator, tmp_path):
    envfile = tmp_path / "env"
    envfile.write_text('# comment\nFROM_FILE="file value"\nBOTH=file\n')
    out = tmp_path / "out"
    a = activator({"envy": f"""
        exec: [sh, -c, "env > {out}; pwd >> {out}; umask >> {out}"]
        type: oneshot
        environment_file: {envfile}
        environment:
          BOTH: unit
          TEMPLATED: "i=$(instance) home=$(env.HOME) dollar=$$"
        working_directory: {tmp_path}
        umask: "0027"
    """}, env={"LISTEN_FDS": "5", "LISTEN_PID": "1", "NOTIFY_SOCKET": "/nowhere", "KEPT": "yes"})
    a.wait_state("envy", "exited")
    text = out.read_text()
    env = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    assert env["FROM_FILE"] == "file value"
    assert env["BOTH"] == "unit"
    assert env["TEMPLATED"] == f"i=1 home={os.environ['HOME']} dollar=$"
    assert env["ACTIVATOR_UNIT"] == "envy" and env["ACTIVATOR_INSTANCE"] == "1"
    assert env["KEPT"] == "yes"
    for protocol in ("LISTEN_FDS", "LISTEN_PID", "NOTIFY_SOCKET"):
        assert protocol not in env
    assert str(tmp_path) in text.splitlines()
    assert "0027" in text.splitlines()


def test_user_nobody_really_drops_uid_gid_and_groups(activator):
    a = activator({"dropped": """
        exec: [sleep, infinity]
        user: nobody
    """})
    a.wait_state("dropped", "running")
    status = Path(f"/proc/{a.host_pids('dropped')[0]}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split() == ["65534"] * 4
    assert fields["Gid"].split() == ["65534"] * 4
    assert fields["Groups"].split() == ["65534"]


def test_group_alone_changes_the_gid(activator):
    a = activator({"grouped": """
        exec: [sleep, infinity]
        group: nogroup
    """})
    a.wait_state("grouped", "running")
    status = Path(f"/proc/{a.host_pids('grouped')[0]}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert fields["Uid"].split()[0] == "0"
    assert fields["Gid"].split() == ["65534"] * 4


def test_each_process_has_its_own_session_and_process_group(activator):
    a = activator({"grouped": "exec: [sleep, infinity]\ninstances: 2"})
    a.wait_state("grouped", "running")
    for pid in a.host_pids("grouped"):
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rfind(")") + 2:].split()
        assert int(fields[2]) == pid and int(fields[3]) == pid  # pgid and sid are its own pid


def test_signal_mask_and_dispositions_are_reset(activator):
    a = activator({"sigs": "exec: [sleep, infinity]"})
    a.wait_state("sigs", "running")
    status = Path(f"/proc/{a.host_pids('sigs')[0]}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines())
    assert int(fields["SigBlk"], 16) == 0
    # Signals 1-31; 32 and 33 belong to the C library, which no program may touch.
    assert int(fields["SigIgn"], 16) & 0x7FFFFFFF == 0


# ---------------------------------------------------------------------- output

def test_output_prefix_labels_each_line(activator, tmp_path):
    a = activator({
        "single": """
            exec: [sh, -c, "echo one; echo err >&2; printf partial"]
            type: oneshot
        """,
        "multi": """
            exec: [sh, -c, "echo from $$ACTIVATOR_INSTANCE; sleep infinity"]
            instances: 2
        """})
    a.wait_log("partial")
    wait_for(lambda: "multi.2 | from 2" in a.stdout(), 5)
    out, err = a.stdout(), a.stderr()
    assert "single | one\n" in out
    assert "single | err\n" in err
    assert "single | partial\n" in out  # the last line without its newline, flushed at exit
    assert "multi.1 | from 1\n" in out


def test_output_long_lines_are_split_and_invalid_utf8_passes_through(activator, tmp_path):
    script = tmp_path / "w.py"
    script.write_text("import os\nos.write(1, b'a' * 200000 + b'\\n')\nos.write(1, b'bad \\xff\\xfe bytes\\n')\n")
    a = activator({"writer": f"""
        exec: [{PYTHON}, {script}]
        type: oneshot
    """})
    a.wait_state("writer", "exited")
    wait_for(lambda: b"bad \xff\xfe bytes" in a.out_path.read_bytes(), 5)
    raw = a.out_path.read_bytes()
    pieces = [line for line in raw.split(b"\n") if line.startswith(b"writer | a")]
    assert len(pieces) >= 4 and all(len(p) <= 65536 + len(b"writer | ") for p in pieces)
    assert sum(len(p) - len(b"writer | ") for p in pieces) == 200000
    assert b"writer | bad \xff\xfe bytes\n" in raw


def test_output_inherit_and_null(activator):
    a = activator({
        "loud": """
            exec: [sh, -c, "echo straight-through"]
            type: oneshot
            output: inherit
        """,
        "quiet": """
            exec: [sh, -c, "echo never-seen"]
            type: oneshot
            output: null
        """})
    a.wait_state("quiet", "exited")
    wait_for(lambda: "straight-through" in a.stdout(), 5)
    assert "loud | straight-through" not in a.stdout()
    assert "never-seen" not in a.output()


def test_json_log_format_for_service_output_and_activators_messages(activator):
    a = activator({
        "talker": """
            exec: [sh, -c, "echo hello; echo oops >&2"]
            type: oneshot
        """,
        "pair": """
            exec: [sh, -c, "echo hi; sleep infinity"]
            instances: 2
        """}, log_format="json")
    a.wait_state("talker", "exited")
    wait_for(lambda: a.stdout().count('"hi"') == 2, 5)
    records = [json.loads(line) for line in a.output().splitlines() if line.strip()]
    keys = {"time", "unit", "instance", "pid", "stream", "level", "message"}
    assert all(set(r) == keys for r in records)
    hello = next(r for r in records if r["message"] == "hello")
    assert hello["unit"] == "talker" and hello["instance"] == 1 and hello["stream"] == "stdout"
    assert isinstance(hello["pid"], int)
    assert any(r["message"] == "oops" and r["stream"] == "stderr" for r in records)
    assert {r["instance"] for r in records if r["unit"] == "pair" and r["message"] == "hi"} == {1, 2}
    own = [r for r in records if r["stream"] == "activator"]
    assert own and all(r["level"] in ("info", "warning", "error") for r in own)
    assert any(r["unit"] is None for r in own)
    assert records[0]["time"].endswith("Z")


def test_json_messages_about_a_single_instance_unit_say_instance_1(activator):
    """SPEC §6: `instance` is 1 also for single-instance units, in activator's own messages
    about the unit as a whole too (here: a required unit failed, so this one is not started)."""
    a = activator({
        "broken": "exec: [sh, -c, 'exit 3']\nrestart: no",
        "needs": "exec: [sleep, infinity]\nrequires: [broken]",
    }, log_format="json")
    a.wait_state("needs", "failed")
    records = [json.loads(line) for line in a.output().splitlines() if line.strip()]
    about = [r for r in records if r["unit"] == "needs" and r["stream"] == "activator"]
    assert any("required unit broken failed" in r["message"] for r in about), about
    assert {r["instance"] for r in about} == {1}
