import pytest

from harness import Activator


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
