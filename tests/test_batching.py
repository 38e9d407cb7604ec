"""Where a signature runs: inline on the loop when its runs are fast, else on a worker."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from edgeserve.batching import DECIDE_EVERY, SignatureRunner


class TimedServable:
    """A servable whose run takes `seconds` and records the thread it ran on."""

    signatures: dict = {}

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.threads: list[str] = []

    def run(self, signature_name, inputs, output_filter=None, caller_thread=False, timeout_ms=0):
        self.threads.append(threading.current_thread().name)
        if self.seconds:
            time.sleep(self.seconds)
        return {"y": inputs["x"]}

    def close(self):
        pass


def drive(servable, threshold, runs):
    async def scenario():
        with ThreadPoolExecutor(1, thread_name_prefix="run") as executor:
            runner = SignatureRunner(servable, "serving_default", executor, threshold)
            for _ in range(runs):
                assert await runner.run({"x": 1}) == {"y": 1}
            return runner

    return asyncio.run(scenario())


def test_fast_signature_moves_inline_after_enough_timings():
    servable = TimedServable(0)
    runner = drive(servable, threshold=0.001, runs=DECIDE_EVERY + 10)
    assert runner.inline
    assert servable.threads[0].startswith("run")  # a new signature starts on the worker
    assert servable.threads[-1] == "MainThread"


def test_slow_signature_stays_on_the_worker():
    servable = TimedServable(0.002)
    runner = drive(servable, threshold=0.001, runs=DECIDE_EVERY + 5)
    assert not runner.inline
    assert all(name.startswith("run") for name in servable.threads)


def test_signature_that_slows_down_leaves_the_loop_at_once():
    servable = TimedServable(0)
    runner = drive(servable, threshold=0.001, runs=DECIDE_EVERY + 1)
    assert runner.inline
    servable.seconds = 0.02  # > 10x the threshold: one run is enough

    async def one_slow_run():
        await runner.run({"x": 1})

    asyncio.run(one_slow_run())
    assert not runner.inline


def test_zero_threshold_never_runs_inline():
    servable = TimedServable(0)
    runner = drive(servable, threshold=0.0, runs=DECIDE_EVERY * 2)
    assert not runner.inline


def test_request_much_larger_than_the_timed_ones_goes_to_the_worker():
    import numpy as np

    servable = TimedServable(0)

    async def scenario():
        with ThreadPoolExecutor(1, thread_name_prefix="run") as executor:
            runner = SignatureRunner(servable, "serving_default", executor, 0.001)
            small = {"x": np.zeros(4, np.float32)}
            for _ in range(DECIDE_EVERY + 1):
                await runner.run(small)
            assert runner.inline
            await runner.run(small)
            assert servable.threads[-1] == "MainThread"
            await runner.run({"x": np.zeros(1000, np.float32)})
            assert servable.threads[-1].startswith("run")

    asyncio.run(scenario())
