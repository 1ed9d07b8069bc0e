"""A daemon that hands its main process over: `notify_mainpid.py LOG`.

The started process forks a child that stays (the daemon), sends MAINPID=<child> and READY=1
from itself, waits at a notify barrier (sd_notify_barrier: BARRIER=1 with a pipe that the
receiver closes once it has read everything before it), so that MAINPID= was certainly taken
while the child was still its child, and exits 0. LOG gets
JSON lines: "start" (the first process), "daemon" (the child, with its pid), "exit".
The child runs until it is signalled, or exits with the code written into LOG.exit.PID (its
own pid as it sees it).
"""

import json
import os
import select
import sys
import time

from systemd import daemon

log = sys.argv[1]


def event(name, **data):
    with open(log, "a") as f:
        f.write(json.dumps({"event": name, "pid": os.getpid(), "time": time.monotonic(), **data}) + "\n")


event("start")
r, w = os.pipe()
child = os.fork()
if child == 0:
    os.close(r)
    event("daemon", ppid=os.getppid())
    os.close(w)  # the parent may go on
    code_file = f"{log}.exit.{os.getpid()}"
    while not os.path.exists(code_file):
        time.sleep(0.01)
    code = int(open(code_file).read())
    event("exit", code=code)
    os._exit(code)
os.close(w)
os.read(r, 1)  # EOF once the child has logged itself
daemon.notify(f"MAINPID={child}\nREADY=1\nSTATUS=daemon {child} running")
r, w = os.pipe()
daemon.notify("BARRIER=1", fds=[w])
os.close(w)
select.select([r], [], [], 5)
event("exit", code=0)
sys.exit(0)
