"""Socket kinds and options (SPEC §2), binding before anything starts and its errors, and
sockets activator inherited itself (`inherit:NAME`). activator runs as PID 1 unless a test
says otherwise; every socket is checked from a real peer or from inside the service."""

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from harness import PYTHON, TOOLS, descendants_of, wait_for
from sock_helpers import (CLIENT, PY, connect, inet_address, port_of, read_all,
                          needs_ipv6, reports, request, serve, udp_request, wait_reports, wait_state)

LAUNCHER = Path(__file__).resolve().parent / "programs" / "sock_launcher.py"


def unix_request(path: str) -> dict:
    with connect(path, socket.AF_UNIX) as sock:
        return json.loads(read_all(sock))


# ---------------------------------------------------------------------- unix sockets

def test_unix_socket_mode_owner_and_group_parent_created_removed_at_shutdown(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    path = tmp_path / "new" / "dir" / "app.sock"  # the parent does not exist yet
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          api:
            listen: "unix:{path}"
            mode: "0640"
            user: nobody
            group: daemon
    """})
    [report] = wait_reports(out, 1)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (65534, 1)  # nobody, daemon
    assert unix_request(str(path))["pid"] == report["pid"]
    assert a.stop() == 0
    assert not path.exists(), "the socket file was left behind at shutdown"


def test_unix_socket_default_mode_is_0666_and_user_alone_sets_its_group(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    path = tmp_path / "app.sock"
    activator({"app": f"""
        exec: {serve(out)}
        sockets:
          a: {{listen: "unix:{path}"}}
          b: {{listen: "unix:{path}.b", user: nobody}}
    """})
    wait_reports(out, 1)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666
    st = os.stat(f"{path}.b")
    assert (st.st_uid, st.st_gid) == (65534, 65534)


def test_a_stale_socket_file_from_an_earlier_run_is_replaced(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    path = tmp_path / "app.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, then closed without unlinking: a leftover file
    stale.close()
    with pytest.raises(ConnectionRefusedError):  # nobody listens on it
        connect(str(path), socket.AF_UNIX)
    activator({"app": f"""
        exec: {serve(out)}
        sockets:
          api: {{listen: "unix:{path}"}}
    """})
    [report] = wait_reports(out, 1)
    assert unix_request(str(path))["pid"] == report["pid"]


def test_a_socket_path_someone_still_listens_on_is_refused(activator, tmp_path):
    path = tmp_path / "busy.sock"
    busy = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    busy.bind(str(path))
    busy.listen()
    with busy:
        a = activator({"app": f"""
            exec: [sleep, infinity]
            sockets:
              api: {{listen: "unix:{path}"}}
        """}, wait_ready=False)
        assert a.wait_exit() == 2
        assert "api" in a.output() and str(path) in a.output()
        # Still the other process's socket.
        with connect(str(path), socket.AF_UNIX):
            pass


def test_a_non_socket_file_at_the_path_is_refused_with_exit_2(activator, tmp_path):
    path = tmp_path / "app.sock"
    path.write_text("precious data\n")
    marker = tmp_path / "started"
    a = activator({"app": f"""
        exec: [touch, "{marker}"]
        type: oneshot
        sockets:
          api: {{listen: "unix:{path}"}}
    """}, wait_ready=False)
    assert a.wait_exit() == 2
    output = a.output()
    assert f"unit app: socket api: cannot bind unix:{path}" in output
    assert "is not a socket" in output
    assert path.read_text() == "precious data\n"  # untouched
    assert not marker.exists()


def test_abstract_unix_socket(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    name = f"activator-test-{os.getpid()}-{tmp_path.name}"
    activator({"app": f"""
        exec: {serve(out)}
        sockets:
          api: {{listen: "unix:@{name}"}}
    """})
    [report] = wait_reports(out, 1)
    assert report["fds"]["3"]["family"] == "AF_UNIX"
    assert unix_request("\0" + name)["pid"] == report["pid"]
    assert not Path(name).exists() and not Path("/" + name).exists()


# ---------------------------------------------------------------------- inet

def test_udp_socket(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          dgram: {{listen: "udp://127.0.0.1:0"}}
    """})
    [report] = wait_reports(out, 1)
    assert report["fds"]["3"]["type"] == "SOCK_DGRAM"
    answer = udp_request(inet_address(a, "app"), b"ping")
    assert answer["data"] == "ping" and answer["pid"] == report["pid"]


@needs_ipv6
def test_ipv6_address(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          v6: {{listen: "tcp://[::1]:0"}}
          v6u: {{listen: "udp://[::1]:0"}}
    """})
    [report] = wait_reports(out, 1)
    assert report["fds"]["3"]["family"] == "AF_INET6"
    port = port_of(a, "app")
    assert a.status()["units"]["app"]["sockets"][0]["listen"] == f"tcp://[::1]:{port}"
    assert request(("::1", port), socket.AF_INET6)["pid"] == report["pid"]
    with pytest.raises(ConnectionRefusedError):
        request(("127.0.0.1", port))
    assert udp_request(("::1", port_of(a, "app", 1)), b"six", socket.AF_INET6)["data"] == "six"


@needs_ipv6
def test_bare_port_is_one_dual_stack_socket(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          http: {{listen: 0}}
    """})
    [report] = wait_reports(out, 1)
    assert report["listen_fds"] == [3]  # one fd for both families
    assert report["fds"]["3"]["family"] == "AF_INET6"
    assert report["fds"]["3"]["ipv6_only"] == 0
    host, port = inet_address(a, "app")
    assert host == "*"
    v4 = request(("127.0.0.1", port))
    v6 = request(("::1", port), socket.AF_INET6)
    assert v4["pid"] == v6["pid"] == report["pid"]
    assert v4["peer"][0] == "::ffff:127.0.0.1"


@needs_ipv6
def test_ipv6_only_bare_port_is_not_reachable_over_ipv4(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          http: {{listen: 0, ipv6_only: true}}
    """})
    [report] = wait_reports(out, 1)
    assert report["fds"]["3"]["ipv6_only"] == 1
    port = port_of(a, "app")
    assert request(("::1", port), socket.AF_INET6)["pid"] == report["pid"]
    with pytest.raises(ConnectionRefusedError):
        request(("127.0.0.1", port))


def _listen_backlog(port: int) -> int:
    """The backlog of the TCP listener on `port`, as the kernel reports it (ss: Send-Q)."""
    lines = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                           check=True).stdout.split("\n")
    fields = [line.split() for line in lines if line.strip()]
    assert len(fields) == 1, lines
    return int(fields[0][2])


def test_socket_options_backlog_reuse_port_nodelay_keepalive(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          plain: {{listen: "tcp://127.0.0.1:0"}}
          tuned:
            listen: "tcp://127.0.0.1:0"
            backlog: 17
            reuse_port: true
            nodelay: true
            keepalive: true
          dgram: {{listen: "udp://127.0.0.1:0", reuse_port: true}}
    """})
    [report] = wait_reports(out, 1)
    plain, tuned, dgram = report["fds"]["3"], report["fds"]["4"], report["fds"]["5"]
    assert (plain["reuse_port"], plain["nodelay"], plain["keepalive"]) == (0, 0, 0)
    assert tuned["reuse_port"] == 1 and tuned["nodelay"] != 0 and tuned["keepalive"] == 1
    assert dgram["reuse_port"] == 1
    assert _listen_backlog(port_of(a, "app", 1)) == 17
    assert _listen_backlog(port_of(a, "app", 0)) == min(4096, int(Path("/proc/sys/net/core/somaxconn").read_text()))
    # reuse_port really lets another socket bind the same port beside it.
    other = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", port_of(a, "app", 1)))


def test_fifo_delivers_a_writers_data_and_is_removed_at_shutdown(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    path = tmp_path / "fifos" / "in.fifo"
    a = activator({"app": f"""
        exec: {serve(out)}
        sockets:
          input: {{listen: "fifo:{path}", mode: "0620"}}
    """})
    [report] = wait_reports(out, 1)
    assert report["fds"]["3"]["kind"] == "fifo"
    assert report["fds"]["3"]["nonblocking"] is False
    st = os.stat(path)
    assert stat.S_ISFIFO(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o620
    for line in (b"first line\n", b"second line\n"):
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)  # a reader is there: no ENXIO
        try:
            os.write(fd, line)
        finally:
            os.close(fd)
    log = out / "fifo.log"
    wait_for(lambda: log.exists() and log.read_bytes() == b"first line\nsecond line\n", 10,
             what="the fifo data at the service")
    assert a.stop() == 0
    assert not path.exists()


# ---------------------------------------------------------------------- bound before starting

def test_a_service_connects_at_startup_to_a_unit_that_starts_later(activator, tmp_path):
    """Sockets are bound before any service starts: `client` runs first (server is ordered
    after it, and client is a oneshot, so server starts only once client has exited) and
    connects to server's socket once, without retrying; the connection waits in the backlog."""
    out = tmp_path / "reports"
    out.mkdir()
    result = tmp_path / "client.json"
    path = tmp_path / "server.sock"
    a = activator({
        "client": f"""
            exec: [{PY}, "{CLIENT}", "{result}", "{path}"]
            type: oneshot
            restart: no
        """,
        "server": f"""
            exec: {serve(out, "--read")}
            after: [client]
            sockets:
              http: {{listen: "unix:{path}"}}
        """})
    a.wait_state("client", "exited")
    a.wait_state("server", "running")
    outcome = json.loads(result.read_text())
    assert outcome["connected"], outcome
    [report] = wait_reports(out, 1)
    received = out / "received.log"
    wait_for(lambda: received.exists() and received.read_text(), 10, what="the client's request")
    assert received.read_text() == f"hello from {outcome['pid']}\n"


def test_a_service_connects_at_startup_to_an_on_demand_unit(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    result = tmp_path / "client.json"
    a = activator({
        "client": f"""
            exec: [{PY}, "{CLIENT}", "{result}", "{tmp_path}/lazy.sock", --wait-reply]
            type: oneshot
            restart: no
        """,
        "lazy": f"""
            exec: {serve(out, "--read")}
            start: on-demand
            sockets:
              http: {{listen: "unix:{tmp_path}/lazy.sock"}}
        """})
    wait_state(a, "client", "exited", timeout=30, watch=("lazy",))
    outcome = json.loads(result.read_text())
    [report] = reports(out)
    assert outcome["connected"] and json.loads(outcome["reply"])["pid"] == report["pid"]


def test_a_bind_failure_stops_the_boot_with_exit_2_and_starts_nothing(activator, tmp_path):
    marker = tmp_path / "started"
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    free_path = tmp_path / "free.sock"
    with taken:
        a = activator({
            "early": f"""
                exec: [touch, "{marker}"]
                sockets:
                  fine: {{listen: "unix:{free_path}"}}
            """,
            "web": f"""
                exec: [touch, "{marker}"]
                sockets:
                  http: {{listen: "tcp://127.0.0.1:{port}"}}
            """}, wait_ready=False)
        assert a.wait_exit() == 2
    output = a.output()
    lines = [line for line in output.splitlines() if f"127.0.0.1:{port}" in line]
    assert lines, output
    assert "unit web" in lines[0] and "socket http" in lines[0]
    assert "Address already in use" in lines[0]
    assert not marker.exists()
    assert not free_path.exists(), "a socket bound before the failure was left behind"


# ---------------------------------------------------------------------- inherit:

def test_inherit_fans_out_sockets_activator_received_as_pid1(activator, tmp_path):
    """As podman does: activator is PID 1 with LISTEN_PID=1 and two sockets on fds 3 and 4;
    each goes to the unit that names it, in its own fd 3."""
    out = tmp_path / "reports"
    out.mkdir()
    web = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    web.bind(("127.0.0.1", 0))
    web.listen()
    admin = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    admin.bind(str(tmp_path / "admin.sock"))
    admin.listen()
    with web, admin:
        a = activator({
            "front": f"""
                exec: {serve(out, "--instance", "front")}
                sockets:
                  http: {{listen: "inherit:web"}}
            """,
            "back": f"""
                exec: {serve(out, "--instance", "back")}
                sockets:
                  ctl: {{listen: "inherit:admin", name: control}}
            """},
            prefix=[PYTHON, str(LAUNCHER), "--pid", "1", "--names", "web:admin",
                    "--fd", str(web.fileno()), "--fd", str(admin.fileno()), "--"],
            pass_fds=(web.fileno(), admin.fileno()))
        found = {r["instance"]: r for r in wait_reports(out, 2)}
        port = web.getsockname()[1]
    # Our copies are closed: only activator and its services hold the sockets now.
    assert found["front"]["listen_fds_with_names"] == {"3": "http"}
    assert found["front"]["fds"]["3"]["address"] == ["127.0.0.1", port]
    assert found["back"]["listen_fds_with_names"] == {"3": "control"}
    assert found["back"]["fds"]["3"]["address"] == str(tmp_path / "admin.sock")
    assert request(("127.0.0.1", port))["pid"] == found["front"]["pid"]
    assert unix_request(str(tmp_path / "admin.sock"))["pid"] == found["back"]["pid"]
    # activator does not pass on what it received itself.
    for r in found.values():
        assert r["environ"]["LISTEN_PID"] == str(r["pid"])
    a.wait_state("front", "running")
    assert a.stop() == 0
    assert (tmp_path / "admin.sock").exists(), "activator removed a path it did not create"


def test_inherit_from_systemd_socket_activate_when_not_pid1(activator, tmp_path):
    """The reference tool: systemd-socket-activate binds, waits for the first connection,
    then execs activator with LISTEN_FDS=1, LISTEN_FDNAMES=web and LISTEN_PID=its pid."""
    tool = TOOLS / "systemd-socket-activate"
    if not tool.exists():
        pytest.skip("systemd-socket-activate not installed in .cache/systemd-tools")
    out = tmp_path / "reports"
    out.mkdir()
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # the tool binds it again; a port just freed is very unlikely to be taken
    a = activator({"inner": f"""
        exec: {serve(out)}
        sockets:
          web: {{listen: "inherit:web"}}
    """}, pid1=False, wait_ready=False,
        prefix=[str(tool), "-l", f"127.0.0.1:{port}", "--fdname=web"])
    try:
        # The tool execs activator only once a connection comes: this one.
        first = wait_for(lambda: _try_connect(port), 10, what="systemd-socket-activate listening")
        with first:
            first.settimeout(20)
            answer = json.loads(read_all(first))
        [report] = wait_reports(out, 1)
        assert answer["pid"] == report["pid"]
        assert report["listen_fds_with_names"] == {"3": "web"}
        assert report["environ"]["LISTEN_PID"] == str(report["pid"])
        assert request(("127.0.0.1", port))["pid"] == report["pid"]
        assert a.stop() == 0
    finally:
        # Not PID 1: services live in their own sessions, outside the group the harness
        # kills, and would be orphaned if activator died first.
        for pid in descendants_of(a.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _try_connect(port):
    try:
        return connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return None


def test_inherit_of_an_unknown_name_is_an_error_at_boot(activator, tmp_path):
    web = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    web.bind(("127.0.0.1", 0))
    web.listen()
    marker = tmp_path / "started"
    with web:
        a = activator({
            "other": f"""
                exec: [touch, "{marker}"]
            """,
            "inner": """
                exec: [sleep, infinity]
                sockets:
                  http: {listen: "inherit:nope"}
            """},
            prefix=[PYTHON, str(LAUNCHER), "--pid", "1", "--names", "web", "--fd", str(web.fileno()), "--"],
            pass_fds=(web.fileno(),), wait_ready=False)
        assert a.wait_exit() == 2
    output = a.output()
    assert "inherit:nope" in output and "unit inner" in output and "socket http" in output
    assert "web" in output  # what it did receive
    assert not marker.exists()


def test_inherit_without_any_listen_fds_is_an_error_at_boot(activator, tmp_path):
    a = activator({"inner": """
        exec: [sleep, infinity]
        sockets:
          http: {listen: "inherit:web"}
    """}, wait_ready=False)
    assert a.wait_exit() == 2
    assert "inherit:web" in a.output()


def test_inherited_sockets_for_another_pid_are_ignored(activator, tmp_path):
    """LISTEN_PID names someone else (not PID 1): activator must not take fd 3 as a socket."""
    web = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    web.bind(("127.0.0.1", 0))
    web.listen()
    with web:
        a = activator({"inner": """
            exec: [sleep, infinity]
            sockets:
              http: {listen: "inherit:web"}
        """}, prefix=[PYTHON, str(LAUNCHER), "--pid", "4242", "--names", "web",
                     "--fd", str(web.fileno()), "--"],
            pass_fds=(web.fileno(),), wait_ready=False)
        assert a.wait_exit() == 2


def test_a_live_datagram_socket_at_the_path_is_not_taken_for_a_stale_one(activator, tmp_path):
    """A stream probe of a datagram socket fails (EPROTOTYPE) although someone is bound to it:
    that is no proof the file is stale, and it must not be removed."""
    path = tmp_path / "dgram.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    live.bind(str(path))
    with live:
        a = activator({"app": f"""
            exec: [sleep, infinity]
            sockets:
              api: {{listen: "unix:{path}"}}
        """}, wait_ready=False)
        assert a.wait_exit() == 2
        assert f"socket api: cannot bind unix:{path}" in a.output()
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        with sender:
            sender.sendto(b"still mine", str(path))
        live.settimeout(5)
        assert live.recv(100) == b"still mine"


def test_a_live_socket_with_a_full_backlog_does_not_hang_the_boot(activator, tmp_path):
    """Probing whether a socket file is stale must not block: a live listener whose backlog is
    full would hold a blocking connect() forever."""
    path = tmp_path / "full.sock"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(str(path))
    live.listen(0)
    waiting = []
    try:
        while True:  # fill its backlog
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            waiting.append(c)
            try:
                c.connect(str(path))
            except BlockingIOError:
                break
        a = activator({"app": f"""
            exec: [sleep, infinity]
            sockets:
              api: {{listen: "unix:{path}"}}
        """}, wait_ready=False)
        assert a.wait_exit(timeout=15) == 2
        assert "listening" in a.output()
        assert path.exists()
    finally:
        for c in waiting:
            c.close()
        live.close()


def test_a_socket_file_left_by_a_killed_activator_is_replaced_by_the_next(activator, tmp_path):
    path = tmp_path / "app.sock"
    runs = []
    for n in (1, 2):
        out = tmp_path / f"reports{n}"  # both services are pid 2 in their namespaces
        out.mkdir()
        runs.append(activator({"app": f"""
            exec: {serve(out)}
            sockets:
              api: {{listen: "unix:{path}"}}
        """}))
        [report] = wait_reports(out, 1)
        assert unix_request(str(path))["pid"] == report["pid"]
        if n == 1:
            runs[0].cleanup()  # SIGKILL: no chance to remove its socket file
            assert path.exists()
    assert runs[1].stop() == 0
    assert not path.exists()
