"""Helpers for the model-config tests: config text, and continuous client load.

`Load` runs REST (http.client keep-alive) and gRPC (official stubs) client threads
that predict a fixed set of targets in a loop and record every answer with the time
it was asked and answered, so a test can check what was served before, during and
after a reload: no failures at all, and every value one of the expected ones.
"""
from __future__ import annotations

import http.client
import json
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc_client

X = 2.0  # every prediction asks for x = 2: half_plus_two says 3.0, "half plus three" 4.0


# ---- config files -----------------------------------------------------------------

def model_entry(name: str, base_path, versions=None, labels=None, latest=None) -> str:
    lines = [
        "  config {",
        f'    name: "{name}"',
        f'    base_path: "{base_path}"',
        '    model_platform: "tensorflow"',
    ]
    if versions:
        lines.append("    model_version_policy { specific { "
                     + " ".join(f"versions: {v}" for v in versions) + " } }")
    if latest:
        lines.append(f"    model_version_policy {{ latest {{ num_versions: {latest} }} }}")
    for label, version in (labels or {}).items():
        lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
    lines.append("  }")
    return "\n".join(lines)


def config_text(*entries: str) -> str:
    return "model_config_list {\n" + "\n".join(entries) + "\n}\n"


def write_config(path: Path, text: str) -> None:
    """Replaces the file at once (write beside, rename), as a careful deploy does."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(text)
    os.replace(tmp, path)


def config_proto(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


# ---- one prediction, either protocol ----------------------------------------------

def rest_path(name: str, label: str | None = None, version: int | None = None) -> str:
    if label is not None:
        return f"/v1/models/{name}/labels/{label}:predict"
    if version is not None:
        return f"/v1/models/{name}/versions/{version}:predict"
    return f"/v1/models/{name}:predict"


def rest_predict(client, name, label=None, version=None):
    """(HTTP status, value or error body)."""
    status, body = client.post(rest_path(name, label, version), {"instances": [[X]]})
    if status == 200:
        return status, body["predictions"][0][0]
    return status, body


def grpc_predict(stub, name, label=None, version=None, timeout=grpc_client.TIMEOUT):
    """(value, answered version); raises grpc.RpcError."""
    request = grpc_client.predict_request(
        name, {"x": grpc_client.tensor([[X]])}, version=version, version_label=label)
    response = stub.Predict(request, timeout=timeout)
    return response.outputs["y"].float_val[0], response.model_spec.version.value


# ---- continuous load --------------------------------------------------------------

@dataclass(frozen=True)
class Target:
    name: str
    label: str | None = None
    version: int | None = None

    def __str__(self) -> str:
        if self.label is not None:
            return f"{self.name}@{self.label}"
        if self.version is not None:
            return f"{self.name}/v{self.version}"
        return self.name


@dataclass(frozen=True)
class Answer:
    target: Target
    protocol: str
    asked: float
    answered: float
    value: float


class Load:
    """Client threads predicting `targets` in a loop until stop()."""

    def __init__(self, server, targets, rest_threads: int = 3, grpc_threads: int = 2) -> None:
        self.server = server
        self.targets = list(targets)
        self.answers: list[Answer] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._warm: set[str] = set()
        self._threads = [threading.Thread(target=self._rest, args=(i,), daemon=True)
                         for i in range(rest_threads)]
        self._threads += [threading.Thread(target=self._grpc, args=(i,), daemon=True)
                          for i in range(grpc_threads)]

    def __enter__(self) -> "Load":
        for thread in self._threads:
            thread.start()
        # Every thread has had an answer before the test goes on.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(self._warm) < len(self._threads):
            time.sleep(0.05)
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(40)

    def _record(self, target, protocol, asked, value=None, failure=None) -> None:
        now = time.monotonic()
        with self._lock:
            self._warm.add(threading.current_thread().name)
            if failure is not None:
                self.failures.append(f"{protocol} {target} at {asked:.3f}: {failure}")
            else:
                self.answers.append(Answer(target, protocol, asked, now, value))

    def _rest(self, index: int) -> None:
        client = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=30)
        body = json.dumps({"instances": [[X]]})
        i = index
        try:
            while not self._stop.is_set():
                target = self.targets[i % len(self.targets)]
                i += 1
                asked = time.monotonic()
                try:
                    client.request("POST", rest_path(target.name, target.label, target.version),
                                   body=body, headers={"Content-Type": "application/json"})
                    response = client.getresponse()
                    data = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._record(target, "rest", asked, failure=repr(exc))
                    client.close()
                    client = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=30)
                    continue
                if response.status != 200:
                    self._record(target, "rest", asked, failure=f"{response.status} {data[:300]!r}")
                    continue
                self._record(target, "rest", asked, value=json.loads(data)["predictions"][0][0])
        finally:
            client.close()

    def _grpc(self, index: int) -> None:
        import grpc

        chan = grpc_client.channel(self.server.grpc_port)
        prediction, _ = grpc_client.stubs(chan)
        i = index
        try:
            while not self._stop.is_set():
                target = self.targets[i % len(self.targets)]
                i += 1
                asked = time.monotonic()
                try:
                    value, _ = grpc_predict(prediction, target.name, target.label, target.version)
                except grpc.RpcError as exc:
                    self._record(target, "grpc", asked, failure=f"{exc.code()} {exc.details()}")
                    continue
                self._record(target, "grpc", asked, value=value)
        finally:
            chan.close()

    # ---- checks ----

    def snapshot(self) -> list[Answer]:
        with self._lock:
            return list(self.answers)

    def of(self, target: Target) -> list[Answer]:
        return [a for a in self.snapshot() if a.target == target]

    def check_switch(self, target: Target, old: float, new: float, started: float, done: float,
                     since: float | None = None, until: float | None = None) -> None:
        """A change that began at `started` and was complete at `done`: answers before
        are old, after are new, in between either; once a new answer came back, no
        request asked later gets an old one (no flip-flop). `since`/`until` limit the
        answers looked at to those asked in that window (other changes outside it)."""
        answers = [a for a in self.of(target)
                   if (since is None or a.asked >= since) and (until is None or a.asked <= until)]
        assert answers, f"no answers for {target}"
        before = [a for a in answers if a.answered < started]
        after = [a for a in answers if a.asked > done]
        during = [a for a in answers if not a.answered < started and not a.asked > done]
        assert all(a.value == old for a in before), (target, sorted({a.value for a in before}))
        assert all(a.value in (old, new) for a in during), (target, sorted({a.value for a in during}))
        assert all(a.value == new for a in after), (target, sorted({a.value for a in after}))
        first_new = min((a.answered for a in answers if a.value == new and a.asked >= started),
                        default=None)
        if first_new is not None and old != new:
            late_old = [a for a in answers if a.value == old and a.asked > first_new]
            assert not late_old, f"{target}: old answers after a new one: {late_old[:3]}"

    def assert_no_failures(self, minimum: int = 20) -> None:
        assert not self.failures, f"{len(self.failures)} failed requests, e.g. {self.failures[:5]}"
        assert len(self.snapshot()) >= minimum, f"only {len(self.snapshot())} answers"
