"""TFLite runtime: serves a version folder's `model.tflite` on LiteRT (ai-edge-litert).

This module owns what TF Serving's TfLiteSession and TfLiteInterpreterPool do
(--prefer_tflite_model): reading the flatbuffer, deriving the version's signatures,
keeping a pool of interpreters (they are not thread-safe) and running a signature on
one of them, resizing its inputs to each request's shapes. It never imports
TensorFlow, directly or through a dependency: LiteRT is imported lazily, on the
first load, and TF Serving's message classes come from `edgeserve.messages` only
when a load builds its SignatureDefs.

Where a version's signatures come from, first found wins:
1. SignatureDefs that TF's `signature_def_utils.set_signature_defs` stored in the
   model's "signature_defs_metadata" entry (the only ones TF Serving reads), kept as
   written, except a tensor name the TF1 converter shortened ("x:0" for a tensor
   named "x"), which is repaired as TF Serving does;
2. the model's own LiteRT signatures (the TF2 converter writes them; TF Serving
   ignores them and would serve 3 instead), each on its own subgraph;
3. TF Serving's fallback: one "serving_default" predict signature over the primary
   subgraph's inputs and outputs, each under its tensor name cut at the first ":".
"""
from __future__ import annotations

import logging
import os
import queue
import re
import threading
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from .. import batch_options, dtypes, memory
from ..batch_options import BatchOptions
from ..dtypes import DataType
from ..errors import ServingError, StatusCode, invalid_argument
from ..servable import DEFAULT_SERVING_SIGNATURE_DEF_KEY, PREDICT_METHOD_NAME, SignatureSpec, TensorSpec
from . import finish_load
from .choice import TFLITE_FILENAME

log = logging.getLogger("edgeserve.tflite")

# The metadata entry TF's signature_def_utils writes SignatureDefs into (a FlexBuffer
# map: signature key -> serialized SignatureDef).
SIGNATURE_DEFS_METADATA = "signature_defs_metadata"
_TFLITE_IDENTIFIER = b"TFL3"  # a TFLite flatbuffer's file identifier, bytes 4..8


def has_tflite_model(path: str) -> bool:
    """Whether a version folder holds a model.tflite (TF Serving's TfLiteModelFound)."""
    return os.path.isfile(os.path.join(path, TFLITE_FILENAME))


def _read_model(path: str) -> bytes:
    """The model file's bytes; a status naming the file and what is wrong with it."""
    file = os.path.join(path, TFLITE_FILENAME)
    try:
        with open(file, "rb") as f:
            content = f.read()
    except FileNotFoundError:
        raise ServingError(StatusCode.NOT_FOUND, f"TFLite model not found: {file} does not exist") from None
    except PermissionError:
        raise ServingError(StatusCode.PERMISSION_DENIED, f"Could not read TFLite model {file}: permission denied") from None
    except OSError as exc:  # a folder of that name, an I/O error
        raise ServingError(StatusCode.INVALID_ARGUMENT, f"Could not read TFLite model {file}: {exc.strerror}") from None
    if not content:
        raise invalid_argument(f"Invalid TFLite model {file}: the file is empty")
    return content


def _not_a_model(file: str, content: bytes) -> ServingError:
    # LiteRT's verifier only says "not a valid Flatbuffer buffer"; the identifier tells
    # a damaged model (a copy cut short) from a file that never was one.
    if content[4:8] == _TFLITE_IDENTIFIER:
        why = (f"it has TFLite's identifier but does not verify ({len(content)} bytes): "
               "the file is truncated or damaged")
    else:
        why = f"it is not a TFLite flatbuffer ({len(content)} bytes, no {_TFLITE_IDENTIFIER.decode()} identifier)"
    return invalid_argument(f"Invalid TFLite model {file}: {why}")


# LiteRT's texts for an op it has no kernel for: a custom op (TF Serving's ParseExample,
# Flex ops) fails when tensors are allocated, an unknown builtin when the interpreter
# is built.
_MISSING_OP = (
    re.compile(r"unresolved custom op: ([\w./-]+)"),
    re.compile(r"find op for builtin opcode '([\w./-]+)'"),
    re.compile(r"Node number \d+ \(([\w./-]+)\) failed to prepare"),
)


def _load_error(file: str, exc: BaseException) -> ServingError:
    text = " ".join(str(exc).split())
    for pattern in _MISSING_OP:
        found = pattern.search(text)
        if found:
            # INTERNAL, as TF Serving's "Cannot build Interpreter from buffer."
            return ServingError(
                StatusCode.INTERNAL,
                f"Failed to load TFLite model {file}: op {found.group(1).rstrip('.')} is not supported by "
                f"the LiteRT runtime (ai-edge-litert {_litert_version()}). LiteRT said: {text}",
            )
    return ServingError(StatusCode.INTERNAL, f"Failed to load TFLite model {file}: {text}")


def _litert_version() -> str:
    try:
        from importlib.metadata import version

        return version("ai-edge-litert")
    except Exception:  # pragma: no cover - an unusual install
        return "unknown version"


def _legacy_name(name: str) -> str:
    """TF's "x:0" as TF1's converter named the TFLite tensor: "x" (TF Serving's
    TfToTfLiteLegacyTensorName, also how its fallback signature names aliases)."""
    return name.split(":", 1)[0]


@dataclass(frozen=True)
class _Binding:
    """Where a signature's aliases live in an interpreter: a subgraph and tensor indices."""

    subgraph: int
    inputs: Mapping[str, int]
    outputs: Mapping[str, int]
    # The dtype each input tensor takes (what SetTensor accepts), by alias.
    input_dtypes: Mapping[str, np.dtype]


def _tensor_dtype(wrapper: Any, index: int, subgraph: int) -> np.dtype:
    return np.dtype(wrapper.TensorType(index, subgraph))


def _data_type(dtype: np.dtype) -> DataType:
    # TFLite's string tensors come back as numpy bytes_ (kind "S"): DT_STRING.
    return dtypes.from_numpy(dtype)


def _lite_spec(wrapper: Any, index: int, subgraph: int) -> TensorSpec:
    # shape_signature keeps -1 where the converter left a dimension dynamic; the
    # current shape would say 1 there.
    shape = tuple(int(d) for d in wrapper.TensorSizeSignature(index, subgraph))
    return TensorSpec(
        name=wrapper.TensorName(index, subgraph),
        dtype=_data_type(_tensor_dtype(wrapper, index, subgraph)),
        shape=shape,
    )


def _metadata_signature_defs(content: bytes, file: str) -> dict[str, bytes]:
    """The serialized SignatureDefs in the "signature_defs_metadata" entry, or {}."""
    if SIGNATURE_DEFS_METADATA.encode() not in content:
        return {}  # the common case, without loading the flatbuffer schema
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    try:
        model = schema.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() != SIGNATURE_DEFS_METADATA.encode():
                continue
            buffer = model.Buffers(entry.Buffer())
            if buffer.DataLength():
                data = buffer.DataAsNumpy().tobytes()
            else:  # a model over 2 GB keeps buffers after the flatbuffer
                data = content[buffer.Offset(): buffer.Offset() + buffer.Size()]
            root = flexbuffers.GetRoot(data).AsMap
            # TF writes each SignatureDef as a FlexBuffer string; take a blob too.
            return {
                key.AsKey: bytes(value.AsBlob if value.IsBlob else value.AsStringBytes)
                for key, value in zip(root.Keys, root.Values)
            }
    except Exception as exc:  # a damaged entry: TF Serving refuses the model too
        raise invalid_argument(
            f"Invalid SignatureDefs found in TfLite model {file}: {SIGNATURE_DEFS_METADATA} "
            f"does not parse ({exc})"
        ) from None
    return {}


def _shape_of(info: Any) -> tuple[int, ...] | None:
    if info.tensor_shape.unknown_rank:
        return None
    return tuple(int(d.size) for d in info.tensor_shape.dim)


def _from_metadata(serialized: dict[str, bytes], wrapper: Any, file: str):
    """TF Serving's path for SignatureDefs stored in the model: kept as written, with
    each tensor name checked against the primary subgraph's inputs/outputs."""
    from .. import messages

    by_name = {
        "input": {wrapper.TensorName(i, 0): i for i in wrapper.InputIndices()},
        "output": {wrapper.TensorName(i, 0): i for i in wrapper.OutputIndices()},
    }
    specs, bindings, defs = {}, {}, {}
    for key, data in sorted(serialized.items()):
        try:
            sigdef = messages.SignatureDef.FromString(data)
        except Exception as exc:
            raise invalid_argument(f"Invalid SignatureDefs found in TfLite model {file}: {key}: {exc}") from None
        indices: dict[str, dict[str, int]] = {"input": {}, "output": {}}
        tensors: dict[str, dict[str, TensorSpec]] = {"input": {}, "output": {}}
        for kind, infos in (("input", sigdef.inputs), ("output", sigdef.outputs)):
            names = by_name[kind]
            for alias in sorted(infos):
                info = infos[alias]
                name = info.name
                if name not in names and _legacy_name(name) in names:
                    name = _legacy_name(name)  # the TF1 converter dropped ":0"
                    info.name = name
                if name not in names:
                    raise ServingError(
                        StatusCode.INTERNAL,
                        f"Invalid SignatureDefs found in TfLite model {file}: signature {key!r} "
                        f"{kind} {alias} references an unknown tensor {info.name!r} (the model's "
                        f"{kind}s: {', '.join(sorted(names))})",
                    )
                indices[kind][alias] = names[name]
                try:
                    dtype = DataType(info.dtype)
                except ValueError:
                    dtype = DataType.DT_INVALID
                tensors[kind][alias] = TensorSpec(name=name, dtype=dtype, shape=_shape_of(info))
        specs[key] = SignatureSpec(method_name=sigdef.method_name, inputs=tensors["input"], outputs=tensors["output"])
        bindings[key] = _Binding(
            subgraph=0,
            inputs=indices["input"],
            outputs=indices["output"],
            input_dtypes={a: _tensor_dtype(wrapper, i, 0) for a, i in indices["input"].items()},
        )
        defs[key] = sigdef.SerializeToString(deterministic=True)
    return specs, bindings, defs


def _from_lite_signatures(wrapper: Any):
    specs, bindings = {}, {}
    for key, sig in sorted(wrapper.GetSignatureDefs().items()):
        subgraph = wrapper.GetSubgraphIndexFromSignature(key)
        inputs = dict(sorted(sig["inputs"].items()))
        outputs = dict(sorted(sig["outputs"].items()))
        specs[key] = SignatureSpec(
            method_name=PREDICT_METHOD_NAME,
            inputs={a: _lite_spec(wrapper, i, subgraph) for a, i in inputs.items()},
            outputs={a: _lite_spec(wrapper, i, subgraph) for a, i in outputs.items()},
        )
        bindings[key] = _Binding(
            subgraph=subgraph,
            inputs=inputs,
            outputs=outputs,
            input_dtypes={a: _tensor_dtype(wrapper, i, subgraph) for a, i in inputs.items()},
        )
    return specs, bindings


def _fallback(wrapper: Any):
    """TF Serving's generated "serving_default": every input and output of the primary
    subgraph, in tensor-name order, aliased by the name before its first ":"."""
    aliases: dict[str, dict[str, int]] = {}
    for kind, indices in (("Input", wrapper.InputIndices()), ("Output", wrapper.OutputIndices())):
        by_name: dict[str, int] = {}
        for index in indices:
            name = wrapper.TensorName(index, 0)
            if not name:
                raise ServingError(StatusCode.INTERNAL, f"{kind} name missing for tensor index: {index}")
            if name in by_name:
                raise ServingError(
                    StatusCode.ALREADY_EXISTS, f"{kind} tensor name: {name} has multiple indices"
                )
            by_name[name] = int(index)
        # Two names with one alias ("a:0", "a:1"): the later name wins, as in TF Serving.
        aliases[kind] = {_legacy_name(name): index for name, index in sorted(by_name.items())}
    inputs = dict(sorted(aliases["Input"].items()))
    outputs = dict(sorted(aliases["Output"].items()))
    spec = SignatureSpec(
        method_name=PREDICT_METHOD_NAME,
        inputs={a: _lite_spec(wrapper, i, 0) for a, i in inputs.items()},
        outputs={a: _lite_spec(wrapper, i, 0) for a, i in outputs.items()},
    )
    binding = _Binding(
        subgraph=0,
        inputs=inputs,
        outputs=outputs,
        input_dtypes={a: _tensor_dtype(wrapper, i, 0) for a, i in inputs.items()},
    )
    return {DEFAULT_SERVING_SIGNATURE_DEF_KEY: spec}, {DEFAULT_SERVING_SIGNATURE_DEF_KEY: binding}


def _signature_def(spec: SignatureSpec) -> bytes:
    """A SignatureDef message for a signature the model did not carry as one."""
    from .. import messages

    sigdef = messages.SignatureDef(method_name=spec.method_name)
    for tensors, infos in ((spec.inputs, sigdef.inputs), (spec.outputs, sigdef.outputs)):
        for alias, tensor in tensors.items():
            info = infos[alias]
            info.name = tensor.name
            info.dtype = int(tensor.dtype)
            if tensor.shape is None:
                info.tensor_shape.unknown_rank = True
            else:
                for size in tensor.shape:
                    info.tensor_shape.dim.add().size = size
    return sigdef.SerializeToString(deterministic=True)


def _shape_text(shape: Sequence[int] | None) -> str:
    return "unknown" if shape is None else "[" + ",".join(str(d) for d in shape) + "]"


def _type_text(dtype: np.dtype) -> str:
    return dtypes.name(_data_type(dtype)).removeprefix("DT_").lower()


class _Interpreter:
    """One LiteRT interpreter and the input shapes it is currently allocated for."""

    __slots__ = ("interpreter", "wrapper", "shapes")

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter  # owns the delegates; keeps the wrapper alive
        # The native wrapper takes a subgraph index on every call (the public
        # Interpreter methods reach only subgraph 0); LiteRT's SignatureRunner drives
        # it the same way.
        self.wrapper = interpreter._interpreter
        # (subgraph, tensor index) -> the shape it is resized to. Empty for a subgraph
        # whose last resize failed, so the next run resizes and allocates again.
        self.shapes: dict[tuple[int, int], tuple[int, ...]] = {}

    def run(
        self, signature: str, spec: SignatureSpec, binding: _Binding,
        arrays: Mapping[str, np.ndarray], output_aliases: Sequence[str],
    ) -> dict[str, np.ndarray]:
        wrapper, subgraph = self.wrapper, binding.subgraph
        resized = []
        try:
            for alias, array in arrays.items():
                index = binding.inputs[alias]
                if self.shapes.get((subgraph, index)) != array.shape:
                    # Not strict: like TF Serving, any dimension may change (its
                    # half_plus_two models fix [1,1] and take a batch of 3).
                    wrapper.ResizeInputTensor(index, np.array(array.shape, dtype=np.int32), False, subgraph)
                    self.shapes[(subgraph, index)] = array.shape
                    resized.append(alias)
            if resized:
                wrapper.AllocateTensors(subgraph)
        except (RuntimeError, ValueError, OverflowError) as exc:  # Overflow: a dim over int32
            self._forget(subgraph)
            raise self._shape_error(signature, spec, resized, arrays, exc) from None
        try:
            for alias, array in arrays.items():
                wrapper.SetTensor(binding.inputs[alias], array, subgraph)
            wrapper.Invoke(subgraph)
            # GetTensor copies: nothing returned points into the interpreter's arena,
            # which the next run on this interpreter overwrites.
            return {alias: wrapper.GetTensor(binding.outputs[alias], subgraph) for alias in output_aliases}
        except (RuntimeError, ValueError) as exc:
            self._forget(subgraph)
            if resized:  # a kernel refused the new shapes only when it ran
                raise self._shape_error(signature, spec, resized, arrays, exc) from None
            raise ServingError(
                StatusCode.INTERNAL, f"Failed to invoke TfLite interpreter: {' '.join(str(exc).split())}"
            ) from None

    def _forget(self, subgraph: int) -> None:
        for key in [k for k in self.shapes if k[0] == subgraph]:
            del self.shapes[key]

    @staticmethod
    def _shape_error(signature, spec, resized, arrays, exc) -> ServingError:
        def differs(alias: str) -> bool:
            want, got = spec.inputs[alias].shape, arrays[alias].shape
            if want is None:
                return False
            # The first dimension is the batch: TF Serving resizes it freely.
            return len(want) != len(got) or any(w >= 0 and w != g for w, g in zip(want[1:], got[1:]))

        # Name the inputs that differ from the signature; if none does (the model's
        # kernels refused a combination), every input this run resized.
        suspects = [alias for alias in resized if differs(alias)] or resized
        parts = [
            f"input {alias!r} has shape {_shape_text(arrays[alias].shape)} but the signature expects "
            f"{_shape_text(spec.inputs[alias].shape)} (-1: any size)"
            for alias in suspects
        ] or ["inputs have shapes the model cannot take"]
        return invalid_argument(
            f"Signature {signature!r}: {'; '.join(parts)}. The TFLite interpreter refused them: "
            f"{' '.join(str(exc).split())}"
        )


class TfLiteLoader:
    """Loads one version's model.tflite (TF Serving's LoadTfLiteModel + TfLiteSession)."""

    def __init__(
        self,
        path: str,
        *,
        num_pools: int = 1,
        interpreters_per_pool: int = 1,
        batching: BatchOptions | None = None,
        per_model_batching: bool = False,
        warmup: bool = True,
        warmup_iterations: int = 0,
    ) -> None:
        self.path = path
        # --num_tflite_pools x --num_tflite_interpreters_per_pool interpreters: as
        # many runs of this version at once.
        self.num_pools = max(1, num_pools)
        self.interpreters_per_pool = max(1, interpreters_per_pool)
        self.batching = batching
        self.per_model_batching = per_model_batching
        # --enable_model_warmup and --num_request_iterations_for_warmup: TF Serving
        # replays assets.extra/tf_serving_warmup_requests for TFLite models too.
        self.warmup = warmup
        self.warmup_iterations = warmup_iterations

    def load(self) -> "TfLiteServable":
        file = os.path.join(self.path, TFLITE_FILENAME)
        batching = None
        if self.batching is not None:  # a bad per-model file fails the load up front
            batching = batch_options.for_version(self.batching, self.path, self.per_model_batching)
        from ai_edge_litert.interpreter import Interpreter

        from .. import messages  # noqa: F401  (imported now: not the model's cost)

        # What this load adds (the budget's measured cost), taken once LiteRT is in:
        # the model's bytes and every interpreter's arena.
        rss_before = memory.rss_bytes()
        content = _read_model(self.path)

        def build() -> _Interpreter:
            try:
                # One thread each, as TF Serving: the pool is the parallelism.
                # Every interpreter shares `content` (LiteRT keeps a reference, no copy).
                interpreter = _Interpreter(Interpreter(model_content=content, num_threads=1))
            except ValueError as exc:
                if "not a valid Flatbuffer" in str(exc):
                    raise _not_a_model(file, content) from None
                raise _load_error(file, exc) from None
            return interpreter

        def prepare(interpreter: _Interpreter, subgraphs: Sequence[int]) -> _Interpreter:
            for subgraph in subgraphs:
                try:
                    # Every kernel is prepared here, so a model with an op LiteRT lacks
                    # fails its load instead of its first request.
                    interpreter.wrapper.AllocateTensors(subgraph)
                except (RuntimeError, ValueError) as exc:
                    raise _load_error(file, exc) from None
            return interpreter

        first = build()
        wrapper = first.wrapper
        metadata_defs = _metadata_signature_defs(content, file)
        if metadata_defs:
            specs, bindings, defs = _from_metadata(metadata_defs, wrapper, file)
        else:
            if wrapper.GetSignatureDefs():
                specs, bindings = _from_lite_signatures(wrapper)
            else:
                log.warning("No signature def found in TFLite model %s; generating serving_default.", file)
                specs, bindings = _fallback(wrapper)
            defs = {key: _signature_def(spec) for key, spec in specs.items()}
        subgraphs = sorted({b.subgraph for b in bindings.values()})
        interpreters = [prepare(first, subgraphs)]
        interpreters += [prepare(build(), subgraphs) for _ in range(self.num_pools * self.interpreters_per_pool - 1)]
        servable = TfLiteServable(interpreters, specs, defs, bindings)
        return finish_load(servable, self.path, warmup=self.warmup, warmup_iterations=self.warmup_iterations,
                           rss_before=rss_before, batching=batching)


class TfLiteServable:
    """A loaded TFLite version: its signatures and a pool of interpreters to run them."""

    def __init__(
        self,
        interpreters: Sequence[_Interpreter],
        signatures: dict[str, SignatureSpec],
        signature_defs: dict[str, bytes],
        bindings: dict[str, _Binding],
    ) -> None:
        self.signatures = signatures
        self.signature_defs = signature_defs
        self._bindings = bindings
        self.pool_size = len(interpreters)
        # LIFO: the interpreter used last has its arena warm in the cache.
        self._pool: queue.LifoQueue[_Interpreter] = queue.LifoQueue()
        for interpreter in interpreters:
            self._pool.put(interpreter)
        self._closed = threading.Event()
        self.memory_bytes: int | None = None  # RSS its load added, set by the loader
        self.batch_options: BatchOptions | None = None  # set by the loader with --enable_batching

    def _inputs(self, signature: str, binding: _Binding, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The request's arrays as the interpreter takes them, or INVALID_ARGUMENT.

        The api layer checks inputs against the signature first; this checks against
        the tensors themselves (a stored SignatureDef may declare other dtypes), and
        a missing input, which LiteRT would silently take from the last run."""
        missing = [alias for alias in binding.inputs if alias not in inputs]
        extra = [alias for alias in inputs if alias not in binding.inputs]
        if missing or extra:
            raise invalid_argument(
                f"Signature {signature!r} takes inputs {{{','.join(binding.inputs)}}}; "
                f"missing: {{{','.join(missing)}}}, unknown: {{{','.join(extra)}}}"
            )
        arrays = {}
        for alias, index in binding.inputs.items():
            array = np.asarray(inputs[alias])
            want = binding.input_dtypes[alias]
            if want.kind in "OS":  # a string tensor: bytes objects, bytes or str arrays
                if array.dtype.kind not in "OSU":
                    raise invalid_argument(
                        f"Input {alias!r} of signature {signature!r} expects string tensors but "
                        f"{_type_text(array.dtype)} is provided"
                    )
            elif array.dtype != want:
                raise invalid_argument(
                    f"Input {alias!r} of signature {signature!r} expects {_type_text(want)} tensors but "
                    f"{_type_text(array.dtype)} is provided"
                )
            arrays[alias] = np.ascontiguousarray(array)
        return arrays

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        caller_thread: bool = False,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        binding = self._bindings.get(signature_name)
        if binding is None:
            raise ServingError(
                StatusCode.FAILED_PRECONDITION,
                f'Serving signature key "{signature_name}" not found. The model has: '
                + ", ".join(sorted(self._bindings)),
            )
        spec = self.signatures[signature_name]
        output_aliases = tuple(output_filter) if output_filter else tuple(binding.outputs)
        for alias in output_aliases:
            if alias not in binding.outputs:
                raise invalid_argument(
                    f"output tensor alias not found in signature: {alias} "
                    f"Outputs expected to be in the set {{{','.join(sorted(binding.outputs))}}}."
                )
        arrays = self._inputs(signature_name, binding, inputs)
        if self._closed.is_set():
            raise ServingError(StatusCode.UNAVAILABLE, "The TFLite model version is unloaded")
        # Runs need no handoff (LiteRT runs on the calling thread), so `caller_thread`
        # changes nothing; the deadline bounds the wait for a free interpreter, since
        # LiteRT cannot cut an invoke short.
        try:
            interpreter = self._pool.get(timeout=timeout_ms / 1000 if timeout_ms > 0 else None)
        except queue.Empty:
            raise ServingError(
                StatusCode.DEADLINE_EXCEEDED,
                f"Timed out after {timeout_ms} ms waiting for one of the model's {self.pool_size} "
                "TFLite interpreters",
            ) from None
        try:
            return interpreter.run(signature_name, spec, binding, arrays, output_aliases)
        finally:
            self._pool.put(interpreter)

    def close(self) -> None:
        self._closed.set()
        # Drop the interpreters (their arenas and the model bytes go with the last one).
        while True:
            try:
                self._pool.get_nowait()
            except queue.Empty:
                break
