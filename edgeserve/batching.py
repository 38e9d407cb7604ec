"""Where a signature runs: inline on the event loop or on a worker thread.

Each (loaded version, signature) gets a `SignatureRunner`. It times every run (the
model call itself, not the thread handoff) and keeps the recent ones: while their
p99 stays under `inline_threshold` the run happens inline on the loop, because a
thread handoff (~20-50 µs measured here) would cost more than the run; a signature
whose runs grow past it moves to the worker threads so the loop never stalls. A new
signature starts on the worker until it has a few timings, and a request whose
inputs are more than twice the largest timed ones (a bigger batch) goes to the
worker too, since its run time is not known yet.

With --enable_batching, a signature whose every input and output has a batch (first)
dimension gets a `BatchQueue` in front of its runner: TF Serving's batching session,
with an adaptive rule in place of its fixed timeout. A request is queued, and the
queue is looked at once the event loop has handled everything that arrived with it
(`call_soon`: the end of the current loop iteration, microseconds, never a timer).
Then, while fewer than `num_batch_threads` batches run, the oldest queued request and
those queued behind it that agree with it on dtypes, on every dimension but the first
(all but the rank with `pad_variable_length_inputs`) and on the outputs asked for form
a batch of up to the batch limit and run. So a request to an idle model runs at once,
alone; under load, requests arriving while batches run accumulate and leave together
as soon as a batch thread is free. No request ever waits for a batch to fill:
`batch_timeout_micros` is an upper bound that this rule always keeps. Two refinements,
measured in bench/batching.py: at light load (the last batch held one request) a lone
request to an idle queue whose runs are inline starts the moment it is queued, without
the loop iteration in between (once per iteration, so a burst still batches); under
load (the last batch held several) a queue short of a full batch is looked at one
loop iteration later, so the batch also takes what the next read brings.
(`--adaptive_batching=false` restores TF Serving's rule for comparison: a batch that
is not full waits until its oldest request is `batch_timeout_micros` old.)

A batch is the requests' inputs concatenated along the first dimension, padded up to
the next `allowed_batch_sizes` entry by repeating the last request's first row (as TF
Serving does; padding rows are cut off the outputs), ragged inner dimensions padded with each
tensor's first element when `pad_variable_length_inputs` is set. The outputs are split
back by rows. A request of more rows than `max_batch_size` is refused; with
`enable_large_batch_splitting` one of more than `max_execution_batch_size` rows is cut
into pieces that run in consecutive batches. Beyond `max_enqueued_batches` waiting
batches a request is refused at once with UNAVAILABLE; one whose deadline passed while
it waited is answered DEADLINE_EXCEEDED and never runs.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from concurrent.futures import Executor
from typing import Callable, Mapping, Sequence

import numpy as np

from . import metrics
from .batch_options import BatchOptions
from .errors import ServingError, StatusCode, internal, invalid_argument
from .servable import Servable, SignatureSpec

WINDOW = 128  # recent runs whose p99 decides
DECIDE_EVERY = 32  # re-decide after this many runs
MIN_SAMPLES = 16  # timings needed before running inline


def _nbytes(inputs: Mapping[str, np.ndarray]) -> int:
    return sum(getattr(a, "nbytes", 0) for a in inputs.values())


class SignatureRunner:
    __slots__ = (
        "servable", "signature_name", "_executor", "_threshold", "_samples",
        "_since_decision", "inline", "_largest", "_inline_bytes",
    )

    def __init__(
        self,
        servable: Servable,
        signature_name: str,
        executor: Executor,
        inline_threshold_seconds: float,
    ) -> None:
        self.servable = servable
        self.signature_name = signature_name
        self._executor = executor
        self._threshold = inline_threshold_seconds
        self._samples: deque[float] = deque(maxlen=WINDOW)
        self._since_decision = 0
        self.inline = False
        self._largest = 0  # input bytes of the largest run timed since the last decision
        self._inline_bytes = 0  # requests up to this size may run inline

    def _timed_run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None,
        nbytes: int,
        caller_thread: bool = False,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        started = time.perf_counter()
        try:
            return self.servable.run(self.signature_name, inputs, output_filter, caller_thread, timeout_ms)
        finally:
            self._record(time.perf_counter() - started, nbytes)

    def _record(self, seconds: float, nbytes: int) -> None:
        # Called on the loop (inline) or a worker; deque.append is atomic and a
        # stale decision only costs one handoff, so no lock.
        self._samples.append(seconds)
        self._largest = max(self._largest, nbytes)
        if self.inline and seconds > 10 * self._threshold:
            self.inline = False  # one very slow run is enough to leave the loop
            return
        self._since_decision += 1
        if self._since_decision >= DECIDE_EVERY:
            self._since_decision = 0
            samples = sorted(self._samples)
            if len(samples) >= MIN_SAMPLES:
                p99 = samples[min(len(samples) - 1, max(0, int(len(samples) * 0.99) - 1))]
                self.inline = p99 < self._threshold
                self._inline_bytes = 2 * self._largest
                self._largest = 0

    def start(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None,
        timeout_ms: int,
        done: Callable[[dict | None, BaseException | None], None],
    ) -> None:
        """`run` for callers that want a callback (the batcher): `done(outputs, None)` or
        `done(None, error)`, at once when the run is inline."""
        nbytes = _nbytes(inputs)
        if self._runs_inline(nbytes):
            try:
                outputs = self._timed_run(inputs, output_filter, nbytes, True, timeout_ms)
            except Exception as exc:
                done(None, exc)
            else:
                done(outputs, None)
            return
        future = self._on_worker(inputs, output_filter, nbytes, timeout_ms)

        def finished(f: asyncio.Future) -> None:
            error = asyncio.CancelledError() if f.cancelled() else f.exception()
            done(None, error) if error is not None else done(f.result(), None)

        future.add_done_callback(finished)

    def _runs_inline(self, nbytes: int) -> bool:
        return self.inline and nbytes <= self._inline_bytes

    def _on_worker(self, inputs, output_filter, nbytes: int, timeout_ms: int) -> asyncio.Future:
        return asyncio.get_running_loop().run_in_executor(
            self._executor, self._timed_run, inputs, output_filter, nbytes, False, timeout_ms
        )

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        nbytes = _nbytes(inputs)
        if self._runs_inline(nbytes):
            # Inline runs are the ones measured tiny: the runtime does them on this
            # thread too, without handing them to its own pool.
            return self._timed_run(inputs, output_filter, nbytes, True, timeout_ms)
        return await self._on_worker(inputs, output_filter, nbytes, timeout_ms)

def batchable(signature: SignatureSpec) -> bool:
    """Whether every input and output has a first dimension of unknown size (a batch
    dimension): only then can requests be stacked and answers split."""
    specs = (*signature.inputs.values(), *signature.outputs.values())
    return bool(specs) and all(s.shape is not None and len(s.shape) >= 1 and s.shape[0] == -1 for s in specs)


def _rows(inputs: Mapping[str, np.ndarray]) -> int:
    """The request's batch size; TF Serving's batching session's checks and texts."""
    rows = None
    for array in inputs.values():
        if array.ndim == 0:
            raise invalid_argument("Batching Run() input tensors must have at least one dimension")
        if rows is None:
            rows = array.shape[0]
        elif array.shape[0] != rows:
            raise invalid_argument("Batching Run() input tensors must have equal 0th-dimension size")
    return rows or 0


class _Task:
    __slots__ = ("inputs", "rows", "key", "future", "deadline", "queued")

    def __init__(self, inputs, rows, key, future, deadline) -> None:
        self.queued = time.monotonic()
        self.inputs = inputs
        self.rows = rows
        self.key = key
        self.future = future
        self.deadline = deadline  # time.monotonic() limit, or None


def _pad_inner(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """`array` grown to `shape` (same first dimension), new cells = its first element."""
    if array.shape[1:] == shape:
        return array
    fill = array.flat[0] if array.size else np.zeros((), array.dtype)
    padded = np.full((array.shape[0], *shape), fill, dtype=array.dtype)
    padded[tuple(slice(0, n) for n in array.shape)] = array
    return padded


class BatchQueue:
    """Batches the requests for one (version, signature); see the module docstring."""

    def __init__(self, runner: SignatureRunner, options: BatchOptions, model_name: str = "") -> None:
        self.runner = runner
        self.options = options
        self.model_name = model_name  # for the metrics' labels
        self._limit = options.batch_limit
        self._pending: deque[_Task] = deque()
        self._pending_rows = 0
        self._running = 0
        self._looking = False  # a look at the queue is scheduled (call_soon)
        self._timer: asyncio.TimerHandle | None = None  # the fixed rule's wait
        self._last_batch = 1  # requests in the batch started last: 1 = light load
        self._started_at_once = False  # a lone request started at once this iteration
        self._deferred = False  # this look was put off by one iteration
        self.batches = 0  # batches run and rows in them, for the benchmark's mean size
        self.batched_rows = 0

    @property
    def waiting(self) -> int:
        """Requests (or pieces of split ones) queued and not yet in a batch."""
        return len(self._pending)

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        rows = _rows(inputs)
        options = self.options
        if rows > options.max_batch_size:
            # shared_batch_scheduler.h's text.
            raise invalid_argument(
                f"Task size {rows} is larger than maximum input batch size {options.max_batch_size}"
            )
        if rows == 0:  # nothing to batch (and no row to pad with)
            return await self.runner.run(inputs, output_filter, timeout_ms)
        deadline = time.monotonic() + timeout_ms / 1000 if timeout_ms > 0 else None
        if rows <= self._limit:
            return await self._submit(inputs, rows, output_filter, deadline)
        # enable_large_batch_splitting: pieces of at most the batch limit, in order.
        pieces = [
            {alias: array[start:start + self._limit] for alias, array in inputs.items()}
            for start in range(0, rows, self._limit)
        ]
        self._check_capacity(rows)
        futures = [self._submit(piece, _rows(piece), output_filter, deadline, checked=True) for piece in pieces]
        results = await asyncio.gather(*futures)
        return {alias: np.concatenate([r[alias] for r in results]) for alias in results[0]}

    def _check_capacity(self, rows: int) -> None:
        enqueued = math.ceil(self._pending_rows / self._limit)
        if math.ceil((self._pending_rows + rows) / self._limit) > self.options.max_enqueued_batches:
            # shared_batch_scheduler.h's text; 503 over REST.
            raise ServingError(
                StatusCode.UNAVAILABLE,
                "The batch scheduling queue to which this task was submitted is full; currently "
                f"{enqueued} batches enqueued and max_enqueued_batches is {self.options.max_enqueued_batches}",
            )

    def _submit(self, inputs, rows, output_filter, deadline, checked: bool = False) -> asyncio.Future:
        if not checked:
            self._check_capacity(rows)
        inner = (lambda a: a.ndim) if self.options.pad_variable_length_inputs else (lambda a: a.shape[1:])
        key = (
            tuple(output_filter) if output_filter else None,
            tuple((alias, a.dtype.str, inner(a)) for alias, a in sorted(inputs.items())),
        )
        loop = asyncio.get_running_loop()
        task = _Task(inputs, rows, key, loop.create_future(), deadline)
        self._pending.append(task)
        self._pending_rows += rows
        if (
            self._running == 0 and len(self._pending) == 1 and self._last_batch == 1
            and not self._looking and not self._started_at_once and self.options.adaptive
            and self.runner.inline  # a run on a worker costs far more than the hop saved
        ):
            # Light load, idle queue: start now, without a loop iteration in between
            # (an inline run settles the future before the caller awaits it). Once
            # per iteration, so a burst still forms a batch of the others.
            self._started_at_once = True
            loop.call_soon(self._next_iteration)
            self._dispatch()
        elif not self._looking:
            self._looking = True
            loop.call_soon(self._look)
        return task.future

    def _next_iteration(self) -> None:
        self._started_at_once = False

    def _look(self) -> None:
        self._looking = False
        if (
            self.options.adaptive and not self._deferred and self._last_batch > 1
            and self._pending_rows < self._limit
        ):
            # Under load a batch is what one loop iteration received; one iteration
            # more lets the next one grow (no timer: microseconds, not a timeout).
            self._deferred = self._looking = True
            asyncio.get_running_loop().call_soon(self._look)
            return
        self._deferred = False
        self._dispatch()

    def _dispatch(self) -> None:
        while self._pending and self._running < self.options.num_batch_threads:
            if not self.options.adaptive and self._waits_for_more():
                return
            batch = self._take()
            if batch:
                self._running += 1
                self._last_batch = len(batch)
                self._start(batch)

    def _waits_for_more(self) -> bool:
        """TF Serving's fixed rule: a batch short of the limit waits until its oldest
        request is batch_timeout_micros old (a look is scheduled for then)."""
        if self._pending_rows >= self._limit:
            return False
        age = time.monotonic() - self._pending[0].queued
        wait = self.options.batch_timeout_micros / 1e6 - age
        if wait <= 0:
            return False
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(wait, self._timer_fired)
        return True

    def _timer_fired(self) -> None:
        self._timer = None
        self._dispatch()

    def _take(self) -> list[_Task]:
        """The oldest waiting request and those behind it that fit in its batch."""
        now = time.monotonic()
        batch: list[_Task] = []
        rows = 0
        key = None
        kept: list[_Task] = []
        while self._pending:
            task = self._pending.popleft()
            if task.future.done():  # the client went away
                self._pending_rows -= task.rows
                continue
            if task.deadline is not None and now >= task.deadline:
                self._pending_rows -= task.rows
                task.future.set_exception(ServingError(
                    StatusCode.DEADLINE_EXCEEDED, "Deadline exceeded while waiting in the batch queue"))
                continue
            if key is None:
                key = task.key
            if task.key != key or rows + task.rows > self._limit:
                kept.append(task)
                if rows + task.rows > self._limit and task.key == key:
                    break  # the batch is full
                continue
            batch.append(task)
            rows += task.rows
            self._pending_rows -= task.rows
        self._pending.extendleft(reversed(kept))
        return batch

    def _start(self, batch: list[_Task]) -> None:
        """Runs a batch; its requests' futures are settled in `_finish`. Callbacks, not
        a task: an inline batch is answered in this very loop iteration."""
        try:
            merged, rows, padded, output_filter, timeout_ms = self._merge(batch)
        except Exception as exc:
            self._finish(batch, 0, 0, None, exc)
            return
        if metrics.enabled():
            now = time.monotonic()
            metrics.record_batch(self.model_name, self.runner.signature_name, rows, padded,
                                 [now - task.queued for task in batch])
        self.runner.start(
            merged, output_filter, timeout_ms,
            lambda outputs, error: self._finish(batch, rows, padded, outputs, error),
        )

    def _merge(self, batch: list[_Task]):
        """The batch's inputs, stacked and padded; with its rows, padded size, output
        filter and run timeout."""
        rows = sum(t.rows for t in batch)
        merged = {}
        for alias in batch[0].inputs:
            arrays = [t.inputs[alias] for t in batch]
            if self.options.pad_variable_length_inputs:
                shape = tuple(max(dims) for dims in zip(*(a.shape[1:] for a in arrays)))
                arrays = [_pad_inner(a, shape) for a in arrays]
            merged[alias] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays)
        padded = self.options.padded_size(rows)
        if padded > rows:
            # TF Serving pads with the last request's first row: a row known to be valid.
            last = rows - batch[-1].rows
            merged = {
                alias: np.concatenate([a, np.repeat(a[last:last + 1], padded - rows, axis=0)])
                for alias, a in merged.items()
            }
        deadlines = [t.deadline for t in batch]
        timeout_ms = 0
        if all(d is not None for d in deadlines):
            # A power of two, as grpc_api.run_timeout_ms: each timeout is a prepared callable.
            timeout_ms = 1 << (max(1, int((max(deadlines) - time.monotonic()) * 1000)) - 1).bit_length()
        output_filter = batch[0].key[0]
        return merged, rows, padded, list(output_filter) if output_filter else None, timeout_ms

    def _finish(self, batch: list[_Task], rows: int, padded: int, outputs, error) -> None:
        try:
            if error is None:
                error = _check_outputs(outputs, padded)
            if error is not None:  # every request of the batch gets the status
                if not isinstance(error, ServingError):
                    error = internal(f"{type(error).__name__}: {error}")
                for task in batch:
                    if not task.future.done():
                        task.future.set_exception(error)
                return
            self.batches += 1
            self.batched_rows += rows
            start = 0
            for task in batch:
                end = start + task.rows
                if not task.future.done():
                    task.future.set_result({alias: array[start:end] for alias, array in outputs.items()})
                start = end
        finally:
            self._running -= 1
            if self._pending and not self._looking:
                self._looking = True
                asyncio.get_running_loop().call_soon(self._look)


def _check_outputs(outputs: Mapping[str, np.ndarray], padded: int) -> ServingError | None:
    """batching_session.cc's checks and texts: every output splits by rows."""
    for array in outputs.values():
        if array.ndim == 0:
            return ServingError(StatusCode.FAILED_PRECONDITION, "Batched output tensor has 0 dimensions")
        if array.shape[0] != padded:
            return ServingError(
                StatusCode.FAILED_PRECONDITION,
                "Batched output tensor's 0th dimension does not equal the sum of the 0th "
                "dimension sizes of the input tensors",
            )
    return None
