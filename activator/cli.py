"""The command line (SPEC §6): run the init, `check`, `status`, `reload`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from activator import __version__

RUNTIME_DIR = "/run/activator"
USAGE = """\
activator [--units DIR]... [--log-format text|json] [-- CMD [ARG...]]
       activator check [--units DIR]...
       activator status [--json]
       activator reload"""
DESCRIPTION = """\
An init for containers: runs as PID 1, reaps every process, binds sockets first and hands them
to services (LISTEN_FDS or $(sockets.NAME)), serves sd_notify, and is controlled by signals:
SIGHUP reloads the unit files, SIGTERM/SIGINT shut down in order, SIGUSR1 prints the status,
SIGUSR2 restarts every service one instance at a time."""


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{self.prog}: {message}")


def _units_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--units", action="append", metavar="DIR",
                        help="a units directory (repeatable; a later one overrides a same-named unit); "
                             "default $ACTIVATOR_UNITS (colon-separated), else /etc/activator/units")


def runtime_dir() -> str:
    return os.environ.get("ACTIVATOR_RUNTIME_DIR") or RUNTIME_DIR


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in ("check", "status", "reload") else None
    try:
        if command == "check":
            parser = _Parser(prog="activator check", description="Validate unit files.")
            _units_argument(parser)
            return check(parser.parse_args(argv[1:]))
        if command == "status":
            parser = _Parser(prog="activator status", description="Show the running stack.")
            parser.add_argument("--json", action="store_true", help="print status.json with CPU and memory")
            args = parser.parse_args(argv[1:])
            from activator import status
            return status.command(runtime_dir(), args.json)
        if command == "reload":
            parser = _Parser(prog="activator reload",
                             description="Reload the unit files of the running activator and wait for the outcome.")
            parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
            return reload(parser.parse_args(argv[1:]))
        return run(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2


def check(args) -> int:
    from activator import units

    dirs, explicit = units.directories(args.units, os.environ)
    try:
        model = units.load(dirs, os.environ, explicit)
    except units.UnitsError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        errors = len(e.errors)
        print(f"{errors} error{'s' * (errors != 1)}", file=sys.stderr)
        return 1
    for warning in model.warnings:
        print(warning, file=sys.stderr)
    print(f"ok: {model.summary()} in {':'.join(dirs)}")
    return 0


def run(argv: list[str]) -> int:
    command_line = None
    if "--" in argv:
        split = argv.index("--")
        argv, command_line = argv[:split], argv[split + 1:]
        if not command_line:
            raise UsageError("activator: nothing after --")
    parser = _Parser(prog="activator", usage=USAGE, description=DESCRIPTION,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _units_argument(parser)
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="how activator writes its messages and service output (default text)")
    parser.add_argument("--version", action="version", version=f"activator {__version__}")
    args = parser.parse_args(argv)

    from activator import log as logmod
    from activator import units

    level = {"debug": logmod.DEBUG, "warning": logmod.WARNING, "error": logmod.ERROR}.get(
        os.environ.get("ACTIVATOR_LOG_LEVEL", "").lower(), logmod.INFO)
    log = logmod.Log(json_format=args.log_format == "json", level=level)
    dirs, explicit = units.directories(args.units, os.environ)
    dirs = [os.path.abspath(d) for d in dirs]
    try:
        model = units.load(dirs, os.environ, explicit)
        if command_line:
            model = units.with_command(model, command_line, os.getcwd())
    except units.UnitsError as e:
        for problem in e.problems:
            (log.warning if problem.warning else log.error)(str(problem))
        log.error(f"invalid unit files: nothing started")
        return 2

    from activator.manager import Manager
    from activator.sockets import BindError

    os.chdir("/")  # services start where their unit says; activator holds no directory busy
    manager = Manager(model, log, runtime_dir())
    manager.command = command_line
    manager.explicit_dirs = explicit
    try:
        manager.boot()
    except BindError as e:
        log.error(f"{e}: nothing started")
        return 2
    except Exception as e:  # PID 1 never dies of a traceback: stop what started, then exit
        import traceback
        log.error("cannot start:\n" + traceback.format_exc().rstrip())
        return manager.fatal()
    try:
        return manager.run()
    except BaseException:
        import traceback
        log.error("the event loop broke:\n" + traceback.format_exc().rstrip())
        return manager.fatal()


def reload(args) -> int:
    from activator import status

    directory = runtime_dir()
    try:
        with open(os.path.join(directory, "activator.pid")) as f:
            pid = int(f.read().strip())
        before = status.read(directory).get("reload", {}).get("completed", 0)
    except (OSError, ValueError) as e:
        print(f"activator reload: no running activator in {directory}: {e}", file=sys.stderr)
        return 1
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            is_activator = b"activator" in f.read()
    except OSError:
        is_activator = False
    if not is_activator:  # e.g. the pid file of another PID namespace: never signal a stranger
        print(f"activator reload: pid {pid} from {directory}/activator.pid is not an activator here",
              file=sys.stderr)
        return 1
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as e:
        print(f"activator reload: cannot signal pid {pid}: {e.strerror}", file=sys.stderr)
        return 1
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        time.sleep(0.05)  # a client waiting on a file: the init itself never polls
        try:
            record = status.read(directory).get("reload", {})
        except (OSError, ValueError):
            continue
        if record.get("completed", 0) > before:
            outcome = record.get("outcome")
            for error in record.get("errors") or []:
                print(error, file=sys.stderr)
            print(f"reload {outcome} (generation {record.get('generation')})")
            return 0 if outcome == "applied" else 1
    print(f"activator reload: no outcome within {args.timeout:g}s", file=sys.stderr)
    return 1
