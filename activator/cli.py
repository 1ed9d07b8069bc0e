"""The command line (SPEC §6, §8): run the init, `check`, `status`, `reload`, and the per-unit
commands (client.py)."""

from __future__ import annotations

import os
import sys

from activator import __version__

RUNTIME_DIR = "/run/activator"
UNIT_COMMANDS = ("start", "stop", "restart", "signal", "scale", "logs")
USAGE = """\
activator [--units DIR]... [--log-format text|json] [--http ADDR] [--cache FILE|--no-cache]
                 [-- CMD [ARG...]]
       activator check [--units DIR]... [--cache FILE|--no-cache]
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
            cache = parser.add_mutually_exclusive_group()
            cache.add_argument("--cache", metavar="FILE",
                               help="where to write the model cache the init boots from (default "
                                    "$ACTIVATOR_CACHE, else .activator-model in the first units directory)")
            cache.add_argument("--no-cache", action="store_true", help="write no model cache")
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
    from activator import discovery, modelcache, units

    dirs, explicit = discovery.directories(args.units, os.environ)
    cache = modelcache.location("off" if args.no_cache else args.cache, os.environ, dirs)
    try:
        model, facts = units.load_observed(dirs, os.environ, explicit)
    except units.UnitsError as e:
        # The report is the command's output (stdout, as linters do); stderr is for misuse.
        for problem in e.problems:
            print(problem)
        errors = len(e.errors)
        print(f"{errors} error{'s' * (errors != 1)}")
        if cache:
            try:
                modelcache.remove(cache)
            except OSError:
                pass  # a read-only directory holds no cache of these files to remove
        return 1
    for warning in model.warnings:
        print(warning)
    print(f"ok: {model.summary()} in {':'.join(dirs)}")
    if cache:
        write_cache(cache, dirs, explicit, model, facts)
    return 0


def write_cache(path: str, dirs: list[str], explicit: bool, model, facts: dict) -> None:
    """The model cache for the init, which names the directories absolute: with relative ones
    the units are loaded again as the init will load them. A cache that cannot be written is
    said on stderr, in one line; the check still succeeded."""
    from activator import modelcache, units

    absolute = [os.path.abspath(d) for d in dirs]
    try:
        if absolute != dirs:
            model, facts = units.load_observed(absolute, os.environ, explicit)
        modelcache.write(path, absolute, explicit, facts, model)
    except modelcache.NotACache as e:
        print(f"activator check: model cache not written: {e}", file=sys.stderr)
        return
    except OSError as e:
        print(f"activator check: model cache not written: {path}: {e.strerror or e}", file=sys.stderr)
        return
    except units.UnitsError:  # the files changed between the two loads
        print(f"activator check: model cache not written: {path}: the unit files changed "
              "during the check", file=sys.stderr)
        return
    print(f"model cache: {path}")


RUN_HELP = f"""usage: {USAGE}

{DESCRIPTION}

options:
  --units DIR          a units directory (repeatable; a later one overrides a same-named unit);
                       default $ACTIVATOR_UNITS (colon-separated), else /etc/activator/units
  --log-format FORMAT  text (default) or json: one object per line, for activator's messages
                       and service output alike
  --http ADDR          serve /livez, /readyz, /metrics, /status.json and a dashboard on
                       HOST:PORT, [V6]:PORT or unix:/path (default $ACTIVATOR_HTTP; off)
  --cache FILE         the model cache `activator check` wrote, used at boot when every file
                       it was made of is unchanged (default $ACTIVATOR_CACHE, else
                       .activator-model in the first units directory)
  --no-cache           load the unit files, whatever cache there is (also ACTIVATOR_CACHE=off)
  -- CMD [ARG...]      run CMD as the extra unit `main`: activator exits with its status
  --version            print the version
  -h, --help           print this help

commands: check, status, reload, start, stop, restart, signal, scale, logs, import (each has
--help)
"""


def parse_run_arguments(argv: list[str]) -> tuple[list[str], str, list[str] | None, str | None,
                                                  str | None]:
    """(units directories, log format, command, HTTP address, cache) of `activator [...] [--
    CMD...]`; the cache is a file, `off` (--no-cache), or None for the default.

    Written out rather than with argparse: PID 1 stays smaller without it (argparse pulls in
    shutil, gettext, bz2 and lzma: about 2 MiB resident for the life of the container)."""
    units: list[str] = []
    log_format = "text"
    http = os.environ.get("ACTIVATOR_HTTP") or None
    cache = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            command = argv[i + 1:]
            if not command:
                raise UsageError("activator: nothing after --")
            return units, log_format, command, http, cache
        option, equals, value = arg.partition("=")
        if option in ("--units", "--log-format", "--http", "--cache"):
            if not equals:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"activator: {option} needs a value")
                value = argv[i]
            if option == "--units":
                units.append(value)
            elif option == "--http":
                http = value
            elif option == "--cache":
                cache = value
            elif value in ("text", "json"):
                log_format = value
            else:
                raise UsageError(f"activator: --log-format: expected text or json, got {value!r}")
        elif arg == "--no-cache":
            cache = "off"
        elif arg == "--version":
            print(f"activator {__version__}")
            raise SystemExit(0)
        elif arg in ("-h", "--help"):
            sys.stdout.write(RUN_HELP)
            raise SystemExit(0)
        else:
            raise UsageError(f"activator: unknown argument {arg!r}")
        i += 1
    return units, log_format, None, http, cache


def run(argv: list[str]) -> int:
    units_dirs, log_format, command_line, http_address, cache_option = parse_run_arguments(argv)
    source, explicit = _model_source(units_dirs, cache_option)  # the loader reads meanwhile

    from activator import log as logmod
    from activator import status  # imported now, in parallel with the loader
    from activator.manager import Manager
    from activator.sockets import BindError

    level = {"debug": logmod.DEBUG, "warning": logmod.WARNING, "error": logmod.ERROR}.get(
        os.environ.get("ACTIVATOR_LOG_LEVEL", "").lower(), logmod.INFO)
    log = logmod.Log(json_format=log_format == "json", level=level)
    model = _loaded_model(source, command_line, log)
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


class _Source:
    """Where the boot's Model comes from: a fresh model cache, or the loader child (started
    while the init imports the rest of itself); and why a cache there is was not used."""

    def __init__(self, cache, cached, ignored, loader):
        self.cache, self.cached, self.ignored, self.loader = cache, cached, ignored, loader


def _model_source(units_dirs: list[str], cache_option: str | None) -> tuple[_Source, bool]:
    from activator import discovery, loading, modelcache

    dirs, explicit = discovery.directories(units_dirs, os.environ)
    dirs = [os.path.abspath(d) for d in dirs]
    cache = modelcache.location(cache_option, os.environ, dirs)
    cached, ignored = _cached_model(cache, dirs, explicit)
    loader = None if cached is not None else loading.start(dirs, dict(os.environ), explicit)
    return _Source(cache, cached, ignored, loader), explicit


def _cached_model(path: str | None, dirs: list[str], explicit: bool):
    """(the Model of a fresh model cache, None) or (None, why it was ignored, or None when
    there is no cache file)."""
    if path is None:
        return None, None
    from activator import modelcache

    try:
        return modelcache.load(path, dirs, explicit, os.environ), None
    except modelcache.Ignored as e:
        return None, str(e)
    except Exception as e:  # PID 1 never dies of a cache: it loads the files instead
        return None, f"unreadable ({type(e).__name__}: {e})"


def _loaded_model(source: _Source, command_line, log):
    """The model of the cache or the loader (with `-- CMD`), or the exit status when there is
    none."""
    from activator import loading
    from activator import model as modelmod

    if source.cached is not None:
        log.info(f"model from cache {source.cache}")
    elif source.ignored:
        log.info(f"model cache {source.cache} ignored: {source.ignored}")
    try:
        model = source.cached if source.loader is None else loading.wait(*source.loader)
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
