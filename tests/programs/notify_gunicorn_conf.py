"""gunicorn configuration for test_notify_ready.py: hold the arbiter at a gate before it binds.

on_starting runs in the arbiter before it creates its listeners and sends READY=1, so while
the gate (the file named by $GUNICORN_GATE) is closed the unit must stay `starting`.
"""

import os
import time


def on_starting(server):
    from systemd import daemon  # here: a module-level `daemon` would be read as gunicorn's setting

    gate = os.environ["GUNICORN_GATE"]
    daemon.notify("STATUS=held at the gate")
    deadline = time.monotonic() + 120
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.01)
