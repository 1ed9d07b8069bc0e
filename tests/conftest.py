import compileall
from collections import Counter
from pathlib import Path

import pytest

from harness import Activator


def pytest_sessionstart(session):
    """Fresh bytecode for the activator processes the tests start (see scripts/setup)."""
    compileall.compile_dir(Path(__file__).resolve().parent.parent / "activator", quiet=1)


@pytest.fixture
def activator(tmp_path):
    """Factory: activator(units, **options) starts one (as PID 1 by default), always cleaned up."""
    started = []

    def start(units=None, wait_ready=True, **options):
        run = Activator(tmp_path / f"a{len(started)}", units, **options)
        started.append(run)
        return run.start(wait_ready=wait_ready)

    yield start
    for run in started:
        run.cleanup()


def pytest_terminal_summary(terminalreporter):
    """How many tests were skipped, and why, at the end of every run (zero included): a green
    run that skipped something (IPv6, podman, root) must say so where it is read. pytest's
    own closing line ("N passed ...") still comes after this."""
    reasons = Counter()
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):  # (file, line, "Skipped: reason")
            reasons[report.longrepr[2].removeprefix("Skipped: ")] += 1
        else:
            reasons[str(report.longrepr)] += 1
    total = sum(reasons.values())
    terminalreporter.write_sep("-", f"skipped: {total} test{'' if total == 1 else 's'}")
    for reason, count in reasons.most_common():
        terminalreporter.write_line(f"{count:4d}  {reason}")
