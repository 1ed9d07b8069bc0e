"""100,000 hostile datagrams on the notify socket of activator running as PID 1.

Messages come from hypothesis (known keys with good and bad values, junk lines, odd newlines,
NULs) and from random bytes; some are oversized, some carry descriptors (a few the kernel's
maximum of 253), some claim the pid of a unit process that may not notify. Most are sent by a
few processes entered into activator's PID namespace, so that their pids mean something there;
the test process sends the rest itself, from outside, where the kernel reports pid 0 (no valid
credentials: dropped before any parsing, descriptors closed all the same).

Afterwards activator must be alive, every unit as it was (same pids, states, restarts, no
errno), and activator must hold exactly as many descriptors as before: every descriptor of
a message it did not keep was closed.
"""

from __future__ import annotations

import array
import json
import os
import random
import select
import socket
import subprocess

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness import PYTHON, descendants_of, ns_pid, open_fds
from notify_support import AGENT, PROGRAMS, Control, instance, unit, wait_instance

DATAGRAMS = 100_000
SENDERS = 4
FROM_OUTSIDE = 2_000  # sent by the test process itself: pid 0 in activator's namespace
CORPUS_SIZE = 2_000

KEYS = ["READY", "RELOADING", "STOPPING", "STATUS", "ERRNO", "MAINPID", "WATCHDOG", "WATCHDOG_USEC",
        "EXTEND_TIMEOUT_USEC", "FDSTORE", "FDNAME", "FDSTOREREMOVE", "BARRIER", "MONOTONIC_USEC"]
numbers = st.one_of(st.integers(-5, 5), st.integers(0, 2**70), st.sampled_from([1, 2, 4096]))
value = st.one_of(
    st.just("1"), st.just("trigger"), numbers.map(str), st.sampled_from(["EIO", "ENOENT", "x", "", " 7", "+3"]),
    st.text(max_size=40), st.text(st.characters(max_codepoint=0x7F), max_size=300))
line = st.one_of(
    st.tuples(st.sampled_from(KEYS), value).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.tuples(st.text(max_size=10), value).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.text(max_size=20))  # no '=' mostly: a line that means nothing
message = st.builds(
    lambda lines, sep, end, trailer: (sep.join(lines) + end).encode("utf-8", "surrogatepass") + trailer,
    st.lists(line, max_size=8), st.sampled_from(["\n", "\r\n", "\r", "\n\n"]), st.sampled_from(["", "\n"]),
    st.sampled_from([b"", b"", b"\0", b"\xff\xfe"]))


def hypothesis_corpus(size: int) -> list[bytes]:
    found: list[bytes] = []

    @settings(max_examples=size, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(message)
    def collect(data):
        found.append(data)
    collect()
    return found


def send_from_here(path, corpus: list[bytes], count: int) -> dict:
    """Datagrams from the test process, most of them with descriptors."""
    rnd = random.Random(7)
    r, w = os.pipe()
    kinds: dict[str, int] = {}
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.connect(str(path))
        for n in range(count):
            data = rnd.choice(corpus) if n % 3 else rnd.randbytes(rnd.randint(0, 5000))
            fds = [r, w] * rnd.randint(0, 3)
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
            sock.sendmsg([data], ancillary)
            kinds["outside"] = kinds.get("outside", 0) + 1
    os.close(w)
    # EOF once activator has read the last of them and closed every copy of the write end.
    readable, _, _ = select.select([r], [], [], 30)
    assert readable and os.read(r, 1) == b"", "activator kept a descriptor it was sent"
    os.close(r)
    return {"sent": count, "kinds": kinds}


def snapshot(a) -> dict:
    """What must not change: per unit, its state and each instance's pid, state and counters."""
    return {name: (u["state"], [(i["pid"], i["state"], i["restarts"], i["exit_status"], i["errno"])
                                for i in u["instances"]])
            for name, u in a.status()["units"].items()}


def test_random_datagrams_change_nothing_and_leak_nothing(activator, tmp_path):
    log, control = tmp_path / "steady.log", Control(tmp_path / "control")
    a = activator({
        # notify_access main, with a child that is not main (a sender we let the fuzz pose as).
        "steady": unit(exec=["sh", "-c", f"sleep 1000 & exec {PYTHON} {AGENT} log:{log} notify:READY=1 "
                                         f"notify:STATUS=steady control:{control.path}"],
                       type="notify"),
        "plain": unit(exec=["sleep", "1000"]),  # notify_access none
    })
    wait_instance(a, "steady", lambda i: i.get("status") == "steady")
    a.wait_state("plain", "running")
    steady_host = a.host_pid(instance(a, "steady")["pid"])
    [sleeper] = [ns_pid(p) for p in descendants_of(steady_host)]
    fake_pids = [sleeper, instance(a, "plain")["pid"], 1]

    before = snapshot(a)
    fds_before = open_fds(a.pid)

    corpus = hypothesis_corpus(CORPUS_SIZE)
    corpus_path = tmp_path / "corpus.json"
    corpus_path.write_text(json.dumps([m.hex() for m in corpus]))
    senders = [subprocess.Popen(
        ["nsenter", "--target", str(a.pid), "--pid", "--", PYTHON, str(PROGRAMS / "notify_fuzz_sender.py"),
         str(corpus_path), str(seed), str((DATAGRAMS - FROM_OUTSIDE) // SENDERS), str(a.runtime / "notify"),
         ",".join(map(str, fake_pids))],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for seed in range(SENDERS)]
    try:
        reports = [send_from_here(a.runtime / "notify", corpus, FROM_OUTSIDE)]
        for sender in senders:
            out, err = sender.communicate(timeout=120)
            assert sender.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for sender in senders:  # should activator be stuck: blocked senders must not linger
            if sender.poll() is None:
                sender.kill()
                sender.wait(10)
    assert sum(r["sent"] for r in reports) == DATAGRAMS
    kinds = {k: sum(r["kinds"].get(k, 0) for r in reports) for k in reports[-1]["kinds"]}
    assert kinds["oversized"] and kinds["many-fds"] and kinds["faked-pid"] and kinds["mutated"]

    # Datagrams are read in order: once this one shows, every datagram above was read.
    control.send("notify:STATUS=after the flood")
    wait_instance(a, "steady", lambda i: i.get("status") == "after the flood", timeout=60)

    assert a.proc.poll() is None, a.output()
    assert snapshot(a) == before
    fds_after = open_fds(a.pid)
    assert len(fds_after) == len(fds_before), (fds_before, fds_after)
    assert not [t for t in fds_after.values() if "memfd:fuzz" in t]
    output = a.output()
    assert "internal error" not in output and "Traceback" not in output
    assert a.zombies() == []
