"""README §12 is bench/summary.json as bench/report.py renders it, and its quoted ratios follow
from its tables."""

from __future__ import annotations

import importlib.util
import json
import re
import statistics

from harness import ROOT

spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

README = (ROOT / "README.md").read_text()
SUMMARY = json.loads((ROOT / "bench" / "summary.json").read_text())


def block(name: str) -> str:
    return re.search(rf"<!-- bench:{name} -->\n(.*?)\n<!-- /bench:{name} -->", README, re.S).group(1)


def rows(text: str) -> list[list[str]]:
    """The cells of a markdown table's body rows."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not line.startswith("|---")][1:]


def test_readme_section_12_is_what_the_summary_gives():
    assert report.update(README, report.render(SUMMARY)) == README, "run bench/report.py"


def test_the_summary_is_small():
    assert len((ROOT / "bench" / "summary.json").read_bytes()) < 16_000


def test_first_200_gap_quoted_is_the_tables():
    table = {row[0]: row for row in rows(block("pid1"))}
    gap = int(table["activator"][2]) - int(table["tini"][2])
    assert f"first 200 ≤ tini + {report.FIRST_200_MARGIN_MS} ms ({gap:+d} ms" in block("pid1")


def test_gunicorn_ratios_are_the_medians_of_the_rounds_shown():
    body = rows(block("gunicorn"))
    rounds, median_row = body[:-1], body[-1]
    rps = [int(r[1]) / int(r[2]) for r in rounds]
    cpu = [int(r[4]) / int(r[5]) for r in rounds]
    for r, a, b in zip(rounds, rps, cpu):
        assert (r[3], r[6]) == (f"×{a:.2f}", f"×{b:.2f}")
    assert median_row[3] == f"**×{statistics.median(rps):.2f}**"
    assert median_row[6] == f"**×{statistics.median(cpu):.2f}**"
    assert f"requests/s ×{statistics.median(rps):.2f} ≥ 0.97" in block("gunicorn")


def test_accept_ratios_quoted_follow_from_the_rates_shown():
    table = {row[0].split(" ")[0] if row[0].startswith("activator") else row[0]: row for row in rows(block("accept"))}
    ours = table["activator"]
    quoted = []
    for k, what in ((1, "one at a time"), (2, "32 in flight")):
        ratios = [int(ours[k]) / int(row[k]) for name, row in table.items()
                  if name.startswith("systemd-socket-activate")]
        assert len(ratios) == 2
        quoted.append(f"{what} ×{min(ratios):.2f} to ×{max(ratios):.2f}")
    assert f"from the rates above: {'; '.join(quoted)} " in block("accept")


def test_scale_goals_quoted_are_the_tables():
    table = {row[0]: row for row in rows(block("scale"))}
    ours = table["activator"]
    boot, status, stop = float(ours[1]), float(ours[4].split()[0]), float(ours[5])
    text = block("scale")
    assert f"boot → all running ≤ 0.5 s ({ours[1]} s: {'met' if boot <= 0.5 else '**missed**'})" in text
    assert f"SIGTERM → all gone ≤ 1 s ({ours[5]} s: {'met' if stop <= 1 else '**missed**'})" in text
    assert f"`activator status` ≤ 1 s ({ours[4].split()[0]} s: {'met' if status <= 1 else '**missed**'})" in text
    assert f"{ours[2]} MiB, {ours[3]} descriptors" in text
