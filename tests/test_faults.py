"""Faults, end to end (issue 10): kill -9, read-only and full file systems, a version
folder or a base path removed mid-load, wall-clock jumps.

Every test runs the real server (`python -m edgeserve`) as a subprocess and talks to it
as TF Serving's users do: http.client for REST, the official grpcio stubs for gRPC.
Every prediction asks for x = 2: half_plus_two answers 3.0, "half plus three"
(half_plus_two_v2) 4.0. The `harness` fixture owns every process, client thread, gate
and mount a test makes and undoes them in its finally, whatever happened.

Holding a load at a known point: a version whose warmup file
(assets.extra/tf_serving_warmup_requests) is a named pipe (FIFO). The loader reaches
its warmup after TensorFlow has loaded the SavedModel, logs "Starting to read warmup
data for model at <dir>", and then blocks opening the pipe until the test opens it for
writing (`Gate`): the version is LOADING for exactly as long as the test wants, on any
machine. Opening and closing the pipe with nothing written lets the load finish (an
empty warmup file: 0 records); the test can kill the server, remove folders or reload
the config while the load is held.

1. kill -9 under REST + gRPC (TCP and Unix socket) load, restart the same command: the
   stale socket file is removed, the clients recover on their own, and the first answer
   after the restart comes within 2 x the first start-up + 2 s.
2. kill -9 while a new version loads (held at its warmup): the restart serves the new
   version (latest policy) within the same bound.
3. kill -9 in the middle of a config reload (its new model held at its warmup, a removed
   model already unloaded), by the config file's poll or by HandleReloadConfigRequest:
   after a restart the config on disk is what serves, labels included.
4. the models folder on a read-only tmpfs: served; a version added between a remount rw
   and ro is picked up by the poll.
5. the models folder on a full tmpfs: a copy of version 2 fails with ENOSPC half way;
   version 1 serves on with no failed request, the failure of 2 is logged and shown in
   the status; once space is freed and the copy completed, 2 serves.
6. folders removed mid-load (three models, one load thread): a version folder removed
   during its own warmup, one removed while its load waits for the load thread, a whole
   base path removed likewise; every model keeps answering, the log and the model status
   say what happened, and a removed folder put back (same files, same mtimes) loads
   (it stayed END with its "not found" error for good before the fix in
   Manager.set_aspired_versions).
7. wall-clock jumps (libfaketime on the server only, its monotonic clock untouched): a
   day forward during a run, a day back during a run longer than
   --rest_api_timeout_in_ms, another day back in the middle of a version's copy, while
   requests flow one at a time through a fixed-timeout batching queue and new versions
   with mtimes a day behind or ahead are published. Timers and deadlines are on the
   monotonic clock and the source compares fingerprints for equality only, so nothing
   but the log's and the Date header's times may move: the test checks that they did
   (the jumps reached the server) and that nothing else did.
"""
from __future__ import annotations

import datetime
import email.utils
import errno
import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import grpc_client
from conftest import REPO, ServerProcess, free_port, mount_tmpfs, unmount
from reload_load import config_text, grpc_predict, model_entry, write_config

X = 2.0
PLUS2, PLUS3 = 3.0, 4.0  # half_plus_two, half_plus_two_v2 for x = 2
WARMUP = Path("assets.extra") / "tf_serving_warmup_requests"
# Light client threads reconnect fast after a restart (grpc's default backoff starts at
# 1 s and grows 1.6x per failure: a 5 s outage would leave the channel waiting seconds).
GRPC_OPTIONS = [("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
                ("grpc.max_reconnect_backoff_ms", 500)]


# ---- the server, restartable with the same command -------------------------------------

class FaultServer(ServerProcess):
    """conftest.ServerProcess whose command (ports included) can be run again after a
    kill; each run logs to its own file."""

    def __init__(self, tmp: Path, args: list[str], env: dict | None = None) -> None:
        # Not ServerProcess.__init__: the command is built once and can be run again.
        self.tmp = tmp
        self.rest_port = free_port()
        self.grpc_port = free_port()
        self.args = [
            sys.executable, "-m", "edgeserve",
            f"--port={self.grpc_port}",
            f"--rest_api_port={self.rest_port}",
            "--bind_address=127.0.0.1",
            *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.clients = []
        self.procs: list[subprocess.Popen] = []
        self._log = None
        self.launch()

    def launch(self) -> float:
        """Runs the command (again); returns the monotonic time it was started."""
        if self._log is not None:
            self._log.close()
        self.log_path = self.tmp / f"server-{self.rest_port}-run{len(self.procs) + 1}.log"
        self._log = open(self.log_path, "wb")
        self.launched = time.monotonic()
        self.proc = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=str(REPO), env=self.env)
        self.procs.append(self.proc)
        return self.launched

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        assert self.proc.returncode == -signal.SIGKILL

    def cleanup(self) -> None:
        for proc in self.procs[:-1]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        super().cleanup()


def rest_predict(port: int, name: str, label: str | None = None, timeout: float = 10):
    """(status, value or error body) on a fresh connection."""
    path = f"/v1/models/{name}/labels/{label}:predict" if label else f"/v1/models/{name}:predict"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=json.dumps({"instances": [[X]]}),
                     headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        body = json.loads(response.read() or b"null")
    finally:
        conn.close()
    if response.status == 200:
        return 200, body["predictions"][0][0]
    return response.status, body


def first_answer(server: FaultServer, name: str, expected: float, timeout: float = 90) -> float:
    """Seconds from the launch of the server's current run to its first right answer."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited with {server.proc.returncode}:\n{server.log()}")
        try:
            status, value = rest_predict(server.rest_port, name, timeout=5)
        except (OSError, http.client.HTTPException):
            time.sleep(0.02)
            continue
        assert (status, value) == (200, expected), server.log()
        return time.monotonic() - server.launched
    raise AssertionError(f"no answer in {timeout}s:\n{server.log()}")


def status(server: ServerProcess, name: str) -> dict[int, tuple[str, str, str]]:
    """GET /v1/models/<name>: {version: (state, error_code, error_message)}."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        conn.request("GET", f"/v1/models/{name}")
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    assert response.status == 200, body
    return {int(row["version"]): (row["state"], row["status"]["error_code"], row["status"]["error_message"])
            for row in body["model_version_status"]}


def states(server: ServerProcess, name: str) -> dict[int, str]:
    return {version: row[0] for version, row in status(server, name).items()}


def grpc_answer(target: str | int, name: str) -> tuple[float, int]:
    """(value, version) from a fresh channel to a port or a "unix:" target."""
    with grpc_client.channel(target) as chan:
        prediction, _ = grpc_client.stubs(chan)
        return grpc_predict(prediction, name)


# ---- client load ------------------------------------------------------------------

@dataclass(frozen=True)
class Reply:
    thread: str
    model: str
    asked: float
    answered: float
    value: float | None  # None: failed
    error: str = ""


class Traffic:
    """Client threads predicting in a loop: REST (keep-alive, reconnects after an
    error) and gRPC (one channel each, kept), to the TCP port or a Unix socket. A failed
    request is followed by a 50 ms pause, so a dead server is not hammered."""

    def __init__(self, server: ServerProcess, models=("m",), *, rest: int = 1, grpc_tcp: int = 1,
                 unix: str | None = None, pause: float = 0.0, sequential: bool = False) -> None:
        self.server = server
        self.models = list(models)
        self.pause = pause
        self.replies: list[Reply] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._started = False
        if sequential:  # one thread, REST and gRPC in turn: never two requests at once
            specs = [("mixed", self._mixed, ())]
        else:
            specs = [(f"rest{i}", self._rest, ()) for i in range(rest)]
            specs += [(f"grpc{i}", self._grpc, (f"127.0.0.1:{server.grpc_port}",)) for i in range(grpc_tcp)]
            if unix:
                specs.append(("unix", self._grpc, (f"unix:{unix}",)))
        self._threads = [threading.Thread(target=fn, args=(name, *args), name=name, daemon=True)
                         for name, fn, args in specs]

    def __enter__(self) -> "Traffic":
        if self._started:
            return self
        self._started = True
        for thread in self._threads:
            thread.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len({r.thread for r in self.snapshot()}) < len(self._threads):
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _record(self, thread, model, asked, value=None, error="") -> None:
        with self._lock:
            self.replies.append(Reply(thread, model, asked, time.monotonic(), value, error))
        if value is None:
            time.sleep(0.05)
        elif self.pause:
            time.sleep(self.pause)

    def _rest_once(self, conn, thread, model):
        """One REST predict on `conn`; returns the connection to use next (None: reconnect)."""
        asked = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=10)
            conn.request("POST", f"/v1/models/{model}:predict", body=json.dumps({"instances": [[X]]}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            self._record(thread, model, asked, error=f"rest {exc!r}")
            return None
        if response.status != 200:
            self._record(thread, model, asked, error=f"rest {response.status} {data[:300]!r}")
        else:
            self._record(thread, model, asked, json.loads(data)["predictions"][0][0])
        return conn

    def _grpc_once(self, stub, thread, model) -> None:
        asked = time.monotonic()
        try:
            value, _ = grpc_predict(stub, model, timeout=10)
        except grpc.RpcError as exc:
            self._record(thread, model, asked, error=f"grpc {exc.code()} {exc.details()}")
            return
        self._record(thread, model, asked, value)

    def _rest(self, thread: str) -> None:
        conn, i = None, 0
        while not self._stop.is_set():
            conn = self._rest_once(conn, thread, self.models[i % len(self.models)])
            i += 1
        if conn is not None:
            conn.close()

    def _grpc(self, thread: str, target: str) -> None:
        with grpc.insecure_channel(target, options=GRPC_OPTIONS) as chan:
            stub, _ = grpc_client.stubs(chan)
            i = 0
            while not self._stop.is_set():
                self._grpc_once(stub, thread, self.models[i % len(self.models)])
                i += 1

    def _mixed(self, thread: str) -> None:
        conn, i = None, 0
        with grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}", options=GRPC_OPTIONS) as chan:
            stub, _ = grpc_client.stubs(chan)
            while not self._stop.is_set():
                model = self.models[i % len(self.models)]
                if i % 2:
                    self._grpc_once(stub, "grpc", model)
                else:
                    conn = self._rest_once(conn, "rest", model)
                i += 1
        if conn is not None:
            conn.close()

    # ---- reading what happened ----

    def snapshot(self) -> list[Reply]:
        with self._lock:
            return list(self.replies)

    def failures(self, since: float = 0.0, until: float = float("inf")) -> list[Reply]:
        """Failed requests asked from `since` and answered by `until`."""
        return [r for r in self.snapshot() if r.value is None and since <= r.asked and r.answered <= until]

    def answers(self, since: float = 0.0, until: float = float("inf"), model: str | None = None) -> list[Reply]:
        return [r for r in self.snapshot()
                if r.value is not None and since <= r.asked <= until and model in (None, r.model)]

    def assert_no_failures(self, minimum: int = 10) -> None:
        failed = self.failures()
        assert not failed, f"{len(failed)} failed requests, e.g. {failed[:5]}"
        assert len(self.answers()) >= minimum, f"only {len(self.answers())} answers"


# ---- holding a load: a warmup file that is a named pipe ---------------------------------

class Gate:
    """assets.extra/tf_serving_warmup_requests of a version folder, as a FIFO: the load
    of that version blocks in its warmup until `release` (see the module docstring)."""

    def __init__(self, version_dir: Path) -> None:
        (version_dir / WARMUP).parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(version_dir / WARMUP)
        self.version_dir = version_dir

    def moved(self, version_dir: Path) -> "Gate":
        self.version_dir = version_dir  # after the staged folder was renamed into place
        return self

    def open(self, timeout: float = 30) -> int:
        """Waits for the loader to be blocked opening the pipe and lets it through; the
        loader then waits for data until the returned descriptor is closed."""
        path = self.version_dir / WARMUP
        deadline = time.monotonic() + timeout
        while True:
            try:
                return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # ENXIO: nobody has it open for reading yet
                if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                    raise
            time.sleep(0.01)

    def release(self, timeout: float = 30) -> None:
        """Lets the held load finish: an empty warmup file (0 records)."""
        os.close(self.open(timeout))

    def release_in_background(self, timeout: float = 60) -> threading.Thread:
        def run() -> None:
            try:
                self.release(timeout)
            except OSError:
                pass  # the test's own assertions say what went wrong

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        return thread


def warmup_started(server: ServerProcess, version_dir: Path) -> bool:
    return f"Starting to read warmup data for model at {version_dir / WARMUP}" in server.log()


# ---- the harness: everything a test starts, undone in its finally --------------------

class Harness:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.servers: list[FaultServer] = []
        self.traffics: list[Traffic] = []
        self.mounts: list[Path] = []
        self.dirs: list[str] = []

    def server(self, args: list[str], env: dict | None = None) -> FaultServer:
        server = FaultServer(self.tmp, args, env)
        self.servers.append(server)
        return server

    def traffic(self, server, models=("m",), **kw) -> Traffic:
        traffic = Traffic(server, models, **kw)
        self.traffics.append(traffic)
        return traffic.__enter__()

    def short_dir(self) -> Path:
        """A folder with a short path (a Unix socket path has at most 107 bytes)."""
        path = tempfile.mkdtemp(prefix="edgeserve-faults-", dir="/tmp")
        self.dirs.append(path)
        return Path(path)

    def tmpfs(self, path: Path, size: str) -> Path:
        self.mounts.append(mount_tmpfs(path, f"size={size}"))
        return path

    @staticmethod
    def remount(path: Path, options: str) -> None:
        subprocess.run(["mount", "-o", f"remount,{options}", str(path)], check=True, capture_output=True)

    def close(self) -> None:
        try:
            for traffic in self.traffics:
                traffic.stop()
            for server in self.servers:
                server.cleanup()
        finally:
            for path in reversed(self.mounts):
                unmount(path)
            for path in self.dirs:
                shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def harness(tmp_path):
    h = Harness(tmp_path)
    try:
        yield h
    finally:
        h.close()


# ---- version folders --------------------------------------------------------------

def stage(base: Path, source: Path, version: int, *, gate: bool = False) -> tuple[Path, Gate | None]:
    """A complete copy of `source` in a hidden folder of `base` (the server ignores it),
    with a warmup gate if asked; `publish` renames it into place."""
    staged = base / f".incoming-{version}"
    shutil.copytree(source, staged)
    return staged, (Gate(staged) if gate else None)


def publish(base: Path, staged: Path, version: int, gate: Gate | None = None) -> Path:
    target = base / str(version)
    os.rename(staged, target)
    if gate is not None:
        gate.moved(target)
    return target


def model_args(name: str, base: Path, *more: str) -> list[str]:
    return [f"--model_name={name}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1", *more]


def log_errors(log: str) -> list[str]:
    """edgeserve's own ERROR lines and tracebacks."""
    return [line for line in log.splitlines() if re.search(r"^\S+ \S+ E edgeserve", line) or "Traceback" in line]


def within_startup_bound(first: float, restart: float) -> None:
    assert restart <= 2 * first + 2, f"restart took {restart:.2f}s, the first start {first:.2f}s"


# ---- 1. kill -9 under load, with a Unix socket ------------------------------------------

@pytest.mark.timeout(120)
def test_kill_9_under_load_then_restart_serves_again_and_removes_the_stale_socket(harness, model_store, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(model_store / "half_plus_two", base)
    sock = harness.short_dir() / "grpc.sock"
    server = harness.server(model_args("m", base, f"--grpc_socket_path={sock}"))
    first = first_answer(server, "m", PLUS2)
    assert grpc_answer(f"unix:{sock}", "m") == (PLUS2, 1)

    traffic = harness.traffic(server, rest=2, grpc_tcp=1, unix=str(sock))
    time.sleep(0.5)
    killed = time.monotonic()
    server.kill9()
    assert not traffic.failures(until=killed), traffic.failures()[:5]
    before = traffic.answers(until=killed)
    assert {r.thread for r in before} == {"rest0", "rest1", "grpc0", "unix"}
    assert {r.value for r in before} == {PLUS2}

    # The killed server could not remove its socket file: it is there, and dead.
    assert stat.S_ISSOCK(os.stat(sock).st_mode)
    with socket.socket(socket.AF_UNIX) as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(str(sock))

    time.sleep(0.3)  # the clients see the server gone
    server.launch()
    restart = first_answer(server, "m", PLUS2)
    print(f"\nfirst start {first:.2f}s, restart after kill -9 under load {restart:.2f}s")
    within_startup_bound(first, restart)
    log = server.log()
    assert f"Removed stale socket file {sock}" in log, log
    assert f"Running gRPC ModelServer at UNIX socket {sock}" in log
    assert grpc_answer(f"unix:{sock}", "m") == (PLUS2, 1)
    assert grpc_answer(server.grpc_port, "m") == (PLUS2, 1)

    # The same client threads (same gRPC channels) come back by themselves, and once a
    # thread has an answer again, none of its requests fails.
    ready = time.monotonic()
    server.wait_for(lambda: {r.thread for r in traffic.answers(since=ready)} == {"rest0", "rest1", "grpc0", "unix"},
                    timeout=15)
    time.sleep(0.5)
    traffic.stop()
    for thread in ("rest0", "rest1", "grpc0", "unix"):
        replies = [r for r in traffic.snapshot() if r.thread == thread and r.asked > killed]
        back = min(r.asked for r in replies if r.value is not None)
        assert not [r for r in replies if r.asked > back and r.value is None], thread
        assert {r.value for r in replies if r.value is not None} == {PLUS2}
    assert traffic.failures(since=killed), "the kill went unnoticed: the test proved nothing"
    assert log_errors(server.log()) == []


# ---- 2. kill -9 during a model load --------------------------------------------------

@pytest.mark.timeout(120)
def test_kill_9_during_a_model_load_then_restart_serves_the_new_version(harness, model_store, tmp_path):
    base = tmp_path / "m"
    shutil.copytree(model_store / "half_plus_two", base)
    server = harness.server(model_args("m", base))
    first = first_answer(server, "m", PLUS2)
    staged, gate = stage(base, model_store / "half_plus_two_v2" / "2", 2, gate=True)

    with harness.traffic(server, rest=1, grpc_tcp=1) as traffic:
        v2 = publish(base, staged, 2, gate)
        server.wait_for(lambda: warmup_started(server, v2), timeout=20, interval=0.02)
        # Held in its load: 2 is LOADING, 1 answers.
        assert states(server, "m") == {2: "LOADING", 1: "AVAILABLE"}
        time.sleep(0.2)
        killed = time.monotonic()
        server.kill9()
    assert not traffic.failures(until=killed), traffic.failures()[:5]
    assert {r.value for r in traffic.answers(until=killed)} == {PLUS2}
    first_log = server.log()
    assert "Successfully loaded servable version {name: m version: 2}" not in first_log

    server.launch()
    gate.release_in_background()  # the restart loads 2 again, through the same warmup
    restart = first_answer(server, "m", PLUS3)
    print(f"\nfirst start {first:.2f}s, restart after kill -9 during a load {restart:.2f}s")
    within_startup_bound(first, restart)
    # Latest policy: only 2 is aspired at the restart's first poll.
    assert status(server, "m") == {2: ("AVAILABLE", "OK", "")}
    assert grpc_answer(server.grpc_port, "m") == (PLUS3, 2)
    log = server.log()
    assert "Successfully loaded servable version {name: m version: 2}" in log
    assert "Number of warmup records read: 0." in log
    assert log_errors(log) == []


# ---- 3. kill -9 during a config reload ---------------------------------------------

@pytest.mark.timeout(120)
@pytest.mark.parametrize("way", ["config file poll", "HandleReloadConfigRequest"])
def test_kill_9_during_a_config_reload_then_the_config_on_disk_serves(harness, model_store, tmp_path, way):
    """Old config: x and z. New config: x with a label "stable" -> 1, y added (its only
    version held at its warmup), z removed. The reload is killed once z is unloaded and
    y is loading."""
    x, y, z = tmp_path / "x", tmp_path / "y", tmp_path / "z"
    shutil.copytree(model_store / "half_plus_two", x)
    shutil.copytree(model_store / "half_plus_two", z)
    y.mkdir()
    y2, gate = stage(y, model_store / "half_plus_two_v2" / "2", 2, gate=True)
    y2 = publish(y, y2, 2, gate)
    old = config_text(model_entry("x", x), model_entry("z", z))
    new = config_text(model_entry("x", x, labels={"stable": 1}), model_entry("y", y))
    config = tmp_path / "models.config"
    write_config(config, old)
    server = harness.server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1",
                             "--file_system_poll_wait_seconds=1"])
    first = first_answer(server, "x", PLUS2)
    assert rest_predict(server.rest_port, "z") == (200, PLUS2)

    reply: list = []
    if way == "config file poll":
        write_config(config, new)
        done = "Model config reloaded from"
    else:
        from reload_load import config_proto
        from tensorflow_serving.apis import model_management_pb2

        def reload() -> None:
            request = model_management_pb2.ReloadConfigRequest(config=config_proto(new))
            with grpc_client.channel(server.grpc_port) as chan:
                try:
                    reply.append(grpc_client.stubs(chan)[1].HandleReloadConfigRequest(request, timeout=60))
                except grpc.RpcError as exc:
                    reply.append(exc)

        caller = threading.Thread(target=reload, daemon=True)
        caller.start()
        done = "Model config replaced by HandleReloadConfigRequest"
    server.wait_for(lambda: warmup_started(server, y2)
                    and "Unloaded servable version {name: z version: 1}" in server.log(), timeout=20, interval=0.02)
    assert done not in server.log()
    server.kill9()
    if way == "HandleReloadConfigRequest":
        caller.join(15)
        assert len(reply) == 1 and isinstance(reply[0], grpc.RpcError), reply
        assert reply[0].code() == grpc.StatusCode.UNAVAILABLE, reply[0]

    server.launch()
    if way == "config file poll":
        gate.release_in_background()  # y loads at the restart, through the same warmup
    restart = first_answer(server, "x", PLUS2)
    print(f"\nfirst start {first:.2f}s, restart after kill -9 during a reload ({way}) {restart:.2f}s")
    within_startup_bound(first, restart)
    if way == "config file poll":  # the new file: y, x@stable, no z
        assert rest_predict(server.rest_port, "y") == (200, PLUS3)
        assert rest_predict(server.rest_port, "x", label="stable") == (200, PLUS2)
        assert rest_predict(server.rest_port, "z") == (
            404, {"error": "Servable not found for request: Latest(z)"})
    else:  # the message was never on disk: the old file serves, x and z, no label
        assert rest_predict(server.rest_port, "z") == (200, PLUS2)
        assert rest_predict(server.rest_port, "y") == (
            404, {"error": "Servable not found for request: Latest(y)"})
        assert rest_predict(server.rest_port, "x", label="stable") == (
            400, {"error": "Unrecognized servable version label: stable"})
    assert log_errors(server.log()) == []


# ---- 4. a read-only models folder --------------------------------------------------------

@pytest.mark.timeout(90)
def test_models_on_a_read_only_filesystem_are_served_and_a_new_version_is_picked_up(harness, model_store, tmp_path):
    mount = harness.tmpfs(tmp_path / "ro", "64m")
    base = mount / "m"
    shutil.copytree(model_store / "half_plus_two", base)
    harness.remount(mount, "ro")
    with pytest.raises(OSError) as info:
        (base / "probe").write_text("")
    assert info.value.errno == errno.EROFS

    server = harness.server(model_args("m", base))
    first_answer(server, "m", PLUS2)
    assert status(server, "m") == {1: ("AVAILABLE", "OK", "")}
    with harness.traffic(server, rest=1, grpc_tcp=1, pause=0.01) as traffic:
        harness.remount(mount, "rw")
        shutil.copytree(model_store / "half_plus_two_v2" / "2", base / "2")
        harness.remount(mount, "ro")
        published = time.monotonic()
        server.wait_for(lambda: states(server, "m") == {2: "AVAILABLE", 1: "END"}, timeout=20)
        time.sleep(0.3)
    traffic.assert_no_failures()
    assert {r.value for r in traffic.answers(until=published)} == {PLUS2}
    assert {r.value for r in traffic.answers(since=time.monotonic() - 0.25)} == {PLUS3}
    assert rest_predict(server.rest_port, "m") == (200, PLUS3)
    assert log_errors(server.log()) == []


# ---- 5. a full file system ----------------------------------------------------------------

@pytest.mark.timeout(90)
def test_a_copy_cut_short_by_a_full_filesystem_keeps_the_old_version_serving(harness, model_store, tmp_path):
    # 64 KiB: version 1 (~20 KiB in 4 KiB pages) fits; version 2's variables fit too,
    # then its 256 KiB lookup table runs out of space and saved_model.pb never comes.
    mount = harness.tmpfs(tmp_path / "full", "64k")
    base = mount / "m"
    shutil.copytree(model_store / "half_plus_two", base)
    source = model_store / "half_plus_two_v2" / "2"
    table = os.urandom(256 * 1024)
    v2 = base / "2"

    server = harness.server(model_args("m", base))
    first_answer(server, "m", PLUS2)
    with harness.traffic(server, rest=1, grpc_tcp=1, pause=0.01) as traffic:
        shutil.copytree(source / "variables", v2 / "variables")
        (v2 / "assets.extra").mkdir()
        with pytest.raises(OSError) as info:
            (v2 / "assets.extra" / "lookup_table.bin").write_bytes(table)
        assert info.value.errno == errno.ENOSPC
        assert not (v2 / "saved_model.pb").exists()

        # The half-copied folder is taken as complete once it stops changing; its load
        # fails, is logged, and shows in the status; 1 serves on.
        failed = "Loading servable version {name: m version: 2} failed"
        server.wait_for(lambda: failed in server.log(), timeout=20)
        log = server.log()
        line = next(line for line in log.splitlines() if failed in line)
        assert str(v2) in line, line
        rows = status(server, "m")
        assert rows[1] == ("AVAILABLE", "OK", "")
        state, code, message = rows[2]
        assert state in ("LOADING", "END") and code != "OK" and str(v2) in message, rows
        time.sleep(0.5)
        half = time.monotonic()

        # Space is freed, the copy is done: 2 is retried at once (its files changed).
        harness.remount(mount, "size=4m")
        (v2 / "assets.extra" / "lookup_table.bin").write_bytes(table)
        shutil.copy2(source / "saved_model.pb", v2 / "saved_model.pb")
        completed = time.monotonic()
        server.wait_for(lambda: states(server, "m") == {2: "AVAILABLE", 1: "END"}, timeout=20)
        assert time.monotonic() - completed < 10  # not the 60 s retry interval
        time.sleep(0.3)
    traffic.assert_no_failures()
    assert {r.value for r in traffic.answers(until=half)} == {PLUS2}
    assert {r.value for r in traffic.answers(since=time.monotonic() - 0.25)} == {PLUS3}
    assert status(server, "m")[2] == ("AVAILABLE", "OK", "")
    assert "Traceback" not in server.log()


# ---- 6. folders removed mid-load --------------------------------------------------------

@pytest.mark.timeout(120)
def test_folders_removed_mid_load_are_logged_and_survived(harness, model_store, tmp_path):
    """a: 2 removed during its own warmup. b: 2 removed while its load waits for the
    (single) load thread, held by a's. c: the whole base path removed likewise."""
    bases = {name: tmp_path / name for name in "abc"}
    for base in bases.values():
        shutil.copytree(model_store / "half_plus_two", base)
    config = tmp_path / "models.config"
    write_config(config, config_text(*(model_entry(name, base) for name, base in bases.items())))
    # Failed loads are retried every 3 s (not 60): c's retry after its restore is seen.
    server = harness.server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=1",
                             "--load_retry_interval_micros=3000000"])
    first_answer(server, "a", PLUS2)
    v2_source = model_store / "half_plus_two_v2" / "2"
    a2, gate = stage(bases["a"], v2_source, 2, gate=True)

    with harness.traffic(server, list("abc"), rest=1, grpc_tcp=1) as traffic:
        a2 = publish(bases["a"], a2, 2, gate)
        server.wait_for(lambda: warmup_started(server, a2), timeout=20, interval=0.02)
        for name in "bc":
            staged, _ = stage(bases[name], v2_source, 2)
            publish(bases[name], staged, 2)
        server.wait_for(lambda: all(f"Loading servable version {{name: {name} version: 2}}" in server.log()
                                    for name in "bc"), timeout=20, interval=0.02)
        assert {name: states(server, name) for name in "abc"} == {
            name: {2: "LOADING", 1: "AVAILABLE"} for name in "abc"}
        shutil.rmtree(bases["b"] / "2")
        shutil.rmtree(bases["c"])
        fd = gate.open()  # a's warmup now reads from the pipe...
        shutil.rmtree(a2)  # ...while its folder goes away
        os.close(fd)  # end of the (empty) warmup file: a's load ends well

        # a: 2 loaded (the files were read) and served, then the next poll no longer
        # lists it: 1 comes back and 2 is unloaded.
        server.wait_for(lambda: states(server, "a") == {2: "END", 1: "AVAILABLE"}, timeout=20)
        # b: its load found nothing, and 2 is no longer listed: END, with the reason.
        server.wait_for(lambda: states(server, "b").get(2) == "END", timeout=20)
        # c: still listed as far as anyone knows (the base path cannot be read, which
        # is never taken as "no versions"): retrying, with the reason.
        server.wait_for(lambda: status(server, "c")[2][1] != "OK", timeout=20)
        time.sleep(1.2)  # a poll of c's missing base path at least
        log = server.log()
        rows = {name: status(server, name) for name in "abc"}
        assert rows["a"] == {2: ("END", "OK", ""), 1: ("AVAILABLE", "OK", "")}
        assert rows["b"][1] == rows["c"][1] == ("AVAILABLE", "OK", "")
        for name in "bc":
            state, code, message = rows[name][2]
            assert code == "NOT_FOUND" and str(bases[name] / "2") in message, rows[name]
        assert rows["b"][2][0] == "END"
        assert rows["c"][2][0] in ("LOADING", "END")
        assert "Successfully loaded servable version {name: a version: 2}" in log
        assert "Unloaded servable version {name: a version: 2}" in log
        for name in "bc":
            assert f"Loading servable version {{name: {name} version: 2}} failed" in log
        # b/2 is not retried, and the log's last word on it says so (not "retrying").
        last = [line for line in log.splitlines() if "servable version {name: b version: 2}" in line][-1]
        assert ("Not retrying servable version {name: b version: 2}: it is no longer aspired" in last
                or "Loading servable version {name: b version: 2} failed after 1 attempt(s)" in last), last
        assert log.count(f"Could not find base path {bases['c']} for servable c") == 1, log

        # The folders come back as they were (cp -a: same files, same mtimes): b/2 is
        # a new start, c/2 loads at its next retry.
        restored = time.monotonic()
        shutil.copytree(v2_source, bases["b"] / "2")
        shutil.copytree(model_store / "half_plus_two", tmp_path / ".c")
        shutil.copytree(v2_source, tmp_path / ".c" / "2")
        os.rename(tmp_path / ".c", bases["c"])
        server.wait_for(lambda: f"Base path {bases['c']} for servable c is readable again" in server.log(),
                        timeout=10)
        for name in "bc":
            server.wait_for(lambda: states(server, name) == {2: "AVAILABLE", 1: "END"}, timeout=20)
        time.sleep(0.3)
    traffic.assert_no_failures(minimum=30)
    for name in "abc":
        assert {r.value for r in traffic.answers(until=restored, model=name)} <= (
            {PLUS2, PLUS3} if name == "a" else {PLUS2}), name
    for name in "bc":
        assert {r.value for r in traffic.answers(since=time.monotonic() - 0.25, model=name)} == {PLUS3}, name
    assert "Traceback" not in server.log()


# ---- 7. wall-clock jumps -------------------------------------------------------------------

def libfaketime() -> str:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1") + glob.glob("/usr/lib/faketime/libfaketime.so.1"))
    if not found:
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    return found[0]


def log_times(log: str, needle: str) -> list[datetime.datetime]:
    """The timestamps of the log lines containing `needle`."""
    return [datetime.datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f")
            for line in log.splitlines() if needle in line]


def server_date(server: ServerProcess) -> datetime.datetime:
    """The REST answer's Date header (the server's wall clock), as a naive UTC time."""
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=10)
    try:
        conn.request("GET", "/v1/models/m")
        response = conn.getresponse()
        response.read()
    finally:
        conn.close()
    return email.utils.parsedate_to_datetime(response.getheader("Date")).replace(tzinfo=None)


def set_mtimes(folder: Path, when: float) -> None:
    for root, dirs, files in os.walk(folder, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(root, name), (when, when))
    os.utime(folder, (when, when))


@pytest.mark.timeout(120)
def test_wall_clock_jumps_change_nothing_but_the_clock(harness, model_store, tmp_path):
    lib = libfaketime()
    clock = tmp_path / "faketime"
    clock.write_text("+0\n")
    env = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    day = datetime.timedelta(days=1)
    minutes = datetime.timedelta(minutes=5)

    def jump(offset: str) -> None:
        # Replaced whole: libfaketime re-reads the file at every clock call.
        (tmp_path / "faketime.new").write_text(offset + "\n")
        os.replace(tmp_path / "faketime.new", clock)

    def utcnow() -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)

    m = tmp_path / "m"
    shutil.copytree(model_store / "half_plus_two", m)
    batching = tmp_path / "batching.pbtxt"
    batching.write_text("max_batch_size { value: 8 }\nbatch_timeout_micros { value: 200000 }\n")
    config = tmp_path / "models.config"
    write_config(config, config_text(model_entry("m", m), model_entry("spin", model_store / "spin")))
    server = harness.server([f"--model_config_file={config}", "--file_system_poll_wait_seconds=1",
                             "--enable_batching", "--adaptive_batching=false",
                             f"--batching_parameters_file={batching}", "--rest_api_timeout_in_ms=4000"], env)
    first_answer(server, "m", PLUS2)
    assert abs(server_date(server) - utcnow()) < minutes

    def spin(n: int, offset: str, after: float):
        """A spin run of n counts, the clock set to `offset` `after` seconds into it:
        ((status, body), seconds)."""
        timer = threading.Timer(after, jump, (offset,))
        started = time.monotonic()
        timer.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=30)
            conn.request("POST", "/v1/models/spin:predict", body=json.dumps({"inputs": {"n": n}}))
            response = conn.getresponse()
            answer = response.status, json.loads(response.read())
            conn.close()
        finally:
            timer.join()
        return answer, time.monotonic() - started

    # Requests one at a time, so each waits out the fixed batching rule's 200 ms alone.
    with harness.traffic(server, ["m"], sequential=True) as traffic:
        # A run of about a second with the clock a day ahead after a fifth of it: it
        # ends well (nothing takes the jump for the 4 s timeout gone by).
        answer, seconds = spin(300_000, "+1d", 0.2)
        assert answer == (200, {"outputs": 300_000}), (answer, seconds)
        assert abs(server_date(server) - (utcnow() + day)) < minutes

        # Version 2, copied with its files' mtimes two days behind the server's clock.
        staged, _ = stage(m, model_store / "half_plus_two_v2" / "2", 2)
        set_mtimes(staged, time.time() - 86400)
        publish(m, staged, 2)
        server.wait_for(lambda: states(server, "m") == {2: "AVAILABLE", 1: "END"}, timeout=20)
        assert abs(server_date(server) - (utcnow() + day)) < minutes

        # A run longer than --rest_api_timeout_in_ms=4000, the clock set back a day a
        # second into it: still cut after 4 s, not a day later.
        answer, seconds = spin(10**8, "-1d", 1.0)
        assert answer[0] == 504 and 3.5 < seconds < 9, (answer, seconds)
        assert abs(server_date(server) - (utcnow() - day)) < minutes

        # Version 3 (half_plus_two again), mtimes a day ahead of the real clock,
        # copied file by file with pauses, the clock set back one more day in the
        # middle of the copy: not loaded half-copied.
        v3 = m / "3"
        files = sorted(p for p in (model_store / "half_plus_two" / "1").rglob("*") if p.is_file())
        for i, path in enumerate(files):
            target = v3 / path.relative_to(model_store / "half_plus_two" / "1")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
            os.utime(target, (time.time() + 86400, time.time() + 86400))
            if i == 1:
                jump("-2d")
            time.sleep(0.4)
        server.wait_for(lambda: states(server, "m") == {3: "AVAILABLE", 2: "END", 1: "END"}, timeout=20)
        jump("+0")
        time.sleep(0.5)
    traffic.assert_no_failures(minimum=15)
    answers = traffic.answers()
    assert {r.thread for r in answers} == {"rest", "grpc"}
    assert {r.value for r in answers} == {PLUS2, PLUS3}
    assert answers[-1].value == PLUS2  # version 3
    waits = sorted(r.answered - r.asked for r in answers)
    print(f"\nbatched requests: {len(waits)}, wait min {waits[0]:.3f}s median {waits[len(waits) // 2]:.3f}s "
          f"max {waits[-1]:.3f}s")
    slow = [r for r in answers if not 0.15 < r.answered - r.asked < 1.5]
    assert not slow, f"batching wait not ~200 ms: {slow[:5]}"
    assert abs(server_date(server) - utcnow()) < minutes

    log = server.log()
    # The server's log clock did jump (so the jumps reached the server at all).
    real = datetime.datetime.now()
    (loaded2,) = log_times(log, "Successfully loaded servable version {name: m version: 2}")
    assert abs(loaded2 - (real + day)) < minutes, loaded2
    (loaded3,) = log_times(log, "Successfully loaded servable version {name: m version: 3}")
    assert abs(loaded3 - (real - 2 * day)) < minutes, loaded3
    assert not [line for line in log.splitlines() if "servable version" in line and "failed" in line], log
    assert log_errors(log) == []
