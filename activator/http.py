"""The HTTP endpoint (SPEC §9): probes, metrics, status and a dashboard, served by PID 1's loop.

Design
------
Why inside PID 1, and not a helper process: `/livez` must be answered by the loop that
reaps, so that a wedged loop fails the probe; a second process would need PID 1 to answer
it anyway, and a second Python interpreter costs 9 MiB where this costs about 2.3
(h11 and the modules below, measured by bench/http_endpoint.py; README has the figures).

How it stays out of the way of reaping and supervision:

- One nested epoll. The server keeps its own epoll set (the listening socket and every
  connection, each with the read/write interest it needs now) and registers that epoll's
  descriptor as one reader of the manager's loop: an epoll descriptor is readable while any
  of its members is ready. The manager's loop needs no new API, and one wake-up handles at
  most EVENTS_PER_WAKEUP events and ACCEPT_BATCH new connections before the loop reaps and
  handles signals again.
- No wake-up while nobody asks. Without connections nothing but the listening socket is
  watched and no timer is set. One timer, at the earliest deadline among the connections,
  cuts off clients that are idle or slow: a request must arrive whole within CLIENT_TIMEOUT
  of the connection (or of the previous answer), and an answer must be taken within
  CLIENT_TIMEOUT. Trickling a byte at a time does not extend it (slowloris).
- A bounded number of connections. At MAX_CONNECTIONS, a new connection evicts the oldest
  one still waiting for its request, so hundreds of slow clients cannot keep a probe out:
  a fresh client that sends its request at once is answered in the same wake-up.
- The protocol is h11's (a sans-I/O HTTP/1.1 state machine): requests are parsed by it,
  answers framed by it. Heads over MAX_HEAD bytes get 431, malformed requests 400, methods
  other than GET and HEAD 405, unknown paths 404. After an error the connection is closed
  once the answer is written (with a short lingering read, so the answer is not lost to a
  reset while unread request bytes are still arriving).
- The dashboard's live updates are server-sent events on `/events`: while at least one page
  is open, one timer every EVENT_PERIOD sends each of them the current state. A page that
  does not read its stream is cut off once MAX_PENDING bytes wait for it.
"""

from __future__ import annotations

import json
import os
import select
import socket
import stat
import time

import h11

from activator import metrics
from activator.view import View

MAX_CONNECTIONS = 64
MAX_HEAD = 8192  # bytes of request line and headers
CLIENT_TIMEOUT = 5.0  # seconds for a whole request, and for taking a whole answer
LINGER = 1.0  # seconds to drain a closing client's unread bytes
EVENTS_PER_WAKEUP = 64
ACCEPT_BATCH = 64
READ_SIZE = 16384
MAX_PENDING = 1 << 20  # bytes queued for one slow event-stream reader
EVENT_PERIOD = 1.0  # seconds between dashboard updates
OUTPUT_LINES = 20  # lines of each unit's output on the dashboard
REASONS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 405: b"Method Not Allowed",
           431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
           503: b"Service Unavailable"}
DASHBOARD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dashboard.html")


class AddressError(ValueError):
    pass


def parse_address(text: str) -> tuple[int, object]:
    """(family, address) of `HOST:PORT`, `[V6]:PORT` or `unix:/path`; AddressError if bad.
    An empty HOST means every interface."""
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise AddressError(f"--http {text!r}: no path after unix:")
        return socket.AF_UNIX, "\0" + path[1:] if path.startswith("@") else path
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or int(port) > 65535:
        raise AddressError(f"--http {text!r}: expected HOST:PORT, [V6]:PORT or unix:/path")
    if host.startswith("[") and host.endswith("]"):
        return socket.AF_INET6, (host[1:-1], int(port))
    if ":" in host:
        raise AddressError(f"--http {text!r}: write an IPv6 address in brackets: [{host}]:{port}")
    return socket.AF_INET, (host or "0.0.0.0", int(port))


def bind(text: str) -> socket.socket:
    """The listening socket for `--http TEXT`; AddressError saying why if it cannot be had."""
    family, address = parse_address(text)
    try:
        return _bind(family, address, text)
    except OSError as e:
        raise AddressError(f"--http {text}: cannot bind: {e.strerror or e}") from None


def _bind(family: int, address, text: str) -> socket.socket:
    if family == socket.AF_INET:
        host = address[0]
        try:  # a host name: resolved once, at boot. As bytes, so that an ASCII name does not
            # load the IDNA codec (unicodedata and stringprep: 0.4 MiB in PID 1 for good).
            family, _, _, _, address = socket.getaddrinfo(host.encode() if host.isascii() else host, address[1],
                                                          type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as e:
            raise AddressError(f"--http {text!r}: {e.strerror}") from None
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
    try:
        if family == socket.AF_UNIX:
            if not address.startswith("\0"):
                _remove_stale_socket(address)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        if family == socket.AF_UNIX and not address.startswith("\0"):
            os.chmod(address, 0o666)  # read-only, like status.json: any local user may look
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _remove_stale_socket(path: str) -> None:
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


def describe(sock: socket.socket) -> str:
    address = sock.getsockname()
    if sock.family == socket.AF_UNIX:
        name = address if isinstance(address, str) else "@" + address[1:].decode(errors="replace")
        return f"unix:{name}"
    if sock.family == socket.AF_INET6:
        return f"http://[{address[0]}]:{address[1]}/"
    return f"http://{address[0]}:{address[1]}/"


class Connection:
    __slots__ = ("sock", "fd", "http", "out", "deadline", "mask", "streaming", "closing", "lingering")

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        self.http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.out = bytearray()
        self.deadline: float | None = time.monotonic() + CLIENT_TIMEOUT
        self.mask = select.EPOLLIN
        self.streaming = False  # an event stream: answered, never finished
        self.closing = False  # close once `out` is written
        self.lingering = False  # written and shut down: draining the client's last bytes

    @property
    def waiting_for_request(self) -> bool:
        return not self.streaming and not self.out and not self.closing


class Server:
    def __init__(self, listener: socket.socket, manager):
        self.listener = listener
        self.manager = manager
        self.loop = manager.loop
        self.log = manager.log
        self.view = View(manager)
        self.address = describe(listener)
        self.connections: dict[int, Connection] = {}  # in order of arrival
        self.epoll = select.epoll(flags=select.EPOLL_CLOEXEC)
        self.epoll.register(listener.fileno(), select.EPOLLIN)
        self.timer = None
        self.timer_at: float | None = None
        self.event_timer = None
        self.loop.add_reader(self.epoll.fileno(), self.dispatch)
        self.log.info(f"HTTP endpoint on {self.address}")

    def close(self) -> None:
        for connection in list(self.connections.values()):
            self.drop(connection)
        self.loop.remove_reader(self.epoll.fileno())
        self.epoll.close()
        if self.listener.family == socket.AF_UNIX:
            path = self.listener.getsockname()
            if isinstance(path, str) and path:
                _remove_stale_socket(path)
        self.listener.close()

    # ------------------------------------------------------------------ events

    def dispatch(self) -> None:
        """The server's epoll is ready: a bounded batch of its events."""
        for fd, mask in self.epoll.poll(0, EVENTS_PER_WAKEUP):
            if fd == self.listener.fileno():
                self.accept()
                continue
            connection = self.connections.get(fd)
            if connection is None:
                continue
            try:
                if mask & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                    self.readable(connection)
                if mask & select.EPOLLOUT and connection.fd in self.connections:
                    self.flush(connection)
                    if connection.fd in self.connections and not connection.out:
                        self.process(connection)  # requests that came while it was not reading
            except Exception:  # a bug costs this client its connection, never the loop
                import traceback
                self.log.error("HTTP endpoint: internal error:\n" + traceback.format_exc().rstrip())
                self.drop(connection)

    def accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: the client waits in the backlog
                self.log.warning(f"HTTP endpoint: cannot accept: {e.strerror}")
                return
            sock.setblocking(False)
            if len(self.connections) >= MAX_CONNECTIONS:
                self.drop(self.eviction_candidate())
            connection = Connection(sock)
            self.connections[connection.fd] = connection
            self.epoll.register(connection.fd, select.EPOLLIN)
            self.arm(connection.deadline)

    def eviction_candidate(self) -> Connection:
        """The oldest connection still waiting for its request, else the oldest of all."""
        for connection in self.connections.values():
            if connection.waiting_for_request:
                return connection
        return next(iter(self.connections.values()))

    def readable(self, connection: Connection) -> None:
        try:
            data = connection.sock.recv(READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.drop(connection)
            return
        if connection.lingering:
            if not data:
                self.drop(connection)
            return
        connection.http.receive_data(data)
        self.process(connection)
        if not data and connection.fd in self.connections and not connection.out:
            self.drop(connection)  # the client is gone and nothing is left to write

    def process(self, connection: Connection) -> None:
        """Answer the requests h11 has parsed, one at a time, while nothing waits to be
        written (a client that does not read gets no further answer)."""
        http = connection.http
        while connection.fd in self.connections and not connection.out and not connection.closing:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as e:
                self.error(connection, e.error_status_hint if e.error_status_hint in REASONS else 400,
                           str(e))
                return
            if event is h11.NEED_DATA:
                return
            if isinstance(event, h11.Request):
                self.request(connection, event)
            elif isinstance(event, h11.ConnectionClosed):
                self.drop(connection)
                return
            elif event is h11.PAUSED:
                if http.our_state is h11.DONE and http.their_state is h11.DONE:
                    http.start_next_cycle()
                    connection.deadline = time.monotonic() + CLIENT_TIMEOUT
                    self.arm(connection.deadline)
                    continue
                return

    # ------------------------------------------------------------------ answers

    def request(self, connection: Connection, request: h11.Request) -> None:
        head = (len(request.method) + len(request.target) + 12
                + sum(len(name) + len(value) + 4 for name, value in request.headers.raw_items()))
        if head > MAX_HEAD:
            self.error(connection, 431, f"request line and headers over {MAX_HEAD} bytes")
            return
        method = request.method.decode("ascii", "replace")
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        if method not in ("GET", "HEAD"):
            self.answer(connection, 405, b"only GET and HEAD\n", "text/plain; charset=utf-8",
                        extra=[("Allow", "GET, HEAD")], close=True)
            return
        route = ROUTES.get(path)
        if route is None:
            self.answer(connection, 404, b"not found\n", "text/plain; charset=utf-8", head_only=method == "HEAD")
            return
        if route == "events":
            self.start_events(connection, head_only=method == "HEAD")
            return
        status, body, content_type = getattr(self, f"page_{route}")()
        self.answer(connection, status, body, content_type, head_only=method == "HEAD")

    def error(self, connection: Connection, status: int, why: str) -> None:
        if connection.http.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            self.drop(connection)
            return
        self.answer(connection, status, f"{why}\n".encode(), "text/plain; charset=utf-8", close=True)

    def answer(self, connection: Connection, status: int, body: bytes, content_type: str,
               head_only: bool = False, close: bool = False, extra=()) -> None:
        headers = [("Content-Type", content_type), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra]
        if close:
            headers.append(("Connection", "close"))
        http = connection.http
        data = http.send(h11.Response(status_code=status, headers=headers, reason=REASONS.get(status, b"")))
        if not head_only:
            data += http.send(h11.Data(data=body))
        data += http.send(h11.EndOfMessage())
        if close or http.our_state is h11.MUST_CLOSE:
            connection.closing = True
        self.write(connection, data)

    def page_livez(self):
        return 200, b"ok\n", "text/plain; charset=utf-8"

    def page_readyz(self):
        ready, missing = self.view.readiness(self.view.snapshot())
        body = json.dumps({"ready": ready, "not_ready": missing}, indent=1).encode() + b"\n"
        return (200 if ready else 503), body, "application/json"

    def page_status(self):
        return 200, json.dumps(self.view.status(), indent=2).encode() + b"\n", "application/json"

    def page_metrics(self):
        return 200, metrics.exposition(self.view).encode(), metrics.CONTENT_TYPE

    def page_dashboard(self):
        with open(DASHBOARD, "rb") as f:  # read per request: not kept in PID 1's memory
            return 200, f.read(), "text/html; charset=utf-8"

    # ------------------------------------------------------------------ event stream

    def start_events(self, connection: Connection, head_only: bool) -> None:
        http = connection.http
        data = http.send(h11.Response(status_code=200, reason=b"OK", headers=[
            ("Content-Type", "text/event-stream"), ("Cache-Control", "no-store"),
            *([("Content-Length", "0")] if head_only else [])]))
        if head_only:
            self.write(connection, data + http.send(h11.EndOfMessage()))
            return
        connection.streaming = True
        connection.deadline = None
        self.write(connection, data + http.send(h11.Data(data=b"retry: 2000\n\n" + self.event())))
        if self.event_timer is None:
            self.event_timer = self.loop.call_later(EVENT_PERIOD, self.send_events)

    def event(self) -> bytes:
        data = self.view.status()
        ready, missing = self.view.readiness(data)
        payload = {"status": data, "ready": ready, "not_ready": missing,
                   "queues": self.view.socket_queues(), "connections": self.view.counters.connections,
                   "output": {name: self.view.recent_output(name, OUTPUT_LINES) for name in data["units"]}}
        return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

    def send_events(self) -> None:
        self.event_timer = None
        streams = [c for c in self.connections.values() if c.streaming]
        if not streams:
            return
        try:
            message = self.event()
        except Exception:
            import traceback
            self.log.error("HTTP endpoint: internal error:\n" + traceback.format_exc().rstrip())
            return
        for connection in streams:
            if len(connection.out) > MAX_PENDING:
                self.drop(connection)  # a page that stopped reading
                continue
            self.write(connection, connection.http.send(h11.Data(data=message)))
        self.event_timer = self.loop.call_later(EVENT_PERIOD, self.send_events)

    # ------------------------------------------------------------------ writing, closing

    def write(self, connection: Connection, data: bytes) -> None:
        connection.out += data
        if not connection.streaming:
            connection.deadline = time.monotonic() + CLIENT_TIMEOUT
            self.arm(connection.deadline)
        self.flush(connection)

    def flush(self, connection: Connection) -> None:
        while connection.out:
            try:
                sent = connection.sock.send(connection.out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.drop(connection)
                return
            del connection.out[:sent]
        if connection.out:
            if connection.streaming and connection.deadline is None:
                connection.deadline = time.monotonic() + CLIENT_TIMEOUT
                self.arm(connection.deadline)
            self.interest(connection, select.EPOLLOUT)
            return
        if connection.streaming:
            connection.deadline = None
        if connection.closing and not connection.lingering:
            self.linger(connection)
            return
        self.interest(connection, select.EPOLLIN)

    def linger(self, connection: Connection) -> None:
        """Answer written: stop sending, read and discard what the client still sends for a
        moment, then close. Closing at once with unread bytes would reset the connection and
        could destroy the answer before the client reads it."""
        connection.lingering = True
        try:
            connection.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.drop(connection)
            return
        connection.deadline = time.monotonic() + LINGER
        self.arm(connection.deadline)
        self.interest(connection, select.EPOLLIN)

    def interest(self, connection: Connection, mask: int) -> None:
        if connection.mask != mask and connection.fd in self.connections:
            connection.mask = mask
            self.epoll.modify(connection.fd, mask)

    def drop(self, connection: Connection) -> None:
        if self.connections.pop(connection.fd, None) is None:
            return
        try:
            self.epoll.unregister(connection.fd)
        except OSError:
            pass
        connection.sock.close()
        # Idle again: no timer may wake the loop for connections that are gone.
        if not self.connections and self.timer is not None:
            self.timer.cancel()
            self.timer = self.timer_at = None
        if self.event_timer is not None and not any(c.streaming for c in self.connections.values()):
            self.event_timer.cancel()
            self.event_timer = None

    # ------------------------------------------------------------------ deadlines

    def arm(self, deadline: float | None) -> None:
        """Make sure the timer fires no later than `deadline`."""
        if deadline is None or (self.timer_at is not None and self.timer_at <= deadline):
            return
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = deadline
        self.timer = self.loop.call_later(deadline - time.monotonic(), self.expire)

    def expire(self) -> None:
        self.timer = self.timer_at = None
        now = time.monotonic()
        for connection in list(self.connections.values()):
            if connection.deadline is not None and connection.deadline <= now:
                self.drop(connection)  # idle, too slow to send its request, or to read
        upcoming = [c.deadline for c in self.connections.values() if c.deadline is not None]
        if upcoming:
            self.arm(min(upcoming))


ROUTES = {"/livez": "livez", "/readyz": "readyz", "/status.json": "status", "/metrics": "metrics",
          "/": "dashboard", "/events": "events"}


def serve(listener: socket.socket, manager) -> Server:
    return Server(listener, manager)
