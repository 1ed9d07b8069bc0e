"""A socket-activated test service: reports what it received, then serves its sockets.

    sock_serve.py REPORT_DIR [--fd N]... [--instance I] [--exit-after N] [--read] [--no-systemd]

At start, before anything else touches the descriptors, it writes REPORT_DIR/<pid>.json
(atomically): its pid, argv, environment, what python-systemd's `listen_fds_with_names()` and
`listen_fds()` return, and for every descriptor it holds: file kind, O_NONBLOCK, and for a
socket its family, type, address and options. Then it serves every socket it was given
(LISTEN_FDS, else the `--fd` numbers):

- listening stream socket: each connection gets one JSON line (pid, instance, socket name,
  the peer as accepted) and is closed; with `--read`, what the client sent until it shut down
  its side is first appended to REPORT_DIR/received.log;
- datagram socket: each datagram is answered with a JSON datagram (with the data it got);
- fifo: what a writer writes is appended to REPORT_DIR/fifo.log.

`--exit-after N` exits 0 once N connections or datagrams were served (on-demand tests).
"""

import fcntl
import json
import os
import selectors
import socket
import stat
import sys


def describe_fd(fd: int) -> dict:
    try:
        st = os.fstat(fd)
    except OSError:
        return {"kind": "closed"}
    info = {"nonblocking": bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK),
            "cloexec": bool(fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC),
            "inode": st.st_ino}
    if stat.S_ISFIFO(st.st_mode):
        info["kind"] = "fifo"
        return info
    if not stat.S_ISSOCK(st.st_mode):
        info["kind"] = "file"
        return info
    sock = socket.socket(fileno=os.dup(fd))
    try:
        info["kind"] = "socket"
        info["family"] = socket.AddressFamily(sock.family).name
        info["type"] = socket.SocketKind(sock.type).name
        name = sock.getsockname()
        info["address"] = name.decode(errors="replace") if isinstance(name, bytes) else name
        opts = {"acceptconn": (socket.SOL_SOCKET, socket.SO_ACCEPTCONN),
                "reuse_port": (socket.SOL_SOCKET, socket.SO_REUSEPORT),
                "keepalive": (socket.SOL_SOCKET, socket.SO_KEEPALIVE)}
        if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
            opts["nodelay"] = (socket.IPPROTO_TCP, socket.TCP_NODELAY)
        if sock.family == socket.AF_INET6:
            opts["ipv6_only"] = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
        for key, (level, option) in opts.items():
            info[key] = sock.getsockopt(level, option)
    finally:
        sock.close()
    return info


def main() -> None:
    args = sys.argv[1:]
    report_dir = args.pop(0)
    fds_arg, instance, exit_after, use_systemd, read = [], None, 0, True, False
    while args:
        flag = args.pop(0)
        if flag == "--fd":
            fds_arg.append(int(args.pop(0)))
        elif flag == "--instance":
            instance = args.pop(0)
        elif flag == "--exit-after":
            exit_after = int(args.pop(0))
        elif flag == "--read":
            read = True
        elif flag == "--no-systemd":
            use_systemd = False
        else:
            raise SystemExit(f"unknown argument {flag}")

    # Descriptors first, before python-systemd (sd_listen_fds sets close-on-exec on them).
    held = sorted(int(e) for e in os.listdir("/proc/self/fd"))
    fds = {fd: describe_fd(fd) for fd in held}
    fds = {fd: info for fd, info in fds.items() if info["kind"] != "closed"}  # listdir's own fd
    environ = dict(os.environ)
    with_names: dict = {}
    plain: list = []
    if use_systemd:
        from systemd import daemon
        with_names = daemon.listen_fds_with_names(unset_environment=False)
        plain = daemon.listen_fds()  # this one unsets LISTEN_* (C unsetenv)
    report = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "environ": environ,
              "instance": instance, "listen_fds_with_names": {str(k): v for k, v in with_names.items()},
              "listen_fds": plain, "fds": {str(k): v for k, v in fds.items()}}
    path = os.path.join(report_dir, f"{os.getpid()}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(report, f)
    os.rename(path + ".tmp", path)

    names = dict(with_names) or {fd: str(fd) for fd in fds_arg}
    instance = instance or environ.get("ACTIVATOR_INSTANCE")
    served = 0
    selector = selectors.DefaultSelector()
    for fd, name in names.items():
        info = fds.get(fd, {})
        if info.get("kind") == "fifo":
            selector.register(fd, selectors.EVENT_READ, ("fifo", name, None))
            continue
        sock = socket.socket(fileno=fd)
        kind = "listener" if sock.type == socket.SOCK_STREAM else "datagram"
        selector.register(fd, selectors.EVENT_READ, (kind, name, sock))

    def reply(peer, **extra) -> bytes:
        return json.dumps({"pid": os.getpid(), "instance": instance, "peer": peer, **extra}).encode() + b"\n"

    while True:
        for key, _ in selector.select():
            kind, name, sock = key.data
            if kind == "fifo":
                data = os.read(key.fd, 65536)
                with open(os.path.join(report_dir, "fifo.log"), "ab") as f:
                    f.write(data)
                continue
            if kind == "listener":
                # The listening socket is blocking (as it must be): accept() waits only if
                # another instance took the connection first.
                conn, peer = sock.accept()
                with conn:
                    peer = list(peer) if isinstance(peer, tuple) else peer
                    if read:
                        data = b""
                        while chunk := conn.recv(65536):
                            data += chunk
                        with open(os.path.join(report_dir, "received.log"), "ab") as f:
                            f.write(data)
                    try:
                        conn.sendall(reply(peer, name=name))
                    except OSError:
                        pass  # the client did not wait for the answer
            else:
                data, peer = sock.recvfrom(65536)
                shown = list(peer) if isinstance(peer, tuple) else peer
                sock.sendto(reply(shown, name=name, data=data.decode(errors="replace")), peer)
            served += 1
            if exit_after and served >= exit_after:
                sys.exit(0)


if __name__ == "__main__":
    main()
