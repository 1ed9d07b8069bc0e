"""The recipes of docs/recipes.md, run as written with the real programs (see recipe_support):
one request through activator's socket, a reload under a client loop with no failure, a stop
that leaves nothing behind."""

from __future__ import annotations

import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import Activator, environ_of, wait_for
from recipe_support import edit_unit, fastcgi_get, install, reload_with_client, stop_leaves_nothing
from sock_helpers import inet_address, wait_state

pytestmark = pytest.mark.slow


@pytest.fixture
def public_dir():
    """A directory every user may read, for programs that drop privileges (pytest's own
    temporary directories are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="recipe-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def activator(public_dir):
    """As conftest's, but with activator's runtime directory (its notify socket) where a
    service that dropped privileges can reach it."""
    started = []

    def start(units, **options):
        run = Activator(public_dir / f"activator{len(started)}", units, **options)
        started.append(run)
        return run.start()

    yield start
    for run in started:
        run.cleanup()


def needs(*programs: str):
    search = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"  # as activator's PATH
    missing = [p for p in programs if shutil.which(p, path=search) is None]
    return pytest.mark.skipif(bool(missing), reason=f"not installed: {', '.join(missing)} "
                              "(scripts/setup test installs them)")


def free_port() -> int:
    """A port the kernel picks, for configurations that must name the address they serve."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", host: str = "127.0.0.1") -> tuple[int, str]:
    """One request on a connection of its own: (status, body)."""
    connection = http.client.HTTPConnection(host, port, timeout=20)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def ok(answer, text: str) -> bool:
    return answer == (200, text)


# --------------------------------------------------------------------------- nginx

@needs("nginx")
def test_nginx(activator, tmp_path):
    port = free_port()
    conf = tmp_path / "nginx.conf"
    units = install("nginx", tmp_path, {
        "tcp://0.0.0.0:8080": f"tcp://127.0.0.1:{port}", "listen 0.0.0.0:8080": f"listen 127.0.0.1:{port}",
        "/etc/nginx/nginx.conf": str(conf), "/run/nginx.pid": str(tmp_path / "nginx.pid")})
    a = activator(units)
    a.wait_log('using inherited sockets from "3;"')
    assert http_get(port) == (200, "hello from nginx\n")

    def reload():
        conf.write_text(conf.read_text().replace("hello from nginx", "hello again"))
        a.signal(signal.SIGHUP)  # unchanged unit: its reload_signal
    reload_with_client(a, lambda: http_get(port), reload, lambda r: ok(r, "hello again\n"))
    assert len(a.pids("nginx")) == 1
    output = stop_leaves_nothing(a)
    assert "signal 3 (SIGQUIT) received" in output


# --------------------------------------------------------------------------- HAProxy

@needs("haproxy")
def test_haproxy(activator, tmp_path):
    conf = tmp_path / "haproxy.cfg"
    units = install("HAProxy", tmp_path, {"tcp://0.0.0.0:8080": "tcp://127.0.0.1:0",
                                          "/etc/haproxy/haproxy.cfg": str(conf)})
    a = activator(units)
    wait_state(a, "haproxy", "running")
    port = inet_address(a, "haproxy")[1]
    assert http_get(port) == (200, "hello from haproxy")
    [master] = a.pids("haproxy")

    def reload():
        conf.write_text(conf.read_text().replace("hello from haproxy", "hello again"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, lambda: http_get(port), reload, lambda r: ok(r, "hello again"))
    assert a.pids("haproxy") == [master]  # the master re-executed itself in place
    output = stop_leaves_nothing(a)
    # The soft stop reaches the workers too: one still leaving after the reload may die of it
    # (138), which the master then reports; either way every worker has exited (the recipe).
    assert "All workers exited. Exiting... (0)" in output or "All workers exited. Exiting... (138)" in output


# --------------------------------------------------------------------------- uWSGI

def listen_backlog(port: int) -> int:
    """The backlog of the TCP listener on `port`, as the kernel reports it (ss: Send-Q)."""
    lines = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True,
                           check=True).stdout.splitlines()
    [fields] = [line.split() for line in lines if line.strip()]
    return int(fields[2])


@needs("uwsgi")
def test_uwsgi(activator, tmp_path):
    app = tmp_path / "app.py"
    units = install("uWSGI", tmp_path, {"tcp://0.0.0.0:8000": "tcp://127.0.0.1:0",
                                        "/srv/app/app.py": str(app)})
    a = activator(units)
    wait_state(a, "uwsgi", "running")
    port = inet_address(a, "uwsgi")[1]
    assert http_get(port) == (200, "hello from uwsgi")
    assert "LISTEN_FDS" not in environ_of(a.host_pids("uwsgi")[0])  # socket_env off: fd 3 once
    assert listen_backlog(port) == 4096
    [master] = a.pids("uwsgi")

    def reload():
        app.write_text(app.read_text().replace("hello from uwsgi", "hello again"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, lambda: http_get(port), reload, lambda r: ok(r, "hello again"))
    assert a.pids("uwsgi") == [master]  # executed itself again in place
    assert listen_backlog(port) == 4096
    output = stop_leaves_nothing(a)
    assert "graceful shutdown triggered" in output and "goodbye to uWSGI" in output


# --------------------------------------------------------------------------- php-fpm

@needs("php-fpm8.2")
def test_php_fpm(activator, tmp_path, public_dir):
    port = free_port()
    conf, script = tmp_path / "php-fpm.conf", public_dir / "index.php"
    units = install("php-fpm", tmp_path, {
        "127.0.0.1:9000": f"127.0.0.1:{port}", "/etc/php/8.2/fpm/php-fpm.conf": str(conf),
        "/run/php/php-fpm.pid": str(tmp_path / "php-fpm.pid"), "/srv/www/index.php": str(script)},
        also=[public_dir])
    a = activator(units)
    wait_state(a, "php-fpm", "running")
    a.wait_log(f'using inherited socket fd=3, "127.0.0.1:{port}"')

    def ask():
        return fastcgi_get(("127.0.0.1", port), str(script))
    assert ask() == "hello from php-fpm\n"
    [master] = a.pids("php-fpm")

    def reload():
        conf.write_text(conf.read_text().replace("hello from php-fpm", "hello again"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, ask, reload, lambda r: r == "hello again\n")
    assert a.pids("php-fpm") == [master]  # executed itself again in place
    output = stop_leaves_nothing(a)
    assert "exiting, bye-bye!" in output


# --------------------------------------------------------------------------- PostgreSQL

PG_BIN = "/usr/lib/postgresql/15/bin"


@pytest.fixture
def postgres_dirs(public_dir):
    """Where the cluster and its unix socket go, owned by postgres as Debian's are."""
    pg = pwd.getpwnam("postgres")
    for name in ("", "sock"):
        (public_dir / name).mkdir(exist_ok=True)
        os.chown(public_dir / name, pg.pw_uid, pg.pw_gid)
    return {"/var/lib/postgresql/data": str(public_dir / "data"),
            "/run/postgresql": str(public_dir / "sock")}


def psql(host: str, query: str, port: int | None = None, database: str = "postgres") -> str:
    """One query by a new client connection, as the postgres user (peer authentication)."""
    argv = ["psql", "-h", host, "-U", "postgres", "-d", database, "-XAtc", query]
    if port is not None:
        argv[3:3] = ["-p", str(port)]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, user="postgres",
                            cwd="/")
    if result.returncode != 0:
        raise RuntimeError(f"psql exit {result.returncode}: {result.stderr.strip()}")
    return result.stdout.strip()


@needs(f"{PG_BIN}/postgres", "psql")
def test_postgresql(activator, tmp_path, postgres_dirs):
    units = install("PostgreSQL", tmp_path, {**postgres_dirs, "listen_addresses=*": "listen_addresses="})
    a = activator(units)
    wait_state(a, "postgres", "running", timeout=120)
    assert a.status()["units"]["postgres-init"]["state"] == "exited"
    sock = postgres_dirs["/run/postgresql"]
    assert psql(sock, "select 1 + 1") == "2"

    conf = Path(postgres_dirs["/var/lib/postgresql/data"]) / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nrecipe.greeting = 'hello'\n")
    a.signal(signal.SIGHUP)  # reload_signal: SIGHUP

    def greeting():
        try:
            return psql(sock, "show recipe.greeting")
        except RuntimeError:  # not read yet: "unrecognized configuration parameter"
            return None
    wait_for(lambda: greeting() == "hello", 30, what="the first reload applied")

    def reload():
        conf.write_text(conf.read_text().replace("'hello'", "'hello again'"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, lambda: psql(sock, "show recipe.greeting"), reload,
                       lambda r: r == "hello again")
    output = stop_leaves_nothing(a)
    assert "received fast shutdown request" in output and "database system is shut down" in output

    # The next boot finds the cluster: the oneshot does nothing, the data is there.
    again = activator(units)
    wait_state(again, "postgres", "running", timeout=120)
    assert "initdb" not in again.output() and "creating directory" not in again.output()
    assert psql(sock, "show recipe.greeting") == "hello again"
    stop_leaves_nothing(again)


# --------------------------------------------------------------------------- PgBouncer

@needs(f"{PG_BIN}/postgres", "psql", "pgbouncer")
def test_pgbouncer_in_front_of_postgresql(activator, tmp_path, public_dir, postgres_dirs):
    ini = public_dir / "pgbouncer.ini"  # read by pgbouncer as postgres
    moved = {**postgres_dirs, "listen_addresses=*": "listen_addresses="}
    units = install("PostgreSQL", tmp_path, moved)
    units |= install("PgBouncer", public_dir, {
        "tcp://0.0.0.0:6432": "tcp://127.0.0.1:0", "/etc/pgbouncer/pgbouncer.ini": str(ini),
        "/etc/pgbouncer/userlist.txt": str(public_dir / "userlist.txt"),
        "/run/postgresql": postgres_dirs["/run/postgresql"]})
    a = activator(units)
    wait_state(a, "pgbouncer", "running", timeout=120)
    a.wait_log("socket passed from service manager (fd 3)")
    port = inet_address(a, "pgbouncer")[1]

    def ask():
        value = psql("127.0.0.1", "select 6 * 7", port)
        config = psql("127.0.0.1", "show config", port, database="pgbouncer")
        return value, [line for line in config.splitlines() if line.startswith("max_client_conn|")]
    assert ask() == ("42", ["max_client_conn|100|100|yes"])

    def reload():
        ini.write_text(ini.read_text().replace("max_client_conn = 100", "max_client_conn = 200"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, ask, reload, lambda r: r == ("42", ["max_client_conn|200|100|yes"]))
    output = stop_leaves_nothing(a)
    # Stopped in reverse dependency order: PgBouncer first, then PostgreSQL.
    assert output.index("got SIGINT, shutting down") < output.index("received fast shutdown request")


# --------------------------------------------------------------------------- Hypercorn

@needs("hypercorn")
def test_hypercorn(activator, tmp_path):
    units = install("Hypercorn", tmp_path, {"tcp://0.0.0.0:8000": "tcp://127.0.0.1:0",
                                            "/srv/app": str(tmp_path / "app")})
    a = activator(units)
    wait_state(a, "hypercorn", "running")
    port = inet_address(a, "hypercorn")[1]
    assert http_get(port) == (200, "hello from hypercorn\n")
    old = set(a.pids("hypercorn"))
    assert len(old) == 2

    def reload():
        edit_unit(a, "hypercorn", "GREETING: hello", "GREETING: hello again")
    reload_with_client(a, lambda: http_get(port), reload,
                       lambda r: ok(r, "hello again from hypercorn\n"))
    a.wait_status(lambda st: not old & {i["pid"] for i in st["units"]["hypercorn"]["instances"]}
                  and st["units"]["hypercorn"]["state"] == "running", what="both instances replaced")
    output = stop_leaves_nothing(a)
    # 0 after a graceful stop; 143 (killed by SIGTERM, a clean stop too) for an instance
    # still importing the app, before Hypercorn set its handler.
    statuses = re.findall(r"hypercorn\.\d \(pid \d+\): stopped \((\d+)\)", output)
    assert len(statuses) == 2 and set(statuses) <= {"0", "143"}, output


# --------------------------------------------------------------------------- lighttpd

@needs("lighttpd")
def test_lighttpd(activator, public_dir):
    port = free_port()
    conf, html = public_dir / "lighttpd.conf", public_dir / "html"
    units = install("lighttpd", public_dir, {
        "tcp://0.0.0.0:80": f"tcp://127.0.0.1:{port}", 'server.bind = "0.0.0.0"': 'server.bind = "127.0.0.1"',
        "server.port = 80": f"server.port = {port}", "/etc/lighttpd/lighttpd.conf": str(conf),
        "/var/www/html": str(html)})
    for version in ("hello from lighttpd", "hello again"):
        (public_dir / version.replace(" ", "-")).mkdir()
        (public_dir / version.replace(" ", "-") / "index.html").write_text(version + "\n")
    conf.write_text(conf.read_text().replace(str(html), str(public_dir / "hello-from-lighttpd")))
    a = activator(units)
    wait_state(a, "lighttpd", "running")
    assert wait_for(lambda: http_get(port), what="lighttpd's answer") == (200, "hello from lighttpd\n")
    assert environ_of(a.host_pids("lighttpd")[0])["LISTEN_FDS"] == "1"
    [pid] = a.pids("lighttpd")

    def reload():
        conf.write_text(conf.read_text().replace("hello-from-lighttpd", "hello-again"))
        a.signal(signal.SIGHUP)
    reload_with_client(a, lambda: http_get(port), reload, lambda r: ok(r, "hello again\n"))
    assert a.pids("lighttpd") == [pid]  # restarted gracefully in the same process
    output = stop_leaves_nothing(a)
    assert "graceful shutdown started" in output


# --------------------------------------------------------------------------- Node.js

@needs("node")
def test_node(activator, tmp_path):
    units = install("Node.js", tmp_path, {"tcp://0.0.0.0:3000": "tcp://127.0.0.1:0",
                                          "/srv/app": str(tmp_path / "app")})
    a = activator(units)
    wait_state(a, "node", "running")
    port = inet_address(a, "node")[1]
    assert http_get(port) == (200, "hello from node\n")
    old = set(a.pids("node"))

    def reload():
        edit_unit(a, "node", "GREETING: hello", "GREETING: hello again")
    reload_with_client(a, lambda: http_get(port), reload, lambda r: ok(r, "hello again from node\n"))
    a.wait_status(lambda st: not old & {i["pid"] for i in st["units"]["node"]["instances"]}
                  and st["units"]["node"]["state"] == "running", what="both instances replaced")
    a.wait_log("listening on fd 3")
    output = stop_leaves_nothing(a)
    statuses = re.findall(r"node\.\d \(pid \d+\): stopped \((\d+)\)", output)
    assert len(statuses) == 2 and set(statuses) <= {"0", "143"}, output


# --------------------------------------------------------------------------- git daemon

def make_repository(path: Path, text: str) -> str:
    """A bare repository at `path` with one commit; its commit id."""
    work = path.with_suffix(".work")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README").write_text(text)
    subprocess.run([*git, "-C", str(work), "add", "README"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "-m", text], check=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(path)], check=True)
    return subprocess.run(["git", "-C", str(work), "rev-parse", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()


@needs("git")
def test_git_daemon_inetd(activator, tmp_path, public_dir):
    first = make_repository(public_dir / "one" / "demo.git", "one")
    second = make_repository(public_dir / "two" / "demo.git", "two")
    units = install("git daemon", tmp_path, {"tcp://0.0.0.0:9418": "tcp://127.0.0.1:0",
                                             "/srv/git": str(public_dir / "one")})
    a = activator(units)
    wait_state(a, "git-daemon", "running")
    port = inet_address(a, "git-daemon")[1]

    def ask():
        listed = subprocess.run(["git", "ls-remote", f"git://127.0.0.1:{port}/demo.git", "main"],
                                capture_output=True, text=True, timeout=30)
        if listed.returncode != 0:
            raise RuntimeError(listed.stderr.strip())
        return listed.stdout.split()[0]
    assert ask() == first

    def reload():
        edit_unit(a, "git-daemon", str(public_dir / "one"), str(public_dir / "two"))
    reload_with_client(a, ask, reload, lambda r: r == second)
    stop_leaves_nothing(a, idle=True)


# --------------------------------------------------------------------------- OpenSSH

SSHD_CONFIG = """\
HostKey {dir}/hostkey
AuthorizedKeysFile {dir}/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
PidFile none
# The keys are under /tmp, which is writable by everyone: sshd's strict modes refuse that.
StrictModes no
"""


@needs("/usr/sbin/sshd", "ssh", "ssh-keygen")
def test_sshd_inetd(activator, tmp_path):
    for name in ("hostkey", "key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)],
                       check=True)
    (tmp_path / "authorized_keys").write_text((tmp_path / "key.pub").read_text())
    conf = tmp_path / "sshd_config"
    conf.write_text(SSHD_CONFIG.format(dir=tmp_path))
    units = install("OpenSSH", tmp_path, {
        "tcp://0.0.0.0:22": "tcp://127.0.0.1:0",
        "-f /etc/ssh/sshd_config": f"-f {conf} -o SetEnv=GREETING=hello"})
    a = activator(units)
    wait_state(a, "sshd", "running")
    port = inet_address(a, "sshd")[1]

    def ask():
        result = subprocess.run(
            ["ssh", "-i", str(tmp_path / "key"), "-p", str(port), "-o", "BatchMode=yes",
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "LogLevel=ERROR", "root@127.0.0.1", "echo $GREETING"],
            capture_output=True, text=True, timeout=30)
        if result.returncode != 0:
            raise RuntimeError(f"ssh exit {result.returncode}: {result.stderr.strip()}")
        return result.stdout
    assert ask() == "hello\n"
    a.wait_log("Accepted publickey for root")

    def reload():
        edit_unit(a, "sshd", "GREETING=hello", "GREETING=hello-again")
    reload_with_client(a, ask, reload, lambda r: r == "hello-again\n", settle=3)
    stop_leaves_nothing(a, idle=True)
