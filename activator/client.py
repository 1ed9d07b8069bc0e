"""The per-unit commands of the command line, spoken over the control socket (control.py).

    activator start UNIT...            activator signal UNIT[.N] SIGNAL [--group]
    activator stop UNIT...             activator scale UNIT N
    activator restart UNIT[.N]...      activator logs [UNIT[.N]...] [-n N] [-f]

Each sends one JSON request and prints what the reply says. Exit status: 0 done, 1 refused or
failed (the reason on stderr), 2 a bad command line, 3 no activator running there.
"""

from __future__ import annotations

import json
import os
import socket
import sys

from activator.status import NOT_RUNNING

CONTROL_FILE = "control"
WAIT_SECONDS = 600.0  # a start or restart waits for readiness: timeout_start_sec may be long


class NotRunning(Exception):
    pass


class Connection:
    def __init__(self, runtime_dir: str, timeout: float = WAIT_SECONDS):
        path = os.path.join(runtime_dir, CONTROL_FILE)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            self.sock.close()
            raise NotRunning(f"no running activator in {runtime_dir}: {e.strerror}") from None
        self.buffer = b""

    def send(self, request: dict) -> None:
        self.sock.sendall(json.dumps(request).encode() + b"\n")

    def receive(self) -> dict | None:
        """The next reply line; None when activator closed the connection."""
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def ask(self, request: dict) -> dict:
        self.send(request)
        reply = self.receive()
        if reply is None:
            raise NotRunning("activator closed the connection (did it stop?)")
        return reply


def run(command: str, args, runtime_dir: str) -> int:
    """One per-unit command; its exit status."""
    request = {"command": command}
    if command in ("start", "stop", "restart"):
        request["units"] = args.units
    elif command == "signal":
        request.update(units=[args.unit], signal=args.signal, group=args.group)
    elif command == "scale":
        request.update(unit=args.unit, instances=args.instances)
    elif command == "logs":
        return logs(args, runtime_dir)
    try:
        reply = Connection(runtime_dir).ask(request)
    except NotRunning as e:
        print(f"activator {command}: {e}", file=sys.stderr)
        return NOT_RUNNING
    except (OSError, ValueError) as e:
        print(f"activator {command}: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"activator {command}: {reply.get('error', 'failed')}", file=sys.stderr)
        return 1
    print(describe(command, reply))
    return 0


def describe(command: str, reply: dict) -> str:
    if command == "start":
        return "started: " + " ".join(reply.get("started", []))
    if command == "stop":
        also = reply.get("also_stopped") or []
        return "stopped: " + " ".join(reply.get("stopped", [])) + (
            f" (first, as they require it: {' '.join(also)})" if also else "")
    if command == "restart":
        also = reply.get("also_restarted") or []
        return "restarted: " + " ".join(reply.get("restarted", [])) + (
            f" (then, as they require it: {' '.join(also)})" if also else "")
    if command == "signal":
        return f"sent {reply['signal']} to pid " + " ".join(map(str, reply["signalled"]))
    if command == "scale":
        return f"{reply['unit']}: {reply['instances']} instances (files: {reply['in_files']})"
    return json.dumps(reply)


def logs(args, runtime_dir: str) -> int:
    request = {"command": "logs", "units": args.units, "lines": args.lines, "follow": args.follow}
    try:
        connection = Connection(runtime_dir, timeout=None if args.follow else WAIT_SECONDS)
        reply = connection.ask(request)
        if not reply.get("ok"):
            print(f"activator logs: {reply.get('error', 'failed')}", file=sys.stderr)
            return 1
        for line in reply.get("lines", []):
            print_line(line)
        while args.follow:
            message = connection.receive()
            if message is None:
                return 0  # activator stopped
            if "line" in message:
                print_line(message["line"])
            elif not message.get("ok", True):
                print(f"activator logs: {message.get('error')}", file=sys.stderr)
                return 1
    except NotRunning as e:
        print(f"activator logs: {e}", file=sys.stderr)
        return NOT_RUNNING
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as e:
        print(f"activator logs: {e}", file=sys.stderr)
        return 1
    return 0


def print_line(line: dict) -> None:
    sys.stdout.write(f"{line.get('time', '')} {line.get('label', line.get('unit', ''))} "
                     f"{line.get('stream', '')}: {line.get('text', '')}\n")
    sys.stdout.flush()


def add_parsers(make_parser) -> dict:
    """The argument parsers of the per-unit commands, by command name."""
    parsers = {}
    for name, what in (("start", "Start units that are stopped, failed or exited, and wait."),
                       ("stop", "Stop units (and first those that require them); they stay stopped."),
                       ("restart", "Restart units or instances (UNIT.N), rolling, and wait.")):
        parser = make_parser(prog=f"activator {name}", description=what)
        parser.add_argument("units", nargs="+", metavar="UNIT")
        parsers[name] = parser
    parser = make_parser(prog="activator signal", description="Send a signal to a unit's main processes.")
    parser.add_argument("unit", metavar="UNIT[.N]")
    parser.add_argument("signal", metavar="SIGNAL", help="a name (HUP, SIGHUP) or a number")
    parser.add_argument("--group", action="store_true", help="to the whole process group")
    parsers["signal"] = parser
    parser = make_parser(prog="activator scale", description="Run N instances of a unit now.")
    parser.add_argument("unit", metavar="UNIT")
    parser.add_argument("instances", metavar="N", type=int)
    parsers["scale"] = parser
    parser = make_parser(prog="activator logs", description="The last lines each unit wrote.")
    parser.add_argument("units", nargs="*", metavar="UNIT[.N]")
    parser.add_argument("-n", dest="lines", type=int, default=100, help="lines per unit (default 100)")
    parser.add_argument("-f", dest="follow", action="store_true", help="follow until interrupted")
    parsers["logs"] = parser
    return parsers
