"""Sockets handed out by activator: is activator in the request path, and how fast is `accept`?

(a) gunicorn (2 sync workers, the trivial app of wsgi_app.py) under wrk, in two variants that
    differ in one thing only, who binds the listening socket:
      fd    activator binds it and gunicorn gets it as `--bind fd://$(sockets.http)`;
      bind  gunicorn binds the port itself.
    Both run under activator as PID 1 (same process tree, same output relaying, same
    namespace), so the ratio isolates what handing over the socket costs: socket options,
    and whether activator, which keeps its copy of the socket open, ever wakes for a request
    (its CPU time during the run is reported too; it should be 0). Rounds alternate which
    variant goes first; the figures are medians of per-round ratios fd/bind of requests/s and
    of server CPU (utime+stime of every gunicorn process, from /proc) per 1,000 requests.

(b) per-connection processes (`accept: true`): completed connections per second, one at a time
    and 32 in flight, against systemd-socket-activate. The handler is the same small echo for
    all: `sh -c 'exec cat <&3 >&3'` where the connection is fd 3 (activator, and
    systemd-socket-activate --accept), `sh -c 'exec cat'` where it is stdin/stdout
    (systemd-socket-activate --accept --inetd). A connection: connect, send a line, shut down
    writing, read the echo to EOF. activator's unit has `output: null` and every server's
    stderr goes to /dev/null, so no output relaying or logging is measured. Every server runs
    as PID 1 of its own PID namespace. The load client is Python threads; the row "ceiling"
    is the same client against a single-process echo server (responder.py, no process per
    connection), which shows how fast the client itself can go. The row "control" runs
    systemd-socket-activate with the `sh -c 'LISTEN_PID=$$ …; exec "$0" "$@"'` step that
    activator puts in front of every per-connection process (spawn.py): one more exec.
    CPU per connection is PID 1's own (utime+stime) and PID 1's with the handlers it reaped
    (cutime+cstime): the whole server side.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from common import (BENCH, PYTHON, ROOT, SYSTEMD_TOOLS, Namespace, children_of, cpu_seconds, cpu_seconds_with_children,
                    fmt, free_port, http_ok, median, progress, table, wait_for)

GUNICORN = ROOT / ".venv" / "bin" / "gunicorn"
GUNICORN_ARGS = ["--workers", "2", "--worker-class", "sync", "--no-control-socket",
                 "--chdir", str(BENCH), "wsgi_app:app"]


# ---------------------------------------------------------------------------- (a) gunicorn

def gunicorn_unit(variant: str, port: int) -> str:
    if variant == "fd":
        argv = [str(GUNICORN), "--bind", "fd://$(sockets.http)", *GUNICORN_ARGS]
        return (f"exec: {json.dumps(argv)}\n"
                f"sockets:\n  http:\n    listen: \"tcp://127.0.0.1:{port}\"\n")
    argv = [str(GUNICORN), "--bind", f"127.0.0.1:{port}", *GUNICORN_ARGS]
    return f"exec: {json.dumps(argv)}\n"


def run_wrk(port: int, seconds: float, connections: int) -> tuple[float, int]:
    """requests/s and number of requests, from wrk's summary."""
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", f"http://127.0.0.1:{port}/"],
                         check=True, capture_output=True, text=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    count = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out or "Socket errors" in out:
        progress(f"sockets: wrk reported errors:\n{out}")
    return rps, count


def measure_gunicorn(variant: str, workdir: Path, seconds: float, connections: int) -> dict:
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix=f"gunicorn-{variant}-", dir=workdir))
    units = directory / "units"
    units.mkdir()
    (units / "web.yaml").write_text(gunicorn_unit(variant, port))
    argv = [PYTHON, "-m", "activator", "--units", str(units)]
    with Namespace(argv, env={"ACTIVATOR_RUNTIME_DIR": str(directory / "run")},
                   log=directory / "output.log") as ns:
        try:
            wait_for(lambda: http_ok(port), 30, interval=0.02, what="gunicorn answering")
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{ns.output_tail()}") from None
        # Both workers up: the arbiter and its two workers.
        wait_for(lambda: len(ns.processes()) >= 3, 30, interval=0.02, what="gunicorn workers")
        for _ in range(50):  # warm both workers
            http_ok(port)
        servers = ns.processes()
        cpu_before = sum(cpu_seconds(p) for p in servers)
        init_before = cpu_seconds(ns.pid1)
        rps, count = run_wrk(port, seconds, connections)
        cpu = sum(cpu_seconds(p) for p in servers) - cpu_before
        init_cpu = cpu_seconds(ns.pid1) - init_before
    return {"rps": rps, "requests": count, "cpu_per_1000": cpu / count * 1000,
            "activator_cpu": init_cpu}


def bench_gunicorn(args, workdir: Path) -> str:
    rounds = []
    for r in range(args.rounds):
        order = ["fd", "bind"] if r % 2 == 0 else ["bind", "fd"]
        progress(f"sockets: gunicorn round {r + 1}/{args.rounds}: {' then '.join(order)}")
        rounds.append({v: measure_gunicorn(v, workdir, args.seconds, args.connections) for v in order})
    rps_ratio = median([x["fd"]["rps"] / x["bind"]["rps"] for x in rounds])
    cpu_ratio = median([x["fd"]["cpu_per_1000"] / x["bind"]["cpu_per_1000"] for x in rounds])
    rows = []
    for variant, label in (("fd", "socket from activator (fd://)"), ("bind", "gunicorn binds itself")):
        rows.append([label, fmt(median([x[variant]["rps"] for x in rounds]), "", 0),
                     fmt(median([x[variant]["cpu_per_1000"] for x in rounds]) * 1000, "", 0),
                     fmt(median([x[variant]["activator_cpu"] for x in rounds]) * 1000, "", 0)])
    text = table(["gunicorn, 2 sync workers, under activator", "requests/s", "server CPU ms / 1000 req",
                  "activator CPU ms during run"], rows)
    text += (f"\n\nfd/bind, median of {args.rounds} paired rounds: requests/s ×{rps_ratio:.3f} (goal ≥ 0.97: "
             f"{'ok' if rps_ratio >= 0.97 else 'MISSED'}), server CPU per request ×{cpu_ratio:.3f} "
             f"(goal ≤ 1.03: {'ok' if cpu_ratio <= 1.03 else 'MISSED'})")
    return text, rounds


# ---------------------------------------------------------------------------- (b) accept

def connection_rate(port: int, in_flight: int, seconds: float) -> tuple[float, int, int]:
    """Completed echo connections per second with `in_flight` client threads; errors; count."""
    stop_at = time.monotonic() + seconds
    done = [0] * in_flight
    errors = [0] * in_flight
    address = ("127.0.0.1", port)
    payload = b"ping\n"

    def client(i: int) -> None:
        while time.monotonic() < stop_at:
            s = socket.socket()
            try:
                s.settimeout(10)
                s.connect(address)
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                if data == payload:
                    done[i] += 1
                else:
                    errors[i] += 1
            except OSError:
                errors[i] += 1
            finally:
                s.close()

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.monotonic() - started), sum(errors), sum(done)


def accept_server(name: str, port: int, directory: Path) -> tuple[list[str], dict]:
    """argv (to run as PID 1) and environment of each server of the comparison."""
    ssa = str(SYSTEMD_TOOLS / "systemd-socket-activate")
    if name == "activator":
        units = directory / "units"
        units.mkdir()
        (units / "echo.yaml").write_text(
            "exec: [sh, -c, 'exec cat <&3 >&3']\n"
            "output: \"null\"\n"
            f"sockets:\n  echo:\n    listen: \"tcp://127.0.0.1:{port}\"\n    accept: true\n")
        return [PYTHON, "-m", "activator", "--units", str(units)], {"ACTIVATOR_RUNTIME_DIR": str(directory / "run")}
    if name == "ssa --inetd":
        return [ssa, "--accept", "--inetd", f"--listen=127.0.0.1:{port}", "sh", "-c", "exec cat"], {}
    if name == "ssa (fd 3)":
        return [ssa, "--accept", f"--listen=127.0.0.1:{port}", "sh", "-c", "exec cat <&3 >&3"], {}
    if name == "ssa + step":
        # The control: the same, behind the shell step activator's spawn.py puts in front of
        # a program that must see its own pid in LISTEN_PID. Its rate against activator's
        # tells what is activator's own cost and what is that extra exec.
        return [ssa, "--accept", f"--listen=127.0.0.1:{port}", "sh", "-c", LISTEN_PID_STEP,
                "sh", "-c", "exec cat <&3 >&3"], {}
    if name == "ceiling":
        return [PYTHON, "-S", "-I", str(BENCH / "responder.py"), "echo", str(port)], {}
    raise ValueError(name)


LISTEN_PID_STEP = 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'  # as activator/spawn.py writes it
ACCEPT_GOAL = 1.1  # activator ÷ systemd-socket-activate, rate, one at a time and 32 in flight
ACCEPT_SERVERS = ["activator", "ssa --inetd", "ssa (fd 3)", "ssa + step", "ceiling"]
ACCEPT_LABELS = {"activator": "activator `accept: true`",
                 "ssa --inetd": "systemd-socket-activate --accept --inetd",
                 "ssa (fd 3)": "systemd-socket-activate --accept (fd 3)",
                 "ssa + step": "control: the same + activator's LISTEN_PID sh step",
                 "ceiling": "ceiling: one echo process, no spawning"}


def measure_accept(name: str, workdir: Path, in_flight: int, seconds: float) -> dict:
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="accept-", dir=workdir))
    argv, env = accept_server(name, port, directory)
    with Namespace(argv, env=env) as ns:
        wait_for(lambda: connection_rate(port, 1, 0.01)[0] > 0, 30, interval=0.02, what=f"{name} echoing")
        connection_rate(port, in_flight, 0.2)  # warm-up: caches, the backlog, the client's threads
        pid1 = ns.pid1
        init_before, all_before = cpu_seconds(pid1), cpu_seconds_with_children(pid1)
        rate, errors, count = connection_rate(port, in_flight, seconds)
        # The last handlers' CPU counts only once PID 1 has reaped them (cutime, cstime):
        # PID 1 has no child left once every handler is reaped (a zombie is still a child).
        wait_for(lambda: not children_of(pid1), 10, interval=0.005, what=f"{name}'s handlers reaped")
        init_cpu = cpu_seconds(pid1) - init_before
        all_cpu = cpu_seconds_with_children(pid1) - all_before
    count = max(count, 1)
    return {"rate": rate, "errors": errors, "server_cpu_per_conn": init_cpu / count,
            "total_cpu_per_conn": all_cpu / count}


def bench_accept(args, workdir: Path) -> str:
    servers = [s for s in ACCEPT_SERVERS if s in args.accept_servers.split(",")]
    results = {(s, c): [] for s in servers for c in (1, 32)}
    for r in range(args.rounds):
        order = servers[r % len(servers):] + servers[:r % len(servers)]
        progress(f"sockets: accept round {r + 1}/{args.rounds}: {', '.join(order)}")
        for concurrency in (1, 32):
            for name in order:
                results[(name, concurrency)].append(measure_accept(name, workdir, concurrency, args.seconds))
    rows = []
    for name in servers:
        row = [ACCEPT_LABELS[name]]
        for concurrency in (1, 32):
            rs = results[(name, concurrency)]
            row.append(fmt(median([x["rate"] for x in rs]), "", 0))
            errors = sum(x["errors"] for x in rs)
            if errors:
                row[-1] += f" ({errors} errors)"
            row.append(fmt(median([x["server_cpu_per_conn"] for x in rs]) * 1e6, "", 0) + " / "
                       + fmt(median([x["total_cpu_per_conn"] for x in rs]) * 1e6, "", 0))
        rows.append(row)
    text = table(["server (PID 1)", "conn/s, 1 at a time", "CPU µs/conn: PID 1 / with handlers",
                  "conn/s, 32 in flight", "CPU µs/conn: PID 1 / with handlers"], rows)
    lines = [""]
    if "activator" in servers:
        for ref in ("ssa --inetd", "ssa (fd 3)"):
            if ref not in servers:
                continue
            for concurrency in (1, 32):
                ratios = [a["rate"] / b["rate"] for a, b in zip(results[("activator", concurrency)],
                                                               results[(ref, concurrency)])]
                ratio = median(ratios)
                lines.append(f"activator / {ACCEPT_LABELS[ref]}, {concurrency} in flight: ×{ratio:.2f} "
                             f"(goal ≥ {ACCEPT_GOAL}: {'ok' if ratio >= ACCEPT_GOAL else 'MISSED'})")
            # Rates swing with the machine's other load; CPU per connection much less. On a
            # saturated machine, rate ∝ 1 / CPU per connection: the steadier estimate.
            cpu = lambda name: median([x["total_cpu_per_conn"] for c in (1, 32) for x in results[(name, c)]])
            lines.append(f"  server-side CPU per connection, {ACCEPT_LABELS[ref]} ÷ activator: "
                         f"×{cpu(ref) / cpu('activator'):.2f} (the rate ratio to expect when CPU-bound)")
    return text + "\n".join(lines), {f"{k[0]} c{k[1]}": v for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=4, help="rounds (default 4)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each measurement (default 3)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections for (a) (default 16)")
    parser.add_argument("--only", choices=("gunicorn", "accept"), help="run one part only")
    parser.add_argument("--accept-servers", default=",".join(ACCEPT_SERVERS),
                        help="comma-separated servers for (b)")
    parser.add_argument("--json", metavar="FILE", help="also write every measurement to FILE")
    args = parser.parse_args()

    raw = {}
    with tempfile.TemporaryDirectory(prefix="bench-sockets-") as tmp:
        workdir = Path(tmp)
        if args.only in (None, "gunicorn"):
            text, raw["gunicorn"] = bench_gunicorn(args, workdir)
            print(f"## Sockets (a): gunicorn behind activator's socket, {args.rounds} rounds of "
                  f"{args.seconds:g} s, wrk -c{args.connections}\n")
            print(text + "\n", flush=True)
        if args.only in (None, "accept"):
            text, raw["accept"] = bench_accept(args, workdir)
            print(f"## Sockets (b): one process per connection, medians of {args.rounds} rounds of "
                  f"{args.seconds:g} s\n")
            print(text, flush=True)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(raw, indent=1))


if __name__ == "__main__":
    main()
