"""Memory comes back after unloads: fifty load/unload cycles of one model, in process."""
from __future__ import annotations

import numpy as np

from edgeserve import memory
from edgeserve.runtimes.savedmodel import SavedModelLoader


def test_rss_is_read_from_proc():
    assert 50 * 2**20 < memory.rss_bytes() < 64 * 2**30


def test_fifty_load_unload_cycles_leave_rss_within_ten_percent_of_the_first(model_store):
    path = str(model_store / "half_plus_two" / "1")
    x = np.array([[1.0], [2.0]], np.float32)
    after: list[int] = []
    for _ in range(50):
        servable = SavedModelLoader(path).load()
        assert servable.run("serving_default", {"x": x})["y"].ravel().tolist() == [2.5, 3.0]
        servable.close()
        del servable
        memory.release()  # what the manager does on its unload thread
        after.append(memory.rss_bytes())
    assert after[-1] <= 1.10 * after[0], [round(a / 2**20, 1) for a in after[::10]]
