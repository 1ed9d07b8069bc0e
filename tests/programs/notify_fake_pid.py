"""Try to pass for another process on the notify socket: `notify_fake_pid.py PIDFILE RESULT`.

Waits for PIDFILE (the pid to impersonate), then does what libsystemd's sd_pid_notify(pid=PID)
(python-systemd's notify(pid=PID)) does: sendmsg() with PID in SCM_CREDENTIALS, and when the
kernel refuses that (EPERM: only root may name another pid), sendmsg() again without, so that
the kernel attaches the real credentials. RESULT gets what happened, as JSON.

Plain sockets, no python-systemd: this runs as `nobody`, under whatever Python that user can
execute (the test's own may live in a directory only root can enter).
"""

import array
import json
import os
import socket
import sys
import time

pidfile, result = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 60
while not os.path.exists(pidfile):
    if time.monotonic() > deadline:
        sys.exit(3)
    time.sleep(0.01)
target = int(open(pidfile).read())
message = b"READY=1\nSTATUS=faked"
outcome = {"pid": os.getpid(), "uid": os.getuid(), "target": target}
with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
    credentials = array.array("i", [target, os.getuid(), os.getgid()]).tobytes()
    try:
        sock.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, credentials)], 0,
                     os.environ["NOTIFY_SOCKET"])
        outcome["faked"] = "sent"
    except OSError as e:
        outcome["faked"] = e.errno
        sock.sendmsg([message], [], 0, os.environ["NOTIFY_SOCKET"])
        outcome["resent"] = "sent"
with open(result + ".tmp", "w") as f:
    json.dump(outcome, f)
os.rename(result + ".tmp", result)
while True:
    time.sleep(3600)
