"""Sockets handed to services (SPEC §2, §3): the LISTEN_FDS protocol as python-systemd reads
it, templates, several instances on one socket, and what a service may see of activator's
descriptors. Every test runs activator as PID 1 with real clients.

Other socket tests: test_sockets_activation.py (on-demand, accept), test_sockets_kinds.py
(kinds and options, boot-time binding and its errors, inherit:), test_sockets_peers.py
(gunicorn, uvicorn, restarts under load).
"""

import json
import os
import socket

from harness import environ_of, open_fds, settled_fds, wait_for
from sock_helpers import inet_address, port_of, request, serve, wait_reports


def test_listen_fds_with_names_in_declared_order_with_own_pid_and_blocking(activator, tmp_path):
    """Three sockets of three kinds, declared in non-alphabetical order, one renamed with
    `name:`: python-systemd sees fds 3, 4, 5 with the right names, LISTEN_PID is the service's
    own pid, and every fd is a blocking socket of the declared kind and address."""
    out = tmp_path / "reports"
    out.mkdir()
    unix_path = tmp_path / "s" / "admin.sock"
    a = activator({"web": f"""
        exec: {serve(out)}
        sockets:
          zeta:
            listen: "tcp://127.0.0.1:0"
          alpha:
            listen: "unix:{unix_path}"
            name: control
          mid:
            listen: "udp://127.0.0.1:0"
    """})
    a.wait_state("web", "running")
    [report] = wait_reports(out, 1)
    pid = report["pid"]
    assert a.pids("web") == [pid]

    assert report["listen_fds_with_names"] == {"3": "zeta", "4": "control", "5": "mid"}
    assert report["listen_fds"] == [3, 4, 5]
    env = report["environ"]
    assert env["LISTEN_FDS"] == "3"
    assert env["LISTEN_FDNAMES"] == "zeta:control:mid"
    assert env["LISTEN_PID"] == str(pid)  # its own pid, as seen in its PID namespace
    assert env["ACTIVATOR_UNIT"] == "web" and env["ACTIVATOR_INSTANCE"] == "1"

    fds = report["fds"]
    tcp_port = port_of(a, "web", 0)
    udp_port = port_of(a, "web", 2)
    assert fds["3"]["family"] == "AF_INET" and fds["3"]["type"] == "SOCK_STREAM"
    assert fds["3"]["address"] == ["127.0.0.1", tcp_port] and fds["3"]["acceptconn"] == 1
    assert fds["4"]["family"] == "AF_UNIX" and fds["4"]["address"] == str(unix_path)
    assert fds["4"]["acceptconn"] == 1
    assert fds["5"]["family"] == "AF_INET" and fds["5"]["type"] == "SOCK_DGRAM"
    assert fds["5"]["address"] == ["127.0.0.1", udp_port]
    for fd in ("3", "4", "5"):
        assert fds[fd]["nonblocking"] is False, f"fd {fd} was passed with O_NONBLOCK set"
    assert sorted(fds, key=int) == ["0", "1", "2", "3", "4", "5"]

    # And they are the live sockets: each answers.
    assert request(("127.0.0.1", tcp_port))["pid"] == pid
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10)
    sock.connect(str(unix_path))
    with sock:
        assert json.loads(sock.makefile().readline())["name"] == "control"


def test_socket_env_false_sets_no_listen_variables_but_passes_the_fds(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out, "--fd", "3")}
        socket_env: false
        sockets:
          http:
            listen: "tcp://127.0.0.1:0"
    """})
    [report] = wait_reports(out, 1)
    assert not [k for k in report["environ"] if k.startswith("LISTEN_")]
    assert report["listen_fds"] == [] and report["listen_fds_with_names"] == {}
    assert report["fds"]["3"]["acceptconn"] == 1
    assert request(("127.0.0.1", port_of(a, "web")))["pid"] == report["pid"]


def test_a_socket_template_expands_to_the_service_fd_and_turns_socket_env_off(activator, tmp_path):
    """`$(sockets.NAME)` is the fd number in the service (3 + position), not activator's own
    fd, and naming a socket by template makes socket_env default to false."""
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({
        "other": """
            exec: [sleep, infinity]
            sockets:
              o1: {listen: "tcp://127.0.0.1:0"}
              o2: {listen: "tcp://127.0.0.1:0"}
        """,
        "web": f"""
            exec: {serve(out, "--fd", "$(sockets.second)", "--fd", "$(circus.sockets.first)")}
            environment:
              SECOND_FD: "$(sockets.second)"
            sockets:
              first: {{listen: "tcp://127.0.0.1:0"}}
              second: {{listen: "tcp://127.0.0.1:0"}}
        """})
    [report] = wait_reports(out, 1)
    assert report["argv"][-4:] == ["--fd", "4", "--fd", "3"]
    assert report["environ"]["SECOND_FD"] == "4"
    assert "LISTEN_FDS" not in report["environ"] and "LISTEN_PID" not in report["environ"]
    assert report["fds"]["4"]["address"][1] == port_of(a, "web", 1)
    assert request(("127.0.0.1", port_of(a, "web", 1)))["pid"] == report["pid"]


def test_four_instances_share_one_port_each_with_its_instance_number(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out, "--instance", "$(instance)")}
        instances: 4
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    a.wait_state("web", "running")
    found = wait_reports(out, 4)
    status = a.status()["units"]["web"]["instances"]
    by_pid = {i["pid"]: i["instance"] for i in status}
    assert len(by_pid) == 4
    for report in found:
        number = by_pid[report["pid"]]
        assert report["instance"] == str(number)  # $(instance)
        assert report["environ"]["ACTIVATOR_INSTANCE"] == str(number)
        assert report["environ"]["LISTEN_PID"] == str(report["pid"])
        assert report["listen_fds_with_names"] == {"3": "http"}
    assert sorted(r["instance"] for r in found) == ["1", "2", "3", "4"]

    # Every instance takes connections from the same socket: new connections reach all four.
    address = inet_address(a, "web")
    answered: dict[int, str] = {}

    def all_four():
        answer = request(address)
        answered[answer["pid"]] = answer["instance"]
        return len(answered) == 4
    wait_for(all_four, 20, interval=0, what="answers from four distinct pids")
    assert answered == {pid: str(n) for pid, n in by_pid.items()}


def test_a_service_sees_only_0_1_2_and_its_own_sockets(activator, tmp_path):
    a = activator({
        "one": """
            exec: [sleep, infinity]
            sockets:
              a1: {listen: "tcp://127.0.0.1:0"}
              a2: {listen: "udp://127.0.0.1:0"}
        """,
        "two": """
            exec: [sleep, infinity]
            sockets:
              b1: {listen: "tcp://127.0.0.1:0"}
        """,
        "none": """
            exec: [sleep, infinity]
        """})
    for unit in ("one", "two", "none"):
        a.wait_state(unit, "running")
    [one] = a.host_pids("one")
    [two] = a.host_pids("two")
    [none] = a.host_pids("none")
    fds_one, fds_two = settled_fds(one, [0, 1, 2, 3, 4]), settled_fds(two, [0, 1, 2, 3])
    settled_fds(none, [0, 1, 2])
    assert fds_one[3].startswith("socket:") and fds_one[4].startswith("socket:")
    assert fds_two[3].startswith("socket:")
    assert fds_two[3] not in (fds_one[3], fds_one[4])  # not one of the other unit's sockets
    # They are the very sockets activator holds (the same open files as in activator).
    held = set(open_fds(a.pid).values())
    assert {fds_one[3], fds_one[4], fds_two[3]} <= held
    assert environ_of(none).get("LISTEN_FDS") is None
    assert environ_of(one)["LISTEN_FDNAMES"] == "a1:a2"
    assert environ_of(two)["LISTEN_FDNAMES"] == "b1"


def _fd_flags(host_pid: int, fd: int) -> int:
    """The file status flags of a descriptor of another process (/proc/PID/fdinfo)."""
    for line in open(f"/proc/{host_pid}/fdinfo/{fd}"):
        if line.startswith("flags:"):
            return int(line.split()[1], 8)
    raise ValueError(f"no flags for fd {fd} of {host_pid}")


def test_listen_pid_and_blocking_fds_on_every_spawn_path(activator):
    """posix_spawn with the shell step (plain), fork (user:, type: exec): each process has its
    own pid in LISTEN_PID, its socket on fd 3 without O_NONBLOCK or O_CLOEXEC, nothing else."""
    units = {}
    for name, extra in (("plain", ""), ("dropped", "user: nobody"), ("execd", "type: exec")):
        units[name] = f"""
            exec: [sleep, infinity]
            {extra}
            sockets:
              {name}: {{listen: "tcp://127.0.0.1:0"}}
        """
    a = activator(units)
    for name in units:
        a.wait_state(name, "running")
        [pid] = a.pids(name)
        host = a.host_pid(pid)
        env = environ_of(host)
        assert env["LISTEN_PID"] == str(pid), name
        assert (env["LISTEN_FDS"], env["LISTEN_FDNAMES"]) == ("1", name)
        fds = settled_fds(host, [0, 1, 2, 3])
        assert fds[3].startswith("socket:")
        flags = _fd_flags(host, 3)
        assert not flags & os.O_NONBLOCK, f"{name}: fd 3 is non-blocking"
        assert not flags & os.O_CLOEXEC, f"{name}: fd 3 is close-on-exec"
