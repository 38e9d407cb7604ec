"""Where a signature runs: inline on the event loop or on a worker thread.

Each (loaded version, signature) gets a `SignatureRunner`. It times every run (the
model call itself, not the thread handoff) and keeps the recent ones: while their
p99 stays under `inline_threshold` the run happens inline on the loop, because a
thread handoff (~20-50 µs measured here) would cost more than the run; a signature
whose runs grow past it moves to the worker threads so the loop never stalls. A new
signature starts on the worker until it has a few timings, and a request whose
inputs are more than twice the largest timed ones (a bigger batch) goes to the
worker too, since its run time is not known yet. The adaptive
micro-batcher (concatenating concurrent requests) will grow here.
"""
from __future__ import annotations

import asyncio
import time
from collections import deque
from concurrent.futures import Executor
from typing import Mapping, Sequence

import numpy as np

from .servable import Servable

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

    async def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        nbytes = _nbytes(inputs)
        if self.inline and nbytes <= self._inline_bytes:
            # Inline runs are the ones measured tiny: the runtime does them on this
            # thread too, without handing them to its own pool.
            return self._timed_run(inputs, output_filter, nbytes, True, timeout_ms)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._timed_run, inputs, output_filter, nbytes, False, timeout_ms
        )
