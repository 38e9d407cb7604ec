"""Version-swap benchmark: memory, failed requests and latency while edgeserve replaces a
~100 MB model version under load, once per --version_transition_policy.

    python bench/swap.py                          # availability, resource, auto
    python bench/swap.py --modes resource --timeline /tmp/rss.csv
    python bench/swap.py --staging /tmp/swap-models   # export once, reuse on later runs
    python bench/swap.py --server-env TF_ONEDNN_USE_SYSTEM_ALLOCATOR=1   # try a server setting

The script exports (in a TensorFlow subprocess) two TF2 SavedModels of one tf.Module
holding a float32 variable of --weights-mb MiB; version k's weights are all k and its
signature is y = x + w[0], so an answer says which version gave it. Per mode: a fresh
server (`python -m edgeserve`, pinned to core 0) starts with version 1; a load
generator process (Python threads doing keep-alive REST predicts, pinned to core 1 with
this driver) records every request's start, end and answering version; a thread here
samples the server's VmRSS from /proc/<pid>/status every 10 ms. After --steady seconds
under load, steady RSS is the median of the last second's samples; the kernel's peak
RSS (VmHWM) is reset (`echo 5 > /proc/<pid>/clear_refs`) and version 2 is published as
operators do: a hidden folder `.tmp-2` in the base path, then one os.rename to `2`.
The run waits for the server's log to show version 2 loaded and version 1 unloaded,
goes on for --after seconds, then stops everything.

Modes: availability and resource without a memory budget; auto with
--total_model_memory_limit_bytes = 1.5 x one version's files, which holds one version's
estimate (1.2 x files) but not two, so auto must swap as resource does.

Per mode: steady RSS, peak RSS from publish to the end (max of the 10 ms samples and of
VmHWM, which also sees peaks between samples), peak/steady against the issue's target
(resource and auto <= 1.15, availability <= 2.1), requests and failures over the whole
run (failure: transport error, non-200, or an answer from neither version), and p50/p99/
max latency of the requests overlapping the swap, which starts when the server begins
loading version 2 or unloading version 1 and ends when both are done (times from the
server's log lines, millisecond stamps). Results: a table on stdout and in the "swap"
section of bench/RESULTS.md (results_md.py).

Owns bench/swap.py and that section only; imports nothing from edgeserve (it runs it as
`python -m edgeserve`) and stops every process it started, even on error.
"""
from __future__ import annotations

import argparse
import datetime
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from common import Processes, REPO_ROOT, fmt, free_port, median, start_driver, tail
from results_md import RESULTS_MD, write_section
from run import machine_info

MODEL_NAME = "swap"
SERVER_CORE = "0"
CLIENT_CORE = "1"
MODES = ("availability", "resource", "auto")
# The targets: peak RSS during the swap / steady RSS with one version.
TARGETS = {"availability": 2.1, "resource": 1.15, "auto": 1.15}
# auto's budget, in units of one version's files: TF Serving's estimate is 1.2 x files,
# so 1.5 x holds one version but never two, and auto has to choose resource.
AUTO_BUDGET_FILES = 1.5
SAMPLE_INTERVAL = 0.010
REQUEST_X = 1.0  # y = x + k for version k
PREDICT_PATH = f"/v1/models/{MODEL_NAME}:predict"
REQUEST_BODY = json.dumps({"instances": [[REQUEST_X]]}).encode()
# A request held through a resource swap's gap waits for the new version's load.
REQUEST_TIMEOUT = 30.0
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(\d{3}) ")


# --------------------------------------------------------------------------- model export
# Runs in a subprocess (`swap.py _export DIR MIB`): the driver never imports TensorFlow,
# whose ~550 MB would otherwise sit on the load generator's core.


def export_main(out_dir: str, weights_mib: float) -> None:
    import numpy as np
    import tensorflow as tf

    floats = int(weights_mib * 2**20 / 4)

    class Model(tf.Module):
        def __init__(self, value: float) -> None:
            super().__init__()
            self.w = tf.Variable(np.full(floats, value, np.float32), name="w")

        # ResourceGather reads one element: a request never copies the whole variable.
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x + tf.gather(self.w, [0])}

    for version in (1, 2):
        model = Model(float(version))
        path = os.path.join(out_dir, f"v{version}")
        tf.saved_model.save(model, path, signatures={"serving_default": model.serve})
        del model
    meta = {"tf_version": tf.__version__, "floats": floats,
            "file_bytes": dir_bytes(os.path.join(out_dir, "v1"))}
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f)


def dir_bytes(path: str) -> int:
    return sum(os.path.getsize(os.path.join(root, n)) for root, _d, names in os.walk(path) for n in names)


def export_models(procs: Processes, staging: str, weights_mib: float, log_dir: str) -> dict:
    meta_path = os.path.join(staging, "meta.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta["floats"] == int(weights_mib * 2**20 / 4):
            return meta  # --staging from an earlier run with the same size
        # Only what an earlier export put there: --staging may name a folder with more in it.
        for version in ("v1", "v2"):
            shutil.rmtree(os.path.join(staging, version), ignore_errors=True)
        os.remove(meta_path)
    os.makedirs(staging, exist_ok=True)
    log_path = os.path.join(log_dir, "export.log")
    returncode = procs.run([sys.executable, os.path.abspath(__file__), "_export", staging, str(weights_mib)],
                           log_path, timeout=120)
    if returncode != 0 or not os.path.exists(meta_path):
        raise RuntimeError(f"model export failed: {tail(log_path, 10)}")
    with open(meta_path) as f:
        return json.load(f)


def link_tree(src: str, dst: str) -> None:
    """A version folder's copy; hard links where possible (instant, and no second 100 MB
    in the page cache), a real copy across filesystems."""
    def link(s, d):
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)
    shutil.copytree(src, dst, copy_function=link)


def publish(src: str, base: str, version: int) -> None:
    """The README's safe publish: complete a hidden folder, then rename it into place."""
    hidden = os.path.join(base, f".tmp-{version}")
    link_tree(src, hidden)
    os.rename(hidden, os.path.join(base, str(version)))


# --------------------------------------------------------------------------- load generator
# Its own process (`swap.py _load PORT THREADS OUT`) so its threads' GIL never delays the
# RSS sampler; on SIGTERM it finishes the requests in flight and writes what it saw.


def answer_version(body: bytes) -> int:
    """The version that computed an answer (y = x + k), 0 if it is neither's."""
    try:
        y = json.loads(body)["predictions"][0][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return 0
    k = y - REQUEST_X
    return int(k) if k in (1.0, 2.0) else 0


def load_main(port: int, threads: int, out_path: str) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda _s, _f: stop.set())
    records: list[list] = [[] for _ in range(threads)]
    errors: list[str] = []

    def worker(rec: list) -> None:
        conn = None
        while not stop.is_set():
            t0 = time.monotonic()
            version = 0
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
                conn.request("POST", PREDICT_PATH, REQUEST_BODY, {"Content-Type": "application/json"})
                resp = conn.getresponse()
                body = resp.read()
                version = answer_version(body) if resp.status == 200 else 0
                if version == 0 and len(errors) < 20:
                    errors.append(f"{t0:.3f} HTTP {resp.status}: {body[:200]!r}")
            except (OSError, http.client.HTTPException) as exc:
                if len(errors) < 20:
                    errors.append(f"{t0:.3f} {type(exc).__name__}: {exc}")
                if conn is not None:
                    conn.close()
                conn = None  # reconnect: the failed connection's state is unknown
            rec.append((t0, time.monotonic(), version))

    pool = [threading.Thread(target=worker, args=(r,), daemon=True) for r in records]
    for t in pool:
        t.start()
    while not stop.wait(0.1):
        pass
    for t in pool:
        t.join(timeout=REQUEST_TIMEOUT)
    with open(out_path + ".part", "w") as f:
        json.dump({"records": [r for rec in records for r in rec], "errors": errors}, f)
    os.rename(out_path + ".part", out_path)  # the driver never reads a half-written file


# --------------------------------------------------------------------------- driver helpers


def predict_version(port: int, timeout: float = 2.0) -> int | None:
    """Which version answers one predict (None: no valid answer)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", PREDICT_PATH, REQUEST_BODY, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        return (answer_version(body) or None) if resp.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def status_kb(pid: int, key: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss(pid: int) -> bool:
    """Sets VmHWM back to the current RSS (Linux >= 4.0), so it then says the peak
    since now, between the 10 ms samples too."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class RssSampler(threading.Thread):
    """(monotonic time, VmRSS MiB) of one process every `interval` seconds.

    One pid, not common.rss_mb's process tree: that scans all of /proc, too slow for
    10 ms, and the server has no children (`taskset` execs into it)."""

    def __init__(self, pid: int, interval: float = SAMPLE_INTERVAL) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, float]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        path = f"/proc/{self.pid}/status"
        next_t = time.monotonic()
        while not self._halt.is_set():
            t = time.monotonic()
            try:
                with open(path) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.samples.append((t, int(line.split()[1]) / 1024))
                            break
            except OSError:
                return  # the process is gone
            # Deadlines, not sleeps of `interval`: a late wake-up does not shift the grid.
            next_t += self.interval
            self._halt.wait(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=1)

    def between(self, t0: float, t1: float) -> list[float]:
        return [mb for t, mb in self.samples if t0 <= t <= t1]


def log_events(log_path: str, mono_offset: float) -> dict[str, float]:
    """Swap events from the server's log, in this process's monotonic time.

    The log's stamps (local time, ms) say when the server acted, which polling the file
    would only know within a poll; `mono_offset` = time.time() - time.monotonic()."""
    patterns = {
        "load_start": re.compile(rf"Loading servable version \{{name: {MODEL_NAME} version: 2\}}"),
        "loaded": re.compile(rf"Successfully loaded servable version \{{name: {MODEL_NAME} version: 2\}}"
                             r" in ([\d.]+)s"),
        "unloaded": re.compile(rf"Unloaded servable version \{{name: {MODEL_NAME} version: 1\}} in ([\d.]+)s"),
    }
    events: dict[str, float] = {}
    try:
        with open(log_path, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return events
    for line in lines:
        stamp = LOG_TIME.match(line)
        if not stamp:
            continue
        for name, pattern in patterns.items():
            m = pattern.search(line)
            if m and name not in events:
                wall = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")) + int(stamp.group(2)) / 1000
                events[name] = wall - mono_offset
                if name == "unloaded":
                    # No log line marks an unload's start; its line says how long it took.
                    events["unload_start"] = events[name] - float(m.group(1))
    return events


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * len(s) + 0.5) - 1))]  # nearest rank


# --------------------------------------------------------------------------- one mode


@dataclass
class ModeResult:
    mode: str
    budget: int = 0
    steady_mb: float | None = None
    peak_sampled_mb: float | None = None
    peak_hwm_mb: float | None = None
    after_mb: float | None = None
    requests: int = 0
    failed: int = 0
    answers: dict[int, int] = field(default_factory=dict)
    stale: int = 0  # version-1 answers to requests sent after version 1 was unloaded
    lat_ms: list[float] = field(default_factory=list)  # requests overlapping the swap
    phase_max_ms: dict[str, float] = field(default_factory=dict)  # slowest request per phase
    steady_lat_ms: list[float] = field(default_factory=list)
    events: dict[str, float] = field(default_factory=dict)  # monotonic times
    publish_t: float | None = None
    samples: list[tuple[float, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def peak_mb(self) -> float | None:
        peaks = [p for p in (self.peak_sampled_mb, self.peak_hwm_mb) if p is not None]
        return max(peaks) if peaks else None

    @property
    def ratio(self) -> float | None:
        return self.peak_mb / self.steady_mb if self.peak_mb and self.steady_mb else None

    @property
    def swap_window(self) -> tuple[float, float] | None:
        e = self.events
        starts = [e[k] for k in ("load_start", "unload_start") if k in e]
        if not starts or "loaded" not in e or "unloaded" not in e:
            return None
        return min(starts), max(e["loaded"], e["unloaded"])

    @property
    def order(self) -> str:
        e = self.events
        if "loaded" not in e or "unloaded" not in e:
            return "—"
        # Availability finishes loading 2 before it unloads 1, resource finishes unloading 1
        # before it loads 2. Both stamps are the log's own (the unload's start is derived
        # from a duration rounded to 10 ms, too coarse to order by).
        return "load 2, then unload 1" if e["loaded"] < e["unloaded"] else "unload 1, then load 2"


def server_command(port: int, base: str, mode: str, budget: int, poll_s: int) -> list[str]:
    cmd = [
        sys.executable, "-m", "edgeserve",
        f"--rest_api_port={port}", "--port=0", "--bind_address=127.0.0.1",
        f"--model_name={MODEL_NAME}", f"--model_base_path={base}",
        f"--file_system_poll_wait_seconds={poll_s}",
        "--tensorflow_intra_op_parallelism=1", "--tensorflow_inter_op_parallelism=1",
        f"--version_transition_policy={mode}",
    ]
    if budget:
        cmd.append(f"--total_model_memory_limit_bytes={budget}")
    return cmd


def run_mode(procs: Processes, mode: str, staging: str, file_bytes: int, workdir: str,
             args) -> ModeResult:
    r = ModeResult(mode, budget=int(AUTO_BUDGET_FILES * file_bytes) if mode == "auto" else 0)
    base = os.path.join(workdir, mode, MODEL_NAME)
    os.makedirs(base)
    link_tree(os.path.join(staging, "v1"), os.path.join(base, "1"))
    port = free_port()
    log_path = os.path.join(workdir, f"server-{mode}.log")
    load_out = os.path.join(workdir, f"load-{mode}.json")
    mono_offset = time.time() - time.monotonic()
    server = procs.spawn(["taskset", "-c", SERVER_CORE]
                         + server_command(port, base, mode, r.budget, args.poll), log_path)
    sampler = RssSampler(server.pid)
    sampler.start()
    load = None
    load_log = os.path.join(workdir, f"load-{mode}.log")
    try:
        deadline = time.monotonic() + args.start_timeout
        while predict_version(port, timeout=1.0) != 1:
            if server.poll() is not None or time.monotonic() > deadline:
                r.error = f"version 1 never answered: {tail(log_path)}"
                return r
            time.sleep(0.05)
        load = procs.spawn(["taskset", "-c", CLIENT_CORE, sys.executable, os.path.abspath(__file__),
                            "_load", str(port), str(args.threads), load_out],
                           load_log)
        time.sleep(args.steady)
        now = time.monotonic()
        r.steady_mb = median(sampler.between(now - 1.0, now))
        hwm_ok = reset_peak_rss(server.pid)
        r.publish_t = time.monotonic()
        publish(os.path.join(staging, "v2"), base, 2)
        deadline = r.publish_t + args.swap_timeout
        while True:
            events = log_events(log_path, mono_offset)
            if "loaded" in events and "unloaded" in events:
                break
            if server.poll() is not None:
                r.error = f"server exited during the swap: {tail(log_path)}"
                break
            if time.monotonic() > deadline:
                r.error = f"no complete swap within {args.swap_timeout:g} s: {tail(log_path)}"
                break
            time.sleep(0.02)
        time.sleep(args.after)
        end = time.monotonic()
        r.peak_sampled_mb = max(sampler.between(r.publish_t, end), default=None)
        if hwm_ok:
            hwm = status_kb(server.pid, "VmHWM:")
            r.peak_hwm_mb = hwm / 1024 if hwm is not None else None
        r.after_mb = median(sampler.between(end - 0.5, end))
    finally:
        if load is not None:
            procs.stop(load)
        sampler.stop()
        procs.stop(server)
    r.events = log_events(log_path, mono_offset)
    r.samples = sampler.samples
    try:
        with open(load_out) as f:
            seen = json.load(f)
    except (OSError, ValueError) as exc:
        r.error = r.error or f"load generator wrote no results ({exc}): {tail(load_log)}"
        return r
    records, r.errors = seen["records"], seen["errors"]
    r.requests = len(records)
    r.failed = sum(1 for _t0, _t1, v in records if v == 0)
    for _t0, _t1, v in records:
        r.answers[v] = r.answers.get(v, 0) + 1
    unloaded = r.events.get("unloaded")
    if unloaded is not None:
        r.stale = sum(1 for t0, _t1, v in records if v == 1 and t0 > unloaded)
    window = r.swap_window
    if window is not None:
        r.lat_ms = [(t1 - t0) * 1e3 for t0, t1, _v in records if t0 <= window[1] and t1 >= window[0]]
    # Which step of the swap slowed requests down, the load or the unload (whose gc and
    # malloc_trim hold the GIL, so the event loop waits as well): each request counts for
    # the step it spent most of its time in; one stalled across the boundary would
    # otherwise show in both.
    phases = {label: (r.events[a], r.events[b]) for label, (a, b) in
              {"load of 2": ("load_start", "loaded"), "unload of 1": ("unload_start", "unloaded")}.items()
              if a in r.events and b in r.events}
    for t0, t1, _v in records:
        inside = {label: min(t1, hi) - max(t0, lo) for label, (lo, hi) in phases.items()}
        label = max(inside, key=inside.get, default=None)
        if label is not None and inside[label] > 0:
            r.phase_max_ms[label] = max(r.phase_max_ms.get(label, 0.0), (t1 - t0) * 1e3)
    r.steady_lat_ms = [(t1 - t0) * 1e3 for t0, t1, _v in records
                       if r.publish_t - 1.0 <= t0 < r.publish_t]
    return r


# --------------------------------------------------------------------------- report


def result_row(r: ModeResult) -> str:
    if r.steady_mb is None:
        return f"| {r.mode} | failed: {r.error} |" + " |" * 16
    target = TARGETS[r.mode]
    verdict = "—" if r.ratio is None else ("**PASS**" if r.ratio <= target else "**FAIL**")
    window = r.swap_window
    budget = f"{r.budget / 2**20:,.0f} MiB" if r.budget else "none"
    return (
        f"| {r.mode} | {budget} | {r.order} | {fmt(r.steady_mb, 1)} | {fmt(r.peak_sampled_mb, 1)}"
        f" | {fmt(r.peak_hwm_mb, 1)} | {fmt(r.ratio, 3)} ≤ {target:g} {verdict}"
        f" | {fmt(r.after_mb, 1)} | {r.requests:,} | {r.failed} | {len(r.lat_ms):,}"
        f" | {fmt(percentile(r.lat_ms, 50), 1)}"
        f" | {fmt(percentile(r.lat_ms, 99), 1)} | {fmt(max(r.lat_ms, default=None), 1)}"
        f" | {fmt(percentile(r.steady_lat_ms, 99), 1)} | {len(r.steady_lat_ms):,}"
        f" | {fmt(window[1] - window[0] if window else None, 2)} |"
    )


def timeline_lines(r: ModeResult, weights_mb: float) -> list[str]:
    """The RSS at each step of the swap: where the peak came from."""
    if r.publish_t is None or not r.samples:
        return []

    def rss_at(t: float) -> float | None:
        # The last sample at or before t.
        before = [mb for ts, mb in r.samples if ts <= t]
        return before[-1] if before else None

    e = r.events
    points = [("published", r.publish_t)]
    names = {"unload_start": "unload of 1 starts", "load_start": "load of 2 starts",
             "loaded": "2 loaded", "unloaded": "1 unloaded"}
    points += sorted(((names[k], e[k]) for k in names if k in e), key=lambda p: p[1])
    after = [(t, mb) for t, mb in r.samples if t >= r.publish_t]
    if after:
        peak_t, peak = max(after, key=lambda s: s[1])
        points.append((f"peak sample ({peak:,.1f})", peak_t))
    points.sort(key=lambda p: p[1])
    cells = []
    for label, t in points:
        mb = rss_at(t)
        delta = "" if mb is None or r.steady_mb is None else f" ({mb - r.steady_mb:+,.0f})"
        cells.append(f"{label} +{t - r.publish_t:.2f} s: {fmt(mb, 0)}{delta}")
    extra = (r.peak_mb - r.steady_mb) / weights_mb if r.peak_mb and r.steady_mb else None
    slowest = ", ".join(f"{label} {ms:,.0f} ms" for label, ms in r.phase_max_ms.items())
    return [f"- {r.mode}: " + " → ".join(cells)
            + f"; peak − steady = {fmt(extra, 2)} × the weights"
            + (f"; slowest request mostly inside the {slowest}" if slowest else "")]


def build_report(args, info: dict, meta: dict, results: list[ModeResult],
                 started: datetime.datetime, runtime_s: float) -> str:
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], REPO_ROOT)]
                                   + sys.argv[1:])
    weights_mb = meta["floats"] * 4 / 2**20
    out = [
        "# edgeserve version-swap benchmark",
        "",
        f"- date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}",
        f"- machine: {info['nproc']} CPUs (`nproc`), {info['cpu']}, Linux {info['kernel']}",
        f"- software: Python {info['python']}, TensorFlow {meta['tf_version']}",
        f"- command: `{command}` ({runtime_s:.0f} s)",
        *([f"- server environment: {', '.join(f'`{e}`' for e in args.server_env)}"] if args.server_env else []),
        f"- model: TF2 SavedModel, one float32 variable of {meta['floats']:,} floats"
        f" ({weights_mb:.1f} MiB; version files {meta['file_bytes'] / 2**20:.1f} MiB);"
        f" load: {args.threads} keep-alive REST clients; RSS every {SAMPLE_INTERVAL * 1e3:.0f} ms",
        "",
        "| mode | memory budget | order seen | steady RSS MiB | peak RSS MiB (10 ms samples)"
        " | peak RSS MiB (VmHWM) | peak / steady vs target | RSS after MiB | requests | failed"
        " | requests in swap | p50 ms (swap) | p99 ms (swap) | max ms (swap) | p99 ms (steady)"
        " | req/s (steady) | swap s |",
        "|---|---|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(result_row(r) for r in results),
        "",
        "## Targets",
        "",
    ]
    for r in results:
        ok_ratio = r.ratio is not None and r.ratio <= TARGETS[r.mode]
        ok_fail = r.steady_mb is not None and r.failed == 0 and r.error is None
        out.append(
            f"- {r.mode}: peak/steady {fmt(r.ratio, 3)} ≤ {TARGETS[r.mode]:g} → **{'PASS' if ok_ratio else 'FAIL'}**;"
            f" failed requests {r.failed} of {r.requests:,} → **{'PASS' if ok_fail else 'FAIL'}**;"
            f" answers: v1 {r.answers.get(1, 0):,}, v2 {r.answers.get(2, 0):,},"
            f" v1 after its unload {r.stale}"
            + (f"; error: {r.error}" if r.error else "")
        )
    out += ["", "## RSS during each swap (MiB, change from steady in brackets; times from publish)", ""]
    for r in results:
        out += timeline_lines(r, weights_mb)
    for r in results:
        if r.errors:
            out += ["", f"First failures ({r.mode}):", *(f"    {e}" for e in r.errors[:5])]
    out += [
        "",
        "## How measured",
        "",
        "The server (`python -m edgeserve`, `--file_system_poll_wait_seconds="
        f"{args.poll}`, one TF intra-op and inter-op thread) runs pinned to core 0; the load generator"
        f" ({args.threads} Python threads, each a keep-alive `http.client` connection POSTing"
        f" `{REQUEST_BODY.decode()}` in a closed loop) and this driver run on core 1. Version k's"
        " weights are all k and its signature is y = x + w[0] (a ResourceGather of one element),"
        " so every answer names its version. Each mode starts a fresh server with version 1,"
        f" runs the load for {args.steady:g} s (steady RSS: median of the last second's samples),"
        " resets VmHWM through /proc/<pid>/clear_refs, publishes version 2 (hidden folder"
        " `.tmp-2`, then rename to `2`), waits for the log lines `Successfully loaded servable"
        " version` (2) and `Unloaded servable version` (1), and goes on for"
        f" {args.after:g} s. Peak RSS is the larger of the highest 10 ms VmRSS sample and VmHWM"
        " from publish to the end; RSS after is the median of the last 0.5 s. The swap window runs from the first of \"load of 2 starts\""
        " and \"unload of 1 starts\" (the unload's log line minus the time it reports) to the"
        " last of \"2 loaded\" and \"1 unloaded\"; its latencies are of the requests overlapping"
        " it, held requests included (\"requests in swap\" says how many: in a resource swap"
        " every client waits in the gap, so there are few); the timeline gives the slowest"
        " request of those that spent most of their time in the load, and in the unload. Steady p99 and req/s are of"
        " the second before publish. A request fails on a transport error, a non-200 status or"
        " an answer from neither version. The auto mode's budget"
        f" (`--total_model_memory_limit_bytes`) is {AUTO_BUDGET_FILES:g} × one version's files:"
        " one version's estimate (1.2 × files) fits, two do not. RSS includes the TensorFlow"
        " runtime (~550 MiB), so \"peak − steady\" in the timeline says in units of the weights"
        " how many extra copies the swap held at its peak.",
        "",
    ]
    return "\n".join(out)


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None):
    p = argparse.ArgumentParser(description="Peak RSS, failures and latency during version swaps.")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--weights-mb", type=float, default=100.0, help="MiB of float32 weights (default 100)")
    p.add_argument("--threads", type=int, default=4, help="load generator connections (default 4)")
    p.add_argument("--steady", type=float, default=3.0, help="seconds of load before the swap (default 3)")
    p.add_argument("--after", type=float, default=1.0, help="seconds after the swap (default 1)")
    p.add_argument("--poll", type=int, default=1, help="--file_system_poll_wait_seconds (default 1)")
    p.add_argument("--swap-timeout", type=float, default=30.0, help="seconds to wait for a swap")
    p.add_argument("--start-timeout", type=float, default=60.0, help="seconds to wait for version 1")
    p.add_argument("--staging", help="folder for the exported versions, kept and reused (default: temp)")
    p.add_argument("--timeline", help="also write every RSS sample (mode, s from publish, MiB) as CSV here")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the servers (repeatable), e.g. to try an allocator setting")
    p.add_argument("--output", default=RESULTS_MD, help="markdown file to write")
    args = p.parse_args(argv)
    if any("=" not in e for e in args.server_env):
        p.error("--server-env takes KEY=VALUE")
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if set(args.modes) - set(MODES) or not args.modes:
        p.error(f"--modes: choose from {', '.join(MODES)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now().astimezone()
    t_start = time.monotonic()
    if not start_driver(CLIENT_CORE, "server on core 0, load on core 1"):
        return 2
    info = machine_info()
    # Processes.spawn hands every child this process's environment (common.child_env);
    # the exporter and load generator do not care about these settings.
    os.environ.update(e.split("=", 1) for e in args.server_env)
    procs = Processes()
    results: list[ModeResult] = []
    with tempfile.TemporaryDirectory(prefix="edgeserve-swap-") as workdir:
        try:
            staging = os.path.abspath(args.staging) if args.staging else os.path.join(workdir, "staging")
            print("exporting versions 1 and 2 ...", file=sys.stderr)
            meta = export_models(procs, staging, args.weights_mb, workdir)
            for mode in args.modes:
                print(f"mode {mode} ...", file=sys.stderr)
                r = run_mode(procs, mode, staging, meta["file_bytes"], workdir, args)
                results.append(r)
                print(f"  steady {fmt(r.steady_mb, 1)} MiB, peak {fmt(r.peak_mb, 1)} MiB"
                      f" (ratio {fmt(r.ratio, 3)}), {r.requests} requests, {r.failed} failed,"
                      f" p99 {fmt(percentile(r.lat_ms, 99), 1)} ms, {r.order}"
                      + (f"; error: {r.error}" if r.error else ""), file=sys.stderr)
        finally:
            procs.stop_all()
    if args.timeline:
        with open(args.timeline, "w") as f:
            f.write("mode,t_from_publish_s,rss_mib\n")
            for r in results:
                for t, mb in r.samples:
                    f.write(f"{r.mode},{t - (r.publish_t or t):.3f},{mb:.1f}\n")
    report = build_report(args, info, meta, results, started, time.monotonic() - t_start)
    print(report)
    write_section("swap", report, args.output)
    print(f"written to {args.output} (section swap)", file=sys.stderr)
    ok = all(r.error is None and r.failed == 0 and r.ratio is not None and r.ratio <= TARGETS[r.mode]
             for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_export":
        export_main(sys.argv[2], float(sys.argv[3]))
    elif len(sys.argv) > 1 and sys.argv[1] == "_load":
        load_main(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(main())
