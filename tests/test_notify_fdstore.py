"""The file-descriptor store: FDSTORE=1 with FDNAME=, handed back after the unit's sockets on
the next start, FDSTOREREMOVE=1, duplicates kept once. Activator runs as PID 1; the service
is killed with SIGKILL (by its host pid) between starts, so nothing of it survives but what
activator kept.
"""

from __future__ import annotations

import os
import signal

from harness import open_fds
from notify_support import Control, agent, events, free_port, instance, unit, wait_event, wait_instance


def memfds(a, name: str) -> list[int]:
    """activator's own descriptors on the memfd called `name`."""
    return [fd for fd, target in open_fds(a.pid).items() if target.startswith(f"/memfd:{name} ")]


def test_fdstore_survives_restarts(activator, tmp_path):
    port = free_port()
    log, control = tmp_path / "st.log", Control(tmp_path / "control")
    a = activator({"st": unit(exec=agent(f"log:{log}", "notify:READY=1", f"control:{control.path}"),
                              type="notify", restart_sec=0.1, start_limit_burst=20,
                              sockets={"http": {"listen": f"tcp://127.0.0.1:{port}"}})})
    a.wait_state("st", "running")

    def restart(count: int) -> dict:
        """SIGKILL the running process; the "start" event of the next one, once it runs."""
        pid = instance(a, "st")["pid"]
        os.kill(a.host_pid(pid), signal.SIGKILL)
        start = wait_event(log, "start", count=count)[count - 1]
        wait_instance(a, "st", lambda i: i["state"] == "running" and i["pid"] == start["pid"])
        return start

    [first] = events(log, "start")
    assert [(f["name"], f["kind"]) for f in first["fds"]] == [("http", "socket")]
    socket_ino = first["fds"][0]["ino"]

    control.send("fdstore:x=hello", "notify:STATUS=stored x")
    wait_instance(a, "st", lambda i: i["status"] == "stored x")  # same sender: FDSTORE was read
    [x] = events(log, "stored")
    assert len(memfds(a, "x")) == 1

    second = restart(2)
    assert second["env"]["LISTEN_FDS"] == "2" and second["env"]["LISTEN_FDNAMES"] == "http:x"
    sock, stored = second["fds"]
    assert (sock["fd"], sock["kind"], sock["ino"]) == (3, "socket", socket_ino)  # sockets first
    assert (stored["fd"], stored["name"], stored["kind"]) == (4, "x", "file")
    assert (stored["dev"], stored["ino"]) == (x["dev"], x["ino"])  # the same memfd
    assert stored["content"] == "hello"
    assert stored["offset"] == 5  # the same open file description, not a reopened file

    # Written through by this incarnation; a duplicate-laden store of another one.
    control.send("fdappend:x= world", "fdstore-dup:y=why", "notify:STATUS=stored y")
    wait_instance(a, "st", lambda i: i["status"] == "stored y")
    assert len(memfds(a, "x")) == 1 and len(memfds(a, "y")) == 1  # y sent three times, kept once
    [y] = [e for e in events(log, "stored") if e["name"] == "y"]

    third = restart(3)
    assert third["env"]["LISTEN_FDS"] == "3" and third["env"]["LISTEN_FDNAMES"] == "http:x:y"
    _, x3, y3 = third["fds"]
    assert (x3["ino"], x3["content"], x3["offset"]) == (x["ino"], "hello world", 11)
    assert (y3["name"], y3["ino"], y3["content"]) == ("y", y["ino"], "why")

    control.send("fdremove:x", "notify:STATUS=removed x")
    wait_instance(a, "st", lambda i: i["status"] == "removed x")
    assert memfds(a, "x") == [] and len(memfds(a, "y")) == 1  # closed in activator too

    fourth = restart(4)
    assert fourth["env"]["LISTEN_FDS"] == "2" and fourth["env"]["LISTEN_FDNAMES"] == "http:y"
    assert [f["ino"] for f in fourth["fds"]] == [socket_ino, y["ino"]]


def test_fdstore_without_sockets_and_without_a_name(activator, tmp_path):
    """A unit with no sockets gets LISTEN_FDS for its stored descriptors alone; FDNAME= left
    out (or one that cannot go into LISTEN_FDNAMES) means systemd's default name, "stored"."""
    log, control = tmp_path / "st.log", Control(tmp_path / "control")
    a = activator({"st": unit(exec=agent(f"log:{log}", "notify:READY=1", f"control:{control.path}"),
                              type="notify", restart_sec=0.1)})
    a.wait_state("st", "running")
    [first] = events(log, "start")
    assert first["fds"] == [] and "LISTEN_FDS" not in first["env"]
    control.send("fdstore:a:b=colon", "notify:STATUS=stored")  # FDNAME=a:b is invalid
    wait_instance(a, "st", lambda i: i["status"] == "stored")
    os.kill(a.host_pid(first["pid"]), signal.SIGKILL)
    second = wait_event(log, "start", count=2)[1]
    assert second["env"]["LISTEN_FDS"] == "1" and second["env"]["LISTEN_FDNAMES"] == "stored"
    assert second["fds"][0]["content"] == "colon"
