"""SPEC §11: descriptor limits, `limits`, and OOM scores, for PID 1 and for its services."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

from harness import wait_for
from unitfiles import Stack, only_unit
from activator.spawn import _placement


def limits_of(pid: int) -> dict[str, tuple[str, str]]:
    result = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        result[name] = (soft, hard)
    return result


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def test_pid1_raises_its_descriptor_limit_and_services_get_the_one_it_had(activator):
    """Defect: PID 1 kept the soft limit it was given, so holding many sockets and pipes
    it ran out long before the hard limit allowed."""
    a = activator({"plain": "exec: [sleep, infinity]"}, prefix=["prlimit", "--nofile=256:4096"])
    a.wait_state("plain", "running")
    assert limits_of(a.pid)["Max open files"] == ("4096", "4096")
    assert limits_of(a.host_pids("plain")[0])["Max open files"] == ("256", "4096")


def test_sockets_are_placed_without_going_above_the_descriptor_limit(activator, tmp_path):
    """Defect: the sockets went to numbers above every open descriptor first, which could be
    above the limit: dup2 failed with EBADF ("Bad file descriptor")."""
    sockets = "\n".join(f"  s{i}: unix:{tmp_path}/s{i}.sock" for i in range(40))
    a = activator({"many": f"exec: [sleep, infinity]\nsockets:\n{sockets}\n"},
                  prefix=["prlimit", "--nofile=64:64"])
    a.wait_state("many", "running")
    fds = sorted(int(p.name) for p in Path(f"/proc/{a.host_pids('many')[0]}/fd").iterdir())
    assert fds == list(range(43))


def test_placement_never_uses_a_number_above_three_plus_n():
    for n in range(1, 10):
        for _ in range(500):
            fds = [random.randrange(3, 3 + 3 * n) for _ in range(n)]
            table = {fd: fd for fd in fds}
            moves, temporaries = _placement([(fd, 3 + i) for i, fd in enumerate(fds)])
            for source, target in moves:
                assert target <= 3 + n
                table[target] = table[source]
            assert [table[3 + i] for i in range(n)] == fds
            assert all(t >= 3 + n for t in temporaries)


def test_limits_are_set_before_the_program_runs(activator, tmp_path):
    a = activator({"limited": """
        exec: [sh, -c, "echo nofile=$$(ulimit -n) core=$$(ulimit -c); exec sleep infinity"]
        limits: {nofile: "1000:2000", core: 0, nproc: 512, memlock: 65536}
    """})
    a.wait_log("limited | nofile=1000 core=0")
    limits = limits_of(a.host_pids("limited")[0])
    assert limits["Max open files"] == ("1000", "2000")
    assert limits["Max core file size"] == ("0", "0")
    assert limits["Max processes"] == ("512", "512")
    assert limits["Max locked memory"] == ("65536", "65536")


def test_a_limit_that_cannot_be_set_fails_the_start_with_the_reason(activator):
    hard = int(limits_of(os.getpid())["Max locked memory"][1])
    a = activator({"greedy": f"exec: [sleep, infinity]\nrestart: no\nlimits: {{memlock: {hard * 2}}}"})
    if can_raise_hard_limits():
        a.wait_state("greedy", "running")
    else:
        a.wait_state("greedy", "failed")
        assert f"cannot execute 'sleep': limits: cannot set memlock to {hard * 2}:{hard * 2}" in a.output()


def can_raise_hard_limits() -> bool:
    """CAP_SYS_RESOURCE, which a container usually lacks (this machine's does)."""
    return bool(int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                         if line.startswith("CapEff:")).split()[1], 16) & (1 << 24))


def test_pid1_protects_itself_from_the_oom_killer_and_services_do_not(activator):
    """-1000 for PID 1 when allowed (CAP_SYS_RESOURCE); services at the score activator was
    started with (here 100), or at their oom_score_adjust."""
    a = activator({
        "plain": "exec: [sleep, infinity]",
        "adjusted": 'exec: [sh, -c, "echo score=$$(cat /proc/self/oom_score_adj); exec sleep infinity"]\n'
                    "oom_score_adjust: 500",
    }, prefix=["sh", "-c", 'echo 100 > /proc/self/oom_score_adj && exec "$@"', "sh"])
    a.wait_log("adjusted | score=500")  # already when the program started
    assert oom_score_adj(a.pid) == (-1000 if can_raise_hard_limits() else 100)
    assert wait_for(lambda: oom_score_adj(a.host_pids("plain")[0]) == 100 or None, 5)
    assert oom_score_adj(a.host_pids("adjusted")[0]) == 500


def test_limits_and_oom_score_adjust_are_read_and_checked(tmp_path):
    stack = Stack(tmp_path)
    stack.unit("web", "limits: {nofile: 65536, nproc: '512:1024', core: 0, memlock: infinity}\n"
                      "oom_score_adjust: -500\n")
    unit = only_unit(stack.load())
    assert unit.limits == (("core", 0, 0), ("memlock", -1, -1), ("nofile", 65536, 65536),
                           ("nproc", 512, 1024))
    assert unit.oom_score_adjust == -500
    stack.unit("web", "limits:\n  nofile: 65536\n  cores: 0\n  nproc: '5:1'\n  stack: lots\n"
                      "oom_score_adjust: 1001\n")
    errors = stack.errors()
    assert errors[0].startswith("units/web.yaml:4: unit web: limits: unknown limit 'cores' (one of as, core,")
    assert errors[1:] == [
        "units/web.yaml:5: unit web: limits.nproc: the soft limit 5 is above the hard limit 1",
        "units/web.yaml:6: unit web: limits.stack: expected a number, infinity, or SOFT:HARD "
        "(such as 1024:65536), got 'lots'",
        "units/web.yaml:7: unit web: oom_score_adjust: expected a number from -1000 to 1000, got 1001"]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_accepting_out_of_descriptors_waits_instead_of_spinning(activator, tmp_path):
    """Defect: EMFILE on accept left the socket watched, and readable: PID 1 spun at 100 % of
    a core and logged the same line again and again."""
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def units(count: int) -> dict:
        sockets = "\n".join(f"  s{i}: unix:{tmp_path}/{count}-{i}.sock" for i in range(count))
        return {"hold": f"""
            exec: [sleep, "30"]
            output: "null"
            sockets: {{c: {{listen: "tcp://127.0.0.1:{port}", accept: true}}}}
        """, "many": f"exec: [sleep, infinity]\noutput: \"null\"\nsockets:\n{sockets}\n"}

    # As many sockets as leave activator no descriptor to accept a connection with (one fewer
    # than would fill its table: booting needs one more for a moment), counted on a first
    # run, since what activator holds besides them depends on the machine.
    first = activator(units(40), prefix=["prlimit", "--nofile=64:64"])
    first.wait_state("many", "running")
    held = len(os.listdir(f"/proc/{first.pid}/fd"))
    first.stop()
    a = activator(units(40 + 64 - held - 1), prefix=["prlimit", "--nofile=64:64"])
    a.wait_state("many", "running")
    clients = []
    try:
        for _ in range(3):
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        wait_for(lambda: "cannot accept" in a.output(), 10, what="running short")
        before = cpu_seconds(a.pid)
        window = 2.0
        time.sleep(window)  # an observation window, not a wait: the CPU PID 1 uses during it
        used = cpu_seconds(a.pid) - before
        assert used < 0.5 * window, f"PID 1 used {used:.2f}s of CPU in {window}s"
        assert a.output().count("cannot accept") == 1, a.output()
    finally:
        for c in clients:
            c.close()


def test_the_descriptor_store_has_a_cap_for_all_units():
    from activator import notified
    from activator.service import FDSTORE_MAX, FdStore
    assert FDSTORE_MAX <= notified.FDSTORE_TOTAL <= 1024
    first, second = os.pipe(), os.pipe()  # two open files (a pipe's ends are one)
    try:
        store = FdStore()
        kept, full = store.add("x", [first[0], second[0]], room=1)  # room left in all units
        assert kept == [first[0]] and full
    finally:
        for fd in (*first, *second):
            os.close(fd)
