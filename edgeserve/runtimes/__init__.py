"""Runtimes: the only code that loads and runs models (and the only code that imports TensorFlow)."""
from __future__ import annotations

from typing import Any

from .. import memory
from ..batch_options import BatchOptions


def finish_load(servable: Any, path: str, *, warmup: bool, warmup_iterations: int, rss_before: int,
                batching: BatchOptions | None) -> Any:
    """What every runtime's load ends with, as TF Serving's loaders do: the version's
    warmup records replayed before it serves (their failure fails the load, and the
    servable is closed), then what the load cost in RSS and the batching parameters
    it runs with. Returns `servable`."""
    if warmup:
        from ..warmup import run_warmup

        try:
            run_warmup(servable, path, warmup_iterations)
        except BaseException:
            servable.close()
            raise
    servable.memory_bytes = max(0, memory.rss_bytes() - rss_before)
    servable.batch_options = batching
    return servable
