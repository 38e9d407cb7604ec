"""Fixtures: models exported with TensorFlow, and the real server run as a subprocess."""
from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TFSERVING_TESTDATA = REPO.parent / "shared" / "testdata" / "tfserving"

sys.path.insert(0, str(Path(__file__).resolve().parent))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tfserving_testdata(name: str) -> Path:
    """A folder of TF Serving's own test data, read in place; skips when absent."""
    path = TFSERVING_TESTDATA / name
    if not path.exists():
        pytest.skip(f"TF Serving test data not present: {path}")
    return path


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """Exports every test model once per session; tests copy what they change."""
    from edgeserve.example_model import export_half_plus_two

    import models

    root = tmp_path_factory.mktemp("models")
    export_half_plus_two(str(root / "half_plus_two"), 1)
    export_half_plus_two(str(root / "half_plus_two_v2"), 2, add=3.0)  # y = 0.5x + 3
    models.export_tf2_half_plus_two(str(root / "tf2_half_plus_two"), 1)
    models.export_tf2_kitchen_sink(str(root / "kitchen_sink"), 1)
    models.export_tf1_counter(str(root / "counter"), 1)
    models.export_tf1_spin(str(root / "spin"), 1)
    return root


class Client:
    """Plain HTTP/1.1 with keep-alive on one connection (http.client)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body=None, headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        try:
            parsed = json.loads(data) if data else None
        except ValueError:
            parsed = data
        return response.status, parsed

    def get(self, path: str):
        return self.request("GET", path)

    def post(self, path: str, body, headers=None):
        return self.request("POST", path, body, headers)

    def close(self) -> None:
        self.conn.close()


class ServerProcess:
    """`python -m edgeserve` on free ports, stderr captured to a file."""

    def __init__(self, tmp: Path, args: list[str], env: dict | None = None, preexec=None) -> None:
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.log_path = tmp / f"server-{self.rest_port}.log"
        self._log = open(self.log_path, "wb")
        self.args = [
            sys.executable, "-m", "edgeserve",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            "--bind_address=127.0.0.1",
            *args,
        ]
        self.proc = subprocess.Popen(
            self.args, stdout=self._log, stderr=subprocess.STDOUT, cwd=str(REPO),
            env={**os.environ, **(env or {})}, preexec_fn=preexec,
        )
        self.clients: list[Client] = []

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60) -> "ServerProcess":
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.rest_port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError(f"server not listening after {timeout}s:\n{self.log()}")

    def client(self) -> Client:
        client = Client(self.rest_port)
        self.clients.append(client)
        return client

    def wait_for(self, predicate, timeout: float = 30, interval: float = 0.1):
        """Polls predicate() until it returns a truthy value; fails with the log."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = predicate()
            if last:
                return last
            time.sleep(interval)
        raise AssertionError(f"condition not met in {timeout}s (last: {last!r}); log:\n{self.log()}")

    def terminate(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def cleanup(self) -> None:
        for client in self.clients:
            client.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def start_server(tmp_path):
    """start_server(args, env=None, ready=True) -> ServerProcess; every one is killed after the test."""
    servers: list[ServerProcess] = []

    def start(args: list[str], env: dict | None = None, ready: bool = True) -> ServerProcess:
        server = ServerProcess(tmp_path, args, env)
        servers.append(server)
        return server.wait_ready() if ready else server

    yield start
    for server in servers:
        server.cleanup()


@pytest.fixture
def copy_model(model_store, tmp_path):
    """copy_model(name) -> a private copy of an exported model's base path."""

    def copy(name: str, dest: str | None = None) -> Path:
        target = tmp_path / (dest or name)
        shutil.copytree(model_store / name, target)
        return target

    return copy


def mount_tmpfs(path: Path, options: str) -> Path:
    """A tmpfs mounted at `path` (made if missing), e.g. "size=64k" or "ro,size=64k";
    the test is skipped where mounting needs privileges it lacks (CAP_SYS_ADMIN)."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                            capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN): {result.stderr.strip()}")
    return path


def unmount(path: Path) -> None:
    """Unmounts `path`, lazily if something still holds it open."""
    if subprocess.run(["umount", str(path)], capture_output=True, timeout=10).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=10)


@pytest.fixture
def tmpfs():
    """`tmpfs(path, options)` mounts one for the test (mount_tmpfs); unmounted after it."""
    mounted: list[Path] = []

    def mount(path: Path, options: str) -> Path:
        mounted.append(mount_tmpfs(path, options))
        return path

    yield mount
    for path in reversed(mounted):
        unmount(path)
