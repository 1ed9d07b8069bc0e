"""Every service key (SPEC §1) and socket key (SPEC §2): the forms it takes and the ones it refuses."""

from __future__ import annotations

import grp
import math
import pwd
import signal

import pytest

from activator import model as unitmodel
from activator import unitkeys
from activator.listen import Listen
from unitfiles import Stack, only_unit

NOBODY = pwd.getpwnam("nobody")
NOGROUP = grp.getgrnam("nogroup")


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def value_of(stack, text: str, attribute: str):
    stack.unit("web", text)
    return getattr(only_unit(stack.load()), attribute)


def error_of(stack, text: str) -> str:
    """The message of the one error, with its `FILE:LINE: unit web: ` prefix checked and cut."""
    stack.unit("web", text)
    error = stack.error()
    prefix = "units/web.yaml:"
    assert error.startswith(prefix), error
    line, rest = error[len(prefix):].split(": unit web: ", 1)
    assert int(line) >= 1
    return rest


# --------------------------------------------------------------------------- service keys

VALID = [
    # (yaml, attribute, expected)
    ("description: hello world", "description", "hello world"),
    ("description: 42", "description", "42"),
    ("description: ''", "description", ""),
    ("type: simple", "type", "simple"),
    ("type: exec", "type", "exec"),
    ("type: notify", "type", "notify"),
    ("type: oneshot", "type", "oneshot"),
    ("instances: 1", "instances", 1),
    ("instances: 4096", "instances", 4096),
    ("socket_env: false", "socket_env", False),
    ("socket_env: true", "socket_env", True),
    ("start: eager", "start", "eager"),
    ("stdio: inherit", "stdio", "inherit"),
    ("stdio: socket\nsockets: {c: {listen: 80, accept: true}}", "stdio", "socket"),
    ("restart: no", "restart", "no"),  # YAML's false, meaning the word
    ("restart: 'no'", "restart", "no"),
    ("restart: on-failure", "restart", "on-failure"),
    ("restart: on-abnormal", "restart", "on-abnormal"),
    ("restart: always", "restart", "always"),
    ("output: null", "output", "null"),  # YAML's nothing, meaning the word
    ("output: 'null'", "output", "null"),
    ("output: prefix", "output", "prefix"),
    ("output: inherit", "output", "inherit"),
    ("success_action: exit", "success_action", "exit"),
    ("success_action: none", "success_action", "none"),
    ("failure_action: exit", "failure_action", "exit"),
    ("notify_access: all", "notify_access", "all"),
    ("notify_access: main", "notify_access", "main"),
    ("notify_access: none", "notify_access", "none"),
    ("umask: 0022", "umask", 0o022),  # YAML 1.1 reads 18; the text as written counts
    ("umask: '0022'", "umask", 0o022),
    ("umask: 077", "umask", 0o077),
    ("umask: 0o027", "umask", 0o027),
    ("umask: 0", "umask", 0),
    ("umask: '0777'", "umask", 0o777),
    ("restart_sec: 0", "restart_sec", 0.0),
    ("restart_sec: 1.5", "restart_sec", 1.5),
    ("restart_sec: 500ms", "restart_sec", 0.5),
    ("restart_sec: 2s", "restart_sec", 2.0),
    ("restart_max_sec: 1min 30s", "restart_max_sec", 90.0),
    ("restart_max_sec: 1min30s", "restart_max_sec", 90.0),
    ("restart_max_sec: 2h", "restart_max_sec", 7200.0),
    ("restart_max_sec: '1 d'", "restart_max_sec", 86400.0),
    ("restart_sec: 250us", "restart_sec", 0.00025),
    ("start_limit_burst: 1", "start_limit_burst", 1),
    ("start_limit_interval_sec: 30s", "start_limit_interval_sec", 30.0),
    ("timeout_start_sec: infinity", "timeout_start_sec", math.inf),
    ("timeout_start_sec: 0", "timeout_start_sec", math.inf),  # as in systemd: no timeout
    ("timeout_start_sec: 5min", "timeout_start_sec", 300.0),
    ("timeout_stop_sec: infinity", "timeout_stop_sec", math.inf),
    ("timeout_stop_sec: .inf", "timeout_stop_sec", math.inf),
    ("timeout_stop_sec: 0.25", "timeout_stop_sec", 0.25),
    ("kill_signal: SIGINT", "kill_signal", signal.SIGINT),
    ("kill_signal: INT", "kill_signal", signal.SIGINT),
    ("kill_signal: sigquit", "kill_signal", signal.SIGQUIT),
    ("kill_signal: 9", "kill_signal", signal.SIGKILL),
    ("reload_signal: SIGHUP", "reload_signal", signal.SIGHUP),
    ("reload_signal: SIGUSR2", "reload_signal", signal.SIGUSR2),
    ("reload_signal: null", "reload_signal", None),
    ("watchdog_sec: 30s", "watchdog_sec", 30.0),
    ("watchdog_sec: 0", "watchdog_sec", None),
    ("working_directory: /tmp", "working_directory", "/tmp"),
    ("working_directory: /tmp/", "working_directory", "/tmp"),
]


@pytest.mark.parametrize("text, attribute, expected", VALID, ids=[v[0] for v in VALID])
def test_valid_service_values(stack, text, attribute, expected):
    assert value_of(stack, text + "\n", attribute) == expected


INVALID = [
    # (yaml, message)
    ("description: [a, b]", "description: expected text, got a list"),
    ("description:", "description: expected text, got nothing (null)"),
    ("type: forking", "type: expected one of simple, exec, notify, oneshot, got 'forking'"),
    ("type: Simple", "type: expected one of simple, exec, notify, oneshot, got 'Simple'"),
    ("instances: 0", "instances: expected a number from 1 to 4096, got 0"),
    ("instances: 4097", "instances: expected a number from 1 to 4096, got 4097"),
    ("instances: -1", "instances: expected a number from 1 to 4096, got -1"),
    ("instances: 2.5", "instances: expected a whole number, got 2.5"),
    ("instances: '2'", "instances: expected a whole number, got '2'"),
    ("instances: true", "instances: expected a whole number, got the boolean true"),
    ("instances: yes", "instances: expected a whole number, got yes (read by YAML as true)"),
    ("socket_env: 'yes'", "socket_env: expected true or false, got 'yes'"),
    ("socket_env: 1", "socket_env: expected true or false, got 1"),
    ("start: lazy", "start: expected one of eager, on-demand, got 'lazy'"),
    ("restart: false", "restart: expected one of no, on-failure, on-abnormal, always, got the boolean false"),
    ("restart: off", "restart: expected one of no, on-failure, on-abnormal, always, got off (read by YAML as false)"),
    ("restart: NO", "restart: expected one of no, on-failure, on-abnormal, always, got NO (read by YAML as false)"),
    ("restart: on-success", "restart: expected one of no, on-failure, on-abnormal, always, got 'on-success'"),
    ("output: ~", "output: expected one of prefix, inherit, null, got nothing (null)"),
    ("output:", "output: expected one of prefix, inherit, null, got nothing (null)"),
    ("output: journal", "output: expected one of prefix, inherit, null, got 'journal'"),
    ("success_action: no", "success_action: expected one of none, exit, got no (read by YAML as false)"),
    ("failure_action: reboot", "failure_action: expected one of none, exit, got 'reboot'"),
    ("notify_access: exec", "notify_access: expected one of none, main, all, got 'exec'"),
    ("umask: 18", "umask: expected an octal mode such as 0022, got 18"),
    ("umask: 0088", "umask: expected an octal mode such as 0022, got '0088'"),
    ("umask: '1777'", "umask: expected an octal mode up to 0777, got 1777"),
    ("umask: true", "umask: expected an octal mode such as 0022, got the boolean true"),
    ("umask: '-022'", "umask: expected an octal mode such as 0022, got '-022'"),
    ("umask: 0.5", "umask: expected an octal mode such as 0022, got 0.5"),
    ("restart_sec: -1", "restart_sec: expected seconds: a number, or a span such as 500ms, 30s or "
     "1min 30s; got -1"),
    ("restart_sec: 5 parsecs", "restart_sec: expected seconds: a number, or a span such as 500ms, "
     "30s or 1min 30s; got '5 parsecs'"),
    ("restart_sec: infinity", "restart_sec: expected a finite number of seconds, got 'infinity'"),
    ("restart_sec: ''", "restart_sec: expected seconds: a number, or a span such as 500ms, 30s or "
     "1min 30s; got an empty text"),
    ("restart_sec: .nan", "restart_sec: expected seconds: a number, or a span such as 500ms, 30s or "
     "1min 30s; got .nan"),
    ("restart_sec: [1]", "restart_sec: expected seconds: a number, or a span such as 500ms, 30s or "
     "1min 30s; got a list"),
    ("restart_max_sec: 1e3", "restart_max_sec: expected seconds: a number, or a span such as 500ms, "
     "30s or 1min 30s; got '1e3'"),
    ("timeout_stop_sec: forever", "timeout_stop_sec: expected seconds: a number, or a span such as "
     "500ms, 30s or 1min 30s, or infinity; got 'forever'"),
    ("timeout_start_sec: true", "timeout_start_sec: expected seconds: a number, or a span such as "
     "500ms, 30s or 1min 30s, or infinity; got the boolean true"),
    ("start_limit_burst: 0", "start_limit_burst: expected a number of at least 1, got 0"),
    ("kill_signal: SIGFOO", "kill_signal: 'SIGFOO' is not a signal name (SIGTERM, SIGINT, SIGQUIT, "
     "SIGHUP, SIGUSR1, …)"),
    ("kill_signal: SIG_DFL", "kill_signal: 'SIG_DFL' is not a signal name (SIGTERM, SIGINT, SIGQUIT, "
     "SIGHUP, SIGUSR1, …)"),
    ("kill_signal: 0", f"kill_signal: expected a signal, got the number 0 (signals are 1 to {signal.NSIG - 1})"),
    ("kill_signal: 65", f"kill_signal: expected a signal, got the number 65 (signals are 1 to {signal.NSIG - 1})"),
    ("kill_signal: [TERM]", "kill_signal: expected a signal name such as SIGTERM, got a list"),
    ("reload_signal: HUP UP", "reload_signal: 'HUP UP' is not a signal name (SIGTERM, SIGINT, SIGQUIT, "
     "SIGHUP, SIGUSR1, …)"),
    ("watchdog_sec: infinity", "watchdog_sec: expected a finite number of seconds, got 'infinity'"),
    ("working_directory: /nonexistent/dir", "working_directory: '/nonexistent/dir' does not exist"),
    ("working_directory: /etc/passwd", "working_directory: '/etc/passwd' is not a directory"),
    ("working_directory: ''", "working_directory: expected a path, got ''"),
    ("working_directory: 5", "working_directory: expected a path, got 5"),
    ("working_directory: \"/tmp\\0x\"", "working_directory: '/tmp\\x00x' contains a NUL character, "
     "which no file name, argument or environment can hold"),
    ("user: nosuchuser", "user: no user named 'nosuchuser' in /etc/passwd"),
    ("user: ''", "user: expected a user or group name or id, got ''"),
    ("user: 'a b'", "user: expected a user or group name or id, got 'a b'"),
    ("user: -1", "user: expected an id from 0 to 4294967294, got -1"),
    ("user: 4294967295", "user: expected an id from 0 to 4294967294, got 4294967295"),
    ("user: '99999999999999999999'", "user: expected an id from 0 to 4294967294, got 99999999999999999999"),
    ("user: \"nob\\0dy\"", "user: expected a user or group name or id, got 'nob\\x00dy'"),
    ("user: true", "user: expected a user or group name or id, got the boolean true"),
    ("group: nosuchgroup", "group: no group named 'nosuchgroup' in /etc/group"),
    ("group: '²'", "group: expected a user or group name or id, got '²'"),
    ("requires: 5", "requires: expected a list of unit names, got 5"),
    ("environment: [A=1]", "environment: expected a mapping of names to values, got a list"),
    ("environment: {1A: x}", "environment: '1A' is not a valid environment variable name (letters, "
     "digits and _, not starting with a digit)"),
    ("environment: {A-B: x}", "environment: 'A-B' is not a valid environment variable name (letters, "
     "digits and _, not starting with a digit)"),
    ("environment: {A: [1, 2]}", "environment: A: expected text, got a list"),
    ("environment: {A: }", "environment: A: no value (YAML reads null and ~ as nothing); write "
     "A: \"\" for an empty one"),
    ("environment: {A: null}", "environment: A: no value (YAML reads null and ~ as nothing); write "
     "A: \"\" for an empty one"),
    ("environment: {A: \"x\\0y\"}", "environment: A: 'x\\x00y' contains a NUL character, which no "
     "file name, argument or environment can hold"),
    ("environment_file: 5", "environment_file: expected a path or a list of paths, got 5"),
    ("environment_file: ['-']", "environment_file: expected a path, got '-'"),
    ("environment_file: [{a: b}]", "environment_file: expected a path, got a mapping"),
    ("sockets: [8000]", "sockets: expected a mapping of socket names to socket specs, got a list"),
    ("sockets: 8000", "sockets: expected a mapping of socket names to socket specs, got 8000"),
    ("sockets: {'a b': 8000}", "sockets: 'a b' is not a valid socket name (letters, digits, _ . @ -)"),
    ("sockets: {http: true}", "sockets.http: expected a socket spec (a mapping with listen:), got "
     "the boolean true"),
    ("sockets: {http: {backlog: 5}}", "sockets.http: missing key 'listen': the address to bind"),
    ("watchdog_sec: 10\nnotify_access: none", "watchdog_sec: needs notify_access main or all, to "
     "receive WATCHDOG=1"),
    ("type: oneshot\nsockets: {c: {listen: 80, accept: true}}", "type: oneshot does not fit a unit "
     "with an accept socket (use simple or exec)"),
    ("stdio: pipe", "stdio: expected one of inherit, socket, got 'pipe'"),
    ("stdio: socket", "stdio: socket needs a socket with accept: true (each connection becomes "
     "the process's stdin and stdout)"),
    ("stdio: socket\nsockets: {http: 8000}", "stdio: socket needs a socket with accept: true (each "
     "connection becomes the process's stdin and stdout)"),
]


@pytest.mark.parametrize("text, message", INVALID, ids=[v[0] for v in INVALID])
def test_invalid_service_values(stack, text, message):
    assert error_of(stack, text + "\n") == message


def test_every_service_key_of_the_spec_is_known():
    spec_keys = {
        "description", "exec", "type", "instances", "sockets", "socket_env", "start", "stdio", "requires",
        "wants", "after", "environment", "environment_file", "working_directory", "user", "group",
        "umask", "restart", "restart_sec", "restart_max_sec", "start_limit_burst",
        "start_limit_interval_sec", "timeout_start_sec", "timeout_stop_sec", "kill_signal",
        "reload_signal", "watchdog_sec", "notify_access", "output", "success_action",
        "failure_action", "ready", "health",  # §10
        "log_buffer_lines",  # §8
        "oom_score_adjust", "limits"}  # §11
    assert set(unitkeys.SERVICE_KEYS) == spec_keys
    assert set(unitkeys.SOCKET_KEYS) == {
        "listen", "name", "backlog", "reuse_port", "ipv6_only", "nodelay", "keepalive", "mode",
        "user", "group", "accept", "max_connections"}


def test_start_on_demand(stack):
    assert value_of(stack, "start: on-demand\nsockets: {http: 8000}\n", "start") == "on-demand"


def test_environment_values_are_text_as_written(stack):
    environment = value_of(stack, """
        environment:
          PORT: 8000
          DEBUG: yes
          RATIO: 1.50
          HEX: 0x1F
          EMPTY: ""
          FD: $(sockets.http)
          LITERAL: $HOME and $$
        sockets: {http: 8000}
        """, "environment")
    values = {k: t.expand({"http": 3}, 1, {}) for k, t in environment}
    assert values == {"PORT": "8000", "DEBUG": "yes", "RATIO": "1.50", "HEX": "0x1F", "EMPTY": "",
                      "FD": "3", "LITERAL": "$HOME and $"}


def test_user_by_name_sets_its_group_and_supplementary_groups(stack):
    credentials = value_of(stack, "user: nobody\n", "credentials")
    assert (credentials.uid, credentials.gid, credentials.user) == (NOBODY.pw_uid, NOBODY.pw_gid, "nobody")
    assert NOBODY.pw_gid in credentials.groups
    assert credentials.home == NOBODY.pw_dir


def test_user_and_group_by_name(stack):
    credentials = value_of(stack, "user: nobody\ngroup: nogroup\n", "credentials")
    assert (credentials.uid, credentials.gid) == (NOBODY.pw_uid, NOGROUP.gr_gid)


@pytest.mark.parametrize("text", ["user: 65534", "user: '65534'"])
def test_user_by_number(stack, text):
    credentials = value_of(stack, text + "\n", "credentials")
    assert credentials.uid == 65534 and credentials.user == pwd.getpwuid(65534).pw_name


def test_a_user_id_without_an_entry_is_its_own_group(stack):
    credentials = value_of(stack, "user: 123456\n", "credentials")
    assert (credentials.uid, credentials.gid, credentials.groups, credentials.user) == (
        123456, 123456, (123456,), None)


def test_group_alone_keeps_our_user(stack):
    credentials = value_of(stack, "group: nogroup\n", "credentials")
    assert (credentials.uid, credentials.gid) == (0, NOGROUP.gr_gid)


def test_group_by_number_without_an_entry(stack):
    assert value_of(stack, "group: 54321\n", "credentials").gid == 54321


def test_a_relative_working_directory_is_taken_from_the_unit_files_directory(stack):
    (stack.units / "data").mkdir()
    assert value_of(stack, "working_directory: data\n", "working_directory") == str(stack.units / "data")


def test_a_working_directory_the_user_cannot_enter_is_an_error(stack):
    private = stack.root / "private"
    (private / "work").mkdir(parents=True)
    private.chmod(0o700)
    assert error_of(stack, f"user: nobody\nworking_directory: {private / 'work'}\n") == (
        "working_directory: 'private/work' cannot be entered by user nobody")


def test_the_missing_exec_key_is_located_at_the_start_of_the_file(stack):
    stack.write("web.yaml", "# a comment\n\ndescription: x\n")
    assert stack.error() == "units/web.yaml:3: unit web: missing key 'exec': the command to run"


@pytest.mark.parametrize("text, message", [
    ("exec: ''", "exec: the command is empty"),
    ("exec: []", "exec: the command is empty"),
    ("exec: ['', x]", "exec: the program name is empty"),
    ("exec:", "exec: expected a command line or a list of arguments, got nothing (null)"),
    ("exec: {a: b}", "exec: expected a command line or a list of arguments, got a mapping"),
    ("exec: ['true', [x]]", "exec: item 2: expected text, got a list"),
    ("exec: ['true', null]", "exec: item 2: expected text, got nothing (null)"),
    ("exec: \"echo 'a\"", "exec: cannot split the command line like a shell would: No closing quotation"),
    ("exec: \"true \\0\"", "exec: 'true \\x00' contains a NUL character, which no file name, argument or "
     "environment can hold"),
])
def test_invalid_exec(stack, text, message):
    stack.write("web.yaml", text + "\n")
    error = stack.error()
    assert error.split(": unit web: ", 1)[1] == message, error


@pytest.mark.parametrize("text, argv", [
    ("exec: true", ["true"]),  # YAML's boolean, as written
    ("exec: sleep 1", ["sleep", "1"]),
    ("exec: \"sh -c 'echo $HOME; sleep 1'\"", ["sh", "-c", "echo $HOME; sleep 1"]),
    ("exec: 'echo \"a  b\" c\\ d'", ["echo", "a  b", "c d"]),
    ("exec: [echo, 42, 1.5, yes, null]", None),
    ("exec: [echo, '42', '#not a comment']", ["echo", "42", "#not a comment"]),
    ("exec: 'echo a#b #c'", ["echo", "a#b", "#c"]),  # no comments: no shell
])
def test_exec_forms(stack, text, argv):
    if argv is None:
        stack.write("web.yaml", text + "\n")
        assert "item 5: expected text, got nothing (null)" in stack.error()
        return
    stack.write("web.yaml", text + "\n")
    unit = only_unit(stack.load())
    assert [t.expand({}, 1, {}) for t in unit.exec] == argv


def test_numbers_in_an_exec_list_are_arguments_as_written(stack):
    stack.write("web.yaml", "exec: [echo, 42, 1.50, yes, 0x10]\n")
    unit = only_unit(stack.load())
    assert [str(t) for t in unit.exec] == ["echo", "42", "1.50", "yes", "0x10"]


# --------------------------------------------------------------------------- socket keys

def socket_of(stack, spec: str) -> unitmodel.Socket:
    stack.unit("web", f"sockets:\n  http: {spec}\n")
    (socket,) = only_unit(stack.load()).sockets
    return socket


VALID_SOCKETS = [
    ("8000", "listen", Listen("tcp", "", 8000)),
    ("'8000'", "listen", Listen("tcp", "", 8000)),
    ("{listen: 8000}", "listen", Listen("tcp", "", 8000)),
    ("{listen: 'tcp://127.0.0.1:80'}", "listen", Listen("tcp", "127.0.0.1", 80)),
    ("{listen: 'tcp://[::1]:80'}", "listen", Listen("tcp", "::1", 80)),
    ("{listen: 'udp://0.0.0.0:53'}", "listen", Listen("udp", "0.0.0.0", 53)),
    ("{listen: 'unix:/run/app.sock'}", "listen", Listen("unix", path="/run/app.sock")),
    ("{listen: 'unix:@app'}", "listen", Listen("unix", path="@app")),
    ("{listen: 'fifo:/run/app.fifo'}", "listen", Listen("fifo", path="/run/app.fifo")),
    ("{listen: 'inherit:web'}", "listen", Listen("inherit", path="web")),
    ("{listen: 8000}", "name", "http"),
    ("{listen: 8000, name: web-http}", "name", "web-http"),
    ("{listen: 8000}", "backlog", 4096),
    ("{listen: 8000, backlog: 1}", "backlog", 1),
    ("{listen: 8000, reuse_port: true}", "reuse_port", True),
    ("{listen: 8000, ipv6_only: true}", "ipv6_only", True),
    ("{listen: 'tcp://[::]:80', ipv6_only: true}", "ipv6_only", True),
    ("{listen: 'udp://[::]:53', ipv6_only: true}", "ipv6_only", True),
    ("{listen: 8000, nodelay: true}", "nodelay", True),
    ("{listen: 8000, keepalive: true}", "keepalive", True),
    ("{listen: 'unix:/run/a.sock'}", "mode", 0o666),
    ("{listen: 'unix:/run/a.sock', mode: 0660}", "mode", 0o660),
    ("{listen: 'fifo:/run/a', mode: '0600'}", "mode", 0o600),
    ("{listen: 'unix:/run/a.sock', user: nobody}", "uid", NOBODY.pw_uid),
    ("{listen: 'unix:/run/a.sock', user: nobody}", "gid", NOBODY.pw_gid),
    ("{listen: 'unix:/run/a.sock', group: nogroup}", "gid", NOGROUP.gr_gid),
    ("{listen: 'unix:/run/a.sock', group: nogroup}", "uid", None),
    ("{listen: 'unix:/run/a.sock', user: 1234}", "uid", 1234),
    ("{listen: 8000, accept: true}", "accept", True),
    ("{listen: 'unix:/run/a.sock', accept: true}", "accept", True),
    ("{listen: 8000, accept: true, max_connections: 1}", "max_connections", 1),
    ("{listen: 8000, accept: true}", "max_connections", 64),
]


@pytest.mark.parametrize("spec, attribute, expected", VALID_SOCKETS,
                         ids=[f"{v[0]}-{v[1]}" for v in VALID_SOCKETS])
def test_valid_socket_values(stack, spec, attribute, expected):
    assert getattr(socket_of(stack, spec), attribute) == expected


INVALID_SOCKETS = [
    ("{listen: 70000}", "sockets.http.listen: '70000': the port must be a number from 0 to 65535"),
    ("{listen: -1}", "sockets.http.listen: '-1': the port must be a number from 0 to 65535"),
    ("{listen: true}", "sockets.http.listen: expected tcp://HOST:PORT, tcp://[V6ADDR]:PORT, "
     "udp://HOST:PORT, unix:/path, unix:@name, fifo:/path, inherit:NAME, or a port number"),
    ("{listen: 'http://x:80'}", "sockets.http.listen: 'http://x:80' is not an address; expected "
     "tcp://HOST:PORT, tcp://[V6ADDR]:PORT, udp://HOST:PORT, unix:/path, unix:@name, fifo:/path, "
     "inherit:NAME, or a port number"),
    ("{listen: 'unix:run/a.sock'}", "sockets.http.listen: 'unix:run/a.sock': the path must be absolute"),
    ("{listen: 8000, name: 'a:b'}", "sockets.http.name: 'a:b' cannot be passed in LISTEN_FDNAMES (1 to "
     "255 printable characters, no ':' or blank)"),
    ("{listen: 8000, name: ''}", "sockets.http.name: '' cannot be passed in LISTEN_FDNAMES (1 to 255 "
     "printable characters, no ':' or blank)"),
    ("{listen: 8000, name: 5}", "sockets.http.name: expected text, got 5"),
    ("{listen: 8000, backlog: 0}", "sockets.http.backlog: expected a number from 1 to 2147483647, got 0"),
    ("{listen: 8000, backlog: big}", "sockets.http.backlog: expected a whole number, got 'big'"),
    ("{listen: 8000, reuse_port: 'true'}", "sockets.http.reuse_port: expected true or false, got 'true'"),
    ("{listen: 'unix:/run/a', mode: 0888}", "sockets.http.mode: expected an octal mode such as 0660, got '0888'"),
    ("{listen: 'unix:/run/a', mode: '17777'}", "sockets.http.mode: expected an octal mode such as 0660, "
     "got '17777'"),
    ("{listen: 'unix:/run/a', user: nosuchuser}", "sockets.http.user: no user named 'nosuchuser' in /etc/passwd"),
    ("{listen: 'unix:/run/a', group: nosuchgroup}", "sockets.http.group: no group named 'nosuchgroup' "
     "in /etc/group"),
    ("{listen: 'udp://0.0.0.0:53', accept: true}", "sockets.http.accept: only stream sockets (tcp, "
     "unix) accept connections; udp://0.0.0.0:53 is udp"),
    ("{listen: 'fifo:/run/f', accept: true}", "sockets.http.accept: only stream sockets (tcp, unix) "
     "accept connections; fifo:/run/f is fifo"),
    ("{listen: 8000, accept: true, max_connections: 0}", "sockets.http.max_connections: expected a "
     "number from 1 to 65536, got 0"),
    ("{listen: 8000, bogus: 1}", "unknown socket key 'sockets.http.bogus'"),
]


# Options that do nothing for a kind of socket: ignored with a warning, as systemd ignores them.
INAPPLICABLE_SOCKET_OPTIONS = [
    ("{listen: 'unix:/run/a', reuse_port: true}", "sockets.http.reuse_port: applies to tcp and udp sockets only"),
    ("{listen: 'tcp://127.0.0.1:80', ipv6_only: true}", "sockets.http.ipv6_only: applies to IPv6 "
     "addresses and bare ports only"),
    ("{listen: 'unix:/run/a', nodelay: true}", "sockets.http.nodelay: applies to tcp sockets only"),
    ("{listen: 'udp://0.0.0.0:53', keepalive: true}", "sockets.http.keepalive: applies to tcp sockets only"),
    ("{listen: 8000, mode: '0600'}", "sockets.http.mode: applies to unix socket files and fifos only"),
    ("{listen: 'unix:@abstract', mode: '0600'}", "sockets.http.mode: applies to unix socket files and "
     "fifos only"),
    ("{listen: 8000, user: nobody}", "sockets.http.user: applies to unix socket files and fifos only"),
    ("{listen: 8000, max_connections: 5}", "sockets.http.max_connections: applies with accept: true only"),
    ("{listen: 'inherit:x', backlog: 5}", "sockets.http.backlog: an inherited socket is already bound"),
]


@pytest.mark.parametrize("spec, message", INAPPLICABLE_SOCKET_OPTIONS,
                         ids=[v[0] for v in INAPPLICABLE_SOCKET_OPTIONS])
def test_socket_options_without_effect_are_warnings(stack, spec, message):
    stack.unit("web", f"sockets:\n  http: {spec}\n")
    model = stack.load()
    assert [w.message for w in model.warnings] == [message + "; ignored"]
    assert [w.location.line for w in model.warnings] == [3]


@pytest.mark.parametrize("spec, message", INVALID_SOCKETS, ids=[v[0] for v in INVALID_SOCKETS])
def test_invalid_socket_values(stack, spec, message):
    assert error_of(stack, f"sockets:\n  http: {spec}\n") == message


def test_sockets_keep_their_declared_order(stack):
    stack.unit("web", "sockets:\n  z: 8002\n  a: 8000\n  m: 8001\n")
    assert [s.name for s in only_unit(stack.load()).sockets] == ["z", "a", "m"]


def test_a_socket_remembers_its_unit_key_and_location(stack):
    stack.unit("web", "sockets:\n  http:\n    name: public\n    listen: 8000\n")
    (socket,) = only_unit(stack.load()).sockets
    assert (socket.unit, socket.key, socket.name) == ("web", "http", "public")
    assert stack.relative(socket.where) == "units/web.yaml:3"


def test_model_sockets_maps_names_to_sockets(stack):
    stack.unit("a", "sockets:\n  one: 8000\n")
    stack.unit("b", "sockets:\n  two: {listen: 8001, name: zwei}\n")
    assert {n: s.unit for n, s in stack.load().sockets.items()} == {"one": "a", "zwei": "b"}
