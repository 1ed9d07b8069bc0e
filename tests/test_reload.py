"""Reload (SIGHUP), rolling restart (SIGUSR2), the status table (SIGUSR1), `status` and `reload`."""

import json
import os
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import (PYTHON, descendants_of, identities, listening_tcp_ports, open_fds, still_there, stays,
                     wait_for, write_units)

WORKER = Path(__file__).parent / "programs" / "http_worker.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, timeout: float = 5.0) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := c.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200"), data
    return body.decode().strip()


def web_unit(port: int, version: str, instances: int = 4, extra: str = "", env: str = "") -> str:
    return f"""
        exec: [{PYTHON}, {WORKER}]
        instances: {instances}
        sockets:
          http: {{listen: "tcp://127.0.0.1:{port}"}}
        environment:
          VERSION: "{version}"
          {env}
        {extra}
    """


class ClientLoop:
    """Requests in a loop, a new connection each, from a thread: failures and latencies."""

    def __init__(self, port: int):
        self.port = port
        self.failures: list[str] = []
        self.samples: list[tuple[float, float]] = []  # (when, seconds)
        self.bodies: list[str] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                self.bodies.append(get(self.port))
                self.samples.append((started, time.monotonic() - started))
            except (OSError, AssertionError) as e:
                self.failures.append(repr(e))

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: len(self.samples) >= 5, 10, what="first responses")
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(10)


def percentile(values, p):
    values = sorted(values)
    return values[min(int(len(values) * p), len(values) - 1)] if values else float("nan")


def reload_and_wait(a, previous: int | None = None) -> dict:
    record = a.status()["reload"]
    done = record["completed"] if previous is None else previous
    a.signal(signal.SIGHUP)
    return a.wait_status(lambda s: s["reload"]["completed"] > done, 30, what="reload finished")["reload"]


def run_cli(a, *args, timeout=60):
    return a.run_inside([PYTHON, "-m", "activator", *args], timeout=timeout)


# ---------------------------------------------------------------------- the diff

def test_reload_adds_removes_and_changes_units_and_keeps_unchanged_pids(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2), "keep": "exec: [sleep, infinity]",
                   "gone": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    keep_pid = a.pids("keep")
    gone = identities(a.host_pids("gone"))
    assert len(gone) == 1
    write_units(a.units_dir, {"web": web_unit(port, "v2", instances=2), "new": "exec: [sleep, infinity]"})
    (a.units_dir / "gone.yaml").unlink()
    record = reload_and_wait(a)
    assert record["outcome"] == "applied"
    data = a.wait_state("new", "running")
    assert "gone" not in data["units"]
    assert a.pids("keep") == keep_pid
    assert data["generation"] == 2
    versions = {get(port).split()[1] for _ in range(6)}
    assert versions == {"v2"}
    wait_for(lambda: not still_there(gone), 10, what="the removed unit's process gone")


def test_a_reload_with_a_broken_file_changes_nothing_and_a_fixed_one_applies(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2), "keep": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    pids = {u: a.pids(u) for u in ("web", "keep")}
    socket_inode = open_fds(a.host_pids("web")[0])[3]
    write_units(a.units_dir, {"web": web_unit(port, "v2", instances=2),
                              "keep": "exec: [sleep, infinity]\nrestart: sometimes\n"})
    record = reload_and_wait(a)
    assert record["outcome"] == "refused"
    assert any("keep.yaml:2: unit keep: restart:" in e for e in record["errors"])
    assert "keep.yaml:2: unit keep: restart:" in a.output()
    data = a.status()
    assert data["generation"] == 1
    assert {u: a.pids(u) for u in ("web", "keep")} == pids
    assert open_fds(a.host_pids("web")[0])[3] == socket_inode
    assert {get(port).split()[1] for _ in range(4)} == {"v1"}

    write_units(a.units_dir, {"keep": "exec: [sleep, infinity]\nrestart: always\n"})
    record = reload_and_wait(a)
    assert record["outcome"] == "applied"
    assert a.status()["generation"] == 2
    assert a.pids("keep") != pids["keep"]  # a changed unit is restarted, whatever the key
    assert {get(port).split()[1] for _ in range(6)} == {"v2"}


def test_zero_failed_requests_during_20_reloads_of_a_4_instance_service(activator):
    port = free_port()
    # notify: a replacement counts as ready once it serves, not merely once it is forked.
    a = activator({"web": web_unit(port, "v0", extra="type: notify")})
    a.wait_state("web", "running")
    with ClientLoop(port) as client:
        time.sleep(1.0)  # steady state
        steady_until = time.monotonic()
        for version in range(1, 21):
            write_units(a.units_dir, {"web": web_unit(port, f"v{version}", extra="type: notify")})
            assert reload_and_wait(a)["outcome"] == "applied"
        reloads_until = time.monotonic()
    assert client.failures == []
    steady = [s for t, s in client.samples if t < steady_until]
    during = [s for t, s in client.samples if steady_until <= t < reloads_until]
    print(f"\nrequests: {len(client.samples)}; steady p50 {percentile(steady, .5) * 1000:.2f} ms "
          f"p99 {percentile(steady, .99) * 1000:.2f} ms; during reloads p50 "
          f"{percentile(during, .5) * 1000:.2f} ms p99 {percentile(during, .99) * 1000:.2f} ms")
    assert {get(port).split()[1] for _ in range(8)} == {"v20"}
    assert len(a.pids("web")) == 4
    assert not a.zombies()


def test_a_burst_of_500_sighups_coalesces_and_converges(activator):
    port = free_port()
    a = activator({"web": f"""
        exec: [{PYTHON}, {WORKER}]
        instances: 3
        type: notify
        sockets:
          http: {{listen: "tcp://127.0.0.1:{port}"}}
        environment:
          VERSION: v1
          READY_DELAY: "0.3"
    """, "other": "exec: [sleep, infinity]"})
    a.wait_state("web", "running")
    other = a.pids("other")
    write_units(a.units_dir, {"web": f"""
        exec: [{PYTHON}, {WORKER}]
        instances: 3
        type: notify
        sockets:
          http: {{listen: "tcp://127.0.0.1:{port}"}}
        environment:
          VERSION: v2
          READY_DELAY: "0.3"
    """})
    a.signal(signal.SIGHUP)
    # The reload rolls 3 instances, each taking 0.3 s to be ready: the rest of the burst
    # arrives while it runs, and must make exactly one more reload after it.
    a.wait_status(lambda s: s["reload"]["requested"] == 1 and s["reload"]["completed"] == 0, 10,
                  what="the first reload under way")
    for _ in range(499):
        a.signal(signal.SIGHUP)
    data = a.wait_status(lambda s: s["reload"]["completed"] >= 2 and s["reload"]["completed"]
                         == s["reload"]["requested"], 30, what="reloads done")
    # Nothing further may be queued: it stays converged for a whole observation window.
    stays(lambda: (a.status()["reload"]["requested"], a.status()["reload"]["completed"]) == (2, 2), 1.0,
          "a third reload after the burst")
    data = a.status()
    assert data["generation"] == 3
    assert len(a.pids("web")) == 3 and len(set(a.pids("web"))) == 3
    assert a.pids("other") == other
    assert {get(port).split()[1] for _ in range(6)} == {"v2"}
    assert not a.zombies()
    workers = [p for p in descendants_of(a.pid) if b"http_worker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(workers) == 3


def test_reload_signal_reaches_an_unchanged_unit(activator, tmp_path):
    port = free_port()
    hups = tmp_path / "hups"
    a = activator({"web": web_unit(port, "v1", instances=2, extra="reload_signal: SIGHUP\n        type: notify",
                                   env=f"HUP_FILE: {hups}")})  # notify: ready once its handlers are in place
    a.wait_state("web", "running")
    pids = a.pids("web")
    reload_and_wait(a)
    wait_for(lambda: hups.exists() and len(hups.read_text().split()) == 2, 5, what="SIGHUP in both")
    assert a.pids("web") == pids


def test_sigusr2_rolls_every_unit(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=3), "single": "exec: [sleep, infinity]",
                   "job": "exec: [true]\ntype: oneshot"})
    a.wait_state("web", "running")
    a.wait_state("job", "exited")
    before = {u: a.pids(u) for u in ("web", "single")}
    with ClientLoop(port) as client:
        a.signal(signal.SIGUSR2)
        a.wait_status(lambda s: s["reload"]["completed"] == 1, 30, what="rolling restart")
    assert client.failures == []
    after = {u: a.pids(u) for u in ("web", "single")}
    assert not set(after["web"]) & set(before["web"]) and len(after["web"]) == 3
    assert after["single"] != before["single"]
    assert a.status()["units"]["job"]["state"] == "exited"
    assert a.status()["generation"] == 1  # no new model


def test_sigusr1_writes_the_status_table_to_stderr(activator):
    a = activator({"web": "exec: [sleep, infinity]\ninstances: 2", "job": "exec: [true]\ntype: oneshot"})
    a.wait_state("web", "running")
    a.signal(signal.SIGUSR1)
    text = wait_for(lambda: "generation" in a.stderr() and a.stderr(), 5, what="the table")
    table = text[text.index("UNIT"):]
    assert "web" in table and "job" in table and "exited" in table
    assert all(len(line) <= 100 for line in table.splitlines() if not line.startswith("activator:"))
    rows = [line.split() for line in table.splitlines() if line.startswith("  .")]
    assert len(rows) == 2 and all(row[5] != "-" and row[6].endswith(("K", "M")) for row in rows)  # CPU%, MEM


def test_instances_change_scales_without_restarting_the_others(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2)})
    a.wait_state("web", "running")
    two = a.pids("web")
    write_units(a.units_dir, {"web": web_unit(port, "v1", instances=4)})
    assert reload_and_wait(a)["outcome"] == "applied"
    a.wait_status(lambda s: len([i for i in s["units"]["web"]["instances"] if i["state"] == "running"]) == 4)
    assert a.pids("web")[:2] == two
    write_units(a.units_dir, {"web": web_unit(port, "v1", instances=1)})
    assert reload_and_wait(a)["outcome"] == "applied"
    data = a.wait_status(lambda s: len(s["units"]["web"]["instances"]) == 1)
    assert a.pids("web") == two[:1]
    wait_for(lambda: len([p for p in descendants_of(a.pid)
                          if b"http_worker" in Path(f"/proc/{p}/cmdline").read_bytes()]) == 1, 10)


def test_a_failing_replacement_stops_the_roll_and_keeps_old_instances(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=3, extra="type: notify")})
    a.wait_state("web", "running")
    old = a.pids("web")
    write_units(a.units_dir, {"web": web_unit(port, "v2", instances=3, extra="type: notify").replace(
        f"exec: [{PYTHON}, {WORKER}]", "exec: [sh, -c, 'exit 3']")})
    with ClientLoop(port) as client:
        result = run_cli(a, "reload")
    assert result.returncode != 0
    assert "rolling restart stopped" in result.stderr + a.output()
    assert client.failures == []
    assert a.pids("web") == old
    assert {get(port).split()[1] for _ in range(4)} == {"v1"}


def test_changed_socket_address_is_bound_before_the_old_one_closes(activator):
    port, new_port = free_port(), free_port()
    a = activator({"web": web_unit(port, "v1", instances=2)})
    a.wait_state("web", "running")
    with PortWatch(port, new_port) as watch:
        write_units(a.units_dir, {"web": web_unit(new_port, "v2", instances=2)})
        assert reload_and_wait(a)["outcome"] == "applied"
        assert get(new_port).split()[1] == "v2"
        wait_for(lambda: _refused(port), 10, what="the old port closed")
    # The order, watched all along: (old, new) went (listening, not yet), then (listening,
    # listening), then (closed, listening); never (closed, not yet).
    assert (False, False) not in watch.samples, "a moment with neither port listening"
    assert (True, True) in watch.samples, "the new port never listened while the old one did"
    assert watch.samples[0] == (True, False) and watch.samples[-1] == (False, True)
    assert a.status()["units"]["web"]["sockets"][0]["listen"] == f"tcp://127.0.0.1:{new_port}"


class PortWatch:
    """From a thread, which of two ports of 127.0.0.1 have a listening socket (asked of the
    kernel: no connection is taken from the services): the distinct (first, second) pairs
    seen, in order."""

    def __init__(self, first: int, second: int):
        self.ports = (first, second)
        self.samples: list[tuple[bool, bool]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stopping.is_set():
            listening = listening_tcp_ports()
            sample = tuple(port in listening for port in self.ports)
            if not self.samples or self.samples[-1] != sample:
                self.samples.append(sample)
            time.sleep(0.002)

    def __enter__(self):
        self.thread.start()
        wait_for(lambda: self.samples, 10, what="the first sample of both ports")
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(10)


def _refused(port):
    try:
        get(port, timeout=1)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    return False


def test_socket_options_change_in_place_keeps_the_socket(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2)})
    a.wait_state("web", "running")
    inode = open_fds(a.host_pids("web")[0])[3]
    pids = a.pids("web")
    write_units(a.units_dir, {"web": web_unit(port, "v1", instances=2).replace(
        f'listen: "tcp://127.0.0.1:{port}"', f'listen: "tcp://127.0.0.1:{port}", backlog: 16, nodelay: true')})
    assert reload_and_wait(a)["outcome"] == "applied"
    assert "options adjusted in place" in a.output()
    assert not set(a.pids("web")) & set(pids)  # the unit changed: restarted, on the same socket
    assert all(open_fds(pid)[3] == inode for pid in a.host_pids("web"))


def test_a_bind_failure_refuses_the_reload(activator):
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    a = activator({"web": web_unit(port, "v1", instances=1)})
    a.wait_state("web", "running")
    pids = a.pids("web")
    write_units(a.units_dir, {"extra": f"""
        exec: [sleep, infinity]
        sockets:
          other: {{listen: "tcp://127.0.0.1:{taken.getsockname()[1]}"}}
    """})
    record = reload_and_wait(a)
    assert record["outcome"] == "refused"
    assert "Address already in use" in " ".join(record["errors"])
    assert "extra" not in a.status()["units"] and a.pids("web") == pids
    taken.close()


# ---------------------------------------------------------------------- status and reload commands

def test_status_json_schema(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2), "job": "exec: [true]\ntype: oneshot"})
    a.wait_state("web", "running")
    a.wait_state("job", "exited")
    result = run_cli(a, "status", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert isinstance(data["pid"], int) and data["version"] and data["started"].endswith("Z")
    assert data["generation"] == 1
    web = data["units"]["web"]
    assert web["state"] == "running" and web["type"] == "simple" and web["description"] == ""
    assert web["sockets"] == [{"name": "http", "listen": f"tcp://127.0.0.1:{port}", "fd": 3}]
    for number, instance in enumerate(web["instances"], start=1):
        assert set(instance) >= {"instance", "pid", "state", "started", "restarts", "exit_status", "status",
                                 "errno", "cpu_percent", "rss_bytes"}
        assert instance["instance"] == number and instance["state"] == "running"
        assert instance["rss_bytes"] > 1_000_000 and instance["cpu_percent"] >= 0
    assert data["units"]["job"]["instances"][0]["exit_status"] == 0


def test_status_table_is_whole_off_a_terminal_and_exit_code_follows_health(activator):
    a = activator({"good": "exec: [sleep, infinity]\ndescription: " + "x" * 200,
                   "flaky": "exec: [sh, -c, 'exit 1']\nrestart: no"})
    a.wait_state("flaky", "failed")
    result = run_cli(a, "status")
    assert result.returncode == 1
    assert "failed" in result.stdout and "good" in result.stdout
    assert "x" * 200 in result.stdout  # a pipe is no terminal: nothing is cut

    b = activator({"good": "exec: [sleep, infinity]", "job": "exec: [true]\ntype: oneshot"})
    b.wait_state("job", "exited")
    b.wait_state("good", "running")
    assert run_cli(b, "status").returncode == 0


def test_status_exit_code_counts_eager_units_only(activator):
    """An on-demand unit that failed does not make the stack unhealthy: SPEC counts eager
    units only."""
    port = free_port()
    a = activator({"good": "exec: [sleep, infinity]",
                   "lazy": f"""
                       exec: [sh, -c, 'exit 1']
                       start: on-demand
                       restart: no
                       sockets: {{http: {{listen: "tcp://127.0.0.1:{port}"}}}}
                   """})
    a.wait_state("lazy", "waiting")
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    a.wait_state("lazy", "failed")
    a.wait_state("good", "running")
    assert run_cli(a, "status").returncode == 0


def test_status_and_reload_from_outside_activators_pid_namespace(activator):
    """Run from the host, pid 1 in status.json is the host's init: the commands find activator
    by the notify socket it holds, and the services' pids through NSpid."""
    a = activator({"one": "exec: [sleep, infinity]"})
    a.wait_state("one", "running")
    host = subprocess.run([PYTHON, "-m", "activator", "status", "--json"], capture_output=True,
                          text=True, env=a.env, timeout=60)
    assert host.returncode == 0, host.stderr
    instance = json.loads(host.stdout)["units"]["one"]["instances"][0]
    assert instance["pid"] != a.host_pids("one")[0]  # the pid as activator sees it
    assert instance["rss_bytes"] > 0  # measured on the right process all the same
    write_units(a.units_dir, {"two": "exec: [sleep, infinity]"})
    result = subprocess.run([PYTHON, "-m", "activator", "reload"], capture_output=True, text=True,
                            env=a.env, timeout=60)
    assert result.returncode == 0 and "applied" in result.stdout, result.stderr
    a.wait_state("two", "running")
    left = {name: (a.runtime / name).read_bytes() for name in ("status.json", "activator.pid")}
    assert a.stop() == 0
    assert not any((a.runtime / name).exists() for name in left)  # a clean exit removes them
    gone = subprocess.run([PYTHON, "-m", "activator", "status"], capture_output=True, text=True,
                          env=a.env, timeout=60)
    assert gone.returncode == 3 and "no running activator" in gone.stderr, gone
    for name, data in left.items():  # as an activator that was killed would leave them
        (a.runtime / name).write_bytes(data)
    # pid 1 of status.json is now the host's init, not an activator: stale, from the host too
    for command in ("status", "reload"):
        stale = subprocess.run([PYTHON, "-m", "activator", command], capture_output=True, text=True,
                               env=a.env, timeout=60)
        assert stale.returncode == 3 and "not running here" in stale.stderr, stale  # SPEC §8


def test_status_without_a_running_activator_fails_with_3(tmp_path):
    result = subprocess.run([PYTHON, "-m", "activator", "status"], capture_output=True, text=True,
                            env={**os.environ, "ACTIVATOR_RUNTIME_DIR": str(tmp_path)})
    assert result.returncode == 3  # SPEC §8: no activator is running there
    assert "no running activator" in result.stderr


def test_reload_command_reports_the_outcome(activator):
    a = activator({"one": "exec: [sleep, infinity]"})
    a.wait_state("one", "running")
    write_units(a.units_dir, {"two": "exec: [sleep, infinity]"})
    result = run_cli(a, "reload")
    assert result.returncode == 0 and "applied" in result.stdout
    a.wait_state("two", "running")
    write_units(a.units_dir, {"three": "exec: [sleep, infinity]\ntype: bogus"})
    result = run_cli(a, "reload")
    assert result.returncode == 1
    assert "three.yaml:2: unit three: type:" in result.stderr


def test_renaming_a_socket_keeps_the_open_socket(activator):
    port = free_port()
    a = activator({"web": web_unit(port, "v1", instances=2)})
    a.wait_state("web", "running")
    renamed = web_unit(port, "v1", instances=2).replace("http: {listen", "www: {listen")
    write_units(a.units_dir, {"web": renamed})
    with ClientLoop(port) as client:
        record = reload_and_wait(a)
    assert record["outcome"] == "applied", record
    assert client.failures == []
    assert a.status()["units"]["web"]["sockets"][0]["name"] == "www"
    assert get(port).split()[1] == "v1"


def test_two_sockets_that_swap_addresses_keep_their_open_sockets(activator):
    """x on port 1 and y on port 2 become x on port 2 and y on port 1: two renames of open
    sockets, nothing to bind (binding either anew would find its port in use)."""
    one, two = free_port(), free_port()

    def pair(x_port, y_port):
        return f"""
            exec: [sleep, infinity]
            sockets:
              x: {{listen: "tcp://127.0.0.1:{x_port}"}}
              y: {{listen: "tcp://127.0.0.1:{y_port}"}}
        """
    a = activator({"pair": pair(one, two)})
    a.wait_state("pair", "running")
    [before] = a.host_pids("pair")
    inodes = open_fds(before)
    write_units(a.units_dir, {"pair": pair(two, one)})
    record = reload_and_wait(a)
    assert record["outcome"] == "applied", record
    wait_for(lambda: a.host_pids("pair") not in ([], [before]), 15, what="pair restarted")
    data = a.wait_state("pair", "running")
    assert [(s["name"], s["listen"]) for s in data["units"]["pair"]["sockets"]] == [
        ("x", f"tcp://127.0.0.1:{two}"), ("y", f"tcp://127.0.0.1:{one}")]
    [after] = a.host_pids("pair")
    assert after != before  # its sockets changed: restarted
    assert (open_fds(after)[3], open_fds(after)[4]) == (inodes[4], inodes[3])  # the same open sockets


def test_a_reload_that_changes_a_unit_which_gave_up_starts_it_again(activator, tmp_path):
    count = tmp_path / "count"
    a = activator({"crash": f"""
        exec: [sh, -c, "echo x >> {count}; exit 1"]
        restart_sec: 0.05
        start_limit_burst: 2
    """})
    a.wait_state("crash", "failed")
    assert len(count.read_text().split()) == 2
    write_units(a.units_dir, {"crash": f"""
        exec: [sh, -c, "echo x >> {count}; exit 1"]
        restart_sec: 0.05
        start_limit_burst: 3
    """})  # a change of activator's settings only: still a change
    assert reload_and_wait(a)["outcome"] == "applied"
    wait_for(lambda: len(count.read_text().split()) == 5, 10, what="three more starts")
    a.wait_state("crash", "failed")
