"""What a service receives (SPEC §3): its descriptors, its environment, its command line.

`prepare` turns a unit, an instance number and activator's bound sockets into a `Launch`:

- fds: the unit's sockets in declared order, then the descriptors it stored with FDSTORE=1,
  become 3, 4, …; templates name those numbers, never activator's own;
- environment: activator's own, less the protocol variables it received itself (LISTEN_*,
  NOTIFY_SOCKET, WATCHDOG_*), then environment_file, then environment, then the protocol
  variables for this process (which always win);
- LISTEN_PID and WATCHDOG_PID are the service's own pid, set when it exists (spawn.py).
"""

from __future__ import annotations

from collections.abc import Mapping

from activator.spawn import Launch, SpawnError
from activator.model import Unit, find_program, service_path

PROTOCOL_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PIDFDID",
                      "NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC")


def base_environment(environ: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in environ.items() if k not in PROTOCOL_VARIABLES}


def plain_address(address: str) -> str:
    """An IPv4 client of a dual-stack socket shows as its IPv4 address (`::ffff:10.0.0.1` is
    10.0.0.1), as systemd writes REMOTE_ADDR."""
    if address.lower().startswith("::ffff:") and address.count(".") == 3:
        return address[7:]
    return address


def prepare(unit: Unit, number: int, socket_fds: list[int], stored: list[tuple[str, int]],
            base_env: Mapping[str, str], environ: Mapping[str, str], notify_path: str | None,
            connection: dict | None = None) -> Launch:
    """The Launch for instance `number` of `unit` (or for one connection of an accept unit)."""
    names = {s.name: 3 + i for i, s in enumerate(unit.sockets)}
    argv = [t.expand(names, number, environ) for t in unit.exec]

    env = dict(base_env)
    if unit.credentials is not None and unit.credentials.user:  # as systemd's User= does
        env.update(USER=unit.credentials.user, LOGNAME=unit.credentials.user,
                   HOME=unit.credentials.home or "/")
    env.update(unit.file_environment)
    for key, template in unit.environment:
        env[key] = template.expand(names, number, environ)

    fds = list(socket_fds)
    pid_variables: list[str] = []
    if connection is not None:
        fds = [connection["fd"]]
        env.update(LISTEN_FDS="1", LISTEN_FDNAMES="connection")
        pid_variables.append("LISTEN_PID")
        for key in ("REMOTE_ADDR", "REMOTE_PORT"):
            if connection.get(key) is not None:
                env[key] = str(connection[key])
        if "REMOTE_ADDR" in env:
            env["REMOTE_ADDR"] = plain_address(env["REMOTE_ADDR"])
    elif unit.socket_env and (fds or stored):
        fds += [fd for _, fd in stored]
        env["LISTEN_FDS"] = str(len(fds))
        env["LISTEN_FDNAMES"] = ":".join([s.name for s in unit.sockets] + [name for name, _ in stored])
        pid_variables.append("LISTEN_PID")
    if notify_path and unit.notify_access != "none":
        env["NOTIFY_SOCKET"] = notify_path
    if unit.watchdog_sec:
        env["WATCHDOG_USEC"] = str(int(unit.watchdog_sec * 1_000_000))
        pid_variables.append("WATCHDOG_PID")
    env["ACTIVATOR_UNIT"] = unit.name
    env["ACTIVATOR_INSTANCE"] = str(number)

    program = argv[0]
    path, error = find_program(program, env.get("PATH") or service_path(unit, environ),
                               unit.working_directory, unit.credentials)
    if path is None:
        raise SpawnError(program, error[0], error[1])
    return Launch(program=path, argv=argv, env=env, fds=fds, cwd=unit.working_directory,
                  umask=unit.umask, credentials=unit.credentials, pid_variables=tuple(pid_variables),
                  confirm_exec=unit.type == "exec",
                  stdio_socket=connection is not None and unit.stdio == "socket")
