"""activator.notify on its own: `parse` against systemd's rules, and the receiving socket.

systemd's rules (src/shared/notify-recv.c, src/core/service.c): a datagram with a NUL anywhere
but at its very end is ignored like no message at all; one trailing NUL is allowed; lines are
split at newlines (`\\n` and `\\r`); a line without `=` means nothing; values are looked up
first-line-wins, flags (`READY=1`, …) by any line; values systemd cannot parse are ignored.
"""

from __future__ import annotations

import array
import os
import socket

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from activator.notify import BUFFER, FLAGS, STATUS_TEXT_MAX, NotifyServer, parse

# Keys the manager gives no special meaning to: any text without '=', newlines or NUL.
plain_keys = st.text(st.characters(blacklist_characters="=\n\r\0", blacklist_categories=("Cs",)),
                     min_size=1, max_size=12).filter(
    lambda k: k not in FLAGS and k not in ("STATUS", "FDNAME", "MAINPID", "ERRNO",
                                           "EXTEND_TIMEOUT_USEC", "WATCHDOG_USEC"))
values = st.text(st.characters(blacklist_characters="\n\r\0", blacklist_categories=("Cs",)), max_size=30)
junk_lines = st.text(st.characters(blacklist_characters="=\n\r\0", blacklist_categories=("Cs",)), max_size=20)


def join(pairs, end="") -> bytes:
    return ("\n".join(f"{k}={v}" for k, v in pairs) + end).encode()


@given(st.dictionaries(plain_keys, values, max_size=8), st.sampled_from(["", "\n", "\r\n"]))
def test_several_assignments_are_read(assignments, end):
    assert parse(join(assignments.items(), end)) == assignments


@given(st.dictionaries(plain_keys, values, max_size=6))
def test_one_trailing_nul_is_allowed(assignments):
    data = join(assignments.items())
    assert parse(data + b"\0") == parse(data) == assignments


@given(st.binary(max_size=64), st.binary(max_size=64))
@example(b"READY=1", b"")  # the NUL right before the allowed trailing one
@example(b"", b"READY=1")
def test_embedded_nul_ignores_the_whole_datagram(before, after):
    data = before + b"\0" + after + b"\0"  # at least one NUL that is not the last byte
    assert parse(data) is None
    assert parse(before + b"\0" + after + b"X") is None


def test_nul_only_and_empty():
    assert parse(b"") == {}
    assert parse(b"\0") == {}
    assert parse(b"\0\0") is None


@given(st.lists(st.tuples(plain_keys, values), max_size=6, unique_by=lambda kv: kv[0]),
       st.lists(junk_lines, max_size=6), st.randoms(use_true_random=False))
def test_lines_without_equals_are_ignored(pairs, junk, rnd):
    lines = [f"{k}={v}" for k, v in pairs] + list(junk)
    rnd.shuffle(lines)
    assert parse("\n".join(lines).encode()) == dict(pairs)


@pytest.mark.parametrize("separator", [b"\n", b"\r", b"\r\n", b"\n\n\n", b"\r\r"])
def test_newlines_as_systemd_splits_them(separator):
    # systemd splits at NEWLINE ("\n\r") and skips empty lines: a CRLF sender is still READY.
    assert parse(separator.join([b"READY=1", b"STATUS=up"]) + separator) == {"READY": "1", "STATUS": "up"}


@pytest.mark.parametrize("line", [b"=1", b"READY", b"", b"  ", b"=", b"READY 1"])
def test_lines_that_say_nothing(line):
    assert parse(line + b"\nSTATUS=x") == {"STATUS": "x"}


def test_value_keeps_everything_after_the_first_equals():
    assert parse(b"STATUS=a=b==c") == {"STATUS": "a=b==c"}
    assert parse(b"STATUS=") == {"STATUS": ""}
    assert parse(b"STATUS= padded ") == {"STATUS": " padded "}


@given(values, values)
def test_first_value_wins_as_in_systemd(first, second):
    # service.c looks values up with strv_find_startswith: the first STATUS= line counts.
    assert parse(join([("STATUS", first), ("STATUS", second)]))["STATUS"] == first


@pytest.mark.parametrize("flag", sorted(FLAGS))
@pytest.mark.parametrize("other", ["0", "", "2", "yes"])
def test_a_flag_counts_on_any_line(flag, other):
    # ... and flags with strv_contains: READY=1 anywhere in the message counts.
    assert parse(join([(flag, other), (flag, "1")]))[flag] == "1"
    assert parse(join([(flag, "1"), (flag, other)]))[flag] == "1"
    assert parse(join([(flag, other)]))[flag] == other


@pytest.mark.parametrize("key", ["MAINPID", "EXTEND_TIMEOUT_USEC", "WATCHDOG_USEC", "ERRNO"])
@pytest.mark.parametrize("text, expected", [
    ("42", "42"), ("007", "7"), (" 42", "42"), ("+42", "42"),
    ("-1", None), ("4_2", None), ("42 ", None), ("4.2", None), ("0x2a", None), ("", None),
    ("\u0664\u0662", None),  # digits to Python's int(), not to strtoull
    ("x", None),
])
def test_numbers_as_systemd_reads_them(key, text, expected):
    assert parse(f"{key}={text}".encode()).get(key) == expected


def test_number_keys_have_their_own_ranges():
    assert "MAINPID" not in parse(b"MAINPID=0")  # not a valid pid
    assert parse(b"WATCHDOG_USEC=0") == {"WATCHDOG_USEC": "0"}
    assert parse(b"ERRNO=0") == {"ERRNO": "0"}
    assert parse(b"ERRNO=4095") == {"ERRNO": "4095"}
    assert "ERRNO" not in parse(b"ERRNO=4096")
    assert parse(b"MAINPID=2147483647") == {"MAINPID": "2147483647"}
    assert "MAINPID" not in parse(b"MAINPID=2147483648")  # not a pid_t
    assert parse(b"WATCHDOG_USEC=18446744073709551615") == {"WATCHDOG_USEC": str(2**64 - 1)}
    assert "EXTEND_TIMEOUT_USEC" not in parse(b"EXTEND_TIMEOUT_USEC=18446744073709551616")
    assert parse(b"ERRNO=EIO") == {"ERRNO": "5"}  # parse_errno() also takes names
    assert parse(b"ERRNO=ENOENT") == {"ERRNO": "2"}
    assert "ERRNO" not in parse(b"ERRNO=ENOTANERRNO")
    assert "ERRNO" not in parse(b"ERRNO=errorcode")
    # An unparsable first value is not replaced by a later one.
    assert "MAINPID" not in parse(b"MAINPID=x\nMAINPID=5")


@given(st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters=":"),
               max_size=255))
def test_valid_fdnames_are_kept(name):
    assert parse(f"FDSTORE=1\nFDNAME={name}".encode())["FDNAME"] == name


@given(st.text(min_size=1, max_size=40).filter(
    lambda n: any(c == ":" or ord(c) < 0x20 or ord(c) >= 0x7F for c in n)).filter(
    lambda n: "\n" not in n and "\r" not in n and "\0" not in n and not (0xD800 <= max(map(ord, n)) <= 0xDFFF)))
def test_invalid_fdnames_are_dropped(name):
    # fdname_is_valid(): no control characters, ASCII only, no ':' (LISTEN_FDNAMES' separator).
    fields = parse(f"FDSTORE=1\nFDNAME={name}\nFDNAME=later".encode("utf-8", "surrogatepass"))
    assert fields == {"FDSTORE": "1"}


def test_fdname_length_limit():
    assert parse(b"FDNAME=" + b"n" * 255)["FDNAME"] == "n" * 255
    assert "FDNAME" not in parse(b"FDNAME=" + b"n" * 256)


def test_status_systemd_would_not_take_clears_it():
    assert parse(b"STATUS=caf\xc3\xa9") == {"STATUS": "caf\u00e9"}
    assert parse(b"STATUS=caf\xe9\nREADY=1") == {"STATUS": "", "READY": "1"}  # not UTF-8
    assert parse(b"STATUS=" + b"s" * STATUS_TEXT_MAX) == {"STATUS": "s" * STATUS_TEXT_MAX}
    assert parse(b"STATUS=" + b"s" * (STATUS_TEXT_MAX + 1)) == {"STATUS": ""}


@settings(max_examples=500)
@given(st.binary(max_size=300))
def test_any_bytes_give_none_or_text(data):
    fields = parse(data)
    if b"\0" in data[:-1]:
        assert fields is None
        return
    assert isinstance(fields, dict)
    for key, value in fields.items():
        assert isinstance(key, str) and key and isinstance(value, str)
        assert "\n" not in key + value and "\r" not in key + value and "=" not in key


# ------------------------------------------------------------------ the receiving socket

@pytest.fixture
def server(tmp_path):
    srv = NotifyServer(str(tmp_path / "notify"))
    yield srv
    srv.close()


def client(server) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.connect(server.path)
    return sock


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def send(sock, data: bytes, fds=(), pid: int | None = None) -> None:
    ancillary = []
    if fds:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes()))
    if pid is not None:
        ancillary.append((socket.SOL_SOCKET, socket.SCM_CREDENTIALS,
                          array.array("i", [pid, os.getuid(), os.getgid()]).tobytes()))
    sock.sendmsg([data], ancillary)


def test_socket_is_a_world_writable_path(server):
    assert os.stat(server.path).st_mode & 0o777 == 0o777


def test_received_message_carries_sender_and_fds(server):
    r, w = os.pipe()
    with client(server) as sock:
        send(sock, b"FDSTORE=1\nFDNAME=p", [r])
        [message] = server.receive()
    assert (message.pid, message.uid, message.gid) == (os.getpid(), os.getuid(), os.getgid())
    assert message.fields == {"FDSTORE": "1", "FDNAME": "p"}
    [fd] = message.fds
    assert os.path.sameopenfile(fd, r) and not os.get_inheritable(fd)  # MSG_CMSG_CLOEXEC
    message.close_fds()
    for fd in (r, w):
        os.close(fd)


@pytest.mark.parametrize("data", [b"READY=1\0X", b"R" * (BUFFER + 1), b"\0\0"],
                         ids=["embedded-nul", "truncated", "two-nuls"])
def test_ignored_datagram_closes_its_fds(server, data):
    r, w = os.pipe()
    before = open_fds()
    with client(server) as sock:
        send(sock, data, [r, w, r])
        send(sock, b"STATUS=next")  # what follows is still read
        messages = server.receive()
    assert [m.fields for m in messages] == [{"STATUS": "next"}]
    assert open_fds() == before
    os.close(w)
    assert os.read(r, 1) == b""  # no copy of the write end is left open anywhere
    os.close(r)


def test_exactly_buffer_bytes_is_not_truncated(server):
    data = b"STATUS=" + b"s" * (BUFFER - len(b"STATUS="))
    with client(server) as sock:
        send(sock, data)
        [message] = server.receive()
    assert message.fields == {"STATUS": ""}  # longer than STATUS_TEXT_MAX, but read whole


def test_faked_credentials_from_root_are_what_the_kernel_reports(server):
    # Root may put another live pid into SCM_CREDENTIALS; the receiver sees that pid.
    if os.getuid() != 0:
        pytest.skip("needs root")
    with client(server) as sock:
        send(sock, b"READY=1", pid=os.getppid())
        [message] = server.receive()
    assert message.pid == os.getppid()


def test_a_burst_is_read_in_bounded_batches(server):
    with client(server) as sock:
        sock.setblocking(False)
        sent = 0
        try:
            while sent < 50:
                send(sock, f"STATUS={sent}".encode())
                sent += 1
        except BlockingIOError:
            pass
    first = server.receive(limit=3)
    rest = server.receive()
    assert [m.fields["STATUS"] for m in first + rest] == [str(n) for n in range(sent)]
    assert len(first) == 3
