"""Benchmark driver: edgeserve against FastAPI, a bare uvloop server and session.run.

    python bench/run.py                      # 2 rounds, 5 s per wrk point
    python bench/run.py --quick              # 1 round, 2 s per point (smoke check)
    python bench/run.py --servers fastapi,bare --rounds 3 --duration 10

Each server runs as a subprocess pinned to core 0 (`taskset -c 0`); wrk runs pinned
to core 1, and so does this driver. Per server and round: start-up time (spawn ->
first correct predict, polled every 10 ms), idle RSS (VmRSS of the process and its
children right after start-up), then wrk at 1, 16 and 64 connections. Servers run in
rounds (A B C A B C ...) and each cell is the median over rounds, so machine noise
hits every row alike. The in-process row is bench/inprocess.py (session.run, batch 1)
on core 0. Results: a markdown table on stdout and in its own section of bench/RESULTS.md (results_md.py),
followed by edgeserve's target ratios with PASS/FAIL.

A server that cannot start (e.g. edgeserve before it exists) gets a "not available"
row; the others are still measured. Every subprocess is stopped on exit, even on error.
Owns only bench/; imports nothing from edgeserve (it runs it as `python -m edgeserve`).
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from common import (
    BENCH_DIR, MODEL_NAME, REPO_ROOT, Processes, child_env, export_model, fmt, free_port, median, rss_mb,
    run_for_json, start_driver, tail,
)
from results_md import write_section

POST_LUA = os.path.join(BENCH_DIR, "post.lua")
RESULTS_MD = os.path.join(BENCH_DIR, "RESULTS.md")

PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"
REQUEST_BODY = b'{"instances": [[1.0], [2.0], [5.0]]}'
EXPECTED = [[2.5], [3.0], [4.5]]

SERVER_CORE = "0"
CLIENT_CORE = "1"
CONNECTIONS = (1, 16, 64)
SERVERS = ("edgeserve", "edgeserve_metrics_off", "edgeserve_request_log", "edgeserve_lite", "edgeserve_lite_pyz", "fastapi", "bare", "bare_fast")
LITE_PYZ = os.path.join(REPO_ROOT, "dist", "edgeserve-lite.pyz")  # make pyz-lite
LABELS = {
    "inprocess": "in-process session.run",
    "edgeserve": "edgeserve (defaults: the status page records metrics)",
    "edgeserve_metrics_off": "edgeserve, status page and metrics off",
    "edgeserve_request_log": "edgeserve, every request logged (sampling_rate 1)",
    "edgeserve_lite": "edgeserve, TFLite (no TensorFlow in the process)",
    "edgeserve_lite_pyz": "edgeserve-lite.pyz, TFLite",
    "fastapi": "FastAPI + uvicorn",
    "bare": "bare uvloop + httptools",
    "bare_fast": "bare loop, edgeserve's session callable",
}
POLL_INTERVAL = 0.010
RSS_SETTLE = 0.5


# --------------------------------------------------------------------------- helpers


def server_command(name: str, port: int, model_base: str, workdir: str) -> list[str]:
    py = sys.executable
    version_dir = os.path.join(model_base, "1")
    if name in ("edgeserve", "edgeserve_metrics_off"):
        command = [
            py, "-m", "edgeserve",
            f"--rest_api_port={port}", "--port=0", "--bind_address=127.0.0.1",
            f"--model_name={MODEL_NAME}", f"--model_base_path={model_base}",
            "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
        ]
        if name == "edgeserve_metrics_off":  # what recording costs: the default page turns it on
            command.append("--enable_status_page=false")
        return command
    if name == "edgeserve_request_log":  # the worst case of request logging: every request
        logs = tempfile.mkdtemp(prefix="request-logs-", dir=workdir)
        config = os.path.join(logs, "models.config")
        with open(config, "w") as f:
            f.write(f'''model_config_list {{ config {{
  name: "{MODEL_NAME}" base_path: "{model_base}" model_platform: "tensorflow"
  logging_config {{ log_collector_config {{ filename_prefix: "{logs}/{MODEL_NAME}" }}
                   sampling_config {{ sampling_rate: 1.0 }} }} }} }}''')
        return [
            py, "-m", "edgeserve",
            f"--rest_api_port={port}", "--port=0", "--bind_address=127.0.0.1", f"--model_config_file={config}",
            "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
            "--request_log_max_total_bytes=0",
        ]
    if name in ("edgeserve_lite", "edgeserve_lite_pyz"):
        # The same folder's model.tflite (bench/tflite_model.py), never TensorFlow.
        start = [py, "-m", "edgeserve"] if name == "edgeserve_lite" else [py, "-I", "-S", LITE_PYZ]
        return start + [
            f"--rest_api_port={port}", "--port=0", "--bind_address=127.0.0.1",
            f"--model_name={MODEL_NAME}", f"--model_base_path={model_base}", "--prefer_tflite_model",
            "--num_tflite_pools=1",
        ]
    if name == "fastapi":
        return [py, os.path.join(BENCH_DIR, "baseline_fastapi.py"), str(port), version_dir]
    if name == "bare":
        return [py, os.path.join(BENCH_DIR, "baseline_bare.py"), str(port), version_dir]
    if name == "bare_fast":
        return [py, os.path.join(BENCH_DIR, "baseline_bare.py"), str(port), version_dir, "fast"]
    raise ValueError(name)


def predict_once(port: int, timeout: float = 2.0) -> bool:
    """True iff one POST predict answers 200 with the expected predictions."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", PREDICT_PATH, REQUEST_BODY, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        return resp.status == 200 and json.loads(body).get("predictions") == EXPECTED
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse_wrk(output: str) -> dict:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if not (rps and p50 and p99):
        raise ValueError("unparsable wrk output:\n" + output)
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    total = re.search(r"(\d+) requests in", output)
    return {
        "rps": float(rps.group(1)),
        "p50_us": _to_us(p50.group(1)),
        "p99_us": _to_us(p99.group(1)),
        "errors": errors,
        "requests": int(total.group(1)) if total else 0,
    }


def run_wrk(port: int, connections: int, duration: float) -> dict:
    cmd = [
        "taskset", "-c", CLIENT_CORE, "wrk", "-t1", f"-c{connections}", f"-d{duration:g}s",
        "--latency", "-s", POST_LUA, f"http://127.0.0.1:{port}{PREDICT_PATH}",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    return parse_wrk(out.stdout)


def machine_info() -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        wrk_version = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        wrk_version = wrk_version.splitlines()[0].split(" Copyright")[0].strip()
    except (OSError, IndexError):
        wrk_version = "unknown"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "wrk": wrk_version,
    }


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    name: str
    port: int
    proc: subprocess.Popen
    log_path: str


@dataclass
class Round:
    """One server's measurements in one round (None where unavailable)."""

    startup_s: float | None = None
    rss_mb: float | None = None
    wrk: dict[int, dict] = field(default_factory=dict)
    error: str | None = None


def measure_server(procs: Processes, name: str, model_base: str, workdir: str, args,
                   round_no: int) -> Round:
    port = free_port()
    log_path = os.path.join(workdir, f"{name}.round{round_no}.log")
    cmd = ["taskset", "-c", SERVER_CORE] + server_command(name, port, model_base, workdir)
    result = Round()
    start = time.perf_counter()
    proc = procs.spawn(cmd, log_path)
    try:
        deadline = start + args.start_timeout
        while True:
            if predict_once(port, timeout=max(0.1, min(2.0, deadline - time.perf_counter()))):
                result.startup_s = time.perf_counter() - start
                break
            if proc.poll() is not None:
                result.error = f"exited with code {proc.returncode}: {tail(log_path)}"
                return result
            if time.perf_counter() > deadline:
                result.error = f"no correct predict within {args.start_timeout:g} s: {tail(log_path)}"
                return result
            time.sleep(POLL_INTERVAL)
        time.sleep(RSS_SETTLE)
        result.rss_mb = rss_mb(proc.pid)
        try:
            if args.warmup > 0:
                run_wrk(port, 16, args.warmup)
            for c in CONNECTIONS:
                result.wrk[c] = run_wrk(port, c, args.duration)
                if proc.poll() is not None:
                    result.error = f"died during wrk -c{c}: {tail(log_path)}"
                    return result
        except (subprocess.SubprocessError, ValueError) as exc:
            # A failed wrk point costs this round's remaining cells, not the whole run.
            result.error = f"wrk failed: {exc}"
        return result
    finally:
        procs.stop(proc)


def measure_inprocess(procs: Processes, model_base: str, workdir: str, args,
                      round_no: int) -> dict:
    log_path = os.path.join(workdir, f"inprocess.round{round_no}.log")
    out_path = os.path.join(workdir, f"inprocess.round{round_no}.json")
    cmd = [
        "taskset", "-c", SERVER_CORE, sys.executable, os.path.join(BENCH_DIR, "inprocess.py"),
        os.path.join(model_base, "1"), "--duration", f"{args.duration:g}", "--json",
    ]
    return run_for_json(procs, cmd, out_path, log_path, 2 * args.duration + 120, "inprocess.py")


# --------------------------------------------------------------------------- report


def summarize(rounds: list[Round]) -> dict | None:
    """Per-cell medians over the rounds that produced that cell; None if none did."""
    ok = [r for r in rounds if r.startup_s is not None]
    if not ok:
        return None
    row = {"startup_s": median(r.startup_s for r in ok), "rss_mb": median(r.rss_mb for r in ok),
           "errors": sum(w["errors"] for r in ok for w in r.wrk.values())}
    for c in CONNECTIONS:
        cells = [r.wrk[c] for r in ok if c in r.wrk]
        for key in ("rps", "p50_us", "p99_us"):
            row[f"{key}@{c}"] = median(w[key] for w in cells)
    return row


def results_table(rows: dict[str, dict | None]) -> list[str]:
    lines = [
        "| | rps @1 | rps @16 | rps @64 | p50 @1 µs | p99 @1 µs | p50 @16 µs | p99 @16 µs"
        " | idle RSS MB | start-up s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        label = LABELS[name]
        if name == "inprocess":
            label += " ¹"
        if row is None:
            lines.append(f"| {label} | not available | | | | | | | | |")
            continue
        lines.append(
            f"| {label} | {fmt(row.get('rps@1'))} | {fmt(row.get('rps@16'))}"
            f" | {fmt(row.get('rps@64'))} | {fmt(row.get('p50_us@1'))} | {fmt(row.get('p99_us@1'))}"
            f" | {fmt(row.get('p50_us@16'))} | {fmt(row.get('p99_us@16'))}"
            f" | {fmt(row.get('rss_mb'), 1)} | {fmt(row.get('startup_s'), 2)} |"
        )
    return lines


def target_lines(rows: dict[str, dict | None]) -> list[str]:
    e, f, b = rows.get("edgeserve"), rows.get("fastapi"), rows.get("bare")
    bf = rows.get("bare_fast")
    checks = [
        # (text, key, reference row, "ratio" or "diff", ">=" or "<=", limit)
        ("edgeserve rps@16 ≥ 2.2 × FastAPI rps@16", "rps@16", f, "ratio", ">=", 2.2),
        ("edgeserve rps@16 ≥ 0.9 × bare rps@16", "rps@16", b, "ratio", ">=", 0.9),
        ("edgeserve p50@1 ≤ 1.2 × bare p50@1", "p50_us@1", b, "ratio", "<=", 1.2),
        ("edgeserve idle RSS ≤ bare idle RSS + 40 MB", "rss_mb", b, "diff", "<=", 40.0),
        ("edgeserve start-up ≤ 1.2 × bare start-up", "startup_s", b, "ratio", "<=", 1.2),
        # Not an issue target: the same floor with edgeserve's faster session call,
        # so the ratio shows what TF Serving's semantics cost, not the call path.
        ("edgeserve rps@16 ≥ 0.9 × bare-with-edgeserve's-callable rps@16 (information)",
         "rps@16", bf, "ratio", ">=", 0.9),
    ]
    em = rows.get("edgeserve_metrics_off")
    lines = []
    for text, key, ref, kind, op, limit in checks:
        ev = e.get(key) if e else None
        rv = ref.get(key) if ref else None
        if ev is None or rv is None or (kind == "ratio" and rv <= 0):
            missing = "edgeserve" if ev is None else "baseline"
            lines.append(f"- {text}: n/a ({missing} not measured)")
            continue
        value = ev / rv if kind == "ratio" else ev - rv
        ok = value >= limit if op == ">=" else value <= limit
        shown = f"{value:.2f}×" if kind == "ratio" else f"{value:+.1f} MB"
        lines.append(f"- {text}: {shown} (edgeserve {fmt(ev, 2)}, reference {fmt(rv, 2)})"
                     f" → **{'PASS' if ok else 'FAIL'}**")
    lite, lite_pyz = rows.get("edgeserve_lite"), rows.get("edgeserve_lite_pyz")
    if lite_pyz:
        # The lite install is the zipapp: `python -m edgeserve` here runs beside an
        # installed TensorFlow, so it also imports ml_dtypes (bfloat16, 0.6 s).
        lite_checks = [
            ("lite install (edgeserve-lite.pyz) idle RSS ≤ 64 MB", lite_pyz.get("rss_mb"), 64.0,
             f"{fmt(lite_pyz.get('rss_mb'), 1)} MB"),
            ("lite install (edgeserve-lite.pyz, unpacked) start-up ≤ 0.5 s", lite_pyz.get("startup_s"), 0.5,
             f"{fmt(lite_pyz.get('startup_s'), 2)} s"),
        ]
        if os.path.exists(LITE_PYZ):
            size = os.path.getsize(LITE_PYZ) / 2**20
            lite_checks.append(("edgeserve-lite.pyz ≤ 40 MB", size, 40.0, f"{size:.1f} MiB"))
        for text, value, limit, shown in lite_checks:
            if value is not None:
                lines.append(f"- {text}: {shown} → **{'PASS' if value <= limit else 'FAIL'}**")
    if lite:
        if e and e.get("rps@16") and lite.get("rps@16"):
            lines.append(f"- TFLite / SavedModel, rps@16 (information): {lite['rps@16'] / e['rps@16']:.2f}×"
                         f" ({fmt(lite['rps@16'])} vs {fmt(e['rps@16'])})")
    if e and em and e.get("rps@16") and em.get("rps@16"):
        lines.append(f"- metrics recorded (the default) / off, rps@16 (information): {e['rps@16'] / em['rps@16']:.2f}×"
                     f" ({fmt(e['rps@16'])} vs {fmt(em['rps@16'])})")
    rl = rows.get("edgeserve_request_log")
    if e and rl and e.get("rps@16") and rl.get("rps@16"):
        lines.append(f"- every request logged / none, rps@16 (information): {rl['rps@16'] / e['rps@16']:.2f}×"
                     f" ({fmt(rl['rps@16'])} vs {fmt(e['rps@16'])})")
    return lines


def raw_lines(all_rounds: dict[str, list], inproc_rounds: list[dict]) -> list[str]:
    lines = ["| server | round | start-up s | RSS MB | rps @1 | rps @16 | rps @64"
             " | p50 @1 µs | p50 @16 µs | p50 @64 µs | p99 @64 µs | errors |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(inproc_rounds, 1):
        s = r["session_run"]
        lines.append(f"| in-process | {i} | | | {fmt(s['calls_per_s'])} | | | {fmt(s['p50_us'], 1)}"
                     " | | | | |")
    for name, rounds in all_rounds.items():
        for i, r in enumerate(rounds, 1):
            if r.startup_s is None:
                lines.append(f"| {name} | {i} | not available: {r.error} | | | | | | | | | |")
                continue
            w = r.wrk
            g = lambda c, k, d=0: fmt(w[c][k], d) if c in w else "—"  # noqa: E731
            errors = sum(x["errors"] for x in w.values())
            lines.append(
                f"| {name} | {i} | {fmt(r.startup_s, 2)} | {fmt(r.rss_mb, 1)} | {g(1, 'rps')}"
                f" | {g(16, 'rps')} | {g(64, 'rps')} | {g(1, 'p50_us')} | {g(16, 'p50_us')}"
                f" | {g(64, 'p50_us')} | {g(64, 'p99_us')} | {errors}"
                + (f" ({r.error})" if r.error else "") + " |"
            )
    return lines


def build_report(args, info: dict, tf_version: str, rows, unavailable, all_rounds,
                 inproc_rounds, started: datetime.datetime) -> str:
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT)]
                                   + sys.argv[1:])
    out = [
        "# edgeserve benchmark results",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, Linux {info['kernel']}",
        f"- software: Python {info['python']}, TensorFlow {tf_version}, {info['wrk']}",
        f"- command: `{command}`",
        f"- rounds: {args.rounds}, {args.duration:g} s per wrk point"
        f" (+{args.warmup:g} s warm-up at 16 connections per server start)",
        "",
        *results_table(rows),
    ]
    if "inprocess" in rows:
        out += ["", "¹ in-process: `session.run(\"y:0\", {\"x:0\": [[1.0]]})` in a loop on core 0,"
                " no server; its rps @1 column is calls/s and its p50/p99 @1 are per-call latencies."]
    for name, reason in unavailable.items():
        out.append(f"\n{LABELS[name]}: not available — {reason}")
    errs = {n: r["errors"] for n, r in rows.items() if r and r.get("errors")}
    if errs:
        out.append("\n**Warning: wrk saw non-2xx responses or socket errors:** "
                   + ", ".join(f"{n}: {c}" for n, c in errs.items())
                   + " — those rows' rps are not comparable.")
    out += ["", "## Targets for edgeserve", "", *target_lines(rows)]
    mc = [r["make_callable"] for r in inproc_rounds]
    out += [
        "",
        "## How measured",
        "",
        "Each server runs as its own process pinned to core 0 (`taskset -c 0`) with"
        " `TF_CPP_MIN_LOG_LEVEL=2`, one TensorFlow intra-op and one inter-op thread, and the"
        " half_plus_two SavedModel (TF1 graph) exported by `python -m edgeserve.example_model`."
        " The load generator, `wrk -t1 --latency` with `bench/post.lua` (POST"
        " `{\"instances\": [[1.0], [2.0], [5.0]]}`, keep-alive), runs pinned to core 1, as does this"
        " driver; everything is on 127.0.0.1. Start-up is the time from spawning the process to the"
        " first correct predict answer, polling every 10 ms with a fresh connection; idle RSS is"
        " VmRSS from /proc (process plus children) 0.5 s after that answer. After a short warm-up"
        " wrk runs once per connection count (1, 16, 64). Servers are measured in rounds (every"
        " server once per round, same order, each freshly started) and every cell is the median"
        " over rounds, so slow drifts of the machine hit all rows alike. Baselines: FastAPI is an"
        " `async def` endpoint on uvicorn (uvloop + httptools, access log off) calling"
        " `session.run` inline and returning a dict; the bare loop is an `asyncio.Protocol` +"
        " `httptools` parser on uvloop calling a `session.make_callable` callable inline with"
        " orjson in and out and no TF Serving semantics — the floor for a Python server."
        " The row \"bare loop, edgeserve's session callable\" is the same loop calling the model"
        " through `Session._make_callable_from_options`, as edgeserve does (DESIGN.md): its"
        " ratio to edgeserve is what the TF Serving semantics themselves cost.",
    ]
    if mc:
        out += ["", "For reference, a `session.make_callable` callable in-process (batch 1): "
                f"{fmt(median(m['calls_per_s'] for m in mc))} calls/s,"
                f" p50 {fmt(median(m['p50_us'] for m in mc), 1)} µs,"
                f" p99 {fmt(median(m['p99_us'] for m in mc), 1)} µs."]
    out += [
        "",
        "## Per-round values",
        "",
        *raw_lines(all_rounds, inproc_rounds),
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description="Benchmark edgeserve against baselines.")
    p.add_argument("--servers", default=",".join(SERVERS),
                   help=f"comma-separated subset of {','.join(SERVERS)} (default: all)")
    p.add_argument("--rounds", type=int, default=2, help="rounds over all servers (default 2)")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk point (default 5)")
    p.add_argument("--warmup", type=float, default=1.0,
                   help="seconds of wrk warm-up after each start (default 1; 0 to skip)")
    p.add_argument("--quick", action="store_true", help="smoke check: 1 round, 2 s per point")
    p.add_argument("--no-inprocess", action="store_true", help="skip the in-process row")
    p.add_argument("--model-dir", help="base path holding half_plus_two version 1/"
                   " (default: export into a temp dir)")
    p.add_argument("--start-timeout", type=float, default=120.0,
                   help="seconds to wait for a server's first correct predict (default 120)")
    p.add_argument("--output", default=RESULTS_MD, help="markdown file to write")
    args = p.parse_args(argv)
    if args.quick:
        args.rounds, args.duration = 1, 2.0
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.servers) - set(SERVERS)
    if unknown:
        p.error(f"unknown server(s): {', '.join(sorted(unknown))}; choose from {', '.join(SERVERS)}")
    if args.rounds < 1 or args.duration <= 0:
        p.error("--rounds must be >= 1 and --duration > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    if not start_driver(CLIENT_CORE, "server on core 0, wrk on core 1"):
        return 2
    info = machine_info()
    procs = Processes()
    all_rounds: dict[str, list[Round]] = {name: [] for name in args.servers}
    inproc_rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgeserve-bench-") as workdir:
        try:
            if args.model_dir:
                model_base = os.path.abspath(args.model_dir)
                if not os.path.exists(os.path.join(model_base, "1", "saved_model.pb")):
                    print(f"error: {model_base}/1/saved_model.pb not found", file=sys.stderr)
                    return 2
            else:
                print("exporting half_plus_two ...", file=sys.stderr)
                model_base = export_model(procs, workdir)
            if {"edgeserve_lite", "edgeserve_lite_pyz"} & set(args.servers):
                prepare_lite(procs, model_base, workdir, args)
            for round_no in range(1, args.rounds + 1):
                if not args.no_inprocess:
                    print(f"round {round_no}: in-process", file=sys.stderr)
                    inproc_rounds.append(measure_inprocess(procs, model_base, workdir, args, round_no))
                for name in args.servers:
                    print(f"round {round_no}: {name}", file=sys.stderr)
                    r = measure_server(procs, name, model_base, workdir, args, round_no)
                    all_rounds[name].append(r)
                    if r.error:
                        print(f"  {name}: {r.error}", file=sys.stderr)
                    else:
                        print(f"  start-up {r.startup_s:.2f} s, RSS {r.rss_mb:.1f} MB, "
                              + ", ".join(f"@{c} {w['rps']:.0f} rps" for c, w in r.wrk.items()),
                              file=sys.stderr)
        finally:
            procs.stop_all()

    rows: dict[str, dict | None] = {}
    unavailable: dict[str, str] = {}
    if inproc_rounds:
        rows["inprocess"] = {
            "rps@1": median(r["session_run"]["calls_per_s"] for r in inproc_rounds),
            "p50_us@1": median(r["session_run"]["p50_us"] for r in inproc_rounds),
            "p99_us@1": median(r["session_run"]["p99_us"] for r in inproc_rounds),
        }
    for name in SERVERS:
        if name not in all_rounds:
            continue
        rows[name] = summarize(all_rounds[name])
        if rows[name] is None:
            unavailable[name] = all_rounds[name][-1].error or "did not start"
    tf_version = inproc_rounds[0]["tf_version"] if inproc_rounds else tf_version_of_python()
    report = build_report(args, info, tf_version, rows, unavailable, all_rounds, inproc_rounds,
                          started)
    print(report)
    write_section("rest", report, args.output)
    print(f"written to {args.output} (section rest)", file=sys.stderr)
    return 0


def prepare_lite(procs: Processes, model_base: str, workdir: str, args) -> None:
    """model.tflite beside the SavedModel; the lite zipapp unpacked once (its later
    starts are the ones measured), in a SHIV_ROOT of this run."""
    log_path = os.path.join(workdir, "tflite.log")
    if procs.run([sys.executable, os.path.join(BENCH_DIR, "tflite_model.py"), os.path.join(model_base, "1")],
                 log_path, timeout=300) != 0:
        raise RuntimeError(f"TFLite conversion failed: {tail(log_path, 10)}")
    os.environ["SHIV_ROOT"] = os.path.join(workdir, "shiv")  # inherited by the servers
    if "edgeserve_lite_pyz" in args.servers and os.path.exists(LITE_PYZ):
        subprocess.run([sys.executable, "-I", "-S", LITE_PYZ, "--version"], capture_output=True, timeout=120)


def tf_version_of_python() -> str:
    out = subprocess.run(
        [sys.executable, "-c", "import tensorflow as tf; print(tf.__version__)"],
        capture_output=True, text=True, env=child_env(),
    )
    return out.stdout.strip().splitlines()[-1] if out.returncode == 0 and out.stdout.strip() else "unknown"


if __name__ == "__main__":
    sys.exit(main())
