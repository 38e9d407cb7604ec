"""What every benchmark driver here needs: ports, child processes and their RSS,
the exported model, and number formatting. The drivers (run.py for REST, grpc_bench.py
for gRPC) import these so both measure the same way."""
from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
MODEL_NAME = "half_plus_two"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
    return env


def descendants(pid: int) -> list[int]:
    """pid and every process below it (scans /proc once)."""
    parent_of: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may contain spaces and parentheses: the fields after the last ')' are safe.
        parent_of[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [c for c, p in parent_of.items() if p in frontier]
        found += frontier
    return found


def rss_mb(pid: int) -> float:
    total_kb = 0
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total_kb += int(line.split()[1])
                        break
        except OSError:
            pass
    return total_kb / 1024


def tail(path: str, lines: int = 3) -> str:
    try:
        with open(path, errors="replace") as f:
            text = [l.strip() for l in f.read().splitlines() if l.strip()]
    except OSError:
        return ""
    # Pipes would split a markdown table cell.
    return " ⏎ ".join(text[-lines:]).replace("|", "/")


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits: int = 0, suffix: str = "") -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{suffix}"


class Processes:
    """Every subprocess this driver starts; stop_all() ends each by its own pid/pgid."""

    def __init__(self, stop_timeout: float = 5.0) -> None:
        self.running: list[subprocess.Popen] = []
        self.stop_timeout = stop_timeout  # SIGTERM -> SIGKILL

    def spawn(self, cmd: list[str], log_path: str) -> subprocess.Popen:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=REPO_ROOT, env=child_env(), start_new_session=True,
            )
        self.running.append(proc)
        return proc

    def run(self, cmd: list[str], log_path: str, timeout: float) -> int:
        """Runs a one-off helper (a model export) to its end; stopped if it overruns."""
        proc = self.spawn(cmd, log_path)
        try:
            return proc.wait(timeout=timeout)
        finally:
            self.stop(proc)

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=5)
        if proc in self.running:
            self.running.remove(proc)

    def stop_all(self) -> None:
        for proc in list(self.running):
            try:
                self.stop(proc)
            except Exception as exc:  # keep stopping the rest
                print(f"warning: could not stop pid {proc.pid}: {exc}", file=sys.stderr)

    @staticmethod
    def _signal(proc: subprocess.Popen, sig: int) -> None:
        # start_new_session=True made the child the leader of its own process group
        # (pgid == its pid), so this reaches its children and nothing else.
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass


def export_model(procs: Processes, workdir: str) -> str:
    base = os.path.join(workdir, "models", MODEL_NAME)
    log_path = os.path.join(workdir, "export.log")
    returncode = procs.run([sys.executable, "-m", "edgeserve.example_model", base], log_path, timeout=300)
    if returncode != 0 or not os.path.exists(os.path.join(base, "1", "saved_model.pb")):
        raise RuntimeError(f"model export failed: {tail(log_path, 10)}")
    return base


def start_driver(client_core: str, roles: str) -> bool:
    """The common start of a benchmark driver; False (after saying why) when the
    machine has fewer than 2 CPUs. SIGTERM and SIGINT (which background shells start
    ignored) end the run through the driver's `finally`, so no server outlives it;
    the driver itself stays on the client core, off the servers'."""
    if (os.cpu_count() or 1) < 2:
        print(f"error: needs at least 2 CPUs ({roles})", file=sys.stderr)
        return False

    def _stop(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    os.sched_setaffinity(0, {int(client_core)})
    return True


def run_for_json(procs: Processes, cmd: list[str], out_path: str, log_path: str,
                 timeout: float, what: str) -> dict:
    """Runs a measuring helper to its end and returns the JSON object on its last
    stdout line; its stderr (TensorFlow's chatter) goes to `log_path`."""
    with open(out_path, "wb") as out, open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                cwd=REPO_ROOT, env=child_env(), start_new_session=True)
        procs.running.append(proc)
        try:
            proc.wait(timeout=timeout)
        finally:
            procs.stop(proc)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed ({proc.returncode}): {tail(log_path)}")
    with open(out_path) as f:
        return json.loads(f.read().strip().splitlines()[-1])

