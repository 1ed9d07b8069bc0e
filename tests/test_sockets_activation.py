"""Socket activation (SPEC §1 `start: on-demand`, §2 `accept`), with activator as PID 1 and
real clients: the service starts on the first connection or datagram and takes it from the
backlog itself; inetd-style units get one process per connection."""

import json
import socket
import threading

import pytest

from harness import descendants_of, wait_for
from sock_helpers import (PY, connect, inet_address, read_all, reports,
                          needs_ipv6, request, serve, stays, udp_request, wait_state)


# ---------------------------------------------------------------------- on-demand

def test_on_demand_starts_on_the_first_connection_and_waits_again_after_a_clean_exit(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out, "--exit-after", "1")}
        start: on-demand
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    wait_state(a, "web", "waiting")
    address = inet_address(a, "web")
    assert descendants_of(a.pid) == [], "a process ran before the first connection"
    assert a.pids("web") == []

    # The first connection starts the service, which accepts it itself: the peer it sees is
    # the very connection we opened (activator did not accept and forward it).
    first = request(address, timeout=20)
    assert first["peer"] == first["local"]
    [report] = reports(out)
    assert first["pid"] == report["pid"]
    assert report["listen_fds_with_names"] == {"3": "http"}
    assert report["environ"]["LISTEN_PID"] == str(report["pid"])

    # It exits 0 after one connection: activator waits for traffic again, with no process.
    wait_state(a, "web", "waiting")
    wait_for(lambda: descendants_of(a.pid) == [], 10, what="no process left")
    assert a.status()["units"]["web"]["instances"][0]["restarts"] == 0

    second = request(address, timeout=20)
    assert second["peer"] == second["local"]
    assert second["pid"] != first["pid"]
    assert len(reports(out)) == 2
    wait_state(a, "web", "waiting")


def test_on_demand_connections_waiting_in_the_backlog_at_start_are_all_served(activator, tmp_path):
    """Several connections opened at once, all waiting in the backlog while the service
    starts: each is answered (none lost, none accepted and dropped by activator)."""
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out)}
        start: on-demand
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    wait_state(a, "web", "waiting")
    address = inet_address(a, "web")
    clients = [connect(address, timeout=20) for _ in range(5)]
    try:
        locals_ = [list(c.getsockname()) for c in clients]
        answers = [json.loads(read_all(c)) for c in clients]
    finally:
        for c in clients:
            c.close()
    assert len({x["pid"] for x in answers}) == 1
    assert [x["peer"] for x in answers] == locals_
    assert len(reports(out)) == 1
    wait_state(a, "web", "running")


def test_on_demand_udp_starts_on_a_datagram_and_receives_that_datagram(activator, tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"dns": f"""
        exec: {serve(out, "--exit-after", "1")}
        start: on-demand
        sockets:
          q: {{listen: "udp://127.0.0.1:0"}}
    """})
    wait_state(a, "dns", "waiting")
    assert descendants_of(a.pid) == []
    address = inet_address(a, "dns")
    answer = udp_request(address, b"first datagram", timeout=20)
    assert answer["data"] == "first datagram"  # the datagram that started it was left for it
    assert answer["name"] == "q"
    wait_state(a, "dns", "waiting")
    answer2 = udp_request(address, b"second", timeout=20)
    assert answer2["data"] == "second" and answer2["pid"] != answer["pid"]


def test_on_demand_unit_is_not_restarted_without_traffic_after_clean_exit(activator, tmp_path):
    """After the clean exit, no process is started until a connection comes."""
    out = tmp_path / "reports"
    out.mkdir()
    a = activator({"web": f"""
        exec: {serve(out, "--exit-after", "1")}
        start: on-demand
        sockets:
          http: {{listen: "tcp://127.0.0.1:0"}}
    """})
    wait_state(a, "web", "waiting")
    request(inet_address(a, "web"), timeout=20)
    wait_state(a, "web", "waiting")
    wait_for(lambda: descendants_of(a.pid) == [], 10, what="no process left")
    stays(lambda: descendants_of(a.pid) == [] and len(reports(out)) == 1, 0.5,
          "a process started without traffic")


# ---------------------------------------------------------------------- accept

ECHO = ("printf 'pid=%s addr=%s port=%s fds=%s names=%s\\n' \"$$$$\" \"$REMOTE_ADDR\" "
        "\"$REMOTE_PORT\" \"$LISTEN_FDS\" \"$LISTEN_FDNAMES\" >&3; "
        "echo \"$$$$\" >> {log}; exec cat <&3 >&3")


def test_accept_serves_200_concurrent_connections_one_process_each(activator, tmp_path):
    log = tmp_path / "handlers.log"
    a = activator({"echo": f"""
        exec: [sh, -c, {json.dumps(ECHO.format(log=log))}]
        sockets:
          tcp:
            listen: "tcp://127.0.0.1:0"
            accept: true
            max_connections: 250
    """})
    wait_state(a, "echo", "running")  # an eager accept unit: serving from its socket
    address = inet_address(a, "echo")
    count = 200
    clients = []
    try:
        for _ in range(count):
            clients.append(connect(address, timeout=30))
        greetings = []
        for c in clients:
            line = c.makefile("rb").readline().decode()
            fields = dict(item.split("=", 1) for item in line.split())
            greetings.append(fields)
        # All 200 are connected at once, each to its own process.
        pids = {g["pid"] for g in greetings}
        assert len(pids) == count
        for c, g in zip(clients, greetings):
            host, port = c.getsockname()
            assert (g["addr"], g["port"]) == (host, str(port))
            assert g["fds"] == "1" and g["names"] == "connection"
        # The connection is on fd 3: what we send comes back.
        for i, c in enumerate(clients):
            c.sendall(f"echo {i}\n".encode())
        for i, c in enumerate(clients):
            assert c.makefile("rb").readline() == f"echo {i}\n".encode()
    finally:
        for c in clients:
            c.close()
    # Every handler ends with its connection, is reaped and never restarted.
    wait_for(lambda: descendants_of(a.pid) == [], 20, what="every handler gone")
    assert a.zombies() == []
    stays(lambda: descendants_of(a.pid) == [], 0.5, "a connection handler was restarted")
    assert len(log.read_text().split()) == count
    assert a.status()["units"]["echo"]["state"] == "running"


HANDLER = """
import fcntl, json, os, socket, sys
def is_open(fd):
    try:
        return os.fstat(fd) is not None
    except OSError:
        return False
fds = [fd for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")) if is_open(fd)]
conn = socket.socket(fileno=3)
info = {"pid": os.getpid(), "fds": fds,
        "nonblocking": bool(fcntl.fcntl(3, fcntl.F_GETFL) & os.O_NONBLOCK),
        "acceptconn": conn.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
        "peer": list(conn.getpeername()), "env": {k: v for k, v in os.environ.items()
            if k.startswith(("LISTEN_", "REMOTE_", "ACTIVATOR_"))}}
conn.sendall(json.dumps(info).encode() + b"\\n")
while conn.recv(65536):
    pass
sys.exit(int(os.environ.get("HANDLER_STATUS", "0")))
"""


def test_accept_max_connections_holds_the_rest_in_the_backlog(activator, tmp_path):
    a = activator({"slow": f"""
        exec: [{PY}, -c, {json.dumps(HANDLER)}]
        environment:
          HANDLER_STATUS: "3"
        sockets:
          tcp:
            listen: "tcp://127.0.0.1:0"
            accept: true
            max_connections: 3
    """})
    wait_state(a, "slow", "running")
    address = inet_address(a, "slow")
    peak = [0]
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            peak[0] = max(peak[0], len(descendants_of(a.pid)))
            stop.wait(0.005)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    clients = [connect(address, timeout=30) for _ in range(6)]
    for c in clients:
        c.setblocking(False)
    served: dict[int, dict] = {}  # client index -> what its handler reported
    closed: set[int] = set()

    def poll() -> int:
        """Read the greeting of every open client whose handler has started."""
        for i, c in enumerate(clients):
            if i in served or i in closed:
                continue
            try:
                data = c.recv(65536, socket.MSG_PEEK)
            except BlockingIOError:
                continue
            if data.endswith(b"\n"):
                served[i] = json.loads(data)
        return len(served)
    try:
        wait_for(lambda: poll() == 3, 20, what="three handlers")
        assert len(descendants_of(a.pid)) == 3
        stays(lambda: poll() == 3 and len(descendants_of(a.pid)) <= 3, 0.5,
              "more than max_connections handlers at once")
        for i, info in served.items():
            local = clients[i].getsockname()
            assert info["peer"] == [local[0], local[1]]
            assert info["fds"] == [0, 1, 2, 3]  # the connection on fd 3, nothing else
            assert info["nonblocking"] is False and info["acceptconn"] == 0
            assert info["env"]["LISTEN_FDS"] == "1" and info["env"]["LISTEN_PID"] == str(info["pid"])
            assert info["env"]["REMOTE_ADDR"] == "127.0.0.1"
            assert info["env"]["REMOTE_PORT"] == str(local[1])
        # Each served connection that ends lets exactly one waiting connection in.
        for expected in (4, 5, 6):
            done = min(set(served) - closed)
            clients[done].close()
            closed.add(done)
            wait_for(lambda: poll() == expected, 20, what=f"handler {expected}")
        assert len({info["pid"] for info in served.values()}) == 6
    finally:
        for c in clients:
            c.close()
        stop.set()
        watcher.join()
    wait_for(lambda: descendants_of(a.pid) == [], 20, what="every handler gone")
    assert peak[0] <= 3, f"{peak[0]} handler processes at once with max_connections 3"
    assert a.zombies() == []
    # Handlers exiting with status 3 are not restarted either.
    stays(lambda: descendants_of(a.pid) == [], 0.3, "a failed connection handler was restarted")
    assert a.status()["units"]["slow"]["state"] == "running"


@needs_ipv6
def test_accept_on_a_dual_stack_port_gives_ipv4_clients_their_ipv4_address(activator, tmp_path):
    """As systemd does: REMOTE_ADDR of an IPv4 client of a dual-stack socket is 127.0.0.1,
    not ::ffff:127.0.0.1; an IPv6 client's is its IPv6 address."""
    a = activator({"echo": """
        exec: [sh, -c, 'printf "%s %s\\n" "$REMOTE_ADDR" "$REMOTE_PORT" >&3']
        sockets:
          tcp: {listen: 0, accept: true}
    """})
    wait_state(a, "echo", "running")  # an eager accept unit: serving from its socket
    port = inet_address(a, "echo")[1]
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with connect((host, port), family) as c:
            local_port = c.getsockname()[1]
            assert read_all(c).decode().split() == [host, str(local_port)]
