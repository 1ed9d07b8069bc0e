"""Run every benchmark with its defaults and print their tables (`make bench`).

    .venv/bin/python bench/run.py [--rounds N] [--only pid1,scale,sockets,reload,load_units,faults]

Installs the peers first (bench/setup, idempotent). The tables go to stdout and, with the
machine's description and every raw measurement, to bench/results/DATE/ (not committed). At the
end, bench/report.py writes the figures to bench/summary.json (committed) and regenerates README
§12's tables from it.
Progress goes to stderr. `--rounds N` is passed to pid1.py, scale.py, sockets.py and reload.py: more
rounds, steadier medians, longer runs (load_units.py and faults.py run with their own
defaults).
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BENCHMARKS = ["pid1", "scale", "sockets", "reload", "load_units", "faults"]
OWN_DEFAULTS = ("load_units", "faults")  # no --json, no --rounds: run as they are


def machine() -> str:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} × {model}; kernel "
            f"{platform.release()}; Python {platform.python_version()}; load average at start {load}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, help="rounds for every benchmark (default: each its own)")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks to run")
    args = parser.parse_args()

    subprocess.run([str(BENCH / "setup")], check=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_dir = BENCH / "results" / stamp
    out_dir.mkdir(parents=True, exist_ok=True)
    report = [f"# activator benchmarks, {stamp}", "", machine(), ""]
    print("\n".join(report), flush=True)
    failed = []
    for name in args.only.split(","):
        script = BENCH / f"{name}.py"
        if not script.exists():
            print(f"({name}.py is not there yet: skipped)\n", flush=True)
            continue
        argv = [sys.executable, str(script)]
        if name not in OWN_DEFAULTS:
            argv += ["--json", str(out_dir / f"{name}.json")]
            if args.rounds:
                argv += ["--rounds", str(args.rounds)]
        print(f"running {' '.join(argv[1:])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        result = subprocess.run(argv, cwd=BENCH.parent, stdout=subprocess.PIPE, text=True)
        text = result.stdout.rstrip() + f"\n\n({name}: {time.monotonic() - started:.0f} s)\n"
        if result.returncode != 0:
            failed.append(name)
            text += f"\n{name} FAILED (exit {result.returncode})\n"
        print(text, flush=True)
        report.append(text)
    (out_dir / "report.md").write_text("\n".join(report))
    print(f"tables and raw figures in {out_dir.relative_to(BENCH.parent)}/", file=sys.stderr)
    # The summary takes what this run measured (a failed benchmark's section keeps the last
    # good run's figures, each section says which run it is from); README §12 follows it.
    subprocess.run([sys.executable, str(BENCH / "report.py"), "--from", str(out_dir),
                    "--skip", ",".join(failed)], check=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
