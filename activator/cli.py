"""The command line (SPEC §6, §8): run the init, `check`, `status`, `reload`, and the per-unit
commands (client.py)."""

from __future__ import annotations

import os
import sys

from activator import __version__

RUNTIME_DIR = "/run/activator"
UNIT_COMMANDS = ("start", "stop", "restart", "signal", "scale", "logs")
USAGE = """\
activator [--units DIR]... [--log-format text|json] [--http ADDR] [-- CMD [ARG...]]
       activator check [--units DIR]...
       activator status [UNIT...] [--json] [--wide]
       activator reload
       activator start|stop UNIT...
       activator restart UNIT[.N]...
       activator signal UNIT[.N] SIGNAL [--group]
       activator scale UNIT N
       activator logs [UNIT[.N]...] [-n N] [-f]
       activator import FILE... [--out DIR] [--force]"""
DESCRIPTION = """\
An init for containers: runs as PID 1, reaps every process, binds sockets first and hands them
to services (LISTEN_FDS or $(sockets.NAME)), serves sd_notify, and is controlled by signals:
SIGHUP reloads the unit files, SIGTERM/SIGINT shut down in order, SIGUSR1 prints the status,
SIGUSR2 restarts every service one instance at a time."""


class UsageError(Exception):
    pass


def _parser(**options):
    """An argparse parser whose errors are UsageError (exit 2), for the commands other than
    the init itself, which parses its few options by hand (see parse_run_arguments)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):
            raise UsageError(f"{self.prog}: {message}")

    return Parser(**options)


def _units_argument(parser) -> None:
    parser.add_argument("--units", action="append", metavar="DIR",
                        help="a units directory (repeatable; a later one overrides a same-named unit); "
                             "default $ACTIVATOR_UNITS (colon-separated), else /etc/activator/units")


def runtime_dir() -> str:
    # absolute: NOTIFY_SOCKET, a path in it, must reach services in any working directory
    return os.path.abspath(os.environ.get("ACTIVATOR_RUNTIME_DIR") or RUNTIME_DIR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv and argv[0] in ("check", "status", "reload", "import") + UNIT_COMMANDS else None
    try:
        if command == "check":
            parser = _parser(prog="activator check", description="Validate unit files.")
            _units_argument(parser)
            return check(parser.parse_args(argv[1:]))
        if command == "status":
            parser = _parser(prog="activator status", description="Show the running stack.")
            parser.add_argument("units", nargs="*", metavar="UNIT", help="only these units")
            parser.add_argument("--json", action="store_true", help="print status.json with CPU and memory")
            parser.add_argument("--wide", action="store_true", help="never cut a line to the terminal's width")
            args = parser.parse_args(argv[1:])
            from activator import status
            return status.command(runtime_dir(), args.json, args.units, args.wide)
        if command == "reload":
            parser = _parser(prog="activator reload",
                             description="Reload the unit files of the running activator and wait for the outcome.")
            parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
            return reload(parser.parse_args(argv[1:]))
        if command in UNIT_COMMANDS:
            from activator import client
            return client.run(command, client.add_parsers(_parser)[command].parse_args(argv[1:]),
                              runtime_dir())
        if command == "import":
            from activator.importing import command as importing
            parser = _parser(prog="activator import", description=importing.DESCRIPTION)
            importing.arguments(parser)
            return importing.run(parser.parse_args(argv[1:]))
        return run(argv)
    except UsageError as e:
        print(e, file=sys.stderr)
        print(f"usage: {USAGE}", file=sys.stderr)
        return 2


def check(args) -> int:
    from activator import discovery, units

    dirs, explicit = discovery.directories(args.units, os.environ)
    try:
        model = units.load(dirs, os.environ, explicit)
    except units.UnitsError as e:
        # The report is the command's output (stdout, as linters do); stderr is for misuse.
        for problem in e.problems:
            print(problem)
        errors = len(e.errors)
        print(f"{errors} error{'s' * (errors != 1)}")
        return 1
    for warning in model.warnings:
        print(warning)
    print(f"ok: {model.summary()} in {':'.join(dirs)}")
    return 0


RUN_HELP = f"""usage: {USAGE}

{DESCRIPTION}

options:
  --units DIR          a units directory (repeatable; a later one overrides a same-named unit);
                       default $ACTIVATOR_UNITS (colon-separated), else /etc/activator/units
  --log-format FORMAT  text (default) or json: one object per line, for activator's messages
                       and service output alike
  --http ADDR          serve /livez, /readyz, /metrics, /status.json and a dashboard on
                       HOST:PORT, [V6]:PORT or unix:/path (default $ACTIVATOR_HTTP; off)
  -- CMD [ARG...]      run CMD as the extra unit `main`: activator exits with its status
  --version            print the version
  -h, --help           print this help

commands: check, status, reload, start, stop, restart, signal, scale, logs, import (each has
--help)
"""


def parse_run_arguments(argv: list[str]) -> tuple[list[str], str, list[str] | None, str | None]:
    """(units directories, log format, command, HTTP address) of `activator [...] [-- CMD...]`.

    Written out rather than with argparse: PID 1 stays smaller without it (argparse pulls in
    shutil, gettext, bz2 and lzma: about 2 MiB resident for the life of the container)."""
    units: list[str] = []
    log_format = "text"
    http = os.environ.get("ACTIVATOR_HTTP") or None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1:]
            if not command:
                raise UsageError("activator: nothing after --")
            return units, log_format, command, http
        option, equals, value = arg.partition("=")
        if option in ("--units", "--log-format", "--http"):
            if not equals:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"activator: {option} needs a value")
                value = argv[i]
            if option == "--units":
                units.append(value)
            elif option == "--http":
                http = value
            elif value in ("text", "json"):
                log_format = value
            else:
                raise UsageError(f"activator: --log-format: expected text or json, got {value!r}")
        elif arg == "--version":
            print(f"activator {__version__}")
            raise SystemExit(0)
        elif arg in ("-h", "--help"):
            sys.stdout.write(RUN_HELP)
            raise SystemExit(0)
        else:
            raise UsageError(f"activator: unknown argument {arg!r}")
        i += 1
    return units, log_format, None, http


def run(argv: list[str]) -> int:
    units_dirs, log_format, command_line, http_address = parse_run_arguments(argv)
    from activator import discovery, loading

    dirs, explicit = discovery.directories(units_dirs, os.environ)
    dirs = [os.path.abspath(d) for d in dirs]
    loader = loading.start(dirs, dict(os.environ), explicit)  # reads while we import the init

    from activator import log as logmod
    from activator import status  # imported now, in parallel with the loader
    from activator.manager import Manager
    from activator.sockets import BindError

    level = {"debug": logmod.DEBUG, "warning": logmod.WARNING, "error": logmod.ERROR}.get(
        os.environ.get("ACTIVATOR_LOG_LEVEL", "").lower(), logmod.INFO)
    log = logmod.Log(json_format=log_format == "json", level=level)
    model = _loaded_model(loader, command_line, log)
    if isinstance(model, int):
        return model

    os.chdir("/")  # services start where their unit says; activator holds no directory busy
    try:
        status.check_runtime_dir(runtime_dir())
    except OSError as e:
        log.error(f"runtime directory {runtime_dir()}: {e.strerror}: nothing started")
        return 2
    manager = Manager(model, log, runtime_dir(), command=command_line, explicit_dirs=explicit)
    server = None
    if http_address:  # bound before anything starts; h11 is imported only then
        from activator import http
        try:
            listener = http.bind(http_address)
        except http.AddressError as e:
            log.error(f"{e}: nothing started")
            return 2
    try:
        manager.boot()
        server = http.serve(listener, manager) if http_address else None
    except BindError as e:
        log.error(f"{e}: nothing started")
        return 2
    except Exception:  # PID 1 never dies of a traceback: stop what started, then exit
        import traceback
        log.error("cannot start:\n" + traceback.format_exc().rstrip())
        return manager.fatal()
    try:
        return manager.run()
    except BaseException:
        import traceback
        log.error("the event loop broke:\n" + traceback.format_exc().rstrip())
        return manager.fatal()
    finally:
        if server is not None:
            server.close()
        log.flush()  # a stalled reader gets a few seconds, not forever


def _loaded_model(loader, command_line, log):
    """The model the loader read (with `-- CMD`), or the exit status when there is none."""
    from activator import loading
    from activator import model as modelmod

    try:
        model = loading.wait(*loader)
        if command_line:
            model = modelmod.with_command(model, command_line, os.getcwd())
    except modelmod.UnitsError as e:
        for problem in e.problems:
            (log.warning if problem.warning else log.error)(str(problem))
        log.error("invalid unit files: nothing started")
        return 2
    except loading.LoadFailed as e:
        log.error(f"{e}: nothing started")
        return 1
    return model


def reload(args) -> int:
    """Over the control socket, which answers with the outcome and every error line; by
    SIGHUP and status.json where there is no control socket."""
    from activator import client

    directory = runtime_dir()
    try:
        reply = client.Connection(directory, timeout=args.timeout).ask({"command": "reload"})
    except client.NotRunning:
        return reload_by_signal(args, directory)
    except (OSError, ValueError) as e:
        print(f"activator reload: {e}", file=sys.stderr)
        return 1
    for error in reply.get("errors") or []:
        print(error, file=sys.stderr)
    if "outcome" not in reply:
        print(f"activator reload: {reply.get('error', 'failed')}", file=sys.stderr)
        return 1
    print(f"reload {reply['outcome']} (generation {reply.get('generation')})")
    return 0 if reply.get("ok") else 1


def reload_by_signal(args, directory: str) -> int:
    import signal
    import time

    from activator import locate, status

    try:
        with open(os.path.join(directory, "activator.pid")) as f:
            pid = int(f.read().strip())
        current = status.read(directory)
        before = current.get("reload", {}).get("completed", 0)
    except status.Damaged as e:
        print(f"activator reload: {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:
        print(f"activator reload: no running activator in {directory}: {e}", file=sys.stderr)
        return status.NOT_RUNNING
    recorded, pid = pid, locate.activator_pid(directory, pid, current.get("process_start"))
    if pid is None:  # never signal a stranger that happens to have the recorded pid here
        print(f"activator reload: no running activator in {directory}: activator (pid "
              f"{recorded}) is not running here", file=sys.stderr)
        return status.NOT_RUNNING
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
