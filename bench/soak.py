"""Soak test: --minutes of paced, mixed REST + gRPC load on one edgeserve, with a version
swap every --swap-every seconds and a model config reload every --reload-every seconds.
Every answer is checked; the server's RSS is sampled every --rss-every seconds and its
least-squares slope after --warmup-minutes is the leak figure.

    python bench/soak.py                                   # the issue's 30 minutes
    python bench/soak.py --minutes 3 --swap-every 20 --reload-every 60 --warmup-minutes 1

Models (exported once, in a TensorFlow subprocess, with edgeserve.example_model): `a`
version v computes y = 0.5 x + v and `b` version v computes y = 0.5 x + 100 + v, so every
answer says which version computed it. The work dir (--workdir, default a new
/tmp/edgeserve-soak-*; kept) holds the models, the config files, the server's log, the
RSS samples (rss.csv) and the swaps and reloads (events.csv).

The server (`python -m edgeserve` with --model_config_file, a 1 s config and file system
poll, and a monitoring config enabling Prometheus) runs on --server-core. Two load
processes, one REST (keep-alive http.client connections) and one gRPC (the official
tensorflow_serving.apis stubs on grpcio, one channel per thread), run with this driver on
--client-core. Each sends --rest-rps / --grpc-rps requests per second on a fixed
schedule (open loop; not flat out) spread over its threads, mixing: predict and regress
on `a`'s latest version and its status; predict on `b`'s latest, on versions 1 and 2 and
on the labels `stable` and `canary`.

What each request must get comes from a control file the driver rewrites (atomic
rename) and each load process acknowledges before the driver acts:
- swap: `a` may answer from the serving version v or v+1; the driver publishes v+1 as
  users are told (hidden folder, then one os.rename: swap.publish), waits until a probe
  gets v+1 (the switch time) and the status shows v ended (the unload time), then
  requires v+1 and deletes version v-1 from disk, so two versions stay on disk.
- reload: the config file is rewritten (atomic rename) to the next of four states,
  cycling: `a` only; + `b` (specific versions 1 and 2); + labels stable=1 canary=2;
  labels moved to stable=2 canary=1; then `b` is removed again. While `b` is absent its
  requests must get NOT_FOUND ("Servable not found"), while a label is absent
  INVALID_ARGUMENT ("Unrecognized servable version label"); during a reload either the
  old or the new state's answer is right (plus NOT_FOUND while `b` loads or unloads).
  The driver probes until the new state answers, then requires it.
A request fails on a transport error, a timeout (10 s), any other status, or a wrong
value (a version not allowed then; over gRPC also a response whose model_spec.version
disagrees with the value). Each failure's reason is counted, with its first examples.

A thread here samples VmRSS (/proc/<pid>/status) every --rss-every seconds and the
metrics page (edgeserve_event_loop_lag_seconds, a histogram: p99 by Prometheus's
histogram_quantile interpolation; :tensorflow:serving:request_count by status). The
report (stdout and the "soak" section of bench/RESULTS.md): requests and failures per
protocol, swaps and reloads with their times, RSS first/last/max and slope (MB/h, MB =
10^6 bytes) after the warmup and over the whole run, loop lag p99, and PASS/FAIL against
the targets: zero failed requests, slope after the warmup < 1 MB/h. Also the five slowest
requests and the metrics intervals with loop stalls over 250 ms, each with the swap or
reload then in progress.

gRPC connections and RSS: each gRPC thread has its own HTTP/2 connection, kept for the
whole run unless --grpc-reconnect-every N replaces it every N calls. The h2 library under
the server's grpclib remembers the last 65,536 closed streams of each connection (~115 B
of RSS per call until then); this soak found that, and edgeserve now caps it at 1,024 per
connection. The report gives the calls per connection; --grpc-reconnect-every separates
per-connection growth from a leak.

Owns bench/soak.py and that section only; stops every process it started on exit,
Ctrl-C included.
"""
from __future__ import annotations

import argparse
import array
import datetime
import heapq
import http.client
import json
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from common import Processes, REPO_ROOT, fmt, free_port, start_driver, tail
from results_md import RESULTS_MD, write_section
from run import machine_info
from swap import RssSampler, percentile, publish

A, B = "a", "b"
B_ADD = 100  # b version v: y = 0.5 x + 100 + v
X_VALUES = [float(x) for x in range(8)]  # 0.5 x + v is exact in float32
REQUEST_TIMEOUT = 10.0
METRICS_PATH = "/monitoring/prometheus/metrics"
CONTROL_POLL = 0.05
# What one request asks for, and how often (weights): `key` names the expectation.
TARGETS = [
    ("a:predict", 4), ("a:regress", 2), ("a:status", 1),
    ("b:predict", 1), ("b/1:predict", 1), ("b/2:predict", 1),
    ("b@stable:predict", 1), ("b@canary:predict", 1),
]
B_KEYS = ("b", "b/1", "b/2", "b@stable", "b@canary")
# Outcomes besides a version number.
NOT_FOUND, NO_LABEL = "not-found", "no-label"
# The config states a reload cycles through: b's labels, or None for no b.
STATES = [
    ("a only", None),
    ("a + b (versions 1, 2)", {}),
    ("a + b, stable=1 canary=2", {"stable": 1, "canary": 2}),
    ("a + b, stable=2 canary=1", {"stable": 2, "canary": 1}),
]


def key_of(target: str) -> str:
    return target.split(":")[0]


def decode_version(model: str, xs: list[float], ys: list[float]) -> int | str:
    """The version that computed ys from xs, or a failure reason (str)."""
    if len(ys) != len(xs):
        return f"{len(ys)} values for {len(xs)} rows"
    ks = {y - 0.5 * x for x, y in zip(xs, ys)}
    if len(ks) != 1:
        return f"rows disagree: {sorted(ks)}"
    k = ks.pop() - (B_ADD if model == B else 0)
    if k != int(k) or k < 1:
        return f"value {ys[0]!r} for x={xs[0]!r} is no version's"
    return int(k)


# --------------------------------------------------------------------------- load processes
# `soak.py _client rest|grpc PORT THREADS RPS WORKDIR`: paced requests until SIGTERM, then
# the results as JSON in WORKDIR/result-<kind>.json (and progress every 5 s before that).


class Control(threading.Thread):
    """Follows the driver's control file; acknowledges each new one."""

    def __init__(self, workdir: str, name: str) -> None:
        super().__init__(daemon=True)
        self.path = os.path.join(workdir, "control.json")
        self.ack = os.path.join(workdir, f"ack-{name}")
        self.expect: dict = {}
        self.seq = -1
        self.read()

    def read(self) -> None:
        try:
            with open(self.path) as f:
                control = json.load(f)
        except (OSError, ValueError):
            return
        if control["seq"] != self.seq:
            self.expect, self.seq = control["expect"], control["seq"]
            write_atomic(self.ack, str(self.seq))

    def run(self) -> None:
        while True:
            time.sleep(CONTROL_POLL)
            self.read()


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = self.ok = self.failed = self.expected_errors = self.behind = 0
        self.outcomes: dict[str, dict[str, int]] = {}
        self.reasons: dict[str, list] = {}  # reason -> [count, first examples]
        self.lat_ms = array.array("f")
        self.slowest: list[tuple[float, float, str]] = []  # heap of (ms, wall time sent, target)

    def record(self, target: str, outcome, error: str | None, ms: float, t_wall: float) -> None:
        with self.lock:
            self.sent += 1
            self.lat_ms.append(ms)
            if len(self.slowest) < 5:
                heapq.heappush(self.slowest, (ms, t_wall, target))
            elif ms > self.slowest[0][0]:
                heapq.heapreplace(self.slowest, (ms, t_wall, target))
            if error is not None:
                self.failed += 1
                reason = f"{target}: {error}"
                # Numbers (versions, times) vary; the reason's shape is what groups.
                group = re.sub(r"\d+(\.\d+)?", "N", reason)[:160]
                entry = self.reasons.setdefault(group, [0, []])
                entry[0] += 1
                if len(entry[1]) < 3:
                    stamp = datetime.datetime.fromtimestamp(t_wall).strftime("%H:%M:%S.%f")[:-3]
                    entry[1].append(f"{stamp} {reason[:300]}")
                return
            per = self.outcomes.setdefault(target, {})
            per[str(outcome)] = per.get(str(outcome), 0) + 1
            if isinstance(outcome, int):
                self.ok += 1
            else:
                self.expected_errors += 1

    def summary(self, in_flight: int, seconds: float) -> dict:
        with self.lock:
            lat = sorted(self.lat_ms)
            return {
                "seconds": seconds, "sent": self.sent, "ok": self.ok, "failed": self.failed,
                "expected_errors": self.expected_errors, "behind": self.behind,
                "in_flight_at_stop": in_flight, "outcomes": self.outcomes,
                "reasons": dict(sorted(self.reasons.items(), key=lambda kv: -kv[1][0])[:30]),
                "lat_p50": percentile(lat, 50), "lat_p99": percentile(lat, 99),
                "lat_p999": percentile(lat, 99.9), "lat_max": lat[-1] if lat else None,
                "slowest": sorted(self.slowest, reverse=True),
            }


def write_atomic(path: str, text: str) -> None:
    with open(path + ".part", "w") as f:
        f.write(text)
    os.rename(path + ".part", path)


class RestClient:
    """One keep-alive connection; `call(target, xs)` -> (outcome, error)."""

    # The server closes keep-alive connections idle for --rest_api_idle_timeout_in_ms
    # (60 s); a connection idle half that long is opened anew rather than reused, as
    # HTTP clients do, so the driver's sparse probes do not race the server's close.
    IDLE_REOPEN_SECONDS = 30.0

    def __init__(self, port: int) -> None:
        self.port, self.conn = port, None
        self.last_used = 0.0

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def request(self, method: str, path: str, body: dict | None) -> tuple[int, bytes]:
        if self.conn is not None and time.monotonic() - self.last_used > self.IDLE_REOPEN_SECONDS:
            self.close()
        self.last_used = time.monotonic()
        if self.conn is None:
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        self.conn.request(method, path, data, headers)
        resp = self.conn.getresponse()
        return resp.status, resp.read()

    def call(self, target: str, xs: list[float]) -> tuple[int | str | None, str | None]:
        key, api = target.split(":")
        model = key[0]
        path = f"/v1/models/{model}"
        if "/" in key:
            path += f"/versions/{key.split('/')[1]}"
        elif "@" in key:
            path += f"/labels/{key.split('@')[1]}"
        try:
            if api == "status":
                status, body = self.request("GET", path, None)
            elif api == "regress":
                status, body = self.request("POST", path + ":regress", {
                    "signature_name": "regress_x_to_y", "examples": [{"x": x} for x in xs]})
            else:
                status, body = self.request("POST", path + ":predict", {"instances": [[x] for x in xs]})
        except (OSError, http.client.HTTPException) as exc:
            self.close()  # the connection's state is unknown: reconnect
            return None, f"{type(exc).__name__}: {exc}"
        try:
            answer = json.loads(body)
        except ValueError:
            return None, f"HTTP {status}, not JSON: {body[:120]!r}"
        if status != 200:
            message = str(answer.get("error", answer)) if isinstance(answer, dict) else str(answer)
            if status == 404 and message.startswith("Servable not found"):
                return NOT_FOUND, None
            if status == 400 and message.startswith("Unrecognized servable version label"):
                return NO_LABEL, None
            return None, f"HTTP {status}: {message[:200]}"
        try:
            if api == "status":
                available = [int(v["version"]) for v in answer["model_version_status"]
                             if v["state"] == "AVAILABLE"]
                return (max(available), None) if available else (None, f"no version AVAILABLE: {answer}")
            if api == "regress":
                ys = [float(y) for y in answer["results"]]
            else:
                ys = [float(row[0]) for row in answer["predictions"]]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            return None, f"unexpected answer ({exc!r}): {body[:120]!r}"
        version = decode_version(model, xs, ys)
        return (version, None) if isinstance(version, int) else (None, version)


class GrpcClient:
    """The official stubs on one grpcio channel; `call(target, xs)` -> (outcome, error).

    Each channel has its own HTTP/2 connection (`grpc.use_local_subchannel_pool`: by
    default grpcio shares one connection among a process's channels to one address, and
    closing a channel then closes nothing). With `reconnect_every` > 0 the channel is
    closed and replaced after that many calls."""

    def __init__(self, port: int, reconnect_every: int = 0) -> None:
        import grpc
        from tensorflow.core.example import example_pb2
        from tensorflow.core.framework import tensor_pb2, types_pb2
        from tensorflow_serving.apis import (get_model_status_pb2, model_service_pb2_grpc, predict_pb2,
                                             prediction_service_pb2_grpc, regression_pb2)

        self.grpc, self.example_pb2, self.tensor_pb2, self.types_pb2 = grpc, example_pb2, tensor_pb2, types_pb2
        self.predict_pb2, self.regression_pb2, self.status_pb2 = predict_pb2, regression_pb2, get_model_status_pb2
        self.stubs = prediction_service_pb2_grpc, model_service_pb2_grpc
        self.port, self.reconnect_every, self.calls = port, reconnect_every, 0
        self.connect()

    def connect(self) -> None:
        self.channel = self.grpc.insecure_channel(f"127.0.0.1:{self.port}",
                                                  options=[("grpc.use_local_subchannel_pool", 1)])
        self.prediction = self.stubs[0].PredictionServiceStub(self.channel)
        self.models = self.stubs[1].ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def call(self, target: str, xs: list[float]) -> tuple[int | str | None, str | None]:
        key, api = target.split(":")
        model = key[0]
        if self.reconnect_every and self.calls >= self.reconnect_every:
            self.close()
            self.connect()
            self.calls = 0
        self.calls += 1
        try:
            if api == "status":
                request = self.status_pb2.GetModelStatusRequest()
                request.model_spec.name = model
                response = self.models.GetModelStatus(request, timeout=REQUEST_TIMEOUT)
                available = [v.version for v in response.model_version_status
                             if v.state == self.status_pb2.ModelVersionStatus.AVAILABLE]
                return (max(available), None) if available else (None, f"no version AVAILABLE: {response}")
            if api == "regress":
                request = self.regression_pb2.RegressionRequest()
                request.model_spec.name = model
                request.model_spec.signature_name = "regress_x_to_y"
                for x in xs:
                    example = request.input.example_list.examples.add()
                    example.features.feature["x"].float_list.value.append(x)
                response = self.prediction.Regress(request, timeout=REQUEST_TIMEOUT)
                ys = [r.value for r in response.result.regressions]
            else:
                request = self.predict_pb2.PredictRequest()
                request.model_spec.name = model
                if "/" in key:
                    request.model_spec.version.value = int(key.split("/")[1])
                elif "@" in key:
                    request.model_spec.version_label = key.split("@")[1]
                tensor = request.inputs["x"]
                tensor.dtype = self.types_pb2.DT_FLOAT
                tensor.tensor_shape.dim.add(size=len(xs))
                tensor.tensor_shape.dim.add(size=1)
                tensor.float_val.extend(xs)
                response = self.prediction.Predict(request, timeout=REQUEST_TIMEOUT)
                ys = list(response.outputs["y"].float_val)
        except self.grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code == self.grpc.StatusCode.NOT_FOUND and details.startswith("Servable not found"):
                return NOT_FOUND, None
            if (code == self.grpc.StatusCode.INVALID_ARGUMENT
                    and details.startswith("Unrecognized servable version label")):
                return NO_LABEL, None
            return None, f"{code.name}: {details[:200]}"
        version = decode_version(model, xs, ys)
        if not isinstance(version, int):
            return None, version
        if response.model_spec.version.value != version:
            return None, f"model_spec.version {response.model_spec.version.value}, the values say {version}"
        return version, None


def client_main(kind: str, port: int, threads: int, rps: float, workdir: str, reconnect_every: int) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    signal.signal(signal.SIGINT, lambda _s, _f: stop.set())
    stats = Stats()
    # gRPC: imports TensorFlow's protos first.
    clients = [RestClient(port) if kind == "rest" else GrpcClient(port, reconnect_every) for _ in range(threads)]
    control = Control(workdir, kind)
    control.start()
    targets = [t for t, _w in TARGETS]
    weights = [w for _t, w in TARGETS]
    busy = [False] * threads
    interval = threads / rps

    def worker(i: int, client) -> None:
        rng = random.Random(i)
        next_t = time.monotonic() + interval * i / threads  # spread the threads' grids
        while not stop.is_set():
            delay = next_t - time.monotonic()
            if delay > 0:
                if stop.wait(delay):
                    break
            elif delay < -1.0:  # a second behind schedule: start over from now
                stats.behind += 1
                next_t = time.monotonic()
            next_t += interval
            target = rng.choices(targets, weights)[0]
            key = key_of(target)
            xs = rng.sample(X_VALUES, rng.randint(1, 3))
            allowed = control.expect.get(key, [])
            busy[i] = True
            t_wall, t0 = time.time(), time.monotonic()
            outcome, error = client.call(target, xs)
            ms = (time.monotonic() - t0) * 1e3
            busy[i] = False
            # Right under the expectation when it was sent or when it came back: the
            # driver widens before it acts and narrows once the server has acted.
            if error is None and outcome not in allowed and outcome not in control.expect.get(key, []):
                error = f"got {outcome}, expected one of {allowed}"
            stats.record(target, outcome, error, ms, t_wall)

    pool = [threading.Thread(target=worker, args=(i, c), daemon=True) for i, c in enumerate(clients)]
    started = time.monotonic()
    for t in pool:
        t.start()
    while not stop.wait(5.0):
        write_atomic(os.path.join(workdir, f"progress-{kind}.json"),
                     json.dumps(stats.summary(0, time.monotonic() - started)))
    seconds = time.monotonic() - started
    deadline = time.monotonic() + 2.0
    for t in pool:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    write_atomic(os.path.join(workdir, f"result-{kind}.json"), json.dumps(stats.summary(sum(busy), seconds)))
    for c in clients:
        c.close()


# --------------------------------------------------------------------------- model export


def export_main(staging: str, a_versions: int) -> None:
    sys.path.insert(0, REPO_ROOT)
    from edgeserve.example_model import export_half_plus_two

    for v in range(1, a_versions + 1):
        export_half_plus_two(os.path.join(staging, A), v, add=float(v))
    for v in (1, 2):
        export_half_plus_two(os.path.join(staging, B), v, add=float(B_ADD + v))
    import tensorflow as tf
    with open(os.path.join(staging, "meta.json"), "w") as f:
        json.dump({"tf_version": tf.__version__, "a_versions": a_versions}, f)


def export_models(procs: Processes, staging: str, a_versions: int, workdir: str) -> dict:
    log_path = os.path.join(workdir, "export.log")
    returncode = procs.run([sys.executable, os.path.abspath(__file__), "_export", staging, str(a_versions)],
                           log_path, timeout=300)
    meta_path = os.path.join(staging, "meta.json")
    if returncode != 0 or not os.path.exists(meta_path):
        raise RuntimeError(f"model export failed: {tail(log_path, 10)}")
    with open(meta_path) as f:
        return json.load(f)


# --------------------------------------------------------------------------- config


def config_text(base_a: str, base_b: str, labels: dict | None) -> str:
    lines = ["model_config_list {",
             f'  config {{ name: "{A}" base_path: "{base_a}" model_platform: "tensorflow" }}']
    if labels is not None:
        lines += [f'  config {{',
                  f'    name: "{B}" base_path: "{base_b}" model_platform: "tensorflow"',
                  "    model_version_policy { specific { versions: 1 versions: 2 } }"]
        lines += [f'    version_labels {{ key: "{k}" value: {v} }}' for k, v in sorted(labels.items())]
        lines += ["  }"]
    lines += ["}"]
    return "\n".join(lines) + "\n"


def expected_b(labels: dict | None) -> dict[str, list]:
    if labels is None:
        return {"b": [NOT_FOUND], "b/1": [NOT_FOUND], "b/2": [NOT_FOUND],
                "b@stable": [NO_LABEL], "b@canary": [NO_LABEL]}
    return {"b": [2], "b/1": [1], "b/2": [2],
            "b@stable": [labels.get("stable", NO_LABEL)], "b@canary": [labels.get("canary", NO_LABEL)]}


def transitional_b(before: dict | None, after: dict | None) -> dict[str, list]:
    old, new = expected_b(before), expected_b(after)
    both = {k: sorted(set(old[k]) | set(new[k]), key=str) for k in B_KEYS}
    if (before is None) != (after is None):
        # While b's versions load or unload any of them may be missing, and its latest
        # may be version 1 for a moment (loaded before 2, or unloaded after it).
        for k in B_KEYS:
            both[k] = sorted(set(both[k]) | {NOT_FOUND}, key=str)
        both["b"] = sorted(set(both["b"]) | {1, 2}, key=str)
    return both


# --------------------------------------------------------------------------- driver


class MetricsScraper(threading.Thread):
    """The metrics page every `interval` s: loop-lag buckets and request counts."""

    LINE = re.compile(r'^([^\s{]+)(?:\{([^}]*)\})?\s+(\S+)')

    def __init__(self, port: int, interval: float, t0: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval, self.t0 = port, interval, t0
        self.snapshots: list[dict] = []
        self.failures: list[str] = []
        self._halt = threading.Event()

    def scrape(self) -> dict | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            conn.request("GET", METRICS_PATH)
            resp = conn.getresponse()
            text = resp.read().decode()
            if resp.status != 200:
                raise http.client.HTTPException(f"HTTP {resp.status}: {text[:100]}")
        except (OSError, http.client.HTTPException) as exc:
            self.failures.append(f"{time.monotonic() - self.t0:.0f} s: {type(exc).__name__}: {exc}")
            return None
        finally:
            conn.close()
        snap = {"t": time.monotonic() - self.t0, "lag": {}, "requests": {}}
        for line in text.splitlines():
            m = self.LINE.match(line)
            if not m:
                continue
            name, labels, value = m.group(1), dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")), m.group(3)
            if name == "edgeserve_event_loop_lag_seconds_bucket":
                snap["lag"][labels["le"]] = float(value)
            elif name == ":tensorflow:serving:request_count":
                snap["requests"][f'{labels.get("model_name")} {labels.get("status")}'] = float(value)
        self.snapshots.append(snap)
        return snap

    def run(self) -> None:
        next_t = time.monotonic()
        while not self._halt.is_set():
            self.scrape()
            next_t += self.interval
            self._halt.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=REQUEST_TIMEOUT + 1)

    def at(self, t: float) -> dict | None:
        """The last snapshot taken at or before t (s from the start)."""
        before = [s for s in self.snapshots if s["t"] <= t]
        return before[-1] if before else None


def lag_quantile(buckets: dict[str, float], q: float) -> float | None:
    """Prometheus's histogram_quantile over cumulative buckets {le: count}."""
    bounds = sorted((float(le), n) for le, n in buckets.items())
    if not bounds or bounds[-1][1] <= 0:
        return None
    rank = q * bounds[-1][1]
    prev_le, prev_n = 0.0, 0.0
    for le, n in bounds:
        if n >= rank:
            if le == float("inf"):
                return prev_le  # above the highest finite bound: the bound, as Prometheus
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 1.0)
        prev_le, prev_n = le, n
    return prev_le


def bucket_diff(end: dict, start: dict | None) -> dict:
    return {le: n - (start or {}).get(le, 0.0) for le, n in end.items()}


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MB (10^6 bytes) per hour."""
    if len(samples) < 3:
        return None
    n = len(samples)
    mt = sum(t for t, _ in samples) / n
    mm = sum(m for _, m in samples) / n
    var = sum((t - mt) ** 2 for t, _ in samples)
    if var == 0:
        return None
    mib_per_s = sum((t - mt) * (m - mm) for t, m in samples) / var
    return mib_per_s * 2**20 / 1e6 * 3600


@dataclass
class Event:
    t: float  # s from the start of the load
    kind: str  # swap | reload
    detail: str
    done_s: float | None = None  # swap: first answer from the new version; reload: new state answers
    unload_s: float | None = None  # swap: the old version's status END
    error: str | None = None


@dataclass
class Soak:
    args: argparse.Namespace
    procs: Processes
    workdir: str
    port_rest: int = 0
    port_grpc: int = 0
    server: subprocess.Popen | None = None
    t0: float = 0.0
    t0_wall: float = 0.0
    seq: int = 0
    expect: dict = field(default_factory=dict)
    a_serving: int = 2
    state: int = 0
    events: list[Event] = field(default_factory=list)
    probe_failures: list[str] = field(default_factory=list)
    clients: tuple[str, ...] = ("rest", "grpc")
    probe_conn: RestClient | None = None  # set in start_server
    a_versions: int = 0  # exported versions of a (set in prepare)
    server_cmd: list[str] = field(default_factory=list)

    @property
    def base_a(self) -> str:
        return os.path.join(self.workdir, "models", A)

    @property
    def base_b(self) -> str:
        return os.path.join(self.workdir, "models", B)

    @property
    def staging(self) -> str:
        return os.path.join(self.workdir, "staging")

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, "models.config")

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ---- control of the load processes

    def set_control(self, wait_acks: bool, **expect) -> None:
        self.expect.update(expect)
        self.seq += 1
        write_atomic(os.path.join(self.workdir, "control.json"),
                     json.dumps({"seq": self.seq, "expect": self.expect}))
        if not wait_acks:
            return
        deadline = time.monotonic() + 10.0
        missing = list(self.clients)
        while missing and time.monotonic() < deadline:
            time.sleep(0.02)
            missing = [k for k in missing if self.acked(k) < self.seq]
        if missing:
            raise RuntimeError(f"load process(es) {', '.join(missing)} did not take control #{self.seq} in 10 s")

    def acked(self, kind: str) -> int:
        try:
            with open(os.path.join(self.workdir, f"ack-{kind}")) as f:
                return int(f.read() or -1)
        except (OSError, ValueError):
            return -1

    # ---- probes (this process's own REST requests)

    def probe(self, target: str) -> int | str | None:
        outcome, error = self.probe_conn.call(target, [1.0])
        if error is not None:
            self.probe_failures.append(f"{self.now():.1f} s {target}: {error}")
        return outcome

    def wait_until(self, check, timeout: float, pause: float = 0.02) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if check():
                return time.monotonic() - start
            if self.server.poll() is not None:
                raise RuntimeError(f"the server exited ({self.server.returncode})")
            time.sleep(pause)
        return None

    def old_version_ended(self, version: int) -> bool:
        try:
            status, body = self.probe_conn.request("GET", f"/v1/models/{A}", None)
            states = {int(v["version"]): v["state"] for v in json.loads(body)["model_version_status"]}
        except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError) as exc:
            self.probe_conn.close()
            self.probe_failures.append(f"{self.now():.1f} s status of {A}: {type(exc).__name__}: {exc}")
            return False
        return status == 200 and states.get(version, "END") == "END"

    # ---- the two actions

    def swap(self) -> Event:
        old, new = self.a_serving, self.a_serving + 1
        ev = Event(self.now(), "swap", f"{A}: {old} → {new}")
        self.events.append(ev)
        if new > self.a_versions:
            ev.error = "no exported version left (raise the export count)"
            return ev
        self.set_control(True, a=[old, new])
        start = time.monotonic()
        publish(os.path.join(self.staging, A, str(new)), self.base_a, new)
        switched = self.wait_until(lambda: self.probe("a:predict") == new, self.args.action_timeout)
        if switched is None:
            ev.error = f"version {new} never answered in {self.args.action_timeout:g} s"
            return ev  # the load keeps accepting either: the report says the swap failed
        ev.done_s = switched
        self.a_serving = new
        self.set_control(False, a=[new])
        ended = self.wait_until(lambda: self.old_version_ended(old),
                                self.args.action_timeout - (time.monotonic() - start), 0.05)
        if ended is None:
            ev.error = f"version {old} still not END {self.args.action_timeout:g} s after the publish"
        else:
            ev.unload_s = time.monotonic() - start
        oldest = os.path.join(self.base_a, str(old - 1))
        if os.path.isdir(oldest):
            shutil.rmtree(oldest)  # two versions stay on disk: old (just replaced) and new
        return ev

    def reload(self) -> Event:
        before, after = STATES[self.state][1], STATES[(self.state + 1) % len(STATES)][1]
        name = STATES[(self.state + 1) % len(STATES)][0]
        ev = Event(self.now(), "reload", f"→ {name}")
        self.events.append(ev)
        self.set_control(True, **transitional_b(before, after))
        self.state = (self.state + 1) % len(STATES)
        self.write_config()
        want = expected_b(after)
        done = self.wait_until(lambda: all(self.probe(f"{k}:predict") in want[k] for k in B_KEYS),
                               self.args.action_timeout, 0.05)
        if done is None:
            ev.error = f"the new state did not answer in {self.args.action_timeout:g} s"
            return ev
        ev.done_s = done
        self.set_control(False, **want)
        return ev

    def write_config(self) -> None:
        write_atomic(self.config_path, config_text(self.base_a, self.base_b, STATES[self.state][1]))

    # ---- set-up

    def prepare(self) -> dict:
        n_swaps = int(self.args.minutes * 60 // self.args.swap_every) + 1
        self.a_versions = 2 + n_swaps
        print(f"exporting {self.a_versions} versions of {A} and 2 of {B} into {self.staging} ...",
              file=sys.stderr)
        meta = export_models(self.procs, self.staging, self.a_versions, self.workdir)
        for model, versions in ((A, (1, 2)), (B, (1, 2))):
            for v in versions:
                publish(os.path.join(self.staging, model, str(v)), os.path.join(self.workdir, "models", model), v)
        self.write_config()
        with open(os.path.join(self.workdir, "monitoring.config"), "w") as f:
            f.write(f'prometheus_config {{ enable: true path: "{METRICS_PATH}" }}\n')
        return meta

    def start_server(self) -> None:
        self.port_rest, self.port_grpc = free_port(), free_port()
        while self.port_grpc == self.port_rest:
            self.port_grpc = free_port()
        cmd = ["taskset", "-c", self.args.server_core, sys.executable, "-m", "edgeserve",
               f"--port={self.port_grpc}", f"--rest_api_port={self.port_rest}", "--bind_address=127.0.0.1",
               f"--model_config_file={self.config_path}",
               f"--model_config_file_poll_wait_seconds={self.args.config_poll}",
               "--file_system_poll_wait_seconds=1",
               f"--monitoring_config_file={os.path.join(self.workdir, 'monitoring.config')}"]
        self.server_cmd = cmd
        self.server = self.procs.spawn(cmd, self.server_log)
        self.probe_conn = RestClient(self.port_rest)
        up = self.wait_until(lambda: self.probe_conn.call("a:predict", [1.0])[0] == 2, 120, 0.2)
        if up is None:
            raise RuntimeError(f"the server never answered with version 2: {tail(self.server_log)}")

    @property
    def server_log(self) -> str:
        return os.path.join(self.workdir, "server.log")

    def start_load(self) -> None:
        self.set_control(False, a=[2], **expected_b(None))
        rates = {"rest": self.args.rest_rps, "grpc": self.args.grpc_rps}
        for kind in self.clients:
            self.procs.spawn(["taskset", "-c", self.args.client_core, sys.executable, os.path.abspath(__file__),
                              "_client", kind, str(self.port_rest if kind == "rest" else self.port_grpc),
                              str(self.args.threads), str(rates[kind]), self.workdir,
                              str(self.args.grpc_reconnect_every)],
                             os.path.join(self.workdir, f"load-{kind}.log"))
        # The gRPC process imports TensorFlow's protos (TensorFlow itself) before it starts.
        deadline = time.monotonic() + 120
        while any(self.acked(k) < self.seq for k in self.clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the load processes did not start in 120 s: "
                                   + " / ".join(tail(os.path.join(self.workdir, f"load-{k}.log")) for k in self.clients))
            time.sleep(0.1)

    def progress(self, kind: str, final: bool = False) -> dict | None:
        try:
            with open(os.path.join(self.workdir, f"{'result' if final else 'progress'}-{kind}.json")) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None


def run_soak(soak: Soak, args) -> dict:
    """Runs the whole soak; returns what the report needs."""
    meta = soak.prepare()
    print(f"starting the server (log: {soak.server_log}) ...", file=sys.stderr)
    soak.start_server()
    print("starting the load ...", file=sys.stderr)
    soak.start_load()
    soak.t0, soak.t0_wall = time.monotonic(), time.time()
    sampler = RssSampler(soak.server.pid, interval=args.rss_every)
    sampler.start()
    scraper = MetricsScraper(soak.port_rest, args.rss_every, soak.t0)
    scraper.start()
    duration = args.minutes * 60
    next_swap, next_reload, next_print = args.swap_every, args.reload_every, 60.0
    try:
        while True:
            now = soak.now()
            if now >= duration:
                break
            if soak.server.poll() is not None:
                raise RuntimeError(f"the server exited ({soak.server.returncode}): {tail(soak.server_log)}")
            for kind in soak.clients:
                if all(p.poll() is not None for p in soak.procs.running if "_client" in p.args and kind in p.args):
                    raise RuntimeError(f"the {kind} load process exited: "
                                       f"{tail(os.path.join(soak.workdir, f'load-{kind}.log'))}")
            if now >= next_reload:
                ev = soak.reload()
                next_reload += args.reload_every
                print(f"  [{now:6.0f} s] reload {ev.detail}: {fmt(ev.done_s, 2)} s"
                      + (f" ERROR {ev.error}" if ev.error else ""), file=sys.stderr)
            elif now >= next_swap:
                ev = soak.swap()
                next_swap += args.swap_every
                print(f"  [{now:6.0f} s] swap {ev.detail}: switch {fmt(ev.done_s, 2)} s,"
                      f" old ended {fmt(ev.unload_s, 2)} s" + (f" ERROR {ev.error}" if ev.error else ""),
                      file=sys.stderr)
            elif now >= next_print:
                next_print += 60.0
                parts = []
                for kind in soak.clients:
                    p = soak.progress(kind) or {}
                    parts.append(f"{kind} {p.get('sent', 0):,} sent {p.get('failed', 0)} failed")
                rss = sampler.samples[-1][1] if sampler.samples else None
                print(f"  [{now:6.0f} s] {', '.join(parts)}; RSS {fmt(rss, 1)} MiB", file=sys.stderr)
            else:
                time.sleep(min(0.2, max(0.0, duration - now)))
        end = soak.now()
    finally:
        for proc in [p for p in soak.procs.running if "_client" in p.args]:
            soak.procs.stop(proc)  # SIGTERM: they finish and write their results
        scraper.stop()
        sampler.stop()
    final_scrape = scraper.scrape()
    results = {kind: soak.progress(kind, final=True) for kind in soak.clients}
    soak.procs.stop(soak.server)
    return {"meta": meta, "samples": [(t - soak.t0, mb) for t, mb in sampler.samples],
            "scraper": scraper, "final_scrape": final_scrape, "results": results,
            "end": end, "server_rc": soak.server.returncode}


# --------------------------------------------------------------------------- report


def server_log_problems(path: str) -> tuple[int, int, list[str]]:
    """(error lines, warning lines, first error lines) of the server's log."""
    errors, warnings, first = 0, 0, []
    level = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ([EWF]) ")
    try:
        with open(path, errors="replace") as f:
            for line in f:
                m = level.match(line)
                if (m and m.group(1) in "EF") or line.startswith("Traceback"):
                    errors += 1
                    if len(first) < 5:
                        first.append(line.strip()[:250])
                elif m:
                    warnings += 1
    except OSError:
        pass
    return errors, warnings, first


def build_report(args, info: dict, soak: Soak, out: dict, started: datetime.datetime,
                 runtime_s: float) -> tuple[str, bool]:
    samples = out["samples"]
    warm = args.warmup_minutes * 60
    after = [(t, mb) for t, mb in samples if t >= warm]
    slope_after, slope_all = slope_mb_per_hour(after), slope_mb_per_hour(samples)
    results = out["results"]
    scraper: MetricsScraper = out["scraper"]
    final = out["final_scrape"] or (scraper.snapshots[-1] if scraper.snapshots else None)
    # The histogram counts from the server's start: the first scrape (as the load starts)
    # and the one at the end of the warmup are subtracted.
    first_snap, warm_snap = scraper.at(0.0 + args.rss_every / 2), scraper.at(warm)
    lag_run = bucket_diff(final["lag"], first_snap["lag"]) if final and first_snap else None
    lag_all = lag_quantile(lag_run, 0.99) if lag_run else None
    lag_after = lag_quantile(bucket_diff(final["lag"], warm_snap["lag"]), 0.99) if final and warm_snap else None
    lag_count = (lag_run or {}).get("+Inf")
    lag_max_bucket = None
    if lag_run:
        finite = sorted((float(le), n) for le, n in lag_run.items())
        above = [le for (le, n), (_ple, pn) in zip(finite[1:], finite) if n > pn]
        lag_max_bucket = above[-1] if above else finite[0][0]

    def col(kind: str, key: str):
        r = results.get(kind)
        return None if r is None else r.get(key)

    def total(key: str):
        vals = [col(k, key) for k in soak.clients]
        return None if any(v is None for v in vals) else sum(vals)

    rate = {k: col(k, "sent") / col(k, "seconds") if col(k, "seconds") else None for k in soak.clients}
    failed = total("failed")
    client_missing = [k for k in soak.clients if results.get(k) is None]
    swaps = [e for e in soak.events if e.kind == "swap"]
    reloads = [e for e in soak.events if e.kind == "reload"]
    event_errors = [e for e in soak.events if e.error]
    log_errors, log_warnings, first_errors = server_log_problems(soak.server_log)
    ok_failed = (failed == 0 and not client_missing and not soak.probe_failures and not event_errors
                 and not scraper.failures)
    ok_slope = slope_after is not None and slope_after < 1.0
    passed = ok_failed and ok_slope

    def verdict(ok: bool) -> str:
        return "**PASS**" if ok else "**FAIL**"

    switch = [e.done_s for e in swaps if e.done_s is not None]
    unload = [e.unload_s for e in swaps if e.unload_s is not None]
    applied = [e.done_s for e in reloads if e.done_s is not None]
    requests_by_status: dict[str, float] = {}
    for label, n in (final or {}).get("requests", {}).items():
        status = label.split(" ", 1)[1]
        requests_by_status[status] = requests_by_status.get(status, 0) + n
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT)] + sys.argv[1:])
    rss = [mb for _t, mb in samples]
    per_conn = None if col("grpc", "sent") is None else col("grpc", "sent") / args.threads
    if per_conn is not None and args.grpc_reconnect_every:
        per_conn = min(per_conn, args.grpc_reconnect_every)
    lines = [
        "# edgeserve soak test",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, Linux {info['kernel']}",
        f"- software: Python {info['python']}, TensorFlow {out['meta']['tf_version']}",
        f"- command: `{command}` ({runtime_s:.0f} s in all; {out['end'] / 60:.1f} min of load)",
        f"- server on core {args.server_core}; load ({args.rest_rps:g} REST + {args.grpc_rps:g} gRPC requests/s,"
        f" {args.threads} connections each) and driver on core {args.client_core}; work dir `{soak.workdir}`",
        "",
        "| | REST | gRPC | total |",
        "|---|---:|---:|---:|",
        f"| requests sent | {fmt(col('rest', 'sent'))} | {fmt(col('grpc', 'sent'))} | {fmt(total('sent'))} |",
        f"| answered right | {fmt(col('rest', 'ok'))} | {fmt(col('grpc', 'ok'))} | {fmt(total('ok'))} |",
        f"| expected errors (b absent, label unset) | {fmt(col('rest', 'expected_errors'))}"
        f" | {fmt(col('grpc', 'expected_errors'))} | {fmt(total('expected_errors'))} |",
        f"| **failed** | {fmt(col('rest', 'failed'))} | {fmt(col('grpc', 'failed'))} | {fmt(failed)} |",
        f"| requests/s achieved | {fmt(rate['rest'], 1)} | {fmt(rate['grpc'], 1)} | — |",
        f"| latency p50 / p99 / p99.9 / max ms | "
        + " | ".join(" / ".join(fmt(col(k, q), 1) for q in ("lat_p50", "lat_p99", "lat_p999", "lat_max"))
                     for k in soak.clients) + " | — |",
        f"| fell a second behind schedule | {fmt(col('rest', 'behind'))} | {fmt(col('grpc', 'behind'))} | — |",
        "",
        "| measure | value | target |",
        "|---|---|---|",
        f"| failed requests (load; driver probes; metrics scrapes; failed swaps/reloads) | {fmt(failed)};"
        f" {len(soak.probe_failures)}; {len(scraper.failures)}; {len(event_errors)} | 0 {verdict(ok_failed)} |",
        f"| RSS slope after the first {args.warmup_minutes:g} min (least squares, {len(after)} samples)"
        f" | {fmt(slope_after, 2)} MB/h | < 1 MB/h {verdict(ok_slope)} |",
        f"| RSS slope over the whole run ({len(samples)} samples) | {fmt(slope_all, 2)} MB/h | — |",
        f"| RSS first / last / max (every {args.rss_every:g} s) | {fmt(rss[0] if rss else None, 1)} /"
        f" {fmt(rss[-1] if rss else None, 1)} / {fmt(max(rss, default=None), 1)} MiB | — |",
        f"| version swaps (every {args.swap_every:g} s): switch to the new version, median / max"
        f" | {len(swaps)}: {fmt(percentile(switch, 50), 2)} / {fmt(max(switch, default=None), 2)} s | — |",
        f"| … old version END after the publish, median / max | {fmt(percentile(unload, 50), 2)} /"
        f" {fmt(max(unload, default=None), 2)} s | — |",
        f"| config reloads (every {args.reload_every:g} s): new state answering, median / max"
        f" | {len(reloads)}: {fmt(percentile(applied, 50), 2)} / {fmt(max(applied, default=None), 2)} s | — |",
        f"| event-loop lag p99: whole run / after the warmup ({fmt(lag_count)} samples);"
        f" the worst sample is ≤ | {fmt(None if lag_all is None else lag_all * 1e3, 1)} /"
        f" {fmt(None if lag_after is None else lag_after * 1e3, 1)} ms;"
        f" {fmt(None if lag_max_bucket is None else lag_max_bucket * 1e3, 1)} ms | — |",
        f"| server's request_count by status | "
        + ", ".join(f"{s} {n:,.0f}" for s, n in sorted(requests_by_status.items(), key=lambda kv: -kv[1]))
        + " | — |",
        f"| gRPC calls per HTTP/2 connection (edgeserve caps h2's memory of closed streams at"
        f" 1,024 a connection, ~120 KB) | {fmt(per_conn)}"
        + (f" (a new channel every {args.grpc_reconnect_every:,} calls)" if args.grpc_reconnect_every else "")
        + " | — |",
        f"| server log: error / warning lines; exit status after SIGTERM | {log_errors} / {log_warnings};"
        f" {out['server_rc']} | — |",
        "",
        f"**Result: {'PASS' if passed else 'FAIL'}** (zero failed requests, RSS slope after the warmup < 1 MB/h)",
    ]
    reasons = []
    for kind in soak.clients:
        for reason, (count, examples) in ((results.get(kind) or {}).get("reasons") or {}).items():
            reasons.append((count, kind, examples))
    if reasons or soak.probe_failures or event_errors or client_missing or scraper.failures:
        lines += ["", "Failures (count, first examples, times as in the server log):", ""]
        for count, kind, examples in sorted(reasons, key=lambda r: -r[0])[:15]:
            lines.append(f"- {kind} ×{count}: " + "; ".join(f"`{e}`" for e in examples))
        lines += [f"- probe: `{p}`" for p in soak.probe_failures[:5]]
        lines += [f"- metrics scrape: `{p}`" for p in scraper.failures[:5]]
        lines += [f"- {e.kind} at {e.t:.0f} s ({e.detail}): {e.error}" for e in event_errors[:10]]
        lines += [f"- the {k} load process wrote no results" for k in client_missing]
    if first_errors:
        lines += ["", "Server log, first error lines:", ""] + [f"    {l}" for l in first_errors]
    slow = sorted(((ms, wall, target, kind) for kind in soak.clients
                   for ms, wall, target in (results.get(kind) or {}).get("slowest", [])), reverse=True)[:5]
    if slow:
        lines += ["", "Slowest requests (client's time; what the driver was doing then):", ""]
        for ms, wall, target, kind in slow:
            t = wall - soak.t0_wall
            stamp = datetime.datetime.fromtimestamp(wall).strftime("%H:%M:%S.%f")[:-3]
            lines.append(f"- {ms:,.0f} ms, {kind} {target}, sent at {stamp} ({t:.1f} s): {during(soak.events, t)}")
    stalls = lag_stalls(scraper.snapshots[scraper.snapshots.index(first_snap):] if first_snap else [], 0.25)
    if stalls:
        lines += ["", f"Event-loop stalls over 250 ms (per {args.rss_every:g} s metrics scrape):", ""]
        lines += [f"- {t0:.0f}–{t1:.0f} s: {n:.0f} sample(s) > 250 ms, the worst ≤ {worst * 1e3:,.0f} ms;"
                  f" {during(soak.events, t0, t1)}" for t0, t1, n, worst in stalls[:15]]
        if len(stalls) > 15:
            lines.append(f"- ... {len(stalls) - 15} more")
    lines += [
        "",
        "How measured: `bench/soak.py` (its docstring has the details). Models `a` (version v:"
        " y = 0.5x + v) and `b` (y = 0.5x + 100 + v) are half_plus_two exports, so each answer names"
        " its version. A swap publishes `a`'s next version (hidden folder, then one rename) and deletes"
        " the oldest; switch time is from the rename to the driver's first answer from it (the server"
        " first waits one 1 s poll to see the folder settle). A reload rewrites the config file (atomic"
        " rename, polled every"
        f" {args.config_poll} s), cycling: `a` only → + `b` (versions 1, 2) → labels stable=1 canary=2"
        " → labels swapped → `a` only. Requests to `b` continue throughout and must get its state's"
        " answer, NOT_FOUND while it is absent and INVALID_ARGUMENT for an unset label (counted as"
        " expected errors); during a swap or reload either state's answer is right. Latency is the"
        " client's (Python clients sharing one core with the driver). RSS: VmRSS of the server"
        f" process every {args.rss_every:g} s, CSV in the work dir; loop lag: the server's"
        " `edgeserve_event_loop_lag_seconds` histogram (a 0.25 s timer), p99 interpolated within"
        " its buckets.",
    ]
    return "\n".join(lines), passed


def during(events: list[Event], t: float, t_end: float | None = None) -> str:
    """The swaps and reloads that overlap [t, t_end] (each counted from its start to its
    end, plus 2 s)."""
    t_end = t if t_end is None else t_end
    found = [f"{e.kind} {e.detail} at {e.t:.1f} s" for e in events
             if e.t <= t_end and t <= e.t + max(e.done_s or 0.0, e.unload_s or 0.0) + 2.0]
    return ", ".join(found) if found else "no swap or reload in progress"


def lag_stalls(snapshots: list[dict], threshold: float) -> list[tuple[float, float, float, float]]:
    """(from s, to s, samples above threshold, the worst one's bucket bound) for each
    interval between two metrics scrapes with loop-lag samples above threshold."""
    found = []
    for a, b in zip(snapshots, snapshots[1:]):
        diff = bucket_diff(b["lag"], a["lag"])
        bounds = sorted((float(le), n) for le, n in diff.items())
        total = bounds[-1][1] if bounds else 0.0
        below = max((n for le, n in bounds if le <= threshold), default=0.0)
        if total - below > 0:
            grew = [le for (le, n), (_p, pn) in zip(bounds[1:], bounds) if n > pn]
            found.append((a["t"], b["t"], total - below, grew[-1] if grew else bounds[0][0]))
    return found


def write_csvs(soak: Soak, out: dict) -> None:
    with open(os.path.join(soak.workdir, "rss.csv"), "w") as f:
        f.write("t_s,rss_mib\n")
        for t, mb in out["samples"]:
            f.write(f"{t:.1f},{mb:.2f}\n")
    with open(os.path.join(soak.workdir, "events.csv"), "w") as f:
        f.write("t_s,kind,detail,done_s,unload_s,error\n")
        for e in soak.events:
            f.write(f"{e.t:.1f},{e.kind},\"{e.detail}\",{'' if e.done_s is None else f'{e.done_s:.3f}'},"
                    f"{'' if e.unload_s is None else f'{e.unload_s:.3f}'},\"{(e.error or '').replace(chr(34), chr(39))}\"\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description="Soak: mixed REST + gRPC load, version swaps and config reloads.")
    p.add_argument("--minutes", type=float, default=30.0, help="minutes of load (default 30)")
    p.add_argument("--swap-every", type=float, default=60.0, help="seconds between version swaps (default 60)")
    p.add_argument("--reload-every", type=float, default=300.0, help="seconds between config reloads (default 300)")
    p.add_argument("--rss-every", type=float, default=10.0, help="seconds between RSS samples (default 10)")
    p.add_argument("--warmup-minutes", type=float, default=5.0, help="minutes left out of the slope (default 5)")
    p.add_argument("--server-core", default="0", help="core for the server (default 0)")
    p.add_argument("--client-core", default="1", help="core for the load and this driver (default 1)")
    p.add_argument("--rest-rps", type=float, default=200.0, help="REST requests per second (default 200)")
    p.add_argument("--grpc-rps", type=float, default=200.0, help="gRPC requests per second (default 200)")
    p.add_argument("--threads", type=int, default=4, help="connections per protocol (default 4)")
    p.add_argument("--grpc-reconnect-every", type=int, default=0, metavar="CALLS",
                   help="replace each gRPC channel after this many calls (default 0: never; see the"
                        " note on h2's closed-stream memory in the report)")
    p.add_argument("--config-poll", type=int, default=1, help="--model_config_file_poll_wait_seconds (default 1)")
    p.add_argument("--action-timeout", type=float, default=60.0, help="seconds a swap or reload may take")
    p.add_argument("--workdir", help="work dir (default: a new /tmp/edgeserve-soak-*, kept)")
    p.add_argument("--output", default=RESULTS_MD, help="markdown file to write")
    args = p.parse_args(argv)
    if min(args.minutes, args.swap_every, args.reload_every, args.rss_every, args.rest_rps, args.grpc_rps,
           args.threads) <= 0:
        p.error("durations, rates and --threads must be positive")
    if args.warmup_minutes >= args.minutes:
        p.error("--warmup-minutes must be shorter than --minutes")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    t_start = time.monotonic()
    if not start_driver(args.client_core, f"server on core {args.server_core}, load on core {args.client_core}"):
        return 2
    info = machine_info()
    if args.workdir:
        workdir = os.path.abspath(args.workdir)
        os.makedirs(workdir)  # a fresh one: the run's files must not mix with an earlier run's
    else:
        workdir = tempfile.mkdtemp(prefix="edgeserve-soak-")
    print(f"work dir {workdir}", file=sys.stderr)
    procs = Processes(stop_timeout=15.0)  # the server's shutdown grace is 10 s
    soak = Soak(args, procs, workdir)
    try:
        out = run_soak(soak, args)
    except SystemExit:
        print("interrupted: stopping every process; no report", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
    write_csvs(soak, out)
    report, passed = build_report(args, info, soak, out, started, time.monotonic() - t_start)
    print(report)
    write_section("soak", report, args.output)
    print(f"written to {args.output} (section soak); RSS samples in {workdir}/rss.csv,"
          f" server log in {soak.server_log}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_export":
        export_main(sys.argv[2], int(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_client":
        client_main(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]), sys.argv[6],
                    int(sys.argv[7]))
    else:
        sys.exit(main())
