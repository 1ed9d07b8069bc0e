"""A scripted sd_notify service for the tests in test_notify_*.py.

    notify_agent.py STEP...

Each STEP is `VERB` or `VERB:ARG`, run in order:

  log:PATH         from now on, append one JSON line per event to PATH; writes the event
                   "start" at once (pid, ppid, time, the protocol variables it was given,
                   and what each descriptor LISTEN_FDS passed is: name, inode, content)
  notify:TEXT      send TEXT with python-systemd's notify() (`\\n` in TEXT is a newline);
                   event "sent" with the time just before sending
  notify-file:PATH wait until PATH exists, then send its content
  descendant:N:TEXT  fork a chain of N processes (N=1: a child, 2: a grandchild); the last one
                   sends TEXT (event "sent", with its own pid and ppid), waits at a barrier
                   until its message was read, and they all exit; returns when the chain has
  wait:PATH        wait until PATH exists (a gate the test opens)
  fdstore:NAME=TEXT   a new memfd holding TEXT (its offset left at the end), sent with
                   FDSTORE=1 and FDNAME=NAME; event "stored" with its inode
  fdstore-dup:NAME=TEXT  the same, but the one descriptor twice in that message, and once
                   more in a second one
  fdremove:NAME    FDSTOREREMOVE=1 with FDNAME=NAME
  fdappend:NAME=TEXT  write TEXT through the descriptor received as NAME
  sleep:SECONDS    (part of a scenario, e.g. a slow start; never a test's synchronisation)
  trap:SIG,...     record these signals as event "signal"; SIGABRT, SIGTERM and SIGINT then
                   make it exit 0, so that only activator's own verdict can make it a failure
  ping:SECONDS     send WATCHDOG=1 every SECONDS from a thread, until `unping`
  unping           stop pinging; event "unpinged" with the time of the last ping
  control:FIFO     from now on read STEPs from FIFO, one per line, forever
  exit:CODE
  forever          wait for signals

Times are CLOCK_MONOTONIC, which the test shares (a PID namespace has no clock of its own).
"""

import json
import os
import select
import signal
import stat
import sys
import threading
import time

from systemd import daemon

LOG = None
PING = {"stop": None, "last": None, "thread": None}
EXITING = {signal.SIGABRT, signal.SIGTERM, signal.SIGINT}


def event(kind, **data):
    if LOG is None:
        return
    record = {"event": kind, "pid": os.getpid(), "time": time.monotonic(), **data}
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def on_signal(signum, frame):
    event("signal", signal=signal.Signals(signum).name)
    if signum in EXITING:
        os._exit(0)


def pinger(interval, stop):
    while not stop.wait(interval):
        daemon.notify("WATCHDOG=1")
        PING["last"] = time.monotonic()


def received_fds():
    """What LISTEN_FDS brought: for each fd its name, kind, inode, and for files the content
    and the offset of the open file description."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        return []
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    result = []
    for i in range(int(os.environ.get("LISTEN_FDS", "0"))):
        fd = 3 + i
        st = os.fstat(fd)
        info = {"fd": fd, "name": names[i] if i < len(names) else None, "dev": st.st_dev,
                "ino": st.st_ino, "kind": "socket" if stat.S_ISSOCK(st.st_mode) else "file"}
        if info["kind"] == "file":
            info["offset"] = os.lseek(fd, 0, os.SEEK_CUR)
            info["content"] = os.pread(fd, 4096, 0).decode(errors="replace")
        result.append(info)
    return result


def received_fd(name):
    names = os.environ.get("LISTEN_FDNAMES", "").split(":")
    return 3 + names.index(name)


def store(name, text, copies=1, again=False):
    fd = os.memfd_create(name)
    os.write(fd, text.encode())
    st = os.fstat(fd)
    event("stored", name=name, dev=st.st_dev, ino=st.st_ino)
    daemon.notify(f"FDSTORE=1\nFDNAME={name}", fds=[fd] * copies)
    if again:
        daemon.notify(f"FDSTORE=1\nFDNAME={name}", fds=[fd])
    os.close(fd)


def barrier(timeout=5.0):
    """sd_notify_barrier(): BARRIER=1 with the write end of a pipe; the receiver closes it
    once it has read the message (and, datagrams being read in order, every earlier one).
    A process that exits right after notifying must do this: once it is gone, nobody can tell
    which unit its pid belonged to (systemd has the same rule)."""
    r, w = os.pipe()
    daemon.notify("BARRIER=1", fds=[w])
    os.close(w)
    ready, _, _ = select.select([r], [], [], timeout)
    os.close(r)
    event("barrier", released=bool(ready))


def descend(depth, text):
    pid = os.fork()
    if pid == 0:
        try:
            if depth > 1:
                descend(depth - 1, text)
            else:
                event("sent", message=text, ppid=os.getppid())
                daemon.notify(text)
                barrier()
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


def run(step):
    global LOG
    verb, _, arg = step.partition(":")
    if verb == "log":
        LOG = arg
        protocol = {k: v for k, v in os.environ.items()
                    if k.startswith(("LISTEN_", "WATCHDOG_", "NOTIFY_", "ACTIVATOR_"))}
        event("start", ppid=os.getppid(), env=protocol, fds=received_fds())
    elif verb == "notify":
        text = arg.replace("\\n", "\n")
        event("sent", message=text)
        if not daemon.notify(text):
            event("not-sent", message=text)
    elif verb == "notify-file":
        run(f"wait:{arg}")
        text = open(arg).read()
        event("sent", message=text)
        daemon.notify(text)
    elif verb == "descendant":
        depth, _, text = arg.partition(":")
        descend(int(depth), text.replace("\\n", "\n"))
    elif verb == "fdstore":
        name, _, text = arg.partition("=")
        store(name, text)
    elif verb == "fdstore-dup":
        name, _, text = arg.partition("=")
        store(name, text, copies=2, again=True)
    elif verb == "fdremove":
        daemon.notify(f"FDSTOREREMOVE=1\nFDNAME={arg}")
    elif verb == "fdappend":
        name, _, text = arg.partition("=")
        os.write(received_fd(name), text.encode())
    elif verb == "wait":
        deadline = time.monotonic() + 120
        while not os.path.exists(arg):
            if time.monotonic() > deadline:
                sys.exit(3)
            time.sleep(0.01)
        event("opened", path=arg)
    elif verb == "sleep":
        time.sleep(float(arg))
    elif verb == "trap":
        for name in arg.split(","):
            signal.signal(signal.Signals[name], on_signal)
    elif verb == "ping":
        stop = threading.Event()
        PING["stop"] = stop
        daemon.notify("WATCHDOG=1")
        PING["last"] = time.monotonic()
        PING["thread"] = threading.Thread(target=pinger, args=(float(arg), stop), daemon=True)
        PING["thread"].start()
    elif verb == "unping":
        PING["stop"].set()
        PING["thread"].join()  # a ping under way is finished: "last" is the last one
        event("unpinged", last=PING["last"])
    elif verb == "control":
        fd = os.open(arg, os.O_RDWR)  # read-write: never EOF while no writer is connected
        event("control")
        with os.fdopen(fd, "r") as fifo:
            for line in fifo:
                if line.strip():
                    run(line.rstrip("\n"))
    elif verb == "exit":
        event("exit", code=int(arg))
        sys.exit(int(arg))
    elif verb == "forever":
        while True:
            signal.pause()
    else:
        raise SystemExit(f"notify_agent: unknown step {step!r}")


if __name__ == "__main__":
    for step in sys.argv[1:]:
        run(step)
