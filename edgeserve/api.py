"""The protocol-independent API: resolve a ModelSpec, validate, run; status and metadata.

REST and gRPC adapters translate their wire formats into these calls and back; all
model logic, version resolution and validation lives here, with TF Serving's status
codes and message texts. Tensors arrive decoded (by `tensors`) through a callback
that receives the resolved signature, because REST's JSON can only be typed once the
signature is known.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from . import dtypes
from .batching import SignatureRunner
from .errors import ServingError, StatusCode, invalid_argument
from .manager import LoadedVersion, Manager, VersionStatus
from .servable import DEFAULT_SERVING_SIGNATURE_DEF_KEY, SignatureSpec

InputDecoder = Callable[[SignatureSpec], Mapping[str, np.ndarray]]


@dataclass(frozen=True)
class ModelSpec:
    """TF Serving's ModelSpec: name, and at most one of version and version_label."""

    name: str
    version: int | None = None
    version_label: str | None = None
    signature_name: str = ""


@dataclass(frozen=True)
class PredictResult:
    model_spec: ModelSpec  # name, the version that ran, the signature name used
    signature: SignatureSpec
    outputs: dict[str, np.ndarray]


def _check_version_choice(spec: ModelSpec) -> None:
    """A ModelSpec names a version or a label, not both (http_rest_api_util.cc's text)."""
    if spec.version is not None and spec.version_label is not None:
        raise invalid_argument(
            f"Both model version ({spec.version}) and model version label "
            f"({spec.version_label}) cannot be supplied."
        )


def _join(names) -> str:
    return ",".join(sorted(names))


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_inputs(signature: SignatureSpec, inputs: Mapping[str, np.ndarray]) -> None:
    """Names, dtypes and shapes of a request's inputs against the signature.

    Names with TF Serving's messages (predict_util.cc, saved_model util). Shapes: when
    the rank matches the signature's, every fixed dimension after the first must agree
    (the first is the batch dimension, which TF2 exports often record as a fixed 1).
    A different rank is left to the model, as TF Serving does: its documented example
    sends rows of scalars ({"instances": [1.0, 2.0]}) to half_plus_two's [-1,1] input.
    """
    expected = signature.inputs
    if len(inputs) > len(expected) or (len(inputs) < len(expected) and not signature.defaults):
        raise invalid_argument(
            f"input size does not match signature: {len(inputs)}!={len(expected)} "
            f"len({{{_join(inputs)}}}) != len({{{_join(expected)}}}). "
            f"Sent extra: {{{_join(set(inputs) - set(expected))}}}. "
            f"Missing but required: {{{_join(set(expected) - set(inputs))}}}."
        )
    for alias, array in inputs.items():
        spec = expected.get(alias)
        if spec is None:
            raise invalid_argument(
                f"input tensor alias not found in signature: {alias}. "
                f"Inputs expected to be in the set {{{_join(expected)}}}."
            )
        want = dtypes.to_numpy(spec.dtype)
        if want is not None and array.dtype != want:
            raise invalid_argument(
                f"Input \"{alias}\" must be {dtypes.name(spec.dtype)}, "
                f"got {dtypes.name(dtypes.from_numpy(array.dtype))}"
            )
        shape = spec.shape
        if shape is None:
            continue
        got = array.shape
        if len(got) == len(shape) and any(
            want_dim >= 0 and got_dim != want_dim
            for want_dim, got_dim in zip(shape[1:], got[1:])
        ):
            raise invalid_argument(
                f"Input \"{alias}\" has shape {_shape_text(got)} but the signature expects "
                f"{_shape_text(shape)} (-1: any size)"
            )


def check_output_filter(signature: SignatureSpec, output_filter: Sequence[str]) -> None:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(signature.outputs)}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)


class Api:
    def __init__(self, manager: Manager, run_executor: Executor, *, inline_threshold_seconds: float) -> None:
        self.manager = manager
        self._run_executor = run_executor
        self._inline_threshold = inline_threshold_seconds

    async def offload(self, fn: Callable, *args):
        """Runs CPU-heavy translation work (big tensors to or from JSON) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._run_executor, fn, *args)

    def _runner(self, ver: LoadedVersion, signature_name: str) -> SignatureRunner:
        runner = ver.runners.get(signature_name)
        if runner is None:
            runner = ver.runners[signature_name] = SignatureRunner(
                ver.servable, signature_name, self._run_executor, self._inline_threshold
            )
        return runner

    @staticmethod
    def _signature(ver: LoadedVersion, name: str, rest: bool) -> SignatureSpec:
        signature = ver.servable.signatures.get(name)
        if signature is None:
            # The REST handler looks the signature up before decoding JSON
            # (http_rest_api_handler.cc GetInfoMap); gRPC's Predict in predict_util.cc.
            if rest:
                raise invalid_argument(f'Serving signature name: "{name}" not found in signature def')
            raise ServingError(StatusCode.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
        return signature

    async def predict(
        self,
        spec: ModelSpec,
        decode: InputDecoder,
        output_filter: Sequence[str] | None = None,
        *,
        rest: bool = False,
        offload: bool = False,
    ) -> PredictResult:
        """Runs a signature. `offload`: decode the inputs on a worker thread (large
        requests, whose decoding would otherwise hold the event loop for milliseconds)."""
        _check_version_choice(spec)
        ver = self.manager.acquire(spec.name, spec.version, spec.version_label)
        try:
            signature_name = spec.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY
            signature = self._signature(ver, signature_name, rest)
            inputs = await self.offload(decode, signature) if offload else decode(signature)
            check_inputs(signature, inputs)
            if output_filter:
                check_output_filter(signature, output_filter)
            outputs = await self._runner(ver, signature_name).run(inputs, output_filter)
            return PredictResult(
                ModelSpec(spec.name, ver.id.version, None, signature_name), signature, outputs
            )
        finally:
            self.manager.release(ver)

    def model_status(self, spec: ModelSpec) -> list[VersionStatus]:
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        _check_version_choice(spec)
        version = spec.version
        if spec.version_label is not None:
            ver = self.manager.acquire(spec.name, None, spec.version_label)
            self.manager.release(ver)
            version = ver.id.version
        return self.manager.status(spec.name, version)

    def all_model_status(self) -> dict[str, list[VersionStatus]]:
        """Every model the manager knows, with its versions (edgeserve's GET /v1/models)."""
        result: dict[str, list[VersionStatus]] = {}
        for name in self.manager.model_names():
            try:
                result[name] = self.manager.status(name)
            except ServingError:  # known, but no version found yet
                result[name] = []
        return result

    def model_metadata(self, spec: ModelSpec) -> tuple[ModelSpec, Mapping[str, SignatureSpec]]:
        """GetModelMetadata's signature_def field: the resolved spec and every signature."""
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        _check_version_choice(spec)
        ver = self.manager.acquire(spec.name, spec.version, spec.version_label)
        try:
            return ModelSpec(spec.name, ver.id.version), ver.servable.signatures
        finally:
            self.manager.release(ver)
