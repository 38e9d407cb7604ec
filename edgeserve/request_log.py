"""Request logging: a sampled share of each model's inference requests, with their
answers, written as TF Serving's `PredictionLog` records to TFRecord files.

Owns what TF Serving's ServerRequestLogger and RequestLogger do (a model's
`logging_config` → a sampler; a sampled Predict, Classify, Regress or MultiInference
becomes one PredictionLog with its LogMetadata) and what its open-source build leaves
out, the LogCollector: one writer thread that appends the records to
`<filename_prefix>.<UTC time>.<n>.tfrecord`, rotates a file at
--request_log_max_file_bytes and stops at --request_log_max_total_bytes. The files
read back with `tf.data.TFRecordDataset` and, copied to a version's
`assets.extra/tf_serving_warmup_requests`, warm a model up.

What it must not do: hold the event loop or fail a request. On the loop a request
costs a dictionary look-up and, when sampled, a random number and a queue append;
building and serializing the messages, the CRCs and the writes happen on the writer
thread, in batches. A full disk, the cap, a missing or read-only folder pause logging
for the files concerned (a log line and `edgeserve_request_log_paused` say so; the
sampled requests are counted as dropped), and it is retried every few seconds;
serving never notices. Records waiting for the writer are bounded in bytes, so a slow
disk cannot grow the process either.
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import queue
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, NamedTuple, Sequence

import numpy as np

from . import tfrecord
from .config import TENSORFLOW_PLATFORM, LoggingConfig, ModelConfig
from .servable import DEFAULT_SERVING_SIGNATURE_DEF_KEY

if TYPE_CHECKING:
    from .api import ModelSpec
    from .servable import SignatureSpec

log = logging.getLogger("edgeserve.request_log")

SAVED_MODEL_TAGS = ("serve",)  # what TF Serving loads SavedModels with, logged with them
QUEUE_BYTES = 16 * 1024 * 1024  # records waiting for the writer, at most (estimated)
RETRY_SECONDS = 10.0  # a paused prefix tries again after this
_BATCH_RECORDS = 512  # records handed to the writer at once, at most
# Sampled records gather on the loop for this long before the writer is woken with them
# all: a wake-up per record (a thread switch and a fight for the interpreter lock each)
# cost more than building the record.
HANDOFF_SECONDS = 0.1
_YIELD_SECONDS = 0.001  # the writer's work between two yields of the interpreter lock
_SUFFIX = ".tfrecord"
_NAME_TAIL = re.compile(r"\.\d{8}T\d{6}Z\.\d+" + re.escape(_SUFFIX))

_WAKE = object()  # on the queue: look at the config again (no record)

# Why logging to a prefix is paused (edgeserve_request_log_paused's label).
CAP = "cap"  # --request_log_max_total_bytes
DISK_FULL = "disk_full"
UNWRITABLE = "unwritable"  # the folder is missing, not a folder, or read-only
WRITE_ERROR = "write_error"

# Why sampled requests were not written (edgeserve_request_log_dropped_total's label).
QUEUE_FULL = "queue_full"
PAUSED = "paused"
ERROR = "error"


def folder_problem(prefix: str) -> str | None:
    """What keeps files from being created at `prefix`, or None: a missing folder, a
    file where the folder should be, a folder this process cannot write."""
    folder = os.path.dirname(prefix) or "/"
    if not os.path.exists(folder):
        return f"folder {folder} does not exist"
    if not os.path.isdir(folder):
        return f"{folder} is not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable (read-only file system or permissions)"
    return None


def log_files(prefix: str) -> list[str]:
    """The request log files written for `prefix`, oldest first."""
    folder, base = os.path.split(prefix)
    try:
        names = os.listdir(folder or "/")
    except OSError:
        return []
    found = []
    for name in names:
        if name.startswith(base) and _NAME_TAIL.fullmatch(name, len(base)):
            _, stamp, n, _ = name[len(base):].split(".")
            found.append(((stamp, int(n)), os.path.join(folder, name)))
    return [path for _, path in sorted(found)]


@dataclass(frozen=True)
class _Sampler:
    """One distinct logging_config (TF Serving shares a RequestLogger between models
    whose configs are identical; here only the rate and prefix matter)."""

    config: LoggingConfig
    tags: tuple[str, ...]

    def sample(self) -> bool:
        rate = self.config.sampling_rate
        return rate >= 1.0 or (rate > 0.0 and random.random() < rate)


class _Record(NamedTuple):
    prefix: str
    model_name: str
    build: Callable[[], bytes]  # the serialized PredictionLog, built on the writer thread
    size: int  # bytes it keeps alive while queued (estimated)


@dataclass
class _Prefix:
    """The writer's state for one filename prefix (writer thread only)."""

    prefix: str
    fd: int = -1
    path: str = ""
    size: int = 0  # bytes in the open file, all whole records
    paused: str = ""  # why, while paused: UNWRITABLE, DISK_FULL or WRITE_ERROR
    retry_at: float = 0.0


@dataclass
class Figures:
    """What the metrics page shows (read at scrape time)."""

    # (model, status code) -> sampled requests: OK when written (TF Serving's request_log_count).
    counts: dict[tuple[str, str], int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> sampled requests
    paused: dict[str, str] = field(default_factory=dict)  # prefix -> reason
    total_bytes: int = 0
    max_total_bytes: int = 0


class RequestLog:
    """The server's request logger: `update` with the config in force, the four
    `log_*` calls after each successful request (event loop), `start`/`stop` the
    writer thread."""

    def __init__(self, *, max_file_bytes: int, max_total_bytes: int,
                 queue_bytes: int = QUEUE_BYTES, retry_seconds: float = RETRY_SECONDS) -> None:
        self.max_file_bytes = max_file_bytes
        self.max_total_bytes = max_total_bytes
        self.queue_bytes = queue_bytes
        self.retry_seconds = retry_seconds
        self._samplers: dict[str, _Sampler] = {}  # model name -> sampler (loop thread)
        # Batches of records (lists), _WAKE or None (stop), from the loop to the writer.
        self._queue: queue.SimpleQueue[list[_Record] | object | None] = queue.SimpleQueue()
        self._buffer: list[_Record] = []  # sampled on the loop, not handed over yet
        self._lock = threading.Lock()  # the counters below, shared by both threads
        self._queued_bytes = 0
        self._counts: Counter[tuple[str, str]] = Counter()  # Figures.counts
        self._dropped: Counter[str] = Counter()
        # Writer thread only, except `_prefixes_wanted` (replaced whole by `update`).
        self._prefixes_wanted: frozenset[str] = frozenset()
        self._prefixes: dict[str, _Prefix] = {}
        self._total = 0  # bytes of every known prefix's files on disk
        self._cap_paused_until = 0.0
        self._rescan = True
        self._thread: threading.Thread | None = None

    # ---- configuration (event loop) ----------------------------------------------------

    def update(self, models: Iterable[ModelConfig]) -> None:
        """The logging_configs of the config in force; a changed rate applies to the
        next request (TF Serving's ServerRequestLogger::Update)."""
        samplers: dict[str, _Sampler] = {}
        shared: dict[tuple[LoggingConfig, tuple[str, ...]], _Sampler] = {}
        for model in models:
            if model.logging is None:
                continue
            tags = SAVED_MODEL_TAGS if model.platform == TENSORFLOW_PLATFORM else ()
            key = (model.logging, tags)
            samplers[model.name] = shared.setdefault(key, _Sampler(model.logging, tags))
        self._samplers = samplers
        prefixes = frozenset(s.config.filename_prefix for s in samplers.values())
        if prefixes != self._prefixes_wanted:
            self._prefixes_wanted = prefixes
            self._rescan = True
            if samplers:
                self.start()
            self._queue.put(_WAKE)  # the writer adopts the prefixes now: a bad folder is said at once

    def models(self) -> Mapping[str, LoggingConfig]:
        return {name: sampler.config for name, sampler in self._samplers.items()}

    # ---- requests (event loop) ------------------------------------------------------

    def _enqueue(self, sampler: _Sampler, model_name: str, build: Callable[[], bytes], size: int) -> None:
        with self._lock:
            if self._queued_bytes + size > self.queue_bytes:
                self._dropped[QUEUE_FULL] += 1
                self._counts[model_name, "RESOURCE_EXHAUSTED"] += 1
                return
            self._queued_bytes += size
        self._buffer.append(_Record(sampler.config.filename_prefix, model_name, build, size))
        if len(self._buffer) >= _BATCH_RECORDS:
            self._hand_over()
        elif len(self._buffer) == 1:
            try:
                asyncio.get_running_loop().call_later(HANDOFF_SECONDS, self._hand_over)
            except RuntimeError:  # called off a loop (tests): no batching
                self._hand_over()

    def _hand_over(self) -> None:
        batch, self._buffer = self._buffer, []
        if batch:
            self._queue.put(batch)

    def log_predict(self, spec: ModelSpec, version: int, signature_name: str, signature: SignatureSpec,
                    inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] | None,
                    outputs: Mapping[str, np.ndarray]) -> None:
        sampler = self._samplers.get(spec.name)
        if sampler is None or not sampler.sample():
            return
        now = int(time.time())
        output_filter = list(output_filter or ())

        def build() -> bytes:
            from . import messages, tensor_proto

            record = messages.PredictionLog()
            _metadata(record.log_metadata, sampler, spec.name, version, signature_name, now)
            request = record.predict_log.request
            _spec(request.model_spec, spec)
            for alias, array in inputs.items():
                tensor_proto.from_ndarray(array, signature.inputs[alias].dtype, request.inputs[alias])
            request.output_filter.extend(output_filter)
            response = record.predict_log.response
            _resolved(response.model_spec, spec.name, version, signature_name)
            for alias, array in outputs.items():
                tensor_proto.from_ndarray(array, signature.outputs[alias].dtype, response.outputs[alias])
            return record.SerializeToString()

        size = sum(_nbytes(a) for a in inputs.values()) + sum(_nbytes(a) for a in outputs.values())
        self._enqueue(sampler, spec.name, build, size)

    def log_classify_or_regress(self, spec: ModelSpec, version: int, signature_name: str, examples: Any,
                                result: Any, size: int, *, classify: bool) -> None:
        """`examples`: the request's Input; `result`: the filled Classification- or
        RegressionResult; `size`: the examples' serialized bytes."""
        sampler = self._samplers.get(spec.name)
        if sampler is None or not sampler.sample():
            return
        now = int(time.time())

        def build() -> bytes:
            from . import messages

            record = messages.PredictionLog()
            _metadata(record.log_metadata, sampler, spec.name, version, signature_name, now)
            entry = record.classify_log if classify else record.regress_log
            _spec(entry.request.model_spec, spec)
            entry.request.input.MergeFromString(examples.SerializeToString())
            _resolved(entry.response.model_spec, spec.name, version, signature_name)
            entry.response.result.MergeFromString(result.SerializeToString())
            return record.SerializeToString()

        self._enqueue(sampler, spec.name, build, size)

    def log_multi_inference(self, tasks: Sequence[tuple[ModelSpec, str]], version: int, examples: Any,
                            response: Any, size: int) -> None:
        model_name = tasks[0][0].name
        sampler = self._samplers.get(model_name)
        if sampler is None or not sampler.sample():
            return
        now = int(time.time())

        def build() -> bytes:
            from . import messages

            record = messages.PredictionLog()
            first = tasks[0][0]
            _metadata(record.log_metadata, sampler, model_name, version,
                      first.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY, now)
            entry = record.multi_inference_log
            for spec, method_name in tasks:
                task = entry.request.tasks.add()
                _spec(task.model_spec, spec)
                task.method_name = method_name
            entry.request.input.MergeFromString(examples.SerializeToString())
            entry.response.MergeFromString(response.SerializeToString())
            return record.SerializeToString()

        self._enqueue(sampler, model_name, build, size)

    # ---- the writer thread ------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="request-log", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Writes what is queued (for at most `timeout` seconds) and closes the files."""
        self._hand_over()
        thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)

    def figures(self) -> Figures:
        with self._lock:
            counts, dropped = dict(self._counts), dict(self._dropped)
        paused = {p.prefix: p.paused for p in list(self._prefixes.values()) if p.paused}
        if self._cap_paused_until:
            paused.update({prefix: CAP for prefix in self._prefixes_wanted})
        return Figures(counts, dropped, paused, self._total, self.max_total_bytes)

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.retry_seconds)
            except queue.Empty:
                first = _WAKE
            if self._rescan:
                self._rescan_prefixes()
            if first is _WAKE:
                self._lift_pauses()
                continue
            stopping = first is None
            batch: list[_Record] = [] if stopping else first  # type: ignore[assignment]
            while not stopping and len(batch) < _BATCH_RECORDS:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                elif more is not _WAKE:
                    batch = batch + more  # type: ignore[operator]
            if batch:
                self._write_batch(batch)
            if stopping:
                for state in self._prefixes.values():
                    self._close(state)
                return

    def _rescan_prefixes(self) -> None:
        """Adopts the prefixes of the config in force and recounts their files on disk
        (files an operator moved away free the cap)."""
        self._rescan = False
        wanted = self._prefixes_wanted
        for prefix in list(self._prefixes):
            if prefix not in wanted:
                self._close(self._prefixes.pop(prefix))
        for prefix in wanted:
            if prefix not in self._prefixes:
                self._prefixes[prefix] = _Prefix(prefix)
                problem = folder_problem(prefix)
                if problem:
                    self._pause(self._prefixes[prefix], UNWRITABLE, problem)
        self._total = self._count_total()

    def _lift_pauses(self) -> None:
        """Ends the pauses that need no write to know they are over (checked when the
        writer is idle): the cap once files were moved away, a folder that now exists.
        So the metric and the log say so without waiting for the next sampled request."""
        now = time.monotonic()
        if self._cap_paused_until and now >= self._cap_paused_until:
            self._total = self._count_total()
            if self._total < self.max_total_bytes:
                self._cap_paused_until = 0.0
                log.info("Request logging resumed: the request log files take %d bytes, under the cap of %d",
                         self._total, self.max_total_bytes)
            else:
                self._cap_paused_until = now + self.retry_seconds
        for state in self._prefixes.values():
            if state.paused == UNWRITABLE and now >= state.retry_at:
                if folder_problem(state.prefix):
                    state.retry_at = now + self.retry_seconds
                else:
                    state.paused = ""
                    log.info("Request logging to %s resumed", state.prefix)

    def _count_total(self) -> int:
        total = 0
        for prefix in self._prefixes_wanted:
            for path in log_files(prefix):
                try:
                    total += os.stat(path).st_size
                except OSError:
                    pass
        return total

    def _write_batch(self, batch: list[_Record]) -> None:
        yield_at = time.perf_counter() + _YIELD_SECONDS
        groups: dict[str, list[_Record]] = {}
        for record in batch:
            groups.setdefault(record.prefix, []).append(record)
        for prefix, records in groups.items():
            state = self._prefixes.get(prefix)
            now = time.monotonic()
            if state is None or (state.paused and now < state.retry_at) or now < self._cap_paused_until:
                # The prefix left the config while its records waited, or is paused:
                # not even built.
                self._drop(records, PAUSED)
                continue
            framed: list[bytes] = []
            built: list[_Record] = []
            for record in records:
                # Hand the interpreter lock to the event loop every millisecond of work,
                # so a big batch delays a request by about that, not by a whole switch
                # interval (5 ms). After every record it halved the requests/s.
                if time.perf_counter() > yield_at:
                    time.sleep(0)
                    yield_at = time.perf_counter() + _YIELD_SECONDS
                try:
                    framed.append(tfrecord.frame(record.build()))
                except Exception:  # a bug must cost one record, not the writer
                    log.exception("Cannot build the request log record of a %s request", record.model_name)
                    self._drop([record], ERROR)
                    continue
                built.append(record)
            if not built:
                continue
            if self._write(state, b"".join(framed)):
                with self._lock:
                    self._counts.update((record.model_name, "OK") for record in built)
            else:
                self._drop(built, PAUSED)
        with self._lock:
            self._queued_bytes -= sum(record.size for record in batch)

    def _drop(self, records: list[_Record], reason: str) -> None:
        with self._lock:
            self._dropped[reason] += len(records)
            status = "INTERNAL" if reason == ERROR else "RESOURCE_EXHAUSTED"
            self._counts.update((record.model_name, status) for record in records)

    def _write(self, state: _Prefix, data: bytes) -> bool:
        """Appends whole records to the prefix's file; False when logging is paused.
        Called once a pause's retry time has come (`_write_batch` drops before that)."""
        now = time.monotonic()
        if state.paused and folder_problem(state.prefix):
            state.retry_at = now + self.retry_seconds
            return False
        if self.max_total_bytes and self._total + len(data) > self.max_total_bytes:
            self._total = self._count_total()  # an operator may have moved files away
            if self._total + len(data) > self.max_total_bytes:
                if not self._cap_paused_until:
                    log.error(
                        "Request logging paused: the request log files take %d bytes and the next "
                        "records would pass --request_log_max_total_bytes=%d. Serving goes on; "
                        "logging resumes once files are moved away (checked every %g s)",
                        self._total, self.max_total_bytes, self.retry_seconds)
                self._cap_paused_until = now + self.retry_seconds
                return False
        if self._cap_paused_until:
            self._cap_paused_until = 0.0
            log.info("Request logging resumed: the request log files take %d bytes, under the cap of %d",
                     self._total, self.max_total_bytes)
        if state.fd >= 0 and state.size and state.size + len(data) > self.max_file_bytes:
            self._close(state)
        try:
            if state.fd < 0:
                self._open(state)
            view = memoryview(data)
            while view:
                view = view[os.write(state.fd, view):]
        except OSError as exc:
            if state.fd >= 0:
                try:  # leave the file holding whole records only: it stays readable
                    os.ftruncate(state.fd, state.size)
                except OSError:
                    pass
                self._close(state)
            self._total = self._count_total()
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self._pause(state, DISK_FULL, f"the disk is full ({exc.strerror})")
            else:
                self._pause(state, WRITE_ERROR, f"cannot write {exc.filename or state.path}: {exc.strerror}")
            return False
        state.size += len(data)
        self._total += len(data)
        if state.paused:
            log.info("Request logging to %s resumed", state.prefix)
            state.paused = ""
        return True

    def _open(self, state: _Prefix) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        for n in range(1000):
            path = f"{state.prefix}.{stamp}.{n}{_SUFFIX}"
            try:
                state.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o644)
            except FileExistsError:
                continue
            state.path, state.size = path, 0
            return
        raise OSError(errno.EEXIST, "no free file name", f"{state.prefix}.{stamp}.*{_SUFFIX}")

    def _close(self, state: _Prefix) -> None:
        if state.fd >= 0:
            try:
                os.close(state.fd)
            except OSError:
                pass
            state.fd = -1

    def _pause(self, state: _Prefix, reason: str, message: str) -> None:
        if state.paused != reason:
            log.error("Request logging to %s paused: %s. Serving goes on; logging retries every %g s",
                      state.prefix, message, self.retry_seconds)
        state.paused = reason
        state.retry_at = time.monotonic() + self.retry_seconds


def _nbytes(array: Any) -> int:
    if isinstance(array, np.ndarray):
        if array.dtype == object:
            return sum(len(item) if isinstance(item, (bytes, str)) else 8 for item in array.flat) + 64
        return array.nbytes + 64
    return 64


def _spec(out: Any, spec: ModelSpec) -> None:
    """The ModelSpec as the client sent it."""
    out.name = spec.name
    if spec.version is not None:
        out.version.value = spec.version
    elif spec.version_label is not None:
        out.version_label = spec.version_label
    out.signature_name = spec.signature_name


def _resolved(out: Any, name: str, version: int, signature_name: str) -> None:
    out.name = name
    out.version.value = version
    out.signature_name = signature_name


def _metadata(out: Any, sampler: _Sampler, name: str, version: int, signature_name: str, now: int) -> None:
    """LogMetadata as RequestLogger::Log fills it: the servable that ran, the sampling
    config, the SavedModel's tags and the time."""
    _resolved(out.model_spec, name, version, signature_name)
    out.sampling_config.MergeFromString(sampler.config.sampling_config)
    out.saved_model_tags.extend(sampler.tags)
    out.timestamp_secs = now
