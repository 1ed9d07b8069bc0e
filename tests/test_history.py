"""The per-unit log buffer behind `activator logs` (SPEC §8), and the relay that fills it."""

from __future__ import annotations

import os

from activator.history import History
from activator.output import MAX_LINE, Outlet, OutputPipe, Relay


class FakeLoop:
    def __init__(self):
        self.readers, self.writers, self.timers = {}, {}, []

    def add_reader(self, fd, callback):
        self.readers[fd] = callback

    def remove_reader(self, fd):
        self.readers.pop(fd, None)

    def add_writer(self, fd, callback):
        self.writers[fd] = callback

    def remove_writer(self, fd):
        self.writers.pop(fd, None)

    def call_later(self, delay, callback):
        self.timers.append((delay, callback))


class FakeLog:
    json = False

    def __init__(self, fd: int):
        outlet = Outlet(fd)
        self.outlets = {1: outlet, 2: outlet}

    def attach(self, loop):
        for outlet in self.outlets.values():
            outlet.attach(loop)


def block(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def test_recent_gives_the_last_lines_with_time_stream_and_instance():
    history = History()
    history.configure("web", 5)
    history.record("web", "stdout", 1, block("a", "b", "c"))
    history.record("web", "stderr", 2, block("d", "e", "f", "g"))
    lines = history.recent("web", 4)
    assert [(stream, instance, text) for _, stream, instance, text in lines] == [
        ("stderr", 2, "d"), ("stderr", 2, "e"), ("stderr", 2, "f"), ("stderr", 2, "g")]
    assert [text for *_, text in history.recent("web", 5)] == ["c", "d", "e", "f", "g"]
    assert all(isinstance(wall, float) for wall, *_ in lines)
    assert history.recent("other", 10) == []


def test_the_buffer_is_bounded_in_lines_and_in_bytes():
    history = History()
    history.configure("web", 10)
    for i in range(1000):
        history.record("web", "stdout", 1, block(f"line {i}"))
    kept = history.units["web"]
    assert kept.line_count == 10 and [t for *_, t in history.recent("web", 3)] == ["line 997", "line 998", "line 999"]
    big = b"y" * MAX_LINE + b"\n"
    for _ in range(100):
        history.record("web", "stdout", 1, big * 4)
    assert kept.size <= kept.max_bytes
    assert history.recent("web", 1)[0][3] == "y" * MAX_LINE


def test_zero_lines_turns_it_off():
    history = History()
    history.configure("web", 0)
    history.record("web", "stdout", 1, block("a"))
    assert history.recent("web", 10) == []


def test_a_follower_gets_new_lines_and_one_that_does_not_read_is_dropped():
    history = History()
    history.configure("web", 100)
    woken = []
    follower = history.follow(["web"], on_data=lambda: woken.append(1), limit=1000)
    history.record("web", "stdout", 1, block("hello"))
    assert [(unit, text) for unit, _, _, _, text in follower.take()] == [("web", "hello")]
    assert woken
    for _ in range(200):
        history.record("web", "stdout", 1, block("more and more"))
    assert follower.dropped and follower not in history.followers
    history.record("web", "stdout", 1, block("after"))  # costs the dropped follower nothing
    assert follower.take() == []


def test_the_relay_fills_the_buffer_and_prefixes_each_line(tmp_path):
    sink = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    loop, log, history = FakeLoop(), FakeLog(sink), History()
    relay = Relay(loop, log, history)
    r, w = os.pipe2(os.O_NONBLOCK)
    pipe = OutputPipe(r, "stdout", log, "web", 2, "web.2")
    relay.watch(pipe, lambda: None, buffer_lines=1000)
    os.write(w, b"one\ntwo\nthr")
    assert relay.relay(pipe)
    os.write(w, b"ee\n")
    for size in (60000, 60000, 20000):  # one line of 140,000 bytes, in pieces the pipe holds
        os.write(w, b"x" * size)
        assert relay.relay(pipe)
    os.close(w)
    while relay.relay(pipe):
        pass
    relay.forget(pipe)
    pipe.close()
    os.close(sink)
    out = (tmp_path / "out").read_bytes()
    assert out.startswith(b"web.2 | one\nweb.2 | two\nweb.2 | three\nweb.2 | xxx")
    assert [len(line) for line in out.split(b"\n")[3:]] == [8 + MAX_LINE, 8 + MAX_LINE, 8 + 140000 - 2 * MAX_LINE, 0]
    assert [text[:5] for *_, text in history.recent("web", 10)] == ["one", "two", "three", "xxxxx", "xxxxx", "xxxxx"]
    assert all(instance == 2 and stream == "stdout" for _, stream, instance, _ in history.recent("web", 10))


def test_log_buffer_lines_key(tmp_path):
    from unitfiles import Stack, only_unit

    stack = Stack(tmp_path)
    stack.unit("web")
    assert only_unit(stack.load()).log_buffer_lines == 1000
    stack.unit("web", "log_buffer_lines: 0\n")
    assert only_unit(stack.load()).log_buffer_lines == 0
    stack.unit("web", "log_buffer_lines: -1\n")
    assert stack.error() == "units/web.yaml:2: unit web: log_buffer_lines: expected a number from 0 to 1000000, got -1"
