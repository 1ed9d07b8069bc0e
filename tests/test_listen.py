"""The `listen` forms of a socket spec (SPEC §2) and which addresses collide."""

from __future__ import annotations

import pytest

from activator import listen
from activator.listen import Listen, ListenError


@pytest.mark.parametrize("value, expected, canonical", [
    (8000, Listen("tcp", "", 8000), "tcp://*:8000"),
    ("8000", Listen("tcp", "", 8000), "tcp://*:8000"),
    (0, Listen("tcp", "", 0), "tcp://*:0"),
    (65535, Listen("tcp", "", 65535), "tcp://*:65535"),
    ("tcp://*:8000", Listen("tcp", "", 8000), "tcp://*:8000"),
    ("tcp://0.0.0.0:80", Listen("tcp", "0.0.0.0", 80), "tcp://0.0.0.0:80"),
    ("tcp://127.0.0.1:8080", Listen("tcp", "127.0.0.1", 8080), "tcp://127.0.0.1:8080"),
    ("tcp://localhost:8080", Listen("tcp", "localhost", 8080), "tcp://localhost:8080"),
    ("tcp://my-host.example.com:1", Listen("tcp", "my-host.example.com", 1), "tcp://my-host.example.com:1"),
    ("tcp://LocalHost:1", Listen("tcp", "localhost", 1), "tcp://localhost:1"),
    ("tcp://[::1]:8000", Listen("tcp", "::1", 8000), "tcp://[::1]:8000"),
    ("tcp://[::]:8000", Listen("tcp", "::", 8000), "tcp://[::]:8000"),
    ("tcp://[0:0::1]:8000", Listen("tcp", "::1", 8000), "tcp://[::1]:8000"),
    ("tcp://[fe80::1%eth0]:22", Listen("tcp", "fe80::1%eth0", 22), "tcp://[fe80::1%eth0]:22"),
    ("udp://0.0.0.0:53", Listen("udp", "0.0.0.0", 53), "udp://0.0.0.0:53"),
    ("udp://[::1]:53", Listen("udp", "::1", 53), "udp://[::1]:53"),
    ("udp://*:53", Listen("udp", "", 53), "udp://*:53"),
    ("unix:/run/app.sock", Listen("unix", path="/run/app.sock"), "unix:/run/app.sock"),
    ("unix:@app", Listen("unix", path="@app"), "unix:@app"),
    ("unix:@with space", Listen("unix", path="@with space"), "unix:@with space"),
    ("fifo:/run/app.fifo", Listen("fifo", path="/run/app.fifo"), "fifo:/run/app.fifo"),
    ("inherit:http", Listen("inherit", path="http"), "inherit:http"),
])
def test_parse(value, expected, canonical):
    parsed = listen.parse(value)
    assert parsed == expected
    assert str(parsed) == canonical
    assert listen.parse(canonical) == parsed


def test_properties():
    assert listen.parse(80).is_stream and listen.parse(80).is_inet and not listen.parse(80).is_file
    assert not listen.parse("udp://1.2.3.4:5").is_stream
    assert listen.parse("unix:/a").is_file and listen.parse("unix:/a").is_stream
    assert not listen.parse("unix:@a").is_file
    assert listen.parse("fifo:/a").is_file and not listen.parse("fifo:/a").is_stream
    assert listen.parse("tcp://[::1]:1").is_ipv6 and not listen.parse("tcp://1.2.3.4:1").is_ipv6
    assert not listen.parse("inherit:x").is_inet


@pytest.mark.parametrize("value, message", [
    (True, "expected tcp://HOST:PORT"),
    (None, "expected tcp://HOST:PORT"),
    (8.5, "expected tcp://HOST:PORT"),
    ([80], "expected tcp://HOST:PORT"),
    (70000, "'70000': the port must be a number from 0 to 65535"),
    (-1, "'-1': the port must be a number from 0 to 65535"),
    ("65536", "'65536': the port must be a number from 0 to 65535"),
    ("²", "'²' is not an address"),
    ("٨٠", "'٨٠' is not an address"),
    ("tcp://127.0.0.1:²", "'tcp://127.0.0.1:²': the port must be a number from 0 to 65535"),
    (" 8000", "' 8000' is not an address"),
    ("", "'' is not an address"),
    ("localhost:80", "'localhost:80' is not an address"),
    ("http://x:80", "'http://x:80' is not an address"),
    ("tcp:80", "'tcp:80': expected tcp://HOST:PORT or tcp://[V6ADDR]:PORT"),
    ("udp:/x", "'udp:/x': expected udp://HOST:PORT or udp://[V6ADDR]:PORT"),
    ("tcp://", "'tcp://': expected tcp://HOST:PORT"),
    ("tcp://:80", "'tcp://:80': expected tcp://HOST:PORT"),
    ("tcp://host", "'tcp://host': expected tcp://HOST:PORT"),
    ("tcp://host:", "'tcp://host:': the port must be a number from 0 to 65535"),
    ("tcp://host:http", "'tcp://host:http': the port must be a number from 0 to 65535"),
    ("tcp://host:+80", "'tcp://host:+80': the port must be a number from 0 to 65535"),
    ("tcp://::1:80", "'tcp://::1:80': write an IPv6 address in brackets, tcp://[::1]:PORT"),
    ("tcp://[::1]80", "'tcp://[::1]80': expected tcp://[V6ADDR]:PORT"),
    ("tcp://[::1:80", "'tcp://[::1:80': expected tcp://[V6ADDR]:PORT"),
    ("tcp://[1.2.3.4]:80", "'tcp://[1.2.3.4]:80': '1.2.3.4' is not an IPv6 address"),
    ("tcp://[nope]:80", "'tcp://[nope]:80': 'nope' is not an IPv6 address"),
    ("tcp://999.1.1.1:80", "'tcp://999.1.1.1:80': '999.1.1.1' is neither an IP address nor a host name"),
    ("tcp://bad_host:80", "'tcp://bad_host:80': 'bad_host' is neither an IP address nor a host name"),
    ("tcp://a..b:80", "'tcp://a..b:80': 'a..b' is neither an IP address nor a host name"),
    ("tcp://-a:80", "'tcp://-a:80': '-a' is neither an IP address nor a host name"),
    ("unix:", "'unix:': the path must be absolute"),
    ("unix:relative.sock", "'unix:relative.sock': the path must be absolute"),
    ("unix:/run/dir/", "'unix:/run/dir/': the path names a directory; give the file's name"),
    ("unix:/" + "x" * 107, "the path is longer than 107 bytes"),
    ("unix:/tmp/a\0b", "'unix:/tmp/a\\x00b': the path contains a NUL character"),
    ("unix:@", "'unix:@': an abstract name is 1 to 106 bytes"),
    ("unix:@" + "x" * 107, "an abstract name is 1 to 106 bytes"),
    ("unix:@a\0b", "'unix:@a\\x00b': the abstract name contains a NUL character"),
    ("fifo:relative", "'fifo:relative': the path must be absolute"),
    ("fifo:/" + "x" * 4095, "the path is longer than 4095 bytes"),
    ("inherit:", "'inherit:': expected inherit:NAME, NAME as in LISTEN_FDNAMES"),
    ("inherit:a:b", "'inherit:a:b': expected inherit:NAME"),
    ("inherit:a b", "'inherit:a b': expected inherit:NAME"),
])
def test_parse_errors(value, message):
    with pytest.raises(ListenError) as e:
        listen.parse(value)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_the_longest_unix_path_fits_sun_path():
    assert listen.parse("unix:/" + "x" * 106).path == "/" + "x" * 106


def conflict(a: str, b: str, a_v6only: bool = False, b_v6only: bool = False) -> bool:
    first, second = listen.parse(a), listen.parse(b)
    forward = first.conflicts_with(second, a_v6only, b_v6only)
    assert forward == second.conflicts_with(first, b_v6only, a_v6only)  # symmetric
    return forward


@pytest.mark.parametrize("a, b", [
    ("8000", "8000"),
    ("8000", "tcp://*:8000"),
    ("8000", "tcp://0.0.0.0:8000"),
    ("8000", "tcp://127.0.0.1:8000"),
    ("8000", "tcp://[::]:8000"),
    ("8000", "tcp://[::1]:8000"),
    ("8000", "tcp://example.com:8000"),
    ("tcp://0.0.0.0:80", "tcp://192.168.1.1:80"),
    ("tcp://1.2.3.4:80", "tcp://1.2.3.4:80"),
    ("tcp://[::]:80", "tcp://[::1]:80"),
    ("tcp://[::]:80", "tcp://0.0.0.0:80"),
    ("tcp://[::]:80", "tcp://10.0.0.1:80"),
    ("tcp://localhost:80", "tcp://localhost:80"),
    ("tcp://LOCALHOST:80", "tcp://localhost:80"),
    ("tcp://localhost:80", "tcp://[::]:80"),
    ("udp://*:53", "udp://127.0.0.1:53"),
    ("unix:/run/a", "unix:/run/a"),
    ("unix:/run/a", "fifo:/run/a"),
    ("fifo:/run/a", "fifo:/run/a"),
    ("unix:@a", "unix:@a"),
    ("inherit:x", "inherit:x"),
])
def test_conflicts(a, b):
    assert conflict(a, b)


@pytest.mark.parametrize("a, b", [
    ("8000", "8001"),
    ("8000", "udp://*:8000"),
    ("tcp://127.0.0.1:80", "tcp://127.0.0.2:80"),
    ("tcp://0.0.0.0:80", "tcp://[::1]:80"),
    ("tcp://127.0.0.1:80", "tcp://[::1]:80"),
    ("tcp://localhost:80", "tcp://127.0.0.1:80"),  # unknown until resolved: binding will tell
    ("tcp://a.example:80", "tcp://b.example:80"),
    ("0", "0"),
    ("tcp://127.0.0.1:0", "tcp://127.0.0.1:0"),
    ("unix:/run/a", "unix:/run/b"),
    ("unix:@a", "unix:@b"),
    ("unix:@/run/a", "unix:/run/a"),
    ("inherit:a", "inherit:b"),
    ("inherit:a", "unix:@a"),
    ("8000", "unix:/8000"),
])
def test_no_conflicts(a, b):
    assert not conflict(a, b)


def test_ipv6_only_leaves_ipv4_to_others():
    assert not conflict("tcp://[::]:80", "tcp://0.0.0.0:80", a_v6only=True)
    assert not conflict("8000", "tcp://127.0.0.1:8000", a_v6only=True)
    assert conflict("8000", "tcp://[::1]:8000", a_v6only=True)
    assert conflict("tcp://[::]:80", "tcp://[::]:80", True, True)
    assert conflict("tcp://[::]:80", "tcp://0.0.0.0:80", a_v6only=False, b_v6only=True)
