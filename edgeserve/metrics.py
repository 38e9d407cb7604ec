"""Prometheus metrics: TF Serving's metric names for what edgeserve does, and its own.

Owns the process's metric objects, the recording calls the serving paths make, the
`--monitoring_config_file`, and the page the REST port serves at the configured path
(prometheus-client writes it, from a private registry built on the first request).

TF Serving's metrics keep the names its exporter writes (`/tensorflow/serving/x` ->
`:tensorflow:serving:x`), their labels, label values and units (microseconds, with
TF's bucket layouts), so existing dashboards and alerts keep working. Two things
differ in form only: histogram bucket bounds are written as floats ("10.0"), and
TF Serving's counters are exported untyped, because prometheus-client would rename
a counter `x` to `x_total` (see `_PlainCounter`). edgeserve's own metrics follow
Prometheus's conventions (`edgeserve_`, seconds, bytes).

Recording is off until something reads it (`enable()`: the server calls it when the
monitoring config turns the page on, or when the status page, which reads the page, is
on, as it is by default). Measured in the server, the recording calls take about 4 µs
of CPU per request (bench/run.py's "status page and metrics off" row against the
default one).
"""
from __future__ import annotations

import asyncio
import threading
from bisect import bisect_left
from dataclasses import dataclass
from itertools import accumulate
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import text_proto
from .errors import ServingError, StatusCode
from .servable import ServableId

if TYPE_CHECKING:
    from .manager import Manager

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath
BATCH_THREAD_POOL = "batch_threads"  # the label TF Serving's batching session reports
RUNTIME = "TF1"  # TF Serving's runtime label for SavedModels run through a Session

# Every metric of this module, registered with prometheus-client's registry when the
# page is first served: prometheus-client (3.4 MB, 20 ms) is imported only then.
_COLLECTORS: list[Any] = []
_registry: Any = None


def _exponential(scale: float, growth: float, count: int) -> list[float]:
    """TF's monitoring::Buckets::Exponential: scale, scale*growth, ... (count bounds)."""
    return [scale * growth**i for i in range(count)]


class _PlainCounter:
    """A counter exported under exactly its TF Serving name (no `_total`).

    prometheus-client appends `_total` to every counter's samples; dashboards built on
    TF Serving query `:tensorflow:serving:request_count`, so these are exported as
    untyped series with the plain name. Thread-safe: warmups count from load threads.
    """

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self._values: dict[tuple[str, ...], float] = {}
        self._lock = threading.Lock()
        _COLLECTORS.append(self)

    def inc(self, labels: tuple[str, ...], amount: float = 1) -> None:
        with self._lock:
            self._values[labels] = self._values.get(labels, 0) + amount

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import Metric

        metric = Metric(self.name, self.documentation, "unknown")
        with self._lock:
            items = list(self._values.items())
        for labels, value in items:
            metric.add_sample(self.name, dict(zip(self.labelnames, labels)), value)
        yield metric


class _Sampler:
    """A labelled histogram (TF's Sampler) kept as plain lists: an observation is a
    dictionary lookup, a bisect and two additions (0.2 µs here). prometheus-client's
    Histogram takes two locks and walks its buckets (0.8 µs, plus 0.6 µs for its
    locked `labels()`), on the path of every request. Observed on the event loop,
    or from a load thread for its own model path: no two threads add to one cell at
    once, so no lock."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...], buckets: list[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.bounds = buckets
        # labels -> [count per bucket..., count above the last bound, sum]
        self._cells: dict[tuple[str, ...], list] = {}
        _COLLECTORS.append(self)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        cell = self._cells.get(labels)
        if cell is None:
            cell = self._cells[labels] = [0] * (len(self.bounds) + 1) + [0.0]
        cell[bisect_left(self.bounds, value)] += 1  # Prometheus buckets are "less or equal"
        cell[-1] += value

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import HistogramMetricFamily
        from prometheus_client.utils import floatToGoString

        bounds = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for labels, cell in list(self._cells.items()):
            family.add_metric(labels, list(zip(bounds, accumulate(cell[:-1]))), sum_value=cell[-1])
        yield family


# ---- TF Serving's metrics (servables/tensorflow/util.cc and friends) ----------

_LATENCY_US = _exponential(10, 1.8, 33)  # ~20 minutes

request_count = _PlainCounter(
    ":tensorflow:serving:request_count", "The total number of requests.", ("model_name", "status"))
request_latency = _Sampler(
    ":tensorflow:serving:request_latency",
    "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
    ("model_name", "API", "entrypoint"), _LATENCY_US)
runtime_latency = _Sampler(
    ":tensorflow:serving:runtime_latency",
    "Distribution of wall time (in microseconds) for Tensorflow runtime.",
    ("model_name", "API", "runtime"), _LATENCY_US)
example_counts = _Sampler(
    ":tensorflow:serving:request_example_counts", "The number of tensorflow.Examples per request.",
    ("model",), _exponential(1, 2, 15))
example_count_total = _PlainCounter(
    ":tensorflow:serving:request_example_count_total", "The total number of tensorflow.Examples.", ("model",))
warmup_latency = _Sampler(
    ":tensorflow:serving:model_warmup_latency",
    "Distribution of wall time (in microseconds) for warming up the model.",
    ("model_path", "status"), _LATENCY_US)
warmup_records_read = _PlainCounter(
    ":tensorflow:serving:model_warmup_records_read",
    "Total number of warmup records read during model warmup.", ("model_path", "status"))
# TensorFlow's SavedModel loader's (cc/saved_model/loader.cc), which TF Serving exports.
load_attempt_count = _PlainCounter(
    ":tensorflow:cc:saved_model:load_attempt_count",
    "The number of times a SavedModel was successfully loaded.", ("model_path", "status"))
load_latency = _PlainCounter(
    ":tensorflow:cc:saved_model:load_latency",
    "Latency in microseconds for SavedModels that were successfully loaded.", ("model_path",))
# Batching (batching_session.cc, TF's batch_resource_base.cc).
queuing_latency = _Sampler(
    ":tensorflow:serving:batching_session:queuing_latency",
    "Distribution of wall time spent (in microseconds) in queuing",
    ("thread_pool_name",), _exponential(100, 1.2, 52))
batch_size = _Sampler(
    ":tensorflow:serving:batching:batch_size",
    "Tracks the batch size distribution on the batch result by model_name (if available).",
    ("model_name", "op_name"), _exponential(1, 1.5, 20))
processed_batch_size = _PlainCounter(
    ":tensorflow:serving:batching:processed_batch_size_v2",
    "Tracks the batch size on processing by model_name and op name (if available).",
    ("model_name", "op_name", "batch_size"))

# ---- edgeserve's own -----------------------------------------------------------

_SECONDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
model_load_seconds = _Sampler(
    "edgeserve_model_load_seconds", "Time one attempt to load a model version took (status: OK or the error code).",
    ("model_name", "status"), _SECONDS)
model_unload_seconds = _Sampler(
    "edgeserve_model_unload_seconds", "Time unloading a model version took, after its last request finished.",
    ("model_name",), _SECONDS)
event_loop_lag = _Sampler(
    "edgeserve_event_loop_lag_seconds",
    "How late the event loop ran a timer: time during which no request could be read or answered.",
    (), [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])


class _ManagerCollector:
    """Gauges read from the manager at scrape time: nothing to keep in step."""

    manager: "Manager | None" = None

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        manager = self.manager
        if manager is None:
            return
        state = GaugeMetricFamily(
            "edgeserve_model_version_state",
            "1 for each model version's current state (START, LOADING, AVAILABLE, UNLOADING, END).",
            labels=("model_name", "version", "state"))
        memory = GaugeMetricFamily(
            "edgeserve_model_version_memory_bytes",
            "RAM a loaded version holds: measured after its load, estimated while it loads.",
            labels=("model_name", "version"))
        depth = GaugeMetricFamily(
            "edgeserve_batch_queue_depth", "Requests waiting in a signature's batch queue.",
            labels=("model_name", "version", "signature"))
        resources = manager.resources
        for name in manager.model_names():
            try:
                statuses = manager.status(name)
            except ServingError:  # a model with no version found yet
                statuses = []
            for status in statuses:
                version = str(status.version)
                state.add_metric((name, version, status.state.name), 1)
                cost = resources.cost(ServableId(name, status.version))
                if cost:
                    memory.add_metric((name, version), cost)
            for ver in manager.versions(name):
                for signature, runner in ver.runners.items():
                    waiting = getattr(runner, "waiting", None)
                    if waiting is not None:
                        depth.add_metric((name, str(ver.id.version), signature), waiting)
        yield state
        yield memory
        yield depth
        yield GaugeMetricFamily(
            "edgeserve_model_memory_bytes", "RAM all loaded and loading versions hold together.",
            value=resources.used())
        yield GaugeMetricFamily(
            "edgeserve_model_memory_limit_bytes", "--total_model_memory_limit_bytes (0: no limit).",
            value=resources.limit)


_manager_collector = _ManagerCollector()
_COLLECTORS.append(_manager_collector)


class _AdmissionCollector:
    """The overload bounds (admission.py) read at scrape time: what is open and pending
    now, and how much each bound has turned away."""

    figures: "Callable[[], Admission] | None" = None

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        if self.figures is None:
            return
        now = self.figures()
        connections = GaugeMetricFamily(
            "edgeserve_open_connections", "Connections open now.", labels=("protocol",))
        connections.add_metric(("REST",), now.rest_connections)
        connections.add_metric(("GRPC",), now.grpc_connections)
        yield connections
        yield GaugeMetricFamily(
            "edgeserve_pending_requests",
            "Inference requests waiting now for a worker thread, a batch or a version.",
            value=now.pending)
        refused = CounterMetricFamily(
            "edgeserve_refused", "Connections and requests turned away at once, by the flag that bounds them.",
            labels=("limit",))
        refused.add_metric(("rest_api_max_connections",), now.rest_refused)
        refused.add_metric(("grpc_max_connections",), now.grpc_refused)
        refused.add_metric(("max_pending_requests",), now.pending_refused)
        yield refused


@dataclass
class Admission:
    rest_connections: int = 0
    rest_refused: int = 0
    grpc_connections: int = 0
    grpc_refused: int = 0
    pending: int = 0
    pending_refused: int = 0


_admission_collector = _AdmissionCollector()
_COLLECTORS.append(_admission_collector)


class _RequestLogCollector:
    """Request logging (request_log.py), read at scrape time: records written or
    not, by model and status (TF Serving's request_log_count), why sampled requests
    were dropped, the disk the files take, and which prefixes are paused."""

    figures: "Callable[[], Any] | None" = None

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

        if self.figures is None:
            return
        now = self.figures()
        count = Metric(":tensorflow:serving:request_log_count",
                       "The total number of requests logged from the model server sliced down by "
                       "model_name and status code.", "unknown")
        for (model_name, status), value in sorted(now.counts.items()):
            count.add_sample(count.name, {"model_name": model_name, "status_code": status}, value)
        yield count
        dropped = CounterMetricFamily(
            "edgeserve_request_log_dropped", "Sampled requests not written, by reason "
            "(paused: the cap, a full disk or an unwritable folder; queue_full: the writer fell behind).",
            labels=("reason",))
        for reason, value in sorted(now.dropped.items()):
            dropped.add_metric((reason,), value)
        yield dropped
        paused = GaugeMetricFamily(
            "edgeserve_request_log_paused", "1 while request logging to a filename_prefix is paused, with why.",
            labels=("filename_prefix", "reason"))
        for prefix, reason in sorted(now.paused.items()):
            paused.add_metric((prefix, reason), 1)
        yield paused
        yield GaugeMetricFamily(
            "edgeserve_request_log_bytes", "Disk the request log files of every configured prefix take.",
            value=now.total_bytes)
        yield GaugeMetricFamily(
            "edgeserve_request_log_max_total_bytes", "--request_log_max_total_bytes (0: no cap).",
            value=now.max_total_bytes)


_request_log_collector = _RequestLogCollector()
_COLLECTORS.append(_request_log_collector)


# ---- recording -------------------------------------------------------------------

_enabled = False


def enable() -> None:
    """Starts recording (until then every record_* call returns at once)."""
    global _enabled
    _enabled = True


def enabled() -> bool:
    return _enabled


def record_request(model_name: str, api: str, entrypoint: str, code: StatusCode, seconds: float) -> None:
    """One REST or gRPC request (TF Serving's RecordModelRequestCount and, for a
    success, RecordRequestLatency)."""
    if not _enabled:
        return
    request_count.inc((model_name, code.name))
    if code == StatusCode.OK:
        request_latency.observe((model_name, api, entrypoint), seconds * 1e6)


def record_runtime(model_name: str, api: str, seconds: float) -> None:
    """One successful model run for a request, batch queueing included (as TF Serving
    measures its batching session's Run)."""
    if not _enabled:
        return
    runtime_latency.observe((model_name, api, RUNTIME), seconds * 1e6)


def record_examples(model_name: str, count: int) -> None:
    if not _enabled:
        return
    example_counts.observe((model_name,), count)
    example_count_total.inc((model_name,), count)


def record_load(model_name: str, model_path: str, ok: bool, seconds: float, code: StatusCode) -> None:
    if not _enabled:
        return
    load_attempt_count.inc((model_path, "success" if ok else "fail"))
    if ok:
        load_latency.inc((model_path,), int(seconds * 1e6))
    model_load_seconds.observe((model_name, code.name), seconds)


def record_unload(model_name: str, seconds: float) -> None:
    if not _enabled:
        return
    model_unload_seconds.observe((model_name,), seconds)


def record_warmup(model_path: str, status: str, seconds: float, records: int) -> None:
    """`status`: "OK", or TF's Status::ToString ("CODE: message"), as TF Serving labels it."""
    if not _enabled:
        return
    warmup_latency.observe((model_path, status), seconds * 1e6)
    warmup_records_read.inc((model_path, status), records)


def record_batch(model_name: str, signature: str, rows: int, padded: int, queued: Iterable[float]) -> None:
    """One batch about to run: its size, its padded size, each request's queueing time."""
    if not _enabled:
        return
    batch_size.observe((model_name, signature), rows)
    processed_batch_size.inc((model_name, signature, str(padded)))
    labels = (BATCH_THREAD_POOL,)
    for seconds in queued:
        queuing_latency.observe(labels, seconds * 1e6)


def watch(manager: "Manager") -> None:
    """Model state, memory and batch queue gauges read from `manager` at scrape time."""
    _manager_collector.manager = manager


def watch_admission(figures: "Callable[[], Admission]") -> None:
    """Open connections, pending requests and refusals, from `figures()` at scrape time."""
    _admission_collector.figures = figures


def watch_request_log(figures: "Callable[[], Any]") -> None:
    """Request logging's counters and pauses, from `figures()` at scrape time."""
    _request_log_collector.figures = figures


async def watch_loop_lag(interval: float = 0.25) -> None:
    """Samples the event loop's lag: how much later than asked a timer fires."""
    loop = asyncio.get_running_loop()
    while True:
        asked = loop.time() + interval
        await asyncio.sleep(interval)
        event_loop_lag.observe((), max(0.0, loop.time() - asked))


def page() -> bytes:
    """Every metric in Prometheus's text format (version 0.0.4)."""
    global _registry
    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    if _registry is None:
        _registry = CollectorRegistry(auto_describe=False)
        for collector in _COLLECTORS:
            _registry.register(collector)
        ProcessCollector(registry=_registry)  # process_resident_memory_bytes, CPU seconds, open fds
    return generate_latest(_registry)


# ---- --monitoring_config_file ----------------------------------------------------

def read_config(path: str) -> str | None:
    """The path the metrics page is served at, or None when Prometheus is not enabled.
    Raises ValueError naming the file (and line:column) when it cannot be used."""
    from .protos.monitoring_config_pb2 import MonitoringConfig

    config = text_proto.read_file(path, MonitoringConfig(), "monitoring_config_file")
    prometheus = config.prometheus_config
    if not prometheus.enable:
        return None
    page_path = prometheus.path or DEFAULT_PATH
    if not page_path.startswith("/"):
        raise ValueError(f"--monitoring_config_file {path}: prometheus_config.path must start with '/', got {page_path!r}")
    return page_path
