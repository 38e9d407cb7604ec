"""Batching benchmark: edgeserve with --enable_batching off, on (adaptive) and on with
TF Serving's fixed timeout, against one-request-per-call baselines, REST and gRPC.

    python bench/batching.py                 # 3 s per point, 1 round (~5.5 min)
    python bench/batching.py --quick         # 2 s per point, fewer baselines (~3 min)
    python bench/batching.py --servers on,fixed,bare --clients 1,64
    python bench/batching.py --profile on:mlp:rest:64   # + py-spy of one point

Models (bench/batching_model.py exports them): an MLP 784->256->256->10 (float32, one
row per request) and half_plus_two (the REST benchmark's three-row request). Load: 1, 16,
64 and 256 concurrent clients, closed loop -- REST: `wrk -t1 -cN` (N keep-alive
connections); gRPC: `h2load -t1 -cN -m1` (N h2c connections, one call in flight each).

Servers ("--servers"):
- off / on / fixed: one edgeserve process serving both models over REST and gRPC
  (--model_config_file); off without batching, on with --enable_batching and a
  BatchingParameters file (max_batch_size 128, batch_timeout_micros 1000,
  max_enqueued_batches 100, num_batch_threads 1: TF Serving's usual CPU settings),
  fixed the same plus --adaptive_batching=false (TF Serving's rule: a batch short of
  128 rows waits until its oldest request is 1 ms old);
- bare / bare_fast: the REST benchmark's bare uvloop + httptools loop (one model call per
  request, inline; bare: `session.make_callable`, bare_fast: edgeserve's session callable);
- grpcio_fast / grpcio: the gRPC benchmark's grpc.aio servicer (edgeserve's session
  callable / `session.run`), one model call per request.
Every server is pinned to core 0 (taskset), wrk / h2load and this driver to core 1.
In-process ceiling: the model called through edgeserve's call path at batch 1, 16, 64,
256 requests on core 0, no server.

Mean batch size: the exported models count their own runs (see batching_model.py): each
run adds 1 to a batches counter and its rows to a rows counter, read through a second
signature ("stats") over REST before and after each point; mean batch = delta rows /
delta runs, in requests (rows / rows per request). Exact, and the same counters run in
every server (the baselines' rows show 1 by construction: one call per request).

Targets (the issue's): at 64 clients, REST with batching >= 2x the bare loop and gRPC
with batching >= 1.5x the grpc.aio servicer, on both models; at 1 client, REST p50 with
batching <= 1.2x the bare loop's; and adaptive batching beating the fixed timeout at low
(1 client: p50) and at high load (256 clients: requests/s). Results: a table on stdout
and the "batching" section of bench/RESULTS.md, with bench/batching_notes.md (a hand-written
reading of a run) copied in when it exists. Every process is stopped on exit.
Imports nothing from edgeserve (runs it as `python -m edgeserve`).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from batching_model import BATCH_SIZES, HPT_NAME, MLP_NAME, request_rows, rows_per_request
from common import (
    BENCH_DIR, REPO_ROOT, Processes, fmt, free_port, median, run_for_json, start_driver, tail,
)
from grpc_bench import CLK_TCK, core_jiffies, cpu_seconds, parse_h2load, percentiles
from results_md import RESULTS_MD, write_section
from run import machine_info, parse_wrk

SERVER_CORE = "0"
CLIENT_CORE = "1"
CLIENTS = BATCH_SIZES  # 1, 16, 64, 256
MODELS = (MLP_NAME, HPT_NAME)
MODEL_LABELS = {MLP_NAME: "MLP", HPT_NAME: "half_plus_two"}
PROTOCOLS = ("rest", "grpc")
METHOD_PATH = "/tensorflow.serving.PredictionService/Predict"
HELPER = os.path.join(BENCH_DIR, "batching_model.py")
# Hand-written reading of a run (where the time goes, what to change), copied into the
# report when it exists, as bench/grpc_bench.py does with grpc_notes.md.
NOTES_MD = os.path.join(BENCH_DIR, "batching_notes.md")

BATCHING_PARAMETERS = """\
max_batch_size { value: 128 }
batch_timeout_micros { value: 1000 }
max_enqueued_batches { value: 100 }
num_batch_threads { value: 1 }
"""


@dataclass(frozen=True)
class Spec:
    label: str
    kind: str  # "edgeserve", "bare" or "grpcio"
    flags: tuple[str, ...] = ()
    fast: bool = False

    @property
    def protocols(self) -> tuple[str, ...]:
        return PROTOCOLS if self.kind == "edgeserve" else (("rest",) if self.kind == "bare" else ("grpc",))


SERVERS = {
    "off": Spec("edgeserve, batching off", "edgeserve"),
    "on": Spec("edgeserve, batching on (adaptive)", "edgeserve",
               ("--enable_batching", "--batching_parameters_file={params}")),
    "fixed": Spec("edgeserve, batching on, fixed 1 ms timeout", "edgeserve",
                  ("--enable_batching", "--batching_parameters_file={params}", "--adaptive_batching=false")),
    "bare": Spec("bare loop (make_callable)", "bare"),
    "bare_fast": Spec("bare loop (edgeserve's callable)", "bare", fast=True),
    "grpcio_fast": Spec("grpc.aio servicer (edgeserve's callable)", "grpcio", fast=True),
    "grpcio": Spec("grpc.aio servicer (session.run)", "grpcio"),
}
DEFAULT_SERVERS = tuple(SERVERS)
QUICK_SERVERS = ("off", "on", "fixed", "bare", "grpcio_fast")


# --------------------------------------------------------------------------- clients


class Client:
    """Requests for both models, REST bodies and wrk scripts, gRPC bodies, and the checks."""

    def __init__(self, workdir: str) -> None:
        import grpc
        import numpy as np
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

        self.grpc, self.np, self.tf = grpc, np, tf
        self.stub_class = prediction_service_pb2_grpc.PredictionServiceStub
        self.tf_version = tf.__version__
        self.rest_body: dict[str, bytes] = {}
        self.lua: dict[str, str] = {}
        self.grpc_request: dict[str, object] = {}
        self.grpc_body: dict[str, str] = {}
        self.expected: dict[str, list | None] = {MLP_NAME: None, HPT_NAME: [[2.5], [3.0], [4.5]]}
        for model in MODELS:
            rows = request_rows(model)
            body = json.dumps({"instances": rows}, separators=(",", ":"))
            self.rest_body[model] = body.encode()
            lua = os.path.join(workdir, f"{model}.lua")
            with open(lua, "w") as f:
                f.write(f'wrk.method = "POST"\nwrk.body = \'{body}\'\n'
                        'wrk.headers["Content-Type"] = "application/json"\n')
            self.lua[model] = lua
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.asarray(rows, dtype=np.float32)))
            self.grpc_request[model] = request
            message = request.SerializeToString()
            path = os.path.join(workdir, f"{model}.grpc")
            with open(path, "wb") as f:
                f.write(b"\x00" + len(message).to_bytes(4, "big") + message)
            self.grpc_body[model] = path

    def _close(self, model: str, got) -> str | None:
        """None if `got` (rows of y) is the right answer for one request of `model`."""
        want = self.expected[model]
        if want is None:  # the MLP: the first correct-shaped answer becomes the reference
            if len(got) != 1 or len(got[0]) != 10 or not all(map(math.isfinite, got[0])):
                return f"bad MLP answer shape/values: {str(got)[:120]}"
            self.expected[model] = want = got
        if len(got) != len(want) or any(abs(a - b) > 1e-3 * (1 + abs(b))
                                        for r, s in zip(got, want) for a, b in zip(r, s)):
            return f"wrong answer {str(got)[:120]} (expected {str(want)[:120]})"
        return None

    def rest_check(self, port: int, model: str, timeout: float = 2.0) -> str | None:
        """None when a REST predict answers correctly, else what went wrong."""
        try:
            status, body = http_post(port, f"/v1/models/{model}:predict", self.rest_body[model], timeout)
        except (OSError, http.client.HTTPException) as exc:
            return f"{type(exc).__name__}: {exc}"
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        try:
            return self._close(model, json.loads(body)["predictions"])
        except (ValueError, KeyError, TypeError) as exc:
            return f"bad JSON answer: {exc}"

    def grpc_check(self, port: int, model: str, timeout: float = 2.0) -> tuple[str | None, int]:
        """(None or the error, serialized response size) for one grpcio Predict."""
        channel = self.grpc.insecure_channel(f"127.0.0.1:{port}")
        try:
            response = self.stub_class(channel).Predict(self.grpc_request[model], timeout=timeout)
        except self.grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}", 0
        finally:
            channel.close()
        try:
            got = self.tf.make_ndarray(response.outputs["y"]).tolist()
        except Exception as exc:
            return f"bad response: {exc}", 0
        return self._close(model, got), len(response.SerializeToString())


def http_post(port: int, path: str, body: bytes, timeout: float) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def read_counters(port: int, model: str) -> tuple[int, int] | None:
    """(model runs, rows run) so far, from the model's "stats" signature over REST."""
    body = b'{"signature_name": "stats", "inputs": {"probe": [0.0]}}'
    try:
        status, answer = http_post(port, f"/v1/models/{model}:predict", body, 5.0)
        if status != 200:
            return None
        out = json.loads(answer)["outputs"]
        return int(out["batches"]), int(out["rows"])
    except (OSError, http.client.HTTPException, ValueError, KeyError, TypeError):
        return None


# --------------------------------------------------------------------------- servers


@dataclass
class Running:
    name: str
    proc: subprocess.Popen
    rest_port: int | None
    grpc_port: int | None
    log_path: str
    models: tuple[str, ...]
    response_bytes: dict[str, int] = field(default_factory=dict)
    startup_s: float | None = None


def server_command(name: str, spec: Spec, models: dict[str, str], model: str | None,
                   rest_port: int | None, grpc_port: int | None, workdir: str) -> list[str]:
    py = sys.executable
    if spec.kind == "edgeserve":
        config = os.path.join(workdir, "models.config")
        params = os.path.join(workdir, "batching_parameters.pbtxt")
        flags = [f.format(params=params) for f in spec.flags]
        return [py, "-m", "edgeserve", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
                "--bind_address=127.0.0.1", f"--model_config_file={config}",
                "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1", *flags]
    version_dir = os.path.join(models[model], "1")
    if spec.kind == "bare":
        return [py, HELPER, "bare", str(rest_port), version_dir, model] + (["fast"] if spec.fast else [])
    return [py, os.path.join(BENCH_DIR, "baseline_grpcio.py"), str(grpc_port), version_dir] + \
        (["fast"] if spec.fast else [])


def start_server(procs: Processes, client: Client, name: str, models: dict[str, str],
                 model: str | None, workdir: str, args) -> Running:
    """Spawns one server on core 0; returns once every model it serves answers correctly
    on every protocol it speaks. Raises RuntimeError (after stopping it) otherwise."""
    spec = SERVERS[name]
    rest_port = free_port() if "rest" in spec.protocols else None
    grpc_port = free_port() if "grpc" in spec.protocols else None
    served = MODELS if model is None else (model,)
    log_path = os.path.join(workdir, f"{name}.{model or 'all'}.log")
    cmd = ["taskset", "-c", SERVER_CORE] + server_command(name, spec, models, model, rest_port,
                                                          grpc_port, workdir)
    start = time.perf_counter()
    proc = procs.spawn(cmd, log_path)
    running = Running(name, proc, rest_port, grpc_port, log_path, served)
    waiting = {(m, p) for m in served for p in spec.protocols}
    last = "no answer"
    while waiting:
        if proc.poll() is not None:
            procs.stop(proc)
            raise RuntimeError(f"{name} exited with code {proc.returncode}: {tail(log_path)}")
        if time.perf_counter() - start > args.start_timeout:
            procs.stop(proc)
            raise RuntimeError(f"{name}: no correct answer within {args.start_timeout:g} s: {last}"
                               f" / log: {tail(log_path, 2)}")
        for m, p in sorted(waiting):
            if p == "rest":
                error = client.rest_check(rest_port, m, timeout=1.0)
            else:
                error, size = client.grpc_check(grpc_port, m, timeout=1.0)
                if error is None:
                    running.response_bytes[m] = size
            if error is None:
                waiting.discard((m, p))
            else:
                last = f"{m} {p}: {error}"
                if "wrong answer" in error or "bad" in error:
                    procs.stop(proc)
                    raise RuntimeError(f"{name}: {last}")
                break
        else:
            continue
        time.sleep(0.05)
    running.startup_s = time.perf_counter() - start
    return running


# --------------------------------------------------------------------------- load


def load_command(running: Running, client: Client, model: str, protocol: str, clients: int,
                 duration: float, log_path: str | None = None, one_connection: bool = False) -> list[str]:
    pin = ["taskset", "-c", CLIENT_CORE]
    if protocol == "rest":
        return pin + ["wrk", "-t1", f"-c{clients}", f"-d{duration:g}s", "--latency",
                      "-s", client.lua[model],
                      f"http://127.0.0.1:{running.rest_port}/v1/models/{model}:predict"]
    # N clients: N h2c connections with one call in flight each, or (--grpc-one-connection)
    # one connection with N concurrent streams, as bench/grpc_bench.py loads.
    conns, streams = (1, clients) if one_connection else (clients, 1)
    cmd = pin + ["h2load", "-t", "1", "-c", str(conns), "-m", str(streams), "-D", f"{duration:g}",
                 "-d", client.grpc_body[model],
                 "-H", "content-type: application/grpc", "-H", "te: trailers"]
    if log_path:
        cmd.append(f"--log-file={log_path}")
    return cmd + [f"http://127.0.0.1:{running.grpc_port}{METHOD_PATH}"]


def run_point(running: Running, client: Client, model: str, protocol: str, clients: int,
              duration: float, workdir: str, one_connection: bool = False) -> dict:
    """One load point: requests/s, p50/p99 µs, errors, mean batch, foreign load on core 0."""
    log_path = os.path.join(workdir, f"h2load.{running.name}.{model}.{clients}.tsv")
    if os.path.exists(log_path):
        os.unlink(log_path)  # h2load appends
    counting = running.rest_port is not None and SERVERS[running.name].kind == "edgeserve"
    before = read_counters(running.rest_port, model) if counting else None
    pid = running.proc.pid  # taskset execs: this is the server itself
    cpu0, core0 = cpu_seconds(pid), core_jiffies(SERVER_CORE)
    out = subprocess.run(load_command(running, client, model, protocol, clients, duration, log_path,
                                      one_connection),
                         capture_output=True, text=True, timeout=duration + 60)
    cpu1, core1 = cpu_seconds(pid), core_jiffies(SERVER_CORE)
    after = read_counters(running.rest_port, model) if counting else None
    if out.returncode != 0:
        raise ValueError(f"load generator exited {out.returncode}: {(out.stderr or out.stdout).strip()[-300:]}")
    if protocol == "rest":
        r = parse_wrk(out.stdout)
    else:
        h = parse_h2load(out.stdout)
        p50, p99, _ = percentiles(log_path)
        # A gRPC error is HTTP 200 + grpc-status: count calls whose DATA arrived.
        per_call = 5 + running.response_bytes[model]
        ok = min(h["succeeded"], h["data_bytes"] // per_call)
        r = {"rps": h["rps"], "p50_us": p50, "p99_us": p99,
             "errors": h["failed"] + h["non2xx"] + (h["succeeded"] - ok), "requests": h["done"]}
    core_total = (core1[1] - core0[1]) or 1
    r["foreign_pct"] = max(0.0, 100.0 * ((core1[0] - core0[0]) - (cpu1 - cpu0) * CLK_TCK) / core_total)
    r["server_cpu_pct"] = 100.0 * (cpu1 - cpu0) / duration
    # Requests per second of server CPU: what a core of its own would give, whatever else ran.
    r["capacity"] = r["rps"] * duration / (cpu1 - cpu0) if cpu1 > cpu0 else None
    if before and after and after[0] > before[0]:
        # The "stats" reads fetch the counters only: they are no runs of y.
        runs = after[0] - before[0]
        r["runs"] = runs
        r["mean_batch"] = (after[1] - before[1]) / runs / rows_per_request(model)
    elif not counting:
        r["mean_batch"] = 1.0  # one model call per request, by construction
    return r


class Budget:
    """Keeps the run under --time-limit: a disturbed point is repeated only while the
    points still to come fit in what is left."""

    def __init__(self, args, points: int, starts: int) -> None:
        self.t0 = time.monotonic()
        self.limit = args.time_limit
        self.per_point = args.duration + 0.4  # wrk/h2load start and the counter reads
        self.points_left = points
        self.starts_left = starts

    def may_repeat(self) -> bool:
        left = self.limit - (time.monotonic() - self.t0)
        return left > self.per_point * (self.points_left + 1) + 4.0 * self.starts_left


def measure(running: Running, client: Client, model: str, protocol: str, workdir: str, args,
            results: dict, budget: Budget) -> None:
    if args.warmup > 0:
        warm = subprocess.run(load_command(running, client, model, protocol, 16, args.warmup,
                                           one_connection=args.grpc_one_connection),
                              capture_output=True, text=True, timeout=args.warmup + 60)
        if warm.returncode != 0:
            raise ValueError(f"warm-up load exited {warm.returncode}: {(warm.stderr or warm.stdout).strip()[-300:]}")
    for c in args.clients:
        best = None
        for attempt in range(1 + args.retries):
            if attempt and not budget.may_repeat():
                break
            r = run_point(running, client, model, protocol, c, args.duration, workdir,
                          args.grpc_one_connection)
            r["attempts"] = attempt + 1
            if best is None or r["foreign_pct"] < best["foreign_pct"]:
                best = r
            if r["foreign_pct"] <= args.max_foreign:
                break
        best["attempts"] = r["attempts"]
        budget.points_left -= 1
        results.setdefault((running.name, model, protocol, c), []).append(best)
        print(f"  {running.name:11s} {model:13s} {protocol:4s} @{c:<3d} {best['rps']:9,.0f}/s"
              f" p50 {best['p50_us']:8,.0f} µs p99 {best['p99_us']:8,.0f} µs"
              f" batch {fmt(best.get('mean_batch'), 1):>5s} err {best['errors']}"
              f" other {best['foreign_pct']:.0f}% ({best['attempts']} runs)", file=sys.stderr)
        if running.proc.poll() is not None:
            raise RuntimeError(f"{running.name} died during the load: {tail(running.log_path)}")


def run_ceiling(procs: Processes, model_dir: str, workdir: str, seconds: float) -> dict:
    out_path = os.path.join(workdir, "ceiling.json")
    log_path = os.path.join(workdir, "ceiling.log")
    cmd = ["taskset", "-c", SERVER_CORE, sys.executable, HELPER, "ceiling", model_dir,
           "--seconds", f"{seconds:g}", "--json"]
    return run_for_json(procs, cmd, out_path, log_path, 300, "ceiling")


def export_models(procs: Processes, model_dir: str, workdir: str) -> dict:
    log_path = os.path.join(workdir, "export.log")
    if procs.run([sys.executable, HELPER, "export", model_dir], log_path, timeout=300) != 0:
        raise RuntimeError(f"model export failed: {tail(log_path, 10)}")
    with open(log_path) as f:
        lines = [l for l in f.read().splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


# --------------------------------------------------------------------------- report


def summarize(results: dict) -> dict:
    """Per cell: the median over rounds of each value."""
    rows = {}
    for key, runs in results.items():
        rows[key] = {k: median(r.get(k) for r in runs)
                     for k in ("rps", "p50_us", "p99_us", "mean_batch", "foreign_pct", "capacity")}
        rows[key]["errors"] = sum(r["errors"] for r in runs)
    return rows


def main_table(rows: dict, servers: list[str], clients: list[int]) -> list[str]:
    head = "| protocol | server | clients |"
    rule = "|---|---|---:|"
    for model in MODELS:
        m = MODEL_LABELS[model]
        head += f" {m} req/s | {m} p50 µs | {m} p99 µs | {m} batch |"
        rule += "---:|---:|---:|---:|"
    lines = [head + " errors |", rule + "---:|"]
    for protocol in PROTOCOLS:
        for name in servers:
            if protocol not in SERVERS[name].protocols:
                continue
            for c in clients:
                cells, errors, any_ = "", 0, False
                for model in MODELS:
                    r = rows.get((name, model, protocol, c))
                    if r is None:
                        cells += " — | — | — | — |"
                        continue
                    any_ = True
                    errors += r["errors"]
                    cells += (f" {fmt(r['rps'])} | {fmt(r['p50_us'])} | {fmt(r['p99_us'])}"
                              f" | {fmt(r['mean_batch'], 1)} |")
                if any_:
                    lines.append(f"| {protocol.upper() if protocol == 'rest' else 'gRPC'}"
                                 f" | {SERVERS[name].label} | {c} |{cells} {errors} |")
    return lines


def ceiling_table(ceiling: dict) -> list[str]:
    lines = ["| model | batch (requests) | rows | model call p50 µs | p99 µs | requests/s |",
             "|---|---:|---:|---:|---:|---:|"]
    for model in MODELS:
        c = ceiling[model]
        for n in BATCH_SIZES:
            r = c[str(n)]
            lines.append(f"| {MODEL_LABELS[model]} | {n} | {n * rows_per_request(model)}"
                         f" | {fmt(r['p50_us'], 1)} | {fmt(r['p99_us'], 1)} | {fmt(r['requests_per_s'])} |")
    return lines


def check(text: str, value, ref, limit: float, op: str, cap=None, cap_ref=None) -> str:
    """A target line: value / ref against limit, PASS or MISS; with cap/cap_ref (requests
    per server-CPU-second) the same ratio on them, for a shared machine."""
    if value is None or ref is None or ref <= 0:
        return f"- {text}: n/a (not measured)"
    ratio = value / ref
    ok = ratio >= limit if op == ">=" else ratio <= limit
    extra = f"; per server-CPU-second {cap / cap_ref:.2f}×" if cap and cap_ref else ""
    return f"- {text}: {ratio:.2f}× ({fmt(value)} vs {fmt(ref)}{extra}) → **{'PASS' if ok else 'MISS'}**"


def _get(rows: dict, name: str, model: str, protocol: str, c: int, key: str):
    return (rows.get((name, model, protocol, c)) or {}).get(key)


def target_lines(rows: dict) -> list[str]:
    def rps_check(text, model, protocol, c, ref_name, limit):
        return check(text, _get(rows, "on", model, protocol, c, "rps"), _get(rows, ref_name, model, protocol, c, "rps"),
                     limit, ">=", _get(rows, "on", model, protocol, c, "capacity"),
                     _get(rows, ref_name, model, protocol, c, "capacity"))

    out = []
    for model in MODELS:
        out.append(rps_check(f"{MODEL_LABELS[model]}: REST req/s @64, batching on ≥ 2 × bare loop (make_callable)",
                             model, "rest", 64, "bare", 2.0))
    for model in MODELS:
        out.append(rps_check(f"{MODEL_LABELS[model]}: gRPC req/s @64, batching on ≥ 1.5 × grpc.aio servicer"
                             " (edgeserve's callable)", model, "grpc", 64, "grpcio_fast", 1.5))
    for model in MODELS:
        out.append(check(f"{MODEL_LABELS[model]}: REST p50 @1, batching on ≤ 1.2 × bare loop (make_callable)",
                         _get(rows, "on", model, "rest", 1, "p50_us"), _get(rows, "bare", model, "rest", 1, "p50_us"),
                         1.2, "<="))
    out += ["", "Information (stricter baselines, and batching off):", ""]
    for model in MODELS:
        m = MODEL_LABELS[model]
        out.append(rps_check(f"{m}: REST req/s @64, batching on / bare loop with edgeserve's callable (≥ 2)",
                             model, "rest", 64, "bare_fast", 2.0))
        out.append(check(f"{m}: REST p50 @1, batching on / bare loop with edgeserve's callable (≤ 1.2)",
                         _get(rows, "on", model, "rest", 1, "p50_us"),
                         _get(rows, "bare_fast", model, "rest", 1, "p50_us"), 1.2, "<="))
        out.append(rps_check(f"{m}: gRPC req/s @64, batching on / grpc.aio servicer with session.run (≥ 1.5)",
                             model, "grpc", 64, "grpcio", 1.5))
        for protocol in PROTOCOLS:
            out.append(check(f"{m}: {'REST' if protocol == 'rest' else 'gRPC'} p50 @1, batching on / batching off"
                             " (≤ 1.2)", _get(rows, "on", model, protocol, 1, "p50_us"),
                             _get(rows, "off", model, protocol, 1, "p50_us"), 1.2, "<="))
    return out


def adaptive_lines(rows: dict, clients: list[int]) -> list[str]:
    """Adaptive (on) against TF Serving's fixed timeout (fixed), same parameters file."""
    if not any(k[0] == "fixed" for k in rows) or not any(k[0] == "on" for k in rows):
        return []
    head = "| model, protocol | p50 @1 µs adaptive / fixed |"
    rule = "|---|---:|"
    for c in clients:
        head += f" req/s @{c} adaptive / fixed (batch) |"
        rule += "---:|"
    out = [head + " low load (p50 @1 ≤ fixed) | high load (req/s @256 ≥ 0.95 × fixed) |", rule + "---|---|"]
    for protocol in PROTOCOLS:
        for model in MODELS:
            g = lambda name, c, key: _get(rows, name, model, protocol, c, key)  # noqa: E731
            line = (f"| {MODEL_LABELS[model]}, {'REST' if protocol == 'rest' else 'gRPC'}"
                    f" | {fmt(g('on', 1, 'p50_us'))} / {fmt(g('fixed', 1, 'p50_us'))} |")
            for c in clients:
                a, f = g("on", c, "rps"), g("fixed", c, "rps")
                ratio = f" = {a / f:.2f}×" if a and f else ""
                line += (f" {fmt(a)} / {fmt(f)}{ratio} ({fmt(g('on', c, 'mean_batch'), 1)} /"
                         f" {fmt(g('fixed', c, 'mean_batch'), 1)}) |")
            low = g("on", 1, "p50_us"), g("fixed", 1, "p50_us")
            high = g("on", 256, "rps"), g("fixed", 256, "rps")
            verdict = lambda ok: "—" if ok is None else ("**PASS**" if ok else "**MISS**")  # noqa: E731
            line += (f" {verdict(None if None in low else low[0] <= low[1])}"
                     f" | {verdict(None if None in high else high[0] >= 0.95 * high[1])} |")
            out.append(line)
    return out


def raw_lines(results: dict) -> list[str]:
    lines = ["| server | model | protocol | clients | req/s | p50 µs | p99 µs | batch | errors"
             " | other procs on core 0 % | runs | server CPU % | req per server-CPU-s |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for (name, model, protocol, c), runs in results.items():
        for r in runs:
            lines.append(f"| {name} | {model} | {protocol} | {c} | {fmt(r['rps'])} | {fmt(r['p50_us'])}"
                         f" | {fmt(r['p99_us'])} | {fmt(r.get('mean_batch'), 2)} | {r['errors']}"
                         f" | {fmt(r['foreign_pct'])} | {r.get('attempts', 1)} | {fmt(r['server_cpu_pct'])}"
                         f" | {fmt(r.get('capacity'))} |")
    return lines


def build_report(args, info: dict, h2load: str, tf_version: str, rows: dict, results: dict,
                 ceiling: dict | None, startups: dict, failures: dict, started, runtime_s: float,
                 notes: str) -> str:
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT)]
                                   + sys.argv[1:])
    out = [
        "# edgeserve batching benchmark",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, Linux {info['kernel']}",
        f"- software: Python {info['python']}, TensorFlow {tf_version}, {info['wrk']}, {h2load}",
        f"- command: `{command}` ({runtime_s:.0f} s)",
        f"- {args.rounds} round(s), {args.duration:g} s per point (+{args.warmup:g} s warm-up at 16"
        " clients per model and protocol); servers on core 0, load generator on core 1",
        "- batching parameters (on and fixed): "
        + ", ".join(line.strip() for line in BATCHING_PARAMETERS.strip().splitlines()),
        "",
        "batch = mean requests per model run, measured by the model's own run counters (see"
        " How measured); baselines make one run per request.",
        "",
        *main_table(rows, args.servers, args.clients),
    ]
    for name, reason in failures.items():
        out.append(f"\n{name}: not measured — {reason}")
    errs = {k: r["errors"] for k, r in rows.items() if r["errors"]}
    if errs:
        out.append("\n**Warning: failed requests (non-2xx, socket errors/timeouts, or gRPC errors found"
                   " by the DATA-byte check):** " + ", ".join(f"{'/'.join(map(str, k))}: {n}"
                                                              for k, n in errs.items()))
    if ceiling:
        out += ["", "## Ceiling: the model called in-process (edgeserve's call path, core 0, no server)", "",
                *ceiling_table(ceiling), ""]
        for model in MODELS:
            c = ceiling[model]
            out.append(f"- {MODEL_LABELS[model]} batch 1: `session.run` p50 {fmt(c['session_run_1']['p50_us'], 1)} µs;"
                       f" without the run counters p50 {fmt(c['no_counters_1']['p50_us'], 1)} µs"
                       f" (with: {fmt(c['1']['p50_us'], 1)} µs)")
    out += ["", "## Targets", "", *target_lines(rows)]
    adaptive = adaptive_lines(rows, args.clients)
    if adaptive:
        out += ["", "## Adaptive rule against TF Serving's fixed timeout", "",
                "Same BatchingParameters file; fixed adds `--adaptive_batching=false` (a batch short of"
                " max_batch_size rows waits until its oldest request is batch_timeout_micros old)."
                " High load counts as a tie within 5 % (the run-to-run noise here): once the queue"
                " alone fills batches to max_batch_size, both rules run the same batches (the batch"
                " sizes in brackets).", "", *adaptive]
    if notes:
        out += ["", notes.strip()]
    out += [
        "",
        "## How measured",
        "",
        "Models: `bench/batching_model.py export` writes two TF1-graph SavedModels: an MLP"
        " 784→256→256→10 (float32, ReLU, fixed-seed weights; a request is one 784-float row, a"
        f" {len(MLP_BODY_HINT):,}-byte JSON body, 3,136 bytes of tensor_content over gRPC) and half_plus_two"
        " (y = 0.5x + 2; a request is the REST benchmark's three rows). The output y carries a"
        " control dependency on two int64 `AssignAdd`s (runs += 1, rows += batch rows), and a"
        " second signature \"stats\" returns both counters; the driver reads them over REST"
        " before and after every point of an edgeserve server, so batch = Δrows / Δruns /"
        " rows per request is exact (the two reads themselves are not model runs of y). The"
        " counters cost ~2-3 µs a run (the ceiling's \"without the run counters\"), paid alike"
        " by every server.",
        "",
        "Servers: one edgeserve process per configuration serves both models (REST and gRPC,"
        " `--model_config_file`, one TF intra-op and inter-op thread); each baseline process"
        " serves one model: the bare loop is bench/baseline_bare.py (uvloop + httptools, orjson,"
        " the model run inline, one call per request) via `batching_model.py bare`; the"
        " grpc.aio servicer is bench/baseline_grpcio.py. Each is started fresh, pinned to core 0;"
        " the first correct answer of every model and protocol it serves ends the start-up.",
        "",
        "Load: closed loop, pinned to core 1. REST: `wrk -t1 -cN -dD --latency` POSTing"
        " `{\"instances\": [...]}` (p50/p99 from wrk's latency distribution). gRPC: `h2load -t1"
        " -cN -m1 -D D` (N h2c connections, one call in flight on each) POSTing the"
        " length-prefixed PredictRequest (`tf.make_tensor_proto`, tensor_content) with"
        " `content-type: application/grpc`; p50/p99 from its --log-file; a call counts as"
        " failed unless its response DATA arrived (h2load sees only HTTP status). Before a"
        " server's first point per model and protocol, a warm-up run at 16 clients (edgeserve"
        " times its runs before running them inline). A point during which other processes"
        f" used more than {args.max_foreign:g} % of core 0 (busy jiffies from /proc/stat minus"
        f" the server's own CPU time) is repeated up to {args.retries} times while the run stays within"
        f" {args.time_limit:g} s, the least disturbed kept: the machine is shared (other"
        " sessions run tests on both cores). \"req per server-CPU-s\" (per-point table) is"
        " requests / server CPU seconds (utime + stime of all its threads): what the server"
        " would do on a core of its own, far less moved by such interference than req/s.",
        "",
        "Start-up (s): " + ", ".join(f"{k} {v:.1f}" for k, v in startups.items()),
        "",
        "## Per-point values",
        "",
        *raw_lines(results),
        "",
    ]
    return "\n".join(out)


MLP_BODY_HINT = json.dumps({"instances": request_rows(MLP_NAME)}, separators=(",", ":"))


# --------------------------------------------------------------------------- profile


def profile_point(procs: Processes, client: Client, target: str, models: dict, workdir: str,
                  args) -> str:
    """py-spy record of one point: NAME:MODEL:PROTOCOL:CLIENTS; returns the raw-stack path."""
    name, model, protocol, clients = target.split(":")
    spec = SERVERS[name]
    running = start_server(procs, client, name, models, None if spec.kind == "edgeserve" else model,
                           workdir, args)
    try:
        subprocess.run(load_command(running, client, model, protocol, 16, 1), capture_output=True,
                       timeout=60)
        seconds = args.profile_duration
        load = subprocess.Popen(load_command(running, client, model, protocol, int(clients), seconds + 3),
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.running.append(load)
        try:
            time.sleep(1.0)
            raw = os.path.join(args.profile_dir, f"batching-profile-{name}-{model}-{protocol}-{clients}.txt")
            spy = subprocess.run(["taskset", "-c", CLIENT_CORE, "py-spy", "record", "-p",
                                  str(running.proc.pid), "-d", f"{seconds:g}", "-r", "200",
                                  "--format", "raw", "--threads", "-o", raw],
                                 capture_output=True, text=True, timeout=seconds + 120)
            load.communicate(timeout=seconds + 60)
        finally:
            if load.poll() is None:
                load.kill()
                load.wait()
            procs.running.remove(load)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {(spy.stderr or spy.stdout).strip()[-300:]}")
        return raw
    finally:
        procs.stop(running.proc)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description="Batching benchmark: edgeserve batching off/on/fixed vs baselines.")
    p.add_argument("--servers", default=None,
                   help=f"comma-separated subset of {','.join(SERVERS)} (default: all;"
                        f" --quick: {','.join(QUICK_SERVERS)})")
    p.add_argument("--clients", default=",".join(map(str, CLIENTS)), help="default 1,16,64,256")
    # wrk and h2load take whole seconds only.
    p.add_argument("--duration", type=int, default=3, help="whole seconds per point (default 3)")
    p.add_argument("--warmup", type=int, default=1,
                   help="whole seconds of warm-up at 16 clients per model and protocol (default 1; 0 skips)")
    p.add_argument("--rounds", type=int, default=1, help="rounds over all servers (default 1; cells: medians)")
    p.add_argument("--quick", action="store_true", help="2 s per point, fewer baselines")
    p.add_argument("--max-foreign", type=float, default=5.0,
                   help="%% of core 0 other processes may use in a point before it is repeated (default 5)")
    p.add_argument("--retries", type=int, default=2,
                   help="repeats of a disturbed point, while --time-limit allows (default 2)")
    p.add_argument("--time-limit", type=float, default=450.0,
                   help="seconds the whole run should stay under; repeats are skipped beyond it (default 450)")
    p.add_argument("--grpc-one-connection", action="store_true",
                   help="gRPC load over one h2c connection with N streams (as grpc_bench.py)"
                        " instead of N connections")
    p.add_argument("--ceiling-seconds", type=float, default=0.4, help="per batch size (default 0.4)")
    p.add_argument("--no-ceiling", action="store_true")
    p.add_argument("--profile", default="", help="NAME:MODEL:PROTOCOL:CLIENTS[,...] to record with py-spy"
                                                 " after the run (e.g. on:mlp:rest:64)")
    p.add_argument("--profile-duration", type=int, default=5)
    p.add_argument("--profile-dir", default=tempfile.gettempdir())
    p.add_argument("--notes", default=NOTES_MD,
                   help="markdown copied into the report (default: bench/batching_notes.md, if it exists)")
    p.add_argument("--start-timeout", type=float, default=120.0)
    p.add_argument("--output", default=RESULTS_MD)
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = p.parse_args(argv)
    if args.quick:
        args.duration = 2
    if args.servers is None:
        args.servers = ",".join(QUICK_SERVERS if args.quick else DEFAULT_SERVERS)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}")
    args.clients = [int(c) for c in args.clients.split(",") if c.strip()]
    args.profile = [t.strip() for t in args.profile.split(",") if t.strip()]
    for t in args.profile:
        parts = t.split(":")
        if len(parts) != 4 or parts[0] not in SERVERS or parts[1] not in MODELS or parts[2] not in PROTOCOLS:
            p.error(f"bad --profile target {t!r}")
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("--rounds must be >= 1, --duration > 0 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    t0 = time.monotonic()
    for tool in ("wrk", "h2load", "taskset"):
        if not shutil.which(tool):
            print(f"error: {tool} not found", file=sys.stderr)
            return 2
    if not start_driver(CLIENT_CORE, "servers on core 0, wrk/h2load on core 1"):
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    info = machine_info()
    h2load = subprocess.run(["h2load", "--version"], capture_output=True, text=True).stdout.strip()
    procs = Processes(stop_timeout=10)
    results: dict = {}
    startups: dict[str, float] = {}
    failures: dict[str, str] = {}
    ceiling = None
    tf_version = "unknown"
    profiles: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgeserve-batching-bench-") as workdir:
        try:
            print("exporting the models ...", file=sys.stderr)
            model_dir = os.path.join(workdir, "models")
            exported = export_models(procs, model_dir, workdir)
            models = {m: exported[m] for m in MODELS}
            with open(os.path.join(workdir, "models.config"), "w") as f:
                f.write("model_config_list {\n" + "".join(
                    f'  config {{ name: "{m}" base_path: "{p}" model_platform: "tensorflow" }}\n'
                    for m, p in models.items()) + "}\n")
            with open(os.path.join(workdir, "batching_parameters.pbtxt"), "w") as f:
                f.write(BATCHING_PARAMETERS)
            print("loading the gRPC client ...", file=sys.stderr)
            client = Client(workdir)
            tf_version = client.tf_version
            if not args.no_ceiling:
                print("in-process ceiling ...", file=sys.stderr)
                ceiling = run_ceiling(procs, model_dir, workdir, args.ceiling_seconds)
            starts = args.rounds * sum(1 if SERVERS[n].kind == "edgeserve" else len(MODELS)
                                       for n in args.servers)
            points = args.rounds * len(args.clients) * sum(len(MODELS) * len(SERVERS[n].protocols)
                                                           for n in args.servers)
            budget = Budget(args, points, starts)
            budget.t0 = t0
            for round_no in range(1, args.rounds + 1):
                for name in args.servers:
                    spec = SERVERS[name]
                    for model in (None,) if spec.kind == "edgeserve" else MODELS:
                        tag = name if model is None else f"{name}/{model}"
                        print(f"round {round_no}: {tag}", file=sys.stderr)
                        budget.starts_left -= 1
                        try:
                            running = start_server(procs, client, name, models, model, workdir, args)
                        except RuntimeError as exc:
                            failures[tag] = str(exc)
                            print(f"  {exc}", file=sys.stderr)
                            continue
                        startups[tag] = running.startup_s
                        try:
                            for m in running.models:
                                for protocol in spec.protocols:
                                    measure(running, client, m, protocol, workdir, args, results, budget)
                        except (RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                            failures[tag] = str(exc)
                            print(f"  {exc}", file=sys.stderr)
                        finally:
                            procs.stop(running.proc)
            for target in args.profile:
                print(f"profile: {target}", file=sys.stderr)
                try:
                    profiles.append(profile_point(procs, client, target, models, workdir, args))
                    print(f"  raw stacks: {profiles[-1]}", file=sys.stderr)
                except (RuntimeError, subprocess.SubprocessError) as exc:
                    print(f"  {exc}", file=sys.stderr)
        finally:
            procs.stop_all()
    notes = ""
    if args.notes and os.path.exists(args.notes):
        with open(args.notes) as f:
            notes = f.read()
    rows = summarize(results)
    runtime_s = time.monotonic() - t0
    report = build_report(args, info, h2load, tf_version, rows,
                          results, ceiling, startups, failures, started, runtime_s, notes)
    print(report)
    if not args.no_write:
        write_section("batching", report, args.output)
        print(f"written to {args.output} (section batching)", file=sys.stderr)
    print(f"runtime {runtime_s:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
