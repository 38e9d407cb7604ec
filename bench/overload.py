"""Overload: edgeserve at 10x its measured capacity, with 1,000 connections.

    python bench/overload.py                 # every scenario, 10 s of load each
    python bench/overload.py --seconds 5 --scenarios rest,grpc

The server (half_plus_two, `python -m edgeserve`, Prometheus page on) runs on core 0;
h2load, the probes and this driver on core 1. Per scenario, each on a fresh server:

1. capacity: REST (`h2load --h1`) and gRPC (`h2load`, one stream per connection) at 16
   connections, flat out: requests/s C.
2. overload: 1,000 connections, each asking 10 x C / 1,000 requests/s (so 10 x C in
   all, were the server instant), for --seconds. REST and gRPC separately.
3. over the connection limits: 1,200 connections against the defaults of 1,024.
4. over --max_pending_requests: 1,000 REST connections against a model run on the
   worker threads (--inline_run_threshold_micros=0) and --max_pending_requests=64.

Each run reports answers by outcome (OK; refused 503 / UNAVAILABLE; other errors;
h2load's failed/timed-out requests), p50/p99 of OK answers and of refusals (h2load's
--log-file; gRPC outcomes from the server's own counters, since h2load sees only HTTP
200), the throughput of OK answers against C, the server's RSS before and at its peak
(sampled every 0.2 s), and recovery: a probe on one connection that sends one request
after another from 1 s before the load until 1.5 s after it, whose p50 in the window
0.5-1.0 s after the load must be within 2x the p50 before it.

Results: a table on stdout and in bench/RESULTS.md's "overload" section.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import Processes, export_model, free_port, rss_mb, start_driver  # noqa: E402
from grpc_bench import Grpc, parse_h2load  # noqa: E402
from results_md import write_section  # noqa: E402

SERVER_CORE, CLIENT_CORE = "0", "1"
MODEL = "half_plus_two"
REST_PATH = f"/v1/models/{MODEL}:predict"
REST_BODY = b'{"instances": [[1.0], [2.0], [5.0]]}'
GRPC_PATH = "/tensorflow.serving.PredictionService/Predict"
CAPACITY_CONNECTIONS = 16
OVERLOAD_CONNECTIONS = 1000
OVERLIMIT_CONNECTIONS = 1200
PENDING_LIMIT = 64


# ---- the server ------------------------------------------------------------------

class Server:
    def __init__(self, procs: Processes, model_base: str, workdir: str, extra: list[str], tag: str) -> None:
        self.rest_port, self.grpc_port = free_port(), free_port()
        monitoring = os.path.join(workdir, "monitoring.config")
        with open(monitoring, "w") as f:
            f.write('prometheus_config { enable: true path: "/metrics" }\n')
        self.log_path = os.path.join(workdir, f"server-{tag}.log")
        self.proc = procs.spawn([
            "taskset", "-c", SERVER_CORE, sys.executable, "-m", "edgeserve",
            f"--port={self.grpc_port}", f"--rest_api_port={self.rest_port}", "--bind_address=127.0.0.1",
            f"--model_name={MODEL}", f"--model_base_path={model_base}",
            f"--monitoring_config_file={monitoring}", *extra,
        ], self.log_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: see {self.log_path}")
            try:
                if rest_call(self.rest_port)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready: see {self.log_path}")

    def counters(self) -> dict[str, float]:
        """request_count by status (gRPC entrypoint included) and the refusals."""
        conn = http.client.HTTPConnection("127.0.0.1", self.rest_port, timeout=10)
        conn.request("GET", "/metrics")
        page = conn.getresponse().read().decode()
        conn.close()
        out: dict[str, float] = {}
        for line in page.splitlines():
            m = re.match(r':tensorflow:serving:request_count\{model_name="[^"]*",status="(\w+)"\} (\S+)', line)
            if m:
                out[m.group(1)] = out.get(m.group(1), 0) + float(m.group(2))
            m = re.match(r'edgeserve_refused_total\{limit="(\w+)"\} (\S+)', line)
            if m:
                out["refused:" + m.group(1)] = float(m.group(2))
        return out


def rest_call(port: int, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("POST", REST_PATH, body=REST_BODY, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


class RssPeak(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self.stop.wait(0.2)


class Probe(threading.Thread):
    """One REST connection, one request after another: (seconds since start, latency)."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.samples, self.stop = port, [], threading.Event()
        self.start_time = time.monotonic()

    def run(self) -> None:
        conn = None
        while not self.stop.is_set():
            try:
                conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                t0 = time.monotonic()
                status, _ = rest_call(self.port, conn)
                if status == 200:
                    self.samples.append((t0, time.monotonic() - t0))
            except (OSError, http.client.HTTPException):
                conn = None
            time.sleep(0.005)

    def p50(self, since: float, until: float) -> float | None:
        values = sorted(lat for t, lat in self.samples if since <= t < until)
        return values[len(values) // 2] if values else None


# ---- h2load ------------------------------------------------------------------------

def h2load(port: int, *, rest: bool, connections: int, seconds: float, rps_each: float | None,
           body_path: str, log_path: str) -> dict:
    if os.path.exists(log_path):
        os.unlink(log_path)  # h2load appends
    path = REST_PATH if rest else GRPC_PATH
    headers = ["-H", "content-type: application/json"] if rest else [
        "-H", "content-type: application/grpc", "-H", "te: trailers"]
    cmd = ["taskset", "-c", CLIENT_CORE, "h2load", "-t", "1", "-c", str(connections), "-m", "1",
           "-D", f"{seconds:g}", "-d", body_path, "-T", "30", "-N", "30", f"--log-file={log_path}", *headers]
    if rest:
        cmd.append("--h1")
    if rps_each:
        cmd.append(f"--rps={rps_each:g}")
    cmd.append(f"http://127.0.0.1:{port}{path}")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120)
    if out.returncode != 0:
        raise RuntimeError(f"h2load exited {out.returncode}: {out.stderr.strip()[-300:]}")
    result = parse_h2load(out.stdout)
    by_status: dict[str, list[int]] = {}
    with open(log_path) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) >= 3:
                by_status.setdefault(parts[1], []).append(int(parts[2]))
    result["latency_us"] = {code: sorted(values) for code, values in by_status.items()}
    return result


def pct(values: list[int], q: float) -> float | None:
    return float(values[min(len(values) - 1, int(q * len(values)))]) if values else None


# ---- scenarios ---------------------------------------------------------------------

def run(procs: Processes, model_base: str, workdir: str, bodies: dict, args, *, name: str, rest: bool,
        connections: int, rps_each: float | None, extra: list[str], capacity: float | None) -> dict:
    server = Server(procs, model_base, workdir, extra, name)
    try:
        for _ in range(3):  # settle: inline decision, caches
            h2load(server.rest_port if rest else server.grpc_port, rest=rest, connections=4, seconds=1,
                   rps_each=None, body_path=bodies["rest" if rest else "grpc"],
                   log_path=os.path.join(workdir, "warm.tsv"))
        before_counts = server.counters()
        idle_rss = rss_mb(server.proc.pid)
        probe = Probe(server.rest_port)
        rss = RssPeak(server.proc.pid)
        probe.start()
        rss.start()
        time.sleep(1.0)
        load_start = time.monotonic()
        r = h2load(server.rest_port if rest else server.grpc_port, rest=rest, connections=connections,
                   seconds=args.seconds, rps_each=rps_each, body_path=bodies["rest" if rest else "grpc"],
                   log_path=os.path.join(workdir, f"{name}.tsv"))
        load_end = time.monotonic()
        time.sleep(1.5)
        probe.stop.set()
        rss.stop.set()
        probe.join(10)
        rss.join(10)
        counts = server.counters()
        alive = rest_call(server.rest_port)[0] == 200
    finally:
        procs.stop(server.proc)
    delta = {k: counts.get(k, 0) - before_counts.get(k, 0) for k in counts}
    lat = r["latency_us"]
    ok_lat = lat.get("200", [])
    refused_lat = lat.get("503", [])
    if rest:
        ok = len(ok_lat)
        refused = len(refused_lat)
        other = sum(len(v) for code, v in lat.items() if code not in ("200", "503"))
    else:  # h2load sees HTTP 200 for every gRPC answer: the server's counters tell
        ok = int(delta.get("OK", 0))
        other = int(sum(v for k, v in delta.items() if ":" not in k and k not in ("OK", "UNAVAILABLE")))
        # Refused calls are answered before their request is read, so request_count
        # (which names a model) leaves them out: they are the answers not otherwise counted.
        refused = max(0, r["succeeded"] - ok - other)
    baseline = probe.p50(load_start - 1.0, load_start)
    after = probe.p50(load_end + 0.5, load_end + 1.0)
    return {
        "name": name, "rest": rest, "connections": connections,
        "offered": rps_each * connections if rps_each else None,
        "ok": ok, "refused": refused, "other": other, "failed": r["failed"],
        "ok_rps": ok / args.seconds, "capacity": capacity,
        "ok_p50": pct(ok_lat, 0.5), "ok_p99": pct(ok_lat, 0.99),
        "refused_p50": pct(refused_lat, 0.5), "refused_p99": pct(refused_lat, 0.99),
        "all_p99": pct(sorted(v for values in lat.values() for v in values), 0.99),
        "idle_rss": idle_rss, "peak_rss": rss.peak,
        "probe_before_ms": baseline * 1e3 if baseline else None,
        "probe_after_ms": after * 1e3 if after else None,
        "recovered": bool(baseline and after and after <= 2 * baseline), "alive": alive,
        "refusals": {k: v for k, v in delta.items() if k.startswith("refused:") and v},
    }


def fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def table(results: list[dict]) -> list[str]:
    lines = [
        "| scenario | conns | offered rps | OK | OK rps (x capacity) | OK p50 / p99 ms | refused "
        "| refused p50 / p99 ms | other errors | h2load failed | RSS idle → peak MB "
        "| probe p50 before → 0.5-1 s after, ms |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        ratio = f" ({r['ok_rps'] / r['capacity']:.2f}x)" if r["capacity"] else ""
        refused_lat = (f"{fmt(r['refused_p50'] / 1e3, 2)} / {fmt(r['refused_p99'] / 1e3, 2)}"
                       if r["refused_p50"] is not None else ("(gRPC: not per call)" if not r["rest"] and r["refused"]
                                                            else "-"))
        ok_lat = (f"{fmt(r['ok_p50'] / 1e3, 2)} / {fmt(r['ok_p99'] / 1e3, 2)}" if r["rest"] or not r["refused"]
                  else f"all answers p99 {fmt(r['all_p99'] / 1e3, 2)}")
        lines.append(
            f"| {r['name']} | {r['connections']:,} | {fmt(r['offered'], 0)} | {r['ok']:,} "
            f"| {fmt(r['ok_rps'], 0)}{ratio} | {ok_lat} | {r['refused']:,} | {refused_lat} | {r['other']} "
            f"| {r['failed']} | {fmt(r['idle_rss'])} → {fmt(r['peak_rss'])} "
            f"| {fmt(r['probe_before_ms'], 2)} → {fmt(r['probe_after_ms'], 2)}"
            f"{'' if r['recovered'] else ' (NOT recovered)'} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per scenario")
    parser.add_argument("--scenarios", default="rest,grpc,overlimit,pending")
    parser.add_argument("--no-write", action="store_true", help="do not write bench/RESULTS.md")
    args = parser.parse_args(argv)
    if not start_driver(CLIENT_CORE, "server on core 0, h2load on core 1"):
        return 2
    wanted = set(args.scenarios.split(","))
    procs = Processes()
    workdir = tempfile.mkdtemp(prefix="edgeserve-overload-")
    try:
        model_base = export_model(procs, workdir)
        bodies = {"rest": os.path.join(workdir, "rest.body"), "grpc": os.path.join(workdir, "grpc.body")}
        with open(bodies["rest"], "wb") as f:
            f.write(REST_BODY)
        with open(bodies["grpc"], "wb") as f:
            f.write(Grpc().body)
        results = []
        common = dict(procs=procs, model_base=model_base, workdir=workdir, bodies=bodies, args=args)
        for proto in ("rest", "grpc"):
            if proto not in wanted and "overlimit" not in wanted:
                continue
            rest = proto == "rest"
            cap = run(**common, name=f"{proto}: capacity", rest=rest, connections=CAPACITY_CONNECTIONS,
                      rps_each=None, extra=[], capacity=None)
            capacity = cap["ok_rps"]
            results.append(cap)
            print("\n".join(table([cap])[2:]), flush=True)
            runs = []
            if proto in wanted:
                runs.append((f"{proto}: 10x capacity", OVERLOAD_CONNECTIONS, []))
            if "overlimit" in wanted:
                runs.append((f"{proto}: over the connection limit (1,024)", OVERLIMIT_CONNECTIONS, []))
            for name, connections, extra in runs:
                result = run(**common, name=name, rest=rest, connections=connections,
                             rps_each=10 * capacity / connections, extra=extra, capacity=capacity)
                results.append(result)
                print("\n".join(table([result])[2:]), flush=True)
        if "pending" in wanted:
            extra = ["--inline_run_threshold_micros=0", f"--max_pending_requests={PENDING_LIMIT}"]
            cap = run(**common, name="rest, worker runs: capacity", rest=True, connections=CAPACITY_CONNECTIONS,
                      rps_each=None, extra=extra, capacity=None)
            results.append(cap)
            result = run(**common, name=f"rest, worker runs: 10x, --max_pending_requests={PENDING_LIMIT}",
                         rest=True, connections=OVERLOAD_CONNECTIONS,
                         rps_each=10 * cap["ok_rps"] / OVERLOAD_CONNECTIONS, extra=extra, capacity=cap["ok_rps"])
            results.append(result)
            print("\n".join(table([result])[2:]), flush=True)
    finally:
        procs.stop_all()
    lines = table(results)
    text = "\n".join([
        "## Overload (bench/overload.py)",
        "",
        f"Server on core 0, h2load on core 1; {args.seconds:g} s of load per row, each on a fresh server "
        "(half_plus_two, three rows a request). \"offered\" = 10 x capacity spread over the connections "
        "(h2load --rps per connection; over HTTP/1.1 h2load pipelines when answers lag behind that rate). "
        "gRPC outcomes come from the server's request_count and edgeserve_refused counters.",
        "",
        *lines,
        "",
        "Refusals by limit: " + "; ".join(
            f"{r['name']}: {r['refusals']}" for r in results if r["refusals"]) if any(
            r["refusals"] for r in results) else "Refusals by limit: none.",
    ])
    print(text)
    if not args.no_write:
        write_section("overload", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
