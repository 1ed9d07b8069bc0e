"""The control socket: `$ACTIVATOR_RUNTIME_DIR/control`, one JSON object per line each way.

A unix stream socket with mode 0600. A client is admitted only if its uid, as the kernel
reports it (SO_PEERCRED), is 0 or activator's own; anyone else gets one error line and is
closed. Each request is one line holding a JSON object with a "command"; each reply is one
line, `{"ok": true, ...}` or `{"ok": false, "error": "..."}`; `logs` with `follow` then sends
one more line per new output line until the client goes away.

Everything happens in the one event loop, without blocking it, whatever a client does:

- a client that sends nothing complete within IDLE_SECONDS is told so and closed, and so is
  one whose request grows past MAX_REQUEST without its newline;
- replies are written without blocking; what the client does not read waits in a buffer of at
  most MAX_PENDING bytes, and a client that reads nothing for WRITE_SECONDS, or lets the
  buffer fill, is dropped (a `logs -f` follower that stalls loses its place, never slows us);
- at most MAX_CLIENTS connections at once: past that, newcomers get an error line and are
  closed, so no list grows without bound.

With no client connected, nothing here wakes activator up. The server knows no command: it
hands each request to `handle(client, request)` and the client's `reply` sends the answer, at
once or later (a `start` replies once the unit is started).
"""

from __future__ import annotations

# json is imported in the functions that use it: PID 1 starts its first service before it needs it.
import os
import socket
import struct

MAX_REQUEST = 64 * 1024
MAX_PENDING = 1 << 20
MAX_CLIENTS = 128
IDLE_SECONDS = 10.0
WRITE_SECONDS = 10.0
CONTROL_FILE = "control"


class Client:
    def __init__(self, server: "ControlServer", sock: socket.socket, uid: int):
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.uid = uid
        self.inbox = b""
        self.outbox = bytearray()
        self.timer = None
        self.busy = False  # a request is being answered: further lines wait
        self.closed = False
        self.closing = False  # close once the last reply is written
        self.on_close = None  # what a follower must undo when it goes

    def reply(self, message: dict, done: bool = True) -> None:
        """Send one line; `done`: the request is answered, the next line may be read."""
        import json
        if self.closed:
            return
        self.outbox += json.dumps(message, separators=(",", ":")).encode() + b"\n"
        if len(self.outbox) > MAX_PENDING:
            self.server.close(self, "it does not read its replies")
            return
        if done:
            self.busy = False
        self.server.flush(self)
        if done and not self.closed:
            self.server.next_request(self)


class ControlServer:
    def __init__(self, loop, runtime_dir: str, log, handle):
        self.loop = loop
        self.log = log
        self.handle = handle
        self.path = os.path.join(runtime_dir, CONTROL_FILE)
        self.clients: dict[int, Client] = {}
        _remove_stale(self.path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        umask = os.umask(0o177)  # created 0600: no moment when another user could connect
        try:
            self.sock.bind(self.path)
        finally:
            os.umask(umask)
        os.chmod(self.path, 0o600)
        self.sock.listen(512)
        loop.add_reader(self.sock.fileno(), self.accept)

    def close_all(self) -> None:
        for client in list(self.clients.values()):
            self.close(client, None)
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        _remove_stale(self.path)

    def accept(self) -> None:
        import json
        for _ in range(16):
            try:
                sock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # out of descriptors: the rest wait in the backlog
                self.log.warning(f"control socket: cannot accept: {e.strerror}")
                return
            sock.setblocking(False)
            pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                                struct.calcsize("3i")))
            refusal = None
            if uid not in (0, os.geteuid()):
                refusal = f"uid {uid} may not control this activator (only root and uid {os.geteuid()})"
            elif len(self.clients) >= MAX_CLIENTS:
                refusal = f"too many control connections ({MAX_CLIENTS}); try again"
            if refusal:
                try:
                    sock.send(json.dumps({"ok": False, "error": refusal}).encode() + b"\n")
                except OSError:
                    pass
                sock.close()
                continue
            client = Client(self, sock, uid)
            self.clients[client.fd] = client
            self.loop.add_reader(client.fd, lambda c=client: self.readable(c))
            self.arm(client, IDLE_SECONDS, "it sent no request")

    def arm(self, client: Client, seconds: float, why: str) -> None:
        if client.timer is not None:
            client.timer.cancel()
        client.timer = self.loop.call_later(seconds, lambda: self.close(client, why))

    def readable(self, client: Client) -> None:
        try:
            data = client.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close(client, None)
            return
        client.inbox += data
        if len(client.inbox) > MAX_REQUEST and b"\n" not in client.inbox[:MAX_REQUEST + 1]:
            client.reply({"ok": False, "error": f"request over {MAX_REQUEST} bytes"})
            self.close_when_flushed(client)
            return
        if not client.busy:
            self.next_request(client)

    def next_request(self, client: Client) -> None:
        """Take the next complete line, if any, and hand it over."""
        if b"\n" not in client.inbox:
            if client.timer is None or client.timer.cancelled:
                self.arm(client, IDLE_SECONDS, "it sent no request")
            return
        line, client.inbox = client.inbox.split(b"\n", 1)
        if client.timer is not None:
            client.timer.cancel()
        client.busy = True
        request = parse(line)
        if isinstance(request, str):
            client.reply({"ok": False, "error": request})
            return
        try:
            self.handle(client, request)
        except Exception as e:  # a bug answering one request must not take the init down
            self.log.error(f"control socket: internal error on {request.get('command')!r}: {e!r}")
            client.reply({"ok": False, "error": "internal error (see activator's log)"})

    def flush(self, client: Client) -> None:
        try:
            sent = client.sock.send(client.outbox)
            del client.outbox[:sent]
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            self.close(client, None)
            return
        if client.outbox:
            if client.fd not in self.loop.writers:
                self.loop.add_writer(client.fd, lambda: self.flush(client))
                self.arm(client, WRITE_SECONDS, "it does not read its replies")
        elif client.fd in self.loop.writers:
            self.loop.remove_writer(client.fd)
            if client.timer is not None:
                client.timer.cancel()
            if client.closing:
                self.close(client, None)

    def close_when_flushed(self, client: Client) -> None:
        client.closing = True
        if not client.outbox:
            self.close(client, None)

    def close(self, client: Client, why: str | None) -> None:
        import json
        if client.closed:
            return
        client.closed = True
        if why:
            self.log.debug(f"control socket: closing a connection: {why}")
            try:
                client.sock.send(json.dumps({"ok": False, "error": f"closed: {why}"}).encode() + b"\n")
            except OSError:
                pass
        if client.timer is not None:
            client.timer.cancel()
        if client.on_close is not None:
            client.on_close()
        self.loop.remove_reader(client.fd)
        self.loop.remove_writer(client.fd)
        self.clients.pop(client.fd, None)
        client.sock.close()


def parse(line: bytes) -> dict | str:
    """The request in a line, or why it is not one."""
    import json
    try:
        request = json.loads(line)
    except (UnicodeDecodeError, ValueError) as e:
        return f"malformed request: not JSON ({e})"
    if not isinstance(request, dict):
        return "malformed request: expected a JSON object"
    if not isinstance(request.get("command"), str):
        return "malformed request: no \"command\" (a string)"
    return request


def _remove_stale(path: str) -> None:
    """The socket file of an earlier run (or ours, at exit)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
