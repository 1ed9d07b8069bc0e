"""Starts a program the way podman or a host systemd hands it sockets (SPEC §2 inherit:).

    sock_launcher.py --pid PID --names A:B --fd N [--fd M]... -- PROGRAM [ARG...]

Moves the given descriptors to 3, 4, … (inheritable), sets LISTEN_FDS, LISTEN_FDNAMES and
LISTEN_PID=PID (1 for a program that will be PID 1 of a new PID namespace, as podman sets it),
and execs PROGRAM.
"""

import os
import sys


def main() -> None:
    args = sys.argv[1:]
    split = args.index("--")
    options, command = args[:split], args[split + 1:]
    fds, names, pid = [], None, None
    while options:
        flag = options.pop(0)
        if flag == "--fd":
            fds.append(int(options.pop(0)))
        elif flag == "--names":
            names = options.pop(0)
        elif flag == "--pid":
            pid = options.pop(0)
        else:
            raise SystemExit(f"unknown option {flag}")
    top = max([2 + len(fds), *fds]) + 1
    moved = [os.dup2(fd, top + i, inheritable=False) for i, fd in enumerate(fds)]
    for fd in fds:
        os.close(fd)
    for i, fd in enumerate(moved):
        os.dup2(fd, 3 + i)  # inheritable
        os.close(fd)
    env = dict(os.environ, LISTEN_FDS=str(len(fds)), LISTEN_PID=pid or str(os.getpid()))
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    os.execvpe(command[0], command, env)


if __name__ == "__main__":
    main()
