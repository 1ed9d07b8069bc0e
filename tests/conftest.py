import compileall
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
