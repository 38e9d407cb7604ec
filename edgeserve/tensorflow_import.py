"""Imports TensorFlow once, whichever thread asks first.

Importing TensorFlow from two threads at once breaks it (a second thread sees the
half-initialised package and fails with NameErrors), and SavedModel loads run on
several load threads (any `tensorflow.*_pb2` import runs TensorFlow's package init
too). Everything that needs TensorFlow goes through `import_tensorflow()`, which
serialises the first import behind one lock. Only the SavedModel runtime needs it:
TF Serving's message classes (`messages`) are built without TensorFlow.
"""
from __future__ import annotations

import gc
import logging
import threading
from typing import Any

_lock = threading.Lock()
_tf: Any = None


def import_tensorflow() -> Any:
    """The `tensorflow` module, imported on first call (~1.5 s, ~550 MB)."""
    global _tf
    if _tf is None:
        with _lock:
            if _tf is None:
                import tensorflow

                # loader.load is deprecated in TF2 and says so on every load.
                tensorflow.get_logger().setLevel(logging.ERROR)
                # TensorFlow brings ~300,000 Python objects that live as long as the
                # process. Out of the collector's sight, the full collection each
                # unload runs (memory.release) takes 1 ms instead of ~0.3 s, a pause
                # every request would otherwise feel (it holds the GIL).
                gc.collect()
                gc.freeze()
                _tf = tensorflow
    return _tf
