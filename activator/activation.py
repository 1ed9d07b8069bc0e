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
    return UnitLaunch(unit, base_env, environ, notify_path).launch(number, socket_fds, stored, connection)


class UnitLaunch:
    """What every process of one unit receives alike, worked out once: the command line and
    the environment where they do not name the instance, and the program's path, found at the
    first start. An `accept` unit starts a process per connection: this is the part of that
    work which does not change from one connection to the next."""

    def __init__(self, unit: Unit, base_env: Mapping[str, str], environ: Mapping[str, str],
                 notify_path: str | None, found: dict | None = None):
        self.unit = unit
        # Paths found, shared by the units of one launcher: 1,000 units of `sleep` search once.
        self.found = {} if found is None else found
        self.environ = environ
        self.names = {s.name: 3 + i for i, s in enumerate(unit.sockets)}
        varies = any(r.kind == "instance" for t in unit.exec for r in t.refs)
        self.argv = None if varies else [t.expand(self.names, 1, environ) for t in unit.exec]
        env = dict(base_env)
        if unit.credentials is not None and unit.credentials.user:  # as systemd's User= does
            env.update(USER=unit.credentials.user, LOGNAME=unit.credentials.user,
                       HOME=unit.credentials.home or "/")
        env.update(unit.file_environment)
        self.per_instance: list[tuple[str, object]] = []  # environment naming the instance
        for key, template in unit.environment:
            if any(r.kind == "instance" for r in template.refs):
                self.per_instance.append((key, template))
            else:
                env[key] = template.expand(self.names, 1, environ)
        protocol = {}  # always wins over the unit's own environment
        if notify_path and unit.notify_access != "none":
            protocol["NOTIFY_SOCKET"] = notify_path
        if unit.watchdog_sec:
            protocol["WATCHDOG_USEC"] = str(int(unit.watchdog_sec * 1_000_000))
        protocol["ACTIVATOR_UNIT"] = unit.name
        self.protocol = protocol
        env.update(protocol)
        self.env = env
        self.pid_variables = ("WATCHDOG_PID",) if unit.watchdog_sec else ()
        # The path found is kept unless the command line or PATH names the instance.
        self.keeps_program = self.argv is not None and all(k != "PATH" for k, _ in self.per_instance)
        self.program: str | None = None

    def launch(self, number: int, socket_fds: list[int], stored: list[tuple[str, int]],
               connection: dict | None = None) -> Launch:
        unit = self.unit
        argv = (list(self.argv) if self.argv is not None
                else [t.expand(self.names, number, self.environ) for t in unit.exec])
        env = dict(self.env)
        if self.per_instance:
            for key, template in self.per_instance:
                env[key] = template.expand(self.names, number, self.environ)
            env.update(self.protocol)

        fds = list(socket_fds)
        pid_variables = self.pid_variables
        if connection is not None:
            fds = [connection["fd"]]
            env.update(LISTEN_FDS="1", LISTEN_FDNAMES="connection")
            pid_variables = ("LISTEN_PID", *pid_variables)
            for key in ("REMOTE_ADDR", "REMOTE_PORT"):
                if connection.get(key) is not None:
                    env[key] = str(connection[key])
            if "REMOTE_ADDR" in env:
                env["REMOTE_ADDR"] = plain_address(env["REMOTE_ADDR"])
        elif unit.socket_env and (fds or stored):
            fds += [fd for _, fd in stored]
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join([s.name for s in unit.sockets] + [name for name, _ in stored])
            pid_variables = ("LISTEN_PID", *pid_variables)
        env["ACTIVATOR_INSTANCE"] = str(number)

        return Launch(program=self.find(argv[0], env), argv=argv, env=env, fds=fds,
                      cwd=unit.working_directory, umask=unit.umask, credentials=unit.credentials,
                      pid_variables=pid_variables, confirm_exec=unit.type == "exec",
                      stdio_socket=connection is not None and unit.stdio == "socket")

    def find(self, program: str, env: Mapping[str, str]) -> str:
        """The program's path, searched for (as execvp would) until it is found once; a
        command line that names the instance is searched for every time."""
        if self.program is not None:
            return self.program
        unit = self.unit
        search = (program, env.get("PATH") or service_path(unit, self.environ), unit.working_directory,
                  unit.credentials)
        path = self.found.get(search)
        if path is None:
            path, error = find_program(*search)
            if path is None:
                raise SpawnError(program, error[0], error[1])
            self.found[search] = path
        if self.keeps_program:
            self.program = path
        return path

    def forget_program(self) -> None:
        """The path found no longer runs (the program was removed): search again next time."""
        self.program = None
        self.found.clear()
