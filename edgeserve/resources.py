"""The memory budget: how much RAM loaded versions take, and whether the next one fits.

TF Serving's ResourceTracker, for RAM only. A version's cost is first estimated from
its files (TF Serving's rule: bytes x 1.2, `kResourceEstimateRAMMultiplier`), reserved
before its load starts, and replaced once loaded by the RSS the load actually added
(never less than its files' size: a load that reused freed heap pages still holds its
weights). An unloaded version's reservation is released after its memory was handed
back. The TensorFlow runtime itself (~550 MB once imported) is not a model's cost and
is not counted. A limit of 0 means no limit. Pure bookkeeping, on the event loop.
"""
from __future__ import annotations

from .servable import ServableId

# TF Serving's kResourceEstimateRAMMultiplier (servables/tensorflow/util.cc).
ESTIMATE_FACTOR = 1.2


def estimate_bytes(file_bytes: int) -> int:
    """A version's RAM before it is loaded, from the size of its files."""
    return int(file_bytes * ESTIMATE_FACTOR)


def format_bytes(n: int) -> str:
    """Bytes for a status message: exact, then in MiB for people."""
    return f"{n} bytes ({n / 2**20:.1f} MiB)"


class ResourceTracker:
    def __init__(self, limit_bytes: int = 0) -> None:
        self.limit = max(0, limit_bytes)
        self._held: dict[ServableId, int] = {}

    @property
    def limited(self) -> bool:
        return self.limit > 0

    def used(self) -> int:
        return sum(self._held.values())

    def free(self) -> int:
        """Bytes still free under the limit (a very large number without one)."""
        return self.limit - self.used() if self.limited else 2**63 - 1

    def cost(self, servable_id: ServableId) -> int:
        """What `servable_id` holds now (0 when nothing is reserved for it)."""
        return self._held.get(servable_id, 0)

    def reserve(self, servable_id: ServableId, nbytes: int) -> None:
        self._held[servable_id] = max(0, nbytes)

    def loaded(self, servable_id: ServableId, measured_bytes: int | None, file_bytes: int) -> None:
        """Replaces the estimate with what the load measured (None: keep the estimate)."""
        if measured_bytes is not None:
            self._held[servable_id] = max(measured_bytes, file_bytes)

    def release(self, servable_id: ServableId) -> None:
        self._held.pop(servable_id, None)
