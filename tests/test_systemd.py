"""edgeserve under systemd: the notify protocol, the watchdog, socket activation, the units.

The server runs as a subprocess with $NOTIFY_SOCKET pointing at a datagram socket this
test reads, as systemd would; socket activation goes through systemd's own
`systemd-socket-activate`, which binds the ports and starts the server on the first
connection; the unit files are checked with `systemd-analyze`.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, Client, free_port
from reload_load import config_text, model_entry, write_config

pytestmark = pytest.mark.timeout(120)


class NotifySocket:
    """What systemd would receive on $NOTIFY_SOCKET."""

    def __init__(self, path: Path, abstract: bool = False) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = f"edgeserve-test-{os.getpid()}-{time.monotonic_ns()}"
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.sock.bind(str(path))
            self.env = str(path)
        self.messages: list[dict[str, str]] = []

    def next(self, key: str, timeout: float = 60) -> dict[str, str]:
        """The next message with `key` (earlier ones are kept in `messages`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(65536).decode()
            except socket.timeout:
                break
            message = dict(line.split("=", 1) for line in data.splitlines())
            self.messages.append(message)
            if key in message:
                return message
        raise AssertionError(f"no {key} in {timeout}s; got {self.messages}")

    def close(self) -> None:
        self.sock.close()


def start(tmp_path, args, notify: NotifySocket, env=None) -> subprocess.Popen:
    log = open(tmp_path / "server.log", "wb")
    return subprocess.Popen(
        [sys.executable, "-m", "edgeserve", *args], cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, "NOTIFY_SOCKET": notify.env, **(env or {})},
    )


@pytest.fixture
def processes():
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_ready_status_reloading_watchdog_stopping(tmp_path, model_store, processes, abstract):
    notify = NotifySocket(tmp_path / "notify.sock", abstract)
    config = tmp_path / "models.config"
    write_config(config, config_text(model_entry("one", model_store / "half_plus_two")))
    rest = free_port()
    proc = start(tmp_path, [f"--rest_api_port={rest}", "--port=0", f"--model_config_file={config}"],
                 notify, env={"WATCHDOG_USEC": "400000"})
    processes.append(proc)
    try:
        ready = notify.next("READY")
        assert ready == {"READY": "1", "STATUS": "serving 1 model(s): one v1"}
        # Ready means ready: the port answers at once.
        client = Client(rest)
        assert client.post("/v1/models/one:predict", {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
        client.close()
        # The loop sends WATCHDOG=1 every half WATCHDOG_USEC.
        first = notify.next("WATCHDOG")
        started = time.monotonic()
        notify.next("WATCHDOG")
        assert first == {"WATCHDOG": "1"}
        assert 0.1 < time.monotonic() - started < 1.0

        # SIGHUP with a new config: RELOADING=1 with the time, then READY=1 and the new state.
        write_config(config, config_text(model_entry("one", model_store / "half_plus_two"),
                                         model_entry("two", model_store / "half_plus_two_v2")))
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        proc.send_signal(signal.SIGHUP)
        reloading = notify.next("RELOADING")
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        ready = notify.next("READY")
        assert ready["STATUS"] == "serving 2 model(s): one v1, two v2"

        # A config that does not parse: the old one stays, and STATUS says so.
        config.write_text("model_config_list { config { name: 'three' ")
        proc.send_signal(signal.SIGHUP)
        notify.next("RELOADING")
        ready = notify.next("READY")
        assert ready["STATUS"].startswith("config reload refused, the previous config stays: ")
        assert ready["STATUS"].endswith("; serving 2 model(s): one v1, two v2")

        proc.send_signal(signal.SIGTERM)
        stopping = notify.next("STOPPING")
        assert stopping == {"STOPPING": "1", "STATUS": "draining requests, then unloading models"}
        assert proc.wait(30) == 0
    finally:
        notify.close()


def test_status_follows_versions_as_they_come(tmp_path, model_store, processes):
    notify = NotifySocket(tmp_path / "notify.sock")
    base = tmp_path / "m"
    shutil.copytree(model_store / "half_plus_two", base)
    proc = start(tmp_path, [f"--rest_api_port={free_port()}", "--port=0", "--model_name=m",
                            f"--model_base_path={base}", "--file_system_poll_wait_seconds=1"], notify)
    processes.append(proc)
    try:
        assert notify.next("READY")["STATUS"] == "serving 1 model(s): m v1"
        staging = base / ".incoming"
        shutil.copytree(model_store / "half_plus_two_v2" / "2", staging)
        os.rename(staging, base / "2")
        deadline = time.monotonic() + 30
        status = None
        while status != "serving 1 model(s): m v2" and time.monotonic() < deadline:
            status = notify.next("STATUS", timeout=deadline - time.monotonic())["STATUS"]
        assert status == "serving 1 model(s): m v2"
    finally:
        notify.close()


@pytest.mark.skipif(not shutil.which("systemd-socket-activate"), reason="systemd-socket-activate not installed")
def test_socket_activation_uses_the_inherited_sockets(tmp_path, model_store, processes):
    rest, grpc = free_port(), free_port()
    unix = tmp_path / "grpc.sock"
    log = open(tmp_path / "server.log", "wb")
    # systemd-socket-activate binds the three sockets and starts edgeserve on the
    # first connection, as systemd does with edgeserve.socket.
    proc = subprocess.Popen(
        ["systemd-socket-activate", f"--listen=127.0.0.1:{rest}", f"--listen=127.0.0.1:{grpc}",
         f"--listen={unix}", sys.executable, "-m", "edgeserve", f"--rest_api_port={rest}", f"--port={grpc}",
         f"--grpc_socket_path={unix}", "--model_name=m", f"--model_base_path={model_store / 'half_plus_two'}"],
        cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT,
    )
    processes.append(proc)
    deadline = time.monotonic() + 10
    while not unix.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    # The first request connects before edgeserve even runs; it waits in the
    # socket's backlog and is answered once the server started.
    client = Client(rest)
    try:
        assert client.post("/v1/models/m:predict", {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
    finally:
        client.close()
    import grpc_client

    for target in (f"127.0.0.1:{grpc}", f"unix:{unix}"):
        channel = grpc_client.channel(target)
        try:
            stub, _ = grpc_client.stubs(channel)
            response = stub.Predict(grpc_client.predict_request("m", {"x": grpc_client.tensor([[2.0]])}),
                                    timeout=30)
            assert list(response.outputs["y"].float_val) == [3.0]
        finally:
            channel.close()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    text = (tmp_path / "server.log").read_text()
    assert "Ignoring inherited socket" not in text
    assert unix.exists()  # systemd's socket file: not ours to remove


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_units_verify_and_are_hardened():
    units = [str(REPO / "systemd" / "edgeserve.service"), str(REPO / "systemd" / "edgeserve.socket")]
    result = subprocess.run(["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60)
    # The unit names /usr/local/lib/edgeserve/edgeserve.pyz, not installed here;
    # anything else is a defect of the unit.
    problems = [line for line in result.stderr.splitlines() if line.strip() and "edgeserve.pyz" not in line]
    assert not problems, result.stderr
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", units[0]],
                            capture_output=True, text=True, timeout=60)
    match = re.search(r"Overall exposure level for edgeserve.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0, result.stdout


def test_bad_flag_exits_2_which_the_unit_does_not_restart(tmp_path):
    result = subprocess.run([sys.executable, "-m", "edgeserve", "--no_such_flag=1"], cwd=str(REPO),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    unit = (REPO / "systemd" / "edgeserve.service").read_text()
    assert re.search(r"^RestartPreventExitStatus=2$", unit, re.M)
    assert re.search(r"^Restart=on-failure$", unit, re.M)
    assert json.dumps(result.stderr.strip()).count("\\n") == 0  # one line in journalctl
