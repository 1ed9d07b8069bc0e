"""The unit layer: activator's decisions tested as plain functions and objects, without
starting a process (no PID namespace, no sockets, no timers that fire). Fast: a few seconds.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
