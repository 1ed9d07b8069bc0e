"""activator in a real container runtime: the image of container/Dockerfile, run by podman.

Slow: the first run builds a Debian base image with debootstrap (1 to 2 minutes, see
container/build-base-image); later runs find it, and the whole module takes about 20 s.

Every container runs with `--network host` (the test reaches its port on 127.0.0.1) or
`--network none`, on a free port chosen here, and is removed at the end. Test-only settings
reach the image's units as drop-ins in a second units directory mounted at /test-units:
`activator --units /etc/activator/units --units /test-units`.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from harness import ROOT, wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("podman") is None, reason="podman is not installed (scripts/setup test)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the base image build (debootstrap) and these tests need root"),
]

# A tag of this run's own: other checkouts on the machine build, run and remove theirs at the
# same time, and a shared name would let one run start another's image, or lose it mid-run.
# (Removing a tag that shares its image with another tag only untags it.)
IMAGE = f"localhost/activator:test-{uuid.uuid4().hex[:10]}"
# podman hands NOTIFY_SOCKET and LISTEN_* on into the container: only where a test means it.
ENV = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET" and not k.startswith("LISTEN_")}
ENV["CONTAINERS_CONF"] = os.environ.get("CONTAINERS_CONF") or str(ROOT / "container" / "containers.conf")


def podman(*args, check=True, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(["podman", *args], env=kwargs.pop("env", ENV), capture_output=True,
                            text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def build(context: Path, tag: str | None = None, check=True, layers=True) -> subprocess.CompletedProcess:
    """`layers=False` keeps no intermediate image behind, even when the build fails."""
    args = ["build", "--pull=never", "--format", "docker", "--network", "host", f"--layers={str(layers).lower()}",
            "--ignorefile", str(ROOT / "container" / "Dockerfile.dockerignore"),
            "-f", str(ROOT / "container" / "Dockerfile")]
    return podman(*args, *(["-t", tag] if tag else []), str(context), check=check, timeout=600)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port: int, timeout: float = 10.0) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
        return response.read().decode()


def hit_number(body: str) -> int:
    # "hello from worker pid 17 (web instance 4): hit 3 (counter set up ...)"
    return int(body.split(": hit ")[1].split()[0])


@pytest.fixture(scope="session")
def image():
    """The image, built once per session from the working tree (the base image is cached)."""
    started = time.monotonic()
    subprocess.run([str(ROOT / "container" / "build-base-image")], env=ENV, check=True, timeout=600)
    base = time.monotonic()
    build(ROOT, IMAGE)
    print(f"\nbase image: {base - started:.1f}s, activator image: {time.monotonic() - base:.1f}s",
          file=sys.stderr)
    yield IMAGE
    podman("rmi", "--force", IMAGE, check=False)  # the base image stays: it is the cache


class Container:
    """One `podman run -d`, removed at the end whatever happened."""

    def __init__(self, tmp_path: Path, dropins: dict[str, str] | None = None, network="host",
                 run_args=(), args=None):
        self.name = f"activator-test-{uuid.uuid4().hex[:10]}"
        self.units = tmp_path / "test-units"
        self.write(dropins or {})
        self.argv = ["run", "-d", "--name", self.name, f"--network={network}",
                     "-v", f"{self.units}:/test-units:ro", *run_args, IMAGE,
                     *(args if args is not None else ["--units", "/etc/activator/units",
                                                       "--units", "/test-units"])]

    def write(self, files: dict[str, str]) -> None:
        """Write files into /test-units (a bind mount: the container sees them at once)."""
        self.units.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            path = self.units / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)

    def start(self, env=ENV) -> "Container":
        podman(*self.argv, env=env)
        return self

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)

    def exec(self, *argv, check=True) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *argv, check=check)

    def status(self) -> dict:
        return json.loads(self.exec("activator", "status", "--json").stdout)

    def wait_status(self, predicate, timeout=30.0, what="a status") -> dict:
        def check():
            result = self.exec("activator", "status", "--json", check=False)
            if not result.stdout.strip():
                return None
            data = json.loads(result.stdout)
            return data if predicate(data) else None
        try:
            return wait_for(check, timeout, interval=0.2, what=what)
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.logs()}") from None

    def environ(self, pid: int) -> dict[str, str]:
        """A process's environment. (Not redis's: it writes its process title over it.)"""
        data = self.exec("cat", f"/proc/{pid}/environ").stdout
        return dict(item.split("=", 1) for item in data.split("\0") if "=" in item)

    def logs(self) -> str:
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def inspect(self) -> dict:
        return json.loads(podman("inspect", self.name).stdout)[0]


def all_running(status: dict) -> bool:
    return all(u["state"] in ("running", "exited") for u in status["units"].values())


# -- the image


def test_image_is_small_and_has_no_compiler_or_pip(image):
    inspect = json.loads(podman("image", "inspect", image).stdout)[0]
    size = inspect["Size"]
    print(f"\nimage size: {size / 1e6:.1f} MB", file=sys.stderr)
    assert size < 200e6
    probe = podman("run", "--rm", "--network=none", "--entrypoint", "sh", image, "-c",
                   "command -v gcc cc c++ clang tcc make; python3 -m pip --version", check=False)
    assert probe.stdout.strip() == "", probe.stdout
    assert "No module named pip" in probe.stderr
    version = podman("run", "--rm", "--network=none", image, "--version")
    assert version.stdout.startswith("activator ")
    assert inspect["Config"]["Entrypoint"] == ["activator"]
    assert inspect["Config"]["StopSignal"] == "SIGTERM"
    assert inspect["Healthcheck"]["Test"] == ["CMD", "activator", "status"]  # --format docker


def test_a_broken_unit_fails_the_build(image, tmp_path):
    context = tmp_path / "context"
    for part in ("activator", "demo", "units"):
        shutil.copytree(ROOT / part, context / part, ignore=shutil.ignore_patterns("__pycache__"))
    # The mistake an image build is there to catch: a program the image does not have.
    (context / "units" / "broken.yaml").write_text(
        "description: needs a program the image lacks\nexec: nginx -g 'daemon off;'\n")
    result = build(context, check=False, layers=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert 'building at STEP "RUN activator check"' in output
    assert "/etc/activator/units/broken.yaml:2: unit broken: exec: program 'nginx' not found" in output


# -- the demo stack, activator as PID 1 of a container


def start_demo(directory: Path) -> Container:
    """The demo stack on free ports of the host's network, every unit running."""
    port, api_port = free_port(), free_port()
    container = Container(directory, {
        "web.d/port.yaml": f"sockets:\n  http:\n    listen: tcp://127.0.0.1:{port}\n",
        "api.d/port.yaml": f"sockets:\n  api:\n    listen: tcp://127.0.0.1:{api_port}\n"
                           f"health:\n  http: http://127.0.0.1:{api_port}/healthz\n"})
    container.port = port
    try:
        container.start()
        container.wait_status(all_running, what="the demo stack running")
    except BaseException:
        container.remove()
        raise
    return container


@pytest.fixture(scope="module")
def demo(image, tmp_path_factory):
    """One demo stack shared by the tests that leave it as they found it."""
    container = start_demo(tmp_path_factory.mktemp("demo"))
    try:
        yield container
    finally:
        container.remove()


@pytest.fixture
def own_demo(image, tmp_path):
    """A demo stack of the test's own, for a test that ends it."""
    container = start_demo(tmp_path)
    try:
        yield container
    finally:
        container.remove()


def test_demo_stack_runs_as_pid1_and_serves(demo):
    status = demo.status()
    assert status["pid"] == 1
    assert demo.exec("cat", "/proc/1/cmdline").stdout.split("\0")[:2] == ["/usr/bin/python3", "-I"]
    assert {name: u["state"] for name, u in status["units"].items()} == {
        "redis": "running", "migrate": "exited", "web": "running", "api": "running"}
    assert len(status["units"]["web"]["instances"]) == 4

    bodies = [get(demo.port) for _ in range(12)]
    hits = [hit_number(b) for b in bodies]
    assert hits == list(range(hits[0], hits[0] + 12)), bodies  # one counter, in redis
    assert all("hello from worker pid" in b for b in bodies)

    # web gets its fd by template, so no LISTEN_* (gunicorn would take the socket twice).
    environ = demo.environ(status["units"]["web"]["instances"][0]["pid"])
    assert environ["ACTIVATOR_UNIT"] == "web"
    assert not [key for key in environ if key.startswith("LISTEN_")], environ
    assert podman("healthcheck", "run", demo.name, check=False).returncode == 0


def test_sighup_reloads_with_a_rolling_restart_and_no_failed_request(demo):
    before = demo.status()
    old_pids = {i["pid"] for i in before["units"]["web"]["instances"]}
    redis_pid = before["units"]["redis"]["instances"][0]["pid"]

    # Requests all along the reload: the socket stays open in activator, so none may fail.
    failures, answered, done = [], [], threading.Event()

    def load():
        while not done.is_set():
            try:
                answered.append(get(demo.port))
            except Exception as e:  # noqa: BLE001 - any failure is the finding
                failures.append(repr(e))

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: len(answered) > 5, 10, what="requests answered before the reload")
        demo.write({"web.d/reload.yaml": "environment:\n  DEMO_RELOADED: 'yes'\n"})
        podman("kill", "-s", "HUP", demo.name)
        after = demo.wait_status(
            lambda s: s["generation"] == before["generation"] + 1
            and s["reload"].get("outcome") == "applied" and all_running(s),
            timeout=60, what="the reload applied")
        count = len(answered)
        wait_for(lambda: len(answered) > count + 5, 10, what="requests answered after the reload")
    finally:
        done.set()
        thread.join(20)
    assert failures == [], failures[:5]

    new_pids = {i["pid"] for i in after["units"]["web"]["instances"]}
    assert len(new_pids) == 4 and not new_pids & old_pids  # every instance replaced
    assert after["units"]["redis"]["instances"][0]["pid"] == redis_pid  # unchanged: untouched
    assert demo.environ(new_pids.pop()).get("DEMO_RELOADED") == "yes"

    # An invalid drop-in: the reload is refused, nothing changes, the stack keeps serving.
    demo.write({"web.d/reload.yaml": "instances: many\n"})
    podman("kill", "-s", "HUP", demo.name)
    refused = demo.wait_status(lambda s: s["reload"].get("completed", 0) > after["reload"]["completed"],
                               timeout=30, what="the second reload's outcome")
    assert refused["reload"]["outcome"] == "refused"
    assert refused["generation"] == after["generation"]
    assert any("reload.yaml" in e for e in refused["reload"]["errors"]), refused["reload"]
    assert "hello from worker pid" in get(demo.port)
    demo.write({"web.d/reload.yaml": "environment:\n  DEMO_RELOADED: 'yes'\n"})


def test_podman_stop_shuts_down_cleanly_in_order(own_demo):
    demo = own_demo
    started = time.monotonic()
    podman("stop", "-t", "60", demo.name, timeout=120)
    elapsed = time.monotonic() - started
    state = demo.inspect()["State"]
    logs = demo.logs()
    assert state["ExitCode"] == 0, logs
    # Well before podman's 60 s, after which it would have sent SIGKILL.
    assert elapsed < 45, f"podman stop took {elapsed:.1f}s"
    # Reverse dependency order: every web instance is stopped before redis.
    lines = logs.splitlines()
    last_web = max(i for i, line in enumerate(lines) if "unit web." in line and "stopped" in line)
    redis = next(i for i, line in enumerate(lines) if "unit redis" in line and "stopped" in line)
    assert last_web < redis, logs
    assert "exiting with status 0" in logs


# -- what podman gives activator: a notify socket, listening sockets


def test_sdnotify_container_gets_ready_once_every_unit_started(image, tmp_path):
    """podman --sdnotify=container forwards activator's READY=1 to podman's own NOTIFY_SOCKET."""
    path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(60)
    container = Container(tmp_path, run_args=["--sdnotify=container"], network="none", args=[])
    try:
        container.start(env={**ENV, "NOTIFY_SOCKET": str(path)})
        messages = []
        while not any(b"READY=1" in m for m in messages):
            messages.append(receiver.recv(4096))
        # READY=1 only once every eager unit has started: the stack is healthy right away.
        assert container.exec("activator", "status", check=False).returncode == 0, container.logs()
        # The image's units, unchanged since `RUN activator check`: booted from its model cache.
        assert "model from cache /etc/activator/units/.activator-model" in container.logs()
        assert all_running(container.status())
        # And activator does not hand podman's notify socket down to its services.
        environ = container.environ(container.status()["units"]["web"]["instances"][0]["pid"])
        assert environ["NOTIFY_SOCKET"] == "/run/activator/notify"
    finally:
        receiver.close()
        container.remove()


# A socket-activating parent for podman: binds the port, puts it on fd 3 and execs podman with
# LISTEN_FDS=1, LISTEN_PID=its own pid (exec keeps the pid), as a host systemd would.
SOCKET_PARENT = """
import os, socket, sys
sock = socket.create_server(("127.0.0.1", int(sys.argv[1])))
if sock.fileno() != 3:
    os.dup2(sock.fileno(), 3)
os.set_inheritable(3, True)  # dup2 onto the same number would leave it close-on-exec
os.environ.update(LISTEN_FDS="1", LISTEN_PID=str(os.getpid()), LISTEN_FDNAMES="web")
os.execvp("podman", ["podman", *sys.argv[2:]])
"""


def test_socket_passed_in_by_podman_reaches_the_web_unit(image, tmp_path):
    """podman passes LISTEN_FDS on (LISTEN_PID=1); `listen: inherit:web` gives it to gunicorn.
    The container has no network of its own: the only way in is the host's socket."""
    port = free_port()
    container = Container(tmp_path, {"web.d/inherit.yaml": "sockets:\n  http:\n    listen: inherit:web\n"},
                          network="none")
    try:
        result = subprocess.run([sys.executable, "-c", SOCKET_PARENT, str(port), *container.argv],
                                env=ENV, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        container.wait_status(all_running, what="the demo stack running")
        try:
            bodies = [get(port) for _ in range(4)]
        except OSError as e:
            raise AssertionError(f"{e!r}\n{container.logs()}") from None
        assert all("hello from worker pid" in b for b in bodies), bodies
        sockets = container.status()["units"]["web"]["sockets"]
        assert sockets == [{"name": "http", "listen": "inherit:web", "fd": 3}]
    finally:
        container.remove()
