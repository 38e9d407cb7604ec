"""SavedModel runtime: loads a version the way TF Serving does and runs its signatures.

A version loads into its own tf.compat.v1 Graph and Session with
`tf.compat.v1.saved_model.loader.load` (MetaGraphDef chosen by tags), which reads TF1
and TF2 exports alike; signatures are fed and fetched by the tensor names their
SignatureDefs give, through cached session callables. TensorFlow is imported
here only, lazily, on the first load (which runs on a loader thread).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Mapping, Sequence

import numpy as np

from .. import batch_options, memory
from ..batch_options import BatchOptions
from ..dtypes import DataType
from ..errors import ServingError, StatusCode, invalid_argument
from ..servable import SignatureSpec, TensorSpec
from ..tensorflow_import import import_tensorflow
from . import finish_load
from .choice import SAVED_MODEL_FILENAMES

log = logging.getLogger("edgeserve.savedmodel")



def check_export_dir(path: str) -> None:
    """Raises a status saying why `path` is not a readable SavedModel folder.

    TF Serving's text for a folder without a SavedModel, with the reason when it is
    something else (a file, a symlink loop, a folder this process may not read), so
    a user sees what to fix instead of "not found"."""
    try:
        names = set(os.listdir(path))
    except PermissionError:
        raise ServingError(
            StatusCode.PERMISSION_DENIED, f"Could not read export directory {path}: permission denied"
        ) from None
    except OSError as exc:  # a file, a symlink loop, gone
        raise ServingError(
            StatusCode.NOT_FOUND,
            f"SavedModel not found in export directory: {path} ({exc.strerror.lower()})",
        ) from None
    if not names.intersection(SAVED_MODEL_FILENAMES):
        raise ServingError(
            StatusCode.NOT_FOUND,
            f"SavedModel not found in export directory: {path} "
            "(no saved_model.pb or saved_model.pbtxt)",
        )


# Lines of a graph OpError's message that point into the graph, not at the problem.
_GRAPH_NOISE = ("Graph execution error:", "Detected at node", "Node:", "[[{{node")


def _load_error_text(exc: BaseException, path: str) -> str:
    """What went wrong in a load, for the version's status: TF's message without its
    graph-location lines, and for a failed variable restore (a truncated or damaged
    variables file) the folder it came from, which TF's message does not name."""
    text = getattr(exc, "message", None) or str(exc)
    lines = [ln.strip() for ln in text.splitlines()]
    kept = [ln for ln in lines if ln and not ln.startswith(_GRAPH_NOISE)]
    text = " ".join(kept) or text
    if "RestoreV2" in (getattr(exc, "message", None) or ""):
        text = f"restoring variables from {os.path.join(path, 'variables')} failed: {text}"
    return text


def _tensor_spec(info: Any) -> TensorSpec:
    shape = info.tensor_shape
    dims = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)
    # Sparse and composite TensorInfos have no single tensor name; they keep ""
    # and are refused at run time with a clear message.
    name = info.name if info.WhichOneof("encoding") == "name" else ""
    try:
        dtype = DataType(info.dtype)
    except ValueError:
        dtype = DataType.DT_INVALID
    return TensorSpec(name=name, dtype=dtype, shape=dims)


def _error_from_tf(tf: Any, exc: BaseException) -> ServingError:
    if isinstance(exc, tf.errors.OpError):
        return ServingError(StatusCode(exc.error_code), exc.message)
    return invalid_argument(str(exc))


class SavedModelLoader:
    """Loads one SavedModel version folder (TF Serving's SavedModelBundle loader)."""

    def __init__(
        self,
        path: str,
        *,
        tags: Sequence[str] = ("serve",),
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        warmup: bool = True,
        warmup_iterations: int = 0,
        batching: BatchOptions | None = None,
        per_model_batching: bool = False,
    ) -> None:
        self.path = path
        self.tags = tuple(tags)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        # --enable_model_warmup and --num_request_iterations_for_warmup (0: once).
        self.warmup = warmup
        self.warmup_iterations = warmup_iterations
        # --enable_batching's parameters (None: off), and whether the version folder's
        # own batching_params.pbtxt overrides them.
        self.batching = batching
        self.per_model_batching = per_model_batching

    def load(self) -> "SavedModelServable":
        check_export_dir(self.path)
        batching = None
        if self.batching is not None:  # a bad per-model file fails the load up front
            batching = batch_options.for_version(self.batching, self.path, self.per_model_batching)
        tf = import_tensorflow()
        # What this load adds to the process (the budget's measured cost), taken once
        # TensorFlow itself is in: the runtime is not the model's cost.
        rss_before = memory.rss_bytes()
        v1 = tf.compat.v1
        graph = tf.Graph()
        config = v1.ConfigProto(
            intra_op_parallelism_threads=self.intra_op_threads,
            inter_op_parallelism_threads=self.inter_op_threads,
        )
        session = v1.Session(graph=graph, config=config)
        try:
            meta_graph_def = v1.saved_model.loader.load(session, set(self.tags), self.path)
        except BaseException as exc:
            session.close()
            if isinstance(exc, (tf.errors.OpError, RuntimeError, ValueError, OSError)):
                raise ServingError(
                    StatusCode.INTERNAL if not isinstance(exc, tf.errors.OpError) else StatusCode(exc.error_code),
                    f"Failed to load SavedModel from {self.path}: {_load_error_text(exc, self.path)}",
                ) from None
            raise
        servable = SavedModelServable(tf, session, meta_graph_def)
        return finish_load(servable, self.path, warmup=self.warmup, warmup_iterations=self.warmup_iterations,
                           rss_before=rss_before, batching=batching)


class SavedModelServable:
    """A loaded SavedModel version: its signatures and a Session to run them."""

    def __init__(self, tf: Any, session: Any, meta_graph_def: Any) -> None:
        self._tf = tf
        self._session = session
        self.signatures: dict[str, SignatureSpec] = {}
        self.signature_defs: dict[str, bytes] = {}
        for key, sig in meta_graph_def.signature_def.items():
            self.signature_defs[key] = sig.SerializeToString(deterministic=True)
            self.signatures[key] = SignatureSpec(
                method_name=sig.method_name,
                inputs={alias: _tensor_spec(info) for alias, info in sorted(sig.inputs.items())},
                outputs={alias: _tensor_spec(info) for alias, info in sorted(sig.outputs.items())},
                defaults=frozenset(getattr(sig, "defaults", {}) or ()),
            )
        # (signature, input aliases, output aliases, caller thread, timeout) -> Session
        # callable. Timeouts come rounded (gRPC deadlines to powers of two), so few. Built on
        # first use; a dict write is atomic under the GIL, so racing threads at
        # worst build the same callable twice.
        self._callables: dict[tuple, Any] = {}
        self.memory_bytes: int | None = None  # RSS its load added, set by the loader
        self.batch_options: BatchOptions | None = None  # set by the loader with --enable_batching
        from tensorflow.core.protobuf import config_pb2

        self._config_pb2 = config_pb2

    def _callable(self, key: tuple) -> Any:
        fn = self._callables.get(key)
        if fn is None:
            signature_name, input_aliases, output_aliases, caller_thread, timeout_ms = key
            sig = self.signatures[signature_name]
            for alias in (*input_aliases, *output_aliases):
                spec = sig.inputs.get(alias) or sig.outputs[alias]
                if not spec.name:
                    raise ServingError(
                        StatusCode.UNIMPLEMENTED,
                        f"Tensor {alias!r} of signature {signature_name!r} is not a dense "
                        "tensor; sparse and composite signature tensors are not supported",
                    )
            # The callable-from-options path hands numpy arrays straight to the C
            # session (TF_SessionRunCallable): ~15 µs a call against ~85 µs for
            # Session.run / make_callable, which re-validate feeds in Python.
            options = self._config_pb2.CallableOptions(
                feed=[sig.inputs[a].name for a in input_aliases],
                fetch=[sig.outputs[a].name for a in output_aliases],
            )
            if timeout_ms > 0:
                # TF ends a run that takes longer with DEADLINE_EXCEEDED, as TF Serving.
                options.run_options.timeout_in_ms = timeout_ms
            if caller_thread:
                # RunOptions' documented "-1: use the caller's thread", meant for
                # graphs as small as the context switch: 5 µs a call instead of 16.
                # TF then no longer enforces the deadline for this run.
                options.run_options.inter_op_thread_pool = -1
            fn = self._session._make_callable_from_options(options)
            self._callables[key] = fn
        return fn

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        caller_thread: bool = False,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        sig = self.signatures[signature_name]
        output_aliases = tuple(output_filter) if output_filter else tuple(sig.outputs)
        input_aliases = tuple(inputs)
        try:
            fn = self._callable((signature_name, input_aliases, output_aliases, caller_thread, timeout_ms))
            values = fn(*[inputs[a] for a in input_aliases])
        except ServingError:
            raise
        except Exception as exc:  # TF's OpError, or a feed TF refuses
            raise _error_from_tf(self._tf, exc) from None
        return dict(zip(output_aliases, values))

    def close(self) -> None:
        self._callables.clear()
        self._session.close()
