"""bench/summary.json from a run's raw results, and README §12's tables from bench/summary.json.

    .venv/bin/python bench/report.py                      # README §12 from bench/summary.json
    .venv/bin/python bench/report.py --from bench/results/DATE   # summary.json first, from that run
    .venv/bin/python bench/report.py --check              # exit 1 if README §12 is not what the summary gives

`make bench` (bench/run.py) does the `--from` step at the end of a run. The summary keeps, for
each benchmark, the figures README shows (medians, and per-round values where a ratio is a
median of per-round ratios), rounded as shown, with the run and the machine they come from: a
few KB, committed with the README change that quotes it. Every table of README §12, and every
sentence that quotes a figure, sits between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`
and is written here, never by hand; a ratio in a sentence is computed from the figures of
its table as printed, so that a reader can check it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SUMMARY = BENCH / "summary.json"
README = BENCH.parent / "README.md"
PID1_PEERS = ["activator", "tini", "dumb-init", "supervisord", "circusd"]
FIRST_200_MARGIN_MS = 40  # activator's goal: first 200 ≤ tini's + this, medians of 9 launches
ACCEPT_SERVERS = {"activator": "activator (`accept: true`)",
                  "ssa --inetd": "systemd-socket-activate `--accept --inetd`",
                  "ssa (fd 3)": "systemd-socket-activate `--accept` (fd 3)",
                  "ssa + step": "control: systemd-socket-activate + activator's `LISTEN_PID` shell step",
                  "ceiling": "ceiling: one echo process, no spawning"}
SCALE_PEERS = {"activator": "activator", "activator --no-cache": "activator `--no-cache`", "tini": "tini",
               "dumb-init": "dumb-init", "supervisord": "supervisord", "circusd": "circusd",
               "posix_spawn": "floor: `posix_spawnp` × N from a C program"}
SCALE_GOALS_S = {"boot_s": 0.5, "sigterm_gone_s": 1.0, "status_s": 1.0}  # activator's
RELOAD_APPROACHES = {"activator": "activator: unit edited + SIGHUP (rolling, `type: notify`)",
                     "activator-usr2": "activator: SIGUSR2",
                     "supervisord": "supervisord `restart`, gunicorn binds its port",
                     "supervisord-fcgi": "supervisord `fcgi-program` `restart`",
                     "circusd-restart": "circusd `restart`",
                     "circusd-reload": "circusd `reload` (graceful)",
                     "gunicorn-hup": "gunicorn's own SIGHUP (PID 1)"}


# ---------------------------------------------------------------------------- raw → summary

def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rounded(value, digits: int = 0):
    if value is None:
        return None
    return round(value) if digits == 0 else round(value, digits)


def summarise_pid1(rounds: dict[str, list[dict]]) -> dict:
    peers, launches = {}, 0
    for peer, records in rounds.items():
        # A round holds several first 200s (a list), every other figure once.
        flat = lambda key: [v for r in records for v in (r[key] if isinstance(r.get(key), list) else [r.get(key)])
                            if v is not None]
        med = lambda key, scale=1.0: median([v * scale for v in flat(key)])
        launches = max(launches, len(flat("first_200")))
        # A burst not reaped within the cap counts as longer than every reaped one.
        reaped = sorted((r["reap_all"] if r.get("reap_all") is not None else float("inf"))
                        for r in records if "zombies" in r)
        reap = statistics.median_low(reaped) if reaped else None
        peers[peer] = {"rss_mib": rounded(med("rss", 1 / 2**20), 1), "first_200_ms": rounded(med("first_200", 1000)),
                       "zombies_at_100_ms": rounded(med("zombies")),
                       "all_reaped_ms": None if reap in (None, float("inf")) else rounded(reap * 1000),
                       "wakeups_per_s": rounded(med("wakeups"), 1), "sigterm_gone_ms": rounded(med("stop", 1000)),
                       "sigterm_gone_stubborn_ms": rounded(med("stop_timeout", 1000))}
    return {"rounds": max(len(r) for r in rounds.values()), "first_200_launches": launches, "orphans": 10000,
            "reap_cap_s": 2, "peers": peers}


def summarise_sockets(raw: dict) -> dict:
    result = {}
    if "gunicorn" in raw:
        result["gunicorn"] = {"rounds": [
            {variant: {"rps": rounded(r[variant]["rps"]), "cpu_ms_per_1000": rounded(r[variant]["cpu_per_1000"] * 1000),
                       "activator_cpu_ms": rounded(r[variant]["activator_cpu"] * 1000)} for variant in ("fd", "bind")}
            for r in raw["gunicorn"]]}
    if "accept" in raw:
        servers = {}
        for name in ACCEPT_SERVERS:
            if f"{name} c1" not in raw["accept"]:
                continue
            one, many = raw["accept"][f"{name} c1"], raw["accept"][f"{name} c32"]
            servers[name] = {"rate_1": rounded(median([x["rate"] for x in one])),
                             "rate_32": rounded(median([x["rate"] for x in many])),
                             "pid1_cpu_us_1": rounded(median([x["server_cpu_per_conn"] for x in one]) * 1e6),
                             "pid1_cpu_us_32": rounded(median([x["server_cpu_per_conn"] for x in many]) * 1e6),
                             "all_cpu_us_32": rounded(median([x["total_cpu_per_conn"] for x in many]) * 1e6),
                             "errors": sum(x["errors"] for x in one + many)}
        result["accept"] = {"rounds": len(raw["accept"]["activator c1"]), "servers": servers}
    return result


def summarise_reload(raw: dict) -> dict:
    approaches, loads = {}, []
    for name, trials in raw["results"].items():
        if not trials:
            continue
        med = lambda key, part: median([t[key][part] for t in trials])
        approaches[name] = {
            "failed": sum(t["probe_restarts"]["failed"] for t in trials),
            "requests": sum(t["probe_restarts"]["requests"] for t in trials),
            "p99_ms": rounded(med("probe_restarts", "p99") * 1000), "steady_p99_ms": rounded(med("probe_steady", "p99") * 1000),
            "open_loop_p99_ms": rounded(med("probe_restarts", "p99_open_loop") * 1000),
            "restart_s": rounded(median([d for t in trials for _, d in t["restarts"]]), 1)}
        loads += [x for t in trials for x in t["load"]]
    return {"rounds": max(len(t) for t in raw["results"].values()),
            "load": [round(min(loads), 1), round(max(loads), 1)] if loads else None, "approaches": approaches}


def summarise_scale(raw: dict) -> dict:
    peers = {}
    for peer, records in raw["results"].items():
        med = lambda key, scale=1.0: median([r[key] * scale for r in records if r.get(key) is not None])
        tried = lambda key: [r for r in records if key in r]
        codes = sorted({r["status_code"] for r in tried("status") if r.get("status_code") is not None})
        peers[peer] = {"boot_s": rounded(med("boot"), 2), "rss_mib": rounded(med("rss", 1 / 2**20), 1),
                       "fds": rounded(med("fds")), "status_s": rounded(med("status"), 2) if tried("status") else None,
                       "status_exit": codes or None, "status_lines": rounded(med("status_lines")),
                       "sigterm_gone_s": rounded(med("stop"), 2),
                       "sigterm_killed": sum(1 for r in tried("stop") if r["stop"] is None),
                       "left": max((r["left"] for r in tried("left")), default=None)}
        if peer == "posix_spawn":
            peers[peer]["spawn_loop_s"] = rounded(med("spawn_loop"), 2)
    return {"rounds": max(len(r) for r in raw["results"].values()), "units": raw["units"], "cap_s": raw["cap"],
            "peers": peers}


def summarise(results: Path, previous: dict, skip: frozenset = frozenset()) -> dict:
    """The summary of the run in `results`; sections it lacks, or whose benchmark is in `skip`
    (it failed), are kept from `previous`."""
    report = (results / "report.md").read_text() if (results / "report.md").exists() else ""
    machine = report.splitlines()[2] if len(report.splitlines()) > 2 else ""
    run = {"run": results.name, "machine": machine}
    summary = dict(previous)
    if (results / "pid1.json").exists() and "pid1" not in skip:
        summary["pid1"] = {**run, **summarise_pid1(json.loads((results / "pid1.json").read_text()))}
    if (results / "scale.json").exists() and "scale" not in skip:
        summary["scale"] = {**run, **summarise_scale(json.loads((results / "scale.json").read_text()))}
    if (results / "sockets.json").exists() and "sockets" not in skip:
        for part, figures in summarise_sockets(json.loads((results / "sockets.json").read_text())).items():
            summary[part] = {**run, **figures}
    if (results / "reload.json").exists() and "reload" not in skip:
        summary["reload"] = {**run, **summarise_reload(json.loads((results / "reload.json").read_text()))}
    return summary


# ---------------------------------------------------------------------------- summary → README

def table(headers: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("–" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def thousands(n) -> str:
    return f"{n:,}"


def met(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render_pid1(s: dict) -> str:
    peers = s["peers"]
    rows = []
    for name in PID1_PEERS:
        p = peers.get(name)
        if p is None:
            continue
        zombies = thousands(p["zombies_at_100_ms"])
        if p["zombies_at_100_ms"]:
            zombies += (f" (all reaped after {p['all_reaped_ms']} ms)" if p["all_reaped_ms"] is not None
                        else f" (not all reaped after {s['reap_cap_s']} s)")
        rows.append([name, p["rss_mib"], p["first_200_ms"], zombies, p["wakeups_per_s"], p["sigterm_gone_ms"],
                     p["sigterm_gone_stubborn_ms"]])
    launches = s.get("first_200_launches")
    first_200 = (f"first HTTP 200 (ms, median of {launches} launches)" if launches
                 else "first HTTP 200 (ms, one launch a round)")
    text = table(["", "PID 1 memory (MiB)", first_200,
                  f"zombies 100 ms after a {thousands(s['orphans'])}-orphan burst", "idle wake-ups/s",
                  "SIGTERM → all gone (ms)", "same, one service ignores SIGTERM, `timeout_stop_sec: 2` (ms)"], rows)
    a, tini = peers["activator"], peers.get("tini")
    gap = a["first_200_ms"] - tini["first_200_ms"] if tini else None
    goals = [f"memory ≤ 15 MiB ({a['rss_mib']}: {met(a['rss_mib'] <= 15)})"]
    if gap is not None:
        goals.append(f"first 200 ≤ tini + {FIRST_200_MARGIN_MS} ms ({gap:+d} ms: {met(gap <= FIRST_200_MARGIN_MS)})")
    goals += [f"no zombie at 100 ms ({a['zombies_at_100_ms']}: {met(a['zombies_at_100_ms'] == 0)})",
              f"no idle wake-up ({a['wakeups_per_s']}/s: {met(a['wakeups_per_s'] == 0)})",
              f"SIGTERM → gone < 100 ms ({a['sigterm_gone_ms']} ms: {met(a['sigterm_gone_ms'] < 100)})",
              f"2 s + < 100 ms with a service that ignores SIGTERM ({a['sigterm_gone_stubborn_ms']} ms: "
              f"{met(a['sigterm_gone_stubborn_ms'] < 2100)})"]
    return (f"Medians of {s['rounds']} rounds, peers interleaved.\n\n{text}\n\n"
            f"activator's goals, from the table: {'; '.join(goals)}.")


def seconds(value) -> str | None:
    return None if value is None else f"{value:.2f}"


def render_scale(s: dict) -> str:
    units, rows = s["units"], []
    for name, label in SCALE_PEERS.items():
        p = s["peers"].get(name)
        if p is None:
            continue
        if p["status_s"] is None:
            status = "—"
        else:
            status = f"{p['status_s']:.2f} (exit {'/'.join(map(str, p['status_exit'] or ['?']))}, {thousands(p['status_lines'])} lines)"
        stop = f"> {s['cap_s']:g} (killed)" if p["sigterm_gone_s"] is None else f"{p['sigterm_gone_s']:.2f}"
        if p["sigterm_gone_s"] is not None and p["sigterm_killed"]:
            stop = f"{stop} ({p['sigterm_killed']} of {s['rounds']} killed at {s['cap_s']:g} s)"
        label = label.replace("× N", f"×{thousands(units)}")
        rows.append([label, seconds(p["boot_s"]), p["rss_mib"], thousands(p["fds"]) if p["fds"] is not None else None,
                     status, stop])
    text = table(["", f"boot → {thousands(units)} running (s)", "PID 1 memory (MiB)", "PID 1's open descriptors",
                  "status command (s)", "SIGTERM → all gone (s)"], rows)
    lines = [f"{thousands(units)} services of `sleep infinity`; medians of {s['rounds']} rounds, peers interleaved.",
             "", text, ""]
    floor = s["peers"].get("posix_spawn")
    if floor and floor.get("spawn_loop_s") is not None:
        lines.append(f"The C program's own loop of {thousands(units)} `posix_spawnp` took {floor['spawn_loop_s']:.2f} s "
                     f"({floor['spawn_loop_s'] / units * 1000:.2f} ms a spawn; medians): no init can start them "
                     "much faster here.")
        lines.append("")
    left = {name: p["left"] for name, p in s["peers"].items() if p.get("left")}
    lines.append("After every SIGTERM, no process of the namespace was left." if not left else
                 "Processes left after SIGTERM: " + ", ".join(f"{n} {v}" for n, v in left.items()) + ".")
    lines.append("")
    a = s["peers"].get("activator")
    if a:
        goals = []
        for key, what in (("boot_s", "boot → all running"), ("sigterm_gone_s", "SIGTERM → all gone"),
                          ("status_s", "`activator status`")):
            goal = SCALE_GOALS_S[key]
            if a[key] is None:
                goals.append(f"{what} ≤ {goal:g} s (over the cap: {met(False)})")
            else:
                goals.append(f"{what} ≤ {goal:g} s ({a[key]:.2f} s: {met(a[key] <= goal)})")
        lines.append(f"activator's goals, from the table: {'; '.join(goals)}. PID 1 with {thousands(units)} units: "
                     f"{a['rss_mib']} MiB, {thousands(a['fds'])} descriptors (measured, no goal).")
    return "\n".join(lines).rstrip()


def ratio(a, b) -> str:
    return f"×{a / b:.2f}"


def render_gunicorn(s: dict) -> str:
    rounds = s["rounds"]
    rows, rps_ratios, cpu_ratios = [], [], []
    for i, r in enumerate(rounds, 1):
        fd, bind = r["fd"], r["bind"]
        rps_ratios.append(fd["rps"] / bind["rps"])
        cpu_ratios.append(fd["cpu_ms_per_1000"] / bind["cpu_ms_per_1000"])
        rows.append([f"round {i}", fd["rps"], bind["rps"], ratio(fd["rps"], bind["rps"]), fd["cpu_ms_per_1000"],
                     bind["cpu_ms_per_1000"], ratio(fd["cpu_ms_per_1000"], bind["cpu_ms_per_1000"]),
                     fd["activator_cpu_ms"]])
    rps, cpu = statistics.median(rps_ratios), statistics.median(cpu_ratios)
    rows.append(["**median**", "", "", f"**×{rps:.2f}**", "", "", f"**×{cpu:.2f}**", ""])
    text = table(["", "requests/s, socket from activator (`fd://`)", "requests/s, gunicorn binds the port",
                  "ratio", "server CPU per 1,000 requests (ms), `fd://`", "same, gunicorn binds", "ratio",
                  "activator CPU during the `fd://` run (ms)"], rows)
    return (f"{len(rounds)} paired rounds, each running both variants one after the other (the order "
            f"alternating); the ratios are fd:// ÷ bind within a round, and their medians.\n\n{text}\n\n"
            f"Goals: requests/s ×{rps:.2f} ≥ 0.97 ({met(rps >= 0.97)}), server CPU per request "
            f"×{cpu:.2f} ≤ 1.03 ({met(cpu <= 1.03)}).")


def render_accept(s: dict) -> str:
    servers = s["servers"]
    rows = []
    for name, label in ACCEPT_SERVERS.items():
        v = servers.get(name)
        if v is not None:
            pid1_1 = v.get("pid1_cpu_us_1", "–")  # older summaries have 32 in flight only
            rows.append([label, v["rate_1"], v["rate_32"], f"{pid1_1} / {v['pid1_cpu_us_32']}",
                         v["all_cpu_us_32"]])
    text = table(["", "connections/s, 1 at a time", "connections/s, 32 in flight",
                  "PID 1's CPU µs per connection, 1 at a time / 32 in flight",
                  "CPU µs per connection with the handlers (32 in flight)"], rows)
    a = servers["activator"]
    lines = [f"Medians of {s['rounds']} rounds.", "", text, ""]
    refs = [ref for ref in ("ssa --inetd", "ssa (fd 3)") if ref in servers]
    if refs:
        parts, ratios = [], []
        for key, what in (("rate_1", "one at a time"), ("rate_32", "32 in flight")):
            r = [a[key] / servers[ref][key] for ref in refs]
            ratios += r
            parts.append(f"{what} ×{min(r):.2f} to ×{max(r):.2f}")
        lines.append(f"activator ÷ systemd-socket-activate, from the rates above: {'; '.join(parts)} "
                     f"(goal ×1.1 both: {met(min(ratios) >= 1.1)}).")
    if "ssa + step" in servers and "ssa (fd 3)" in servers:
        step, fd3 = servers["ssa + step"], servers["ssa (fd 3)"]
        cost = [1 - step[k] / fd3[k] for k in ("rate_1", "rate_32")]
        lines.append(f"The `LISTEN_PID` shell step costs systemd-socket-activate {min(cost):.0%} to "
                     f"{max(cost):.0%} of its rate (the control row against the fd 3 row).")
    return "\n".join(lines)


def render_reload(s: dict) -> str:
    rows = []
    for name, label in RELOAD_APPROACHES.items():
        v = s["approaches"].get(name)
        if v is None:
            continue
        failed = f"{v['failed']} of {thousands(v['requests'])}"
        if v["failed"]:
            failed += f" ({100 * v['failed'] / v['requests']:.1f} %)"
        rows.append([label, failed, f"{v['p99_ms']} ({v['steady_p99_ms']})", v["open_loop_p99_ms"],
                     f"{v['restart_s']} s"])
    text = table(["", "failed probe requests", "probe p99 during restarts (steady), ms", "open-loop p99, ms",
                  "one restart takes"], rows)
    load = f"; load average {s['load'][0]} to {s['load'][1]}" if s.get("load") else ""
    ours = [(RELOAD_APPROACHES[n], s["approaches"][n]) for n in ("activator", "activator-usr2") if n in s["approaches"]]
    ok = all(v["failed"] == 0 and v["p99_ms"] <= 60 for _, v in ours)
    figures = "; ".join(f"{label.split(': ', 1)[-1]}: {v['failed']} failed, p99 {v['p99_ms']} ms" for label, v in ours)
    return (f"{'One round' if s['rounds'] == 1 else str(s['rounds']) + ' rounds'}{load}.\n\n{text}\n\n"
            f"activator's goal, no failed request and a p99 during restarts ≤ 60 ms: {met(ok)} ({figures}).")


def render_before_after(summary: dict) -> str:
    """activator's own figures, before this round's fast paths (`before`, kept in the summary
    from the runs that measured the old tree) and in the current run; the peers' rows are in
    the tables below."""
    before = summary["before"]

    def pid1_gap(s):
        peers = s["peers"]
        return peers["activator"]["first_200_ms"] - peers["tini"]["first_200_ms"]

    def accept_range(s, key):
        servers = s["servers"]
        r = [servers["activator"][key] / servers[ref][key] for ref in ("ssa --inetd", "ssa (fd 3)")]
        return f"×{min(r):.2f} to ×{max(r):.2f}"

    def reload_p99(s):
        return f"{s['approaches']['activator']['p99_ms']} ms, {s['approaches']['activator-usr2']['p99_ms']} ms"

    rows = []
    figures = [
        ("pid1", "first HTTP 200, activator − tini (ms)", lambda s: f"{pid1_gap(s):+d}", "≤ +40"),
        ("pid1", "PID 1 memory, 20 services (MiB)", lambda s: s["peers"]["activator"]["rss_mib"], "≤ 15"),
        ("pid1", "idle wake-ups/s", lambda s: s["peers"]["activator"]["wakeups_per_s"], "0"),
        ("pid1", "SIGTERM → all gone (ms)", lambda s: s["peers"]["activator"]["sigterm_gone_ms"], "< 100"),
        ("scale", "1,000 units: boot → all running (s)", lambda s: seconds(s["peers"]["activator"]["boot_s"]), "≤ 0.5"),
        ("scale", "1,000 units: SIGTERM → all gone (s)",
         lambda s: seconds(s["peers"]["activator"]["sigterm_gone_s"]), "≤ 1"),
        ("scale", "1,000 units: `activator status` (s)", lambda s: seconds(s["peers"]["activator"]["status_s"]), "≤ 1"),
        ("scale", "1,000 units: PID 1 memory (MiB) / descriptors",
         lambda s: f"{s['peers']['activator']['rss_mib']} / {thousands(s['peers']['activator']['fds'])}", "—"),
        ("accept", "per connection, one at a time: ÷ systemd-socket-activate",
         lambda s: accept_range(s, "rate_1"), "≥ ×1.1"),
        ("accept", "per connection, 32 in flight: ÷ systemd-socket-activate",
         lambda s: accept_range(s, "rate_32"), "≥ ×1.1"),
        ("accept", "per connection, PID 1's CPU µs (32 in flight)",
         lambda s: s["servers"]["activator"]["pid1_cpu_us_32"], "—"),
        ("reload", "reload p99 during restarts, SIGHUP and SIGUSR2", reload_p99, "≤ 60 ms"),
    ]
    for section, what, value, goal in figures:
        if section in before and section in summary:
            rows.append([what, value(before[section]), value(summary[section]), goal])
    runs = sorted({before[k]["run"] for k in before if isinstance(before[k], dict)})
    return (f"Before: the tree before these fast paths (runs {', '.join(runs)}); after: the runs "
            f"named at the top of this section.\n\n"
            + table(["activator", "before", "after", "goal"], rows))


def render(summary: dict) -> dict[str, str]:
    blocks = {}
    runs = sorted({(v["run"], v["machine"]) for k, v in summary.items() if k != "before"})
    blocks["run"] = "\n".join(f"Run {run}: {machine}." for run, machine in runs)
    for name, renderer in (("pid1", render_pid1), ("scale", render_scale), ("gunicorn", render_gunicorn), ("accept", render_accept),
                           ("reload", render_reload)):
        if name in summary:
            blocks[name] = renderer(summary[name])
    if "before" in summary:
        blocks["before-after"] = render_before_after(summary)
    return blocks


def update(readme: str, blocks: dict[str, str]) -> str:
    for name, text in blocks.items():
        pattern = re.compile(rf"(<!-- bench:{name} -->).*?(<!-- /bench:{name} -->)", re.S)
        if not pattern.search(readme):
            raise SystemExit(f"README.md has no <!-- bench:{name} --> ... <!-- /bench:{name} --> block")
        readme = pattern.sub(lambda m: f"{m.group(1)}\n{text}\n{m.group(2)}", readme)
    return readme


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from", dest="results", type=Path, help="a run's raw results (bench/results/DATE)")
    parser.add_argument("--skip", default="", help="with --from: comma-separated benchmarks that failed")
    parser.add_argument("--check", action="store_true", help="only say whether README §12 is up to date")
    args = parser.parse_args()
    summary = json.loads(SUMMARY.read_text()) if SUMMARY.exists() else {}
    if args.results:
        summary = summarise(args.results, summary, frozenset(args.skip.split(",")))
        SUMMARY.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {SUMMARY.relative_to(BENCH.parent)}", file=sys.stderr)
    readme = README.read_text()
    wanted = update(readme, render(summary))
    if args.check:
        if wanted != readme:
            print("README §12 differs from what bench/summary.json gives: run bench/report.py", file=sys.stderr)
            return 1
        return 0
    if wanted != readme:
        README.write_text(wanted)
        print("README §12 regenerated from bench/summary.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
