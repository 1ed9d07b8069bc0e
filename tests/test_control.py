"""Per-unit control (SPEC §8): each command, its exit status, and what the services see."""

import json
import os
import signal

from harness import PYTHON, wait_for
from test_reload import ClientLoop, free_port, get, run_cli, web_unit

NOT_RUNNING = 3


def tracer(name: str, log) -> str:
    """A service that writes `NAME start` and, on SIGTERM, `NAME stop` to a shared log."""
    return (f"exec: [\"sh\", \"-c\", \"echo {name} start >> {log}; "
            f"trap 'echo {name} stop >> {log}; exit 0' TERM; sleep infinity & wait\"]\n")


def events(log) -> list[str]:
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


def test_stop_stops_what_requires_it_first_and_start_brings_both_back(activator, tmp_path):
    log = tmp_path / "events"
    a = activator({"db": tracer("db", log), "web": tracer("web", log) + "requires: [db]\n",
                   "other": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    wait_for(lambda: events(log) == ["db start", "web start"], 10, what="both started")
    other = a.pids("other")

    result = run_cli(a, "stop", "db")
    assert result.returncode == 0, result.stderr
    assert "stopped: db" in result.stdout and "web" in result.stdout
    assert events(log)[2:] == ["web stop", "db stop"]  # the unit that requires it first
    data = a.status()
    assert data["units"]["db"]["state"] == data["units"]["web"]["state"] == "stopped"
    assert data["units"]["db"]["healthy"]  # a stopped unit does not fail the health check
    assert run_cli(a, "status").returncode == 0
    assert a.pids("other") == other  # nothing else touched

    a.signal(signal.SIGUSR2)  # a rolling restart of other units leaves it stopped
    a.wait_status(lambda s: s["reload"]["completed"] >= 1, what="rolling restart")
    assert a.status()["units"]["db"]["state"] == "stopped"

    result = run_cli(a, "start", "web")  # starts what it requires, too
    assert result.returncode == 0, result.stderr
    assert "started: web" in result.stdout
    assert a.status()["units"]["web"]["state"] == "running"
    wait_for(lambda: sorted(events(log)[4:]) == ["db start", "web start"], 10, what="both started again")
    # db first: web waits for what it requires (a `simple` unit counts as started once
    # forked, so the services' own lines may come in either order; activator's may not).
    log_lines = a.output().splitlines()
    starts = [i for i, line in enumerate(log_lines) if line.endswith("): started")]
    assert "unit db" in log_lines[starts[-2]] and "unit web" in log_lines[starts[-1]], log_lines


def test_restart_restarts_the_units_that_require_it_after_it_in_order(activator, tmp_path):
    log = tmp_path / "events"
    a = activator({"db": tracer("db", log), "app": tracer("app", log) + "requires: [db]\n",
                   "web": tracer("web", log) + "requires: [app]\n"})
    a.wait_state("web", "running")
    wait_for(lambda: len(events(log)) == 3, 10, what="all started")
    result = run_cli(a, "restart", "db")
    assert result.returncode == 0, result.stderr
    assert "restarted: db" in result.stdout and "app" in result.stdout and "web" in result.stdout
    after = events(log)[3:]
    assert sorted(after) == sorted(["db stop", "db start", "app stop", "app start", "web stop", "web start"])
    # In dependency order: each one stopped once the one it requires is started again (a
    # `simple` unit counts as started once forked, so its own echo may come a little later).
    assert after.index("db stop") < after.index("app stop") < after.index("web stop")
    assert all(after.index(f"{n} stop") < after.index(f"{n} start") for n in ("db", "app", "web"))
    log_lines = a.output().splitlines()
    again = next(i for i, line in enumerate(log_lines) if "unit db" in line and "starting again" in line)
    db_started = next(i for i, line in enumerate(log_lines) if i > again and "unit db" in line and "started" in line)
    app_stopped = next(i for i, line in enumerate(log_lines) if "unit app" in line and "stopped" in line)
    assert again < db_started < app_stopped, log_lines
    restarts = {name: unit["instances"][0]["restarts"] for name, unit in a.status()["units"].items()}
    assert restarts == {"db": 1, "app": 1, "web": 1}


def test_rolling_restart_of_a_unit_loses_no_request_and_one_instance_restarts_alone(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=3)})
    a.wait_state("web", "running")
    before = a.pids("web")
    with ClientLoop(port) as client:
        result = run_cli(a, "restart", "web")
        assert result.returncode == 0, result.stderr
        served = len(client.samples)
        wait_for(lambda: len(client.samples) > served + 20, 10, what="requests after the restart")
    assert client.failures == []
    after = a.pids("web")
    assert not set(before) & set(after) and len(after) == 3

    result = run_cli(a, "restart", "web.2")
    assert result.returncode == 0, result.stderr
    again = a.pids("web")
    assert again[0] == after[0] and again[2] == after[2] and again[1] != after[1]
    assert get(port)


def test_signal_reaches_the_main_process_or_the_group(activator, tmp_path):
    mark = tmp_path / "hup"
    a = activator({"web": f"""
        exec: ["sh", "-c", "trap 'echo hup >> {mark}' HUP; while :; do sleep 0.05; done"]
    """})
    a.wait_state("web", "running")
    result = run_cli(a, "signal", "web", "HUP")
    assert result.returncode == 0 and "SIGHUP" in result.stdout, result.stderr
    wait_for(lambda: mark.exists() and mark.read_text().count("hup") == 1, 5, what="the trap")
    result = run_cli(a, "signal", "web.1", "SIGHUP", "--group")
    assert result.returncode == 0, result.stderr
    wait_for(lambda: mark.read_text().count("hup") == 2, 5, what="the trap again")
    assert run_cli(a, "signal", "web", "NOSUCH").returncode == 1
    assert run_cli(a, "signal", "nothing", "HUP").returncode == 1


def test_scale_up_and_down_and_a_reload_that_changes_the_files_goes_back(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2)})
    a.wait_state("web", "running")
    first = a.pids("web")
    result = run_cli(a, "scale", "web", "4")
    assert result.returncode == 0 and "4 instances (files: 2)" in result.stdout, result.stderr
    data = a.wait_status(lambda s: len(s["units"]["web"]["instances"]) == 4 and
                         s["units"]["web"]["state"] == "running", what="4 instances")
    assert data["units"]["web"]["scaled"] == {"instances": 4, "in_files": 2}
    assert a.pids("web")[:2] == first  # the others untouched
    table = run_cli(a, "status")
    assert "scaled to 4 (files: 2)" in table.stdout

    assert run_cli(a, "scale", "web", "1").returncode == 0
    a.wait_status(lambda s: len(s["units"]["web"]["instances"]) == 1, what="1 instance")
    assert a.pids("web") == first[:1]

    (a.units_dir / "web.yaml").write_text(web_unit(port, "v2", instances=3))
    assert run_cli(a, "reload").returncode == 0
    data = a.wait_status(lambda s: len(s["units"]["web"]["instances"]) == 3, what="the files' 3")
    assert "scaled" not in data["units"]["web"]


def test_start_resets_the_start_limit_of_a_failed_unit_and_a_failed_start_says_so(activator, tmp_path):
    flag = tmp_path / "fail"
    flag.write_text("")
    program = (f"import os, sys, time; os.path.exists({str(flag)!r}) and sys.exit(1); "
               "from systemd import daemon; daemon.notify('READY=1'); time.sleep(1e6)")
    a = activator({"flaky": f"""
        exec: [{PYTHON}, -c, "{program}"]
        type: notify
        restart_sec: 0.01
        start_limit_burst: 2
    """})
    a.wait_state("flaky", "failed")
    flag.unlink()
    result = run_cli(a, "start", "flaky")
    assert result.returncode == 0, result.stderr
    assert a.status()["units"]["flaky"]["state"] == "running"
    flag.write_text("")
    result = run_cli(a, "restart", "flaky")  # it fails again, until its start limit: said so
    assert result.returncode == 1 and "failed to start again: flaky" in result.stderr, result


def test_unknown_units_commands_and_bad_command_lines(activator):
    a = activator({"web": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    for args in (["stop", "nothing"], ["start", "web.9"], ["restart", "x.1"], ["scale", "web", "0"]):
        result = run_cli(a, *args)
        assert result.returncode == 1 and result.stderr.strip(), (args, result)
    for args in (["stop"], ["scale", "web"], ["scale", "web", "many"], ["logs", "-n"]):
        assert run_cli(a, *args).returncode == 2, args
    result = run_cli(a, "status", "nothing")
    assert result.returncode == 1 and "no unit named nothing" in result.stderr
    result = run_cli(a, "status", "web", "--json")
    assert result.returncode == 0 and list(json.loads(result.stdout)["units"]) == ["web"]


def test_commands_without_a_running_activator_exit_3(tmp_path):
    import subprocess
    env = {**os.environ, "ACTIVATOR_RUNTIME_DIR": str(tmp_path)}
    for args in (["stop", "web"], ["start", "web"], ["restart", "web"], ["signal", "web", "HUP"],
                 ["scale", "web", "2"], ["logs"], ["status"], ["reload"]):
        result = subprocess.run([PYTHON, "-m", "activator", *args], capture_output=True, text=True, env=env)
        assert result.returncode == NOT_RUNNING, (args, result)


def test_logs_shows_the_last_lines_and_follows(activator):
    a = activator({"talk": """
        exec: ["sh", "-c", "for i in 1 2 3 4 5; do echo line $i; done; echo oops >&2; exec sleep infinity"]
    """, "quiet": "exec: [sleep, infinity]\nlog_buffer_lines: 0",
                   "ticker": "exec: [sh, -c, 'i=0; while :; do i=$$((i+1)); echo tick $$i; sleep 0.1; done']"})
    a.wait_log("talk | oops")
    result = run_cli(a, "logs", "talk", "-n", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["line 4", "line 5", "oops"]
    assert "stdout" in lines[0] and "stderr" in lines[2] and lines[0].split()[0].endswith("Z")
    assert run_cli(a, "logs", "quiet").stdout == ""

    import subprocess
    prefix = ["nsenter", "--target", str(a.pid), "--pid", "--mount"]
    follower = subprocess.Popen([*prefix, PYTHON, "-m", "activator", "logs", "ticker", "-n", "0", "-f"],
                                stdout=subprocess.PIPE, text=True, env=a.env)
    try:
        seen = []
        wait_for(lambda: seen.append(follower.stdout.readline()) or len(seen) >= 3, 10, what="followed")
        assert all("ticker" in line and "tick" in line for line in seen), seen
        numbers = [int(line.rsplit(" ", 1)[1]) for line in seen]
        assert numbers == sorted(numbers) and len(set(numbers)) == 3  # new lines, in order
    finally:
        follower.kill()
        follower.wait()
