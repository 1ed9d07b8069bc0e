"""Zombie burst: fork N children that exit at once, then exit without waiting for them.

Run inside a PID namespace, the N zombies are reparented to its PID 1 the moment this
process exits, all together: PID 1 must reap them. Run with `python -S -I` (a small process
forks fast). Prints nothing; exit status 0 once every child was forked.
"""

import os
import sys

count = int(sys.argv[1])
for _ in range(count):
    if os.fork() == 0:
        os._exit(0)
os._exit(0)
