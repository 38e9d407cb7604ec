"""The protocol-independent API: resolve a ModelSpec, validate, run; status and metadata.

REST and gRPC adapters translate their wire formats into these calls and back; all
model logic, version resolution and validation lives here, with TF Serving's status
codes and message texts. Tensors arrive decoded (by `tensors`) through a callback
that receives the resolved signature, because REST's JSON can only be typed once the
signature is known.
"""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Awaitable, Callable, Mapping, Sequence

import numpy as np

from . import dtypes, inference, metrics
from .batching import BatchQueue, SignatureRunner, batchable
from .checks import check_inputs, check_output_filter, type_string
from .errors import ServingError, StatusCode, invalid_argument
from .manager import LoadedVersion, Manager, VersionStatus
from .servable import CLASSIFY_METHOD_NAME, DEFAULT_SERVING_SIGNATURE_DEF_KEY, SignatureSpec

if TYPE_CHECKING:  # TF Serving's message classes import TensorFlow: only when used
    from .request_log import RequestLog
    from .messages import ClassificationResult, Input, MultiInferenceResponse, RegressionResult

SIGNATURE_DEF_FIELD = "signature_def"  # GetModelMetadata's one metadata field

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


def _size(serialized: np.ndarray) -> int:
    """Bytes a request's serialized examples hold (what a logged request keeps alive)."""
    return sum(map(len, serialized))


def _check_version_choice(spec: ModelSpec) -> None:
    """A ModelSpec names a version or a label, not both (http_rest_api_util.cc's text)."""
    if spec.version is not None and spec.version_label is not None:
        raise invalid_argument(
            f"Both model version ({spec.version}) and model version label "
            f"({spec.version_label}) cannot be supplied."
        )


class Api:
    def __init__(
        self,
        manager: Manager,
        run_executor: Executor,
        *,
        inline_threshold_seconds: float,
        reload_config: Callable[[object], Awaitable[None]] | None = None,
    ) -> None:
        self.manager = manager
        self._run_executor = run_executor
        self._inline_threshold = inline_threshold_seconds
        self._reload_config = reload_config
        # Sampled successful requests go here (models with a logging_config).
        self.request_log: RequestLog | None = None

    async def reload_config(self, model_server_config: object) -> None:
        """HandleReloadConfigRequest: the sent ModelServerConfig replaces the one in force
        (ServerCore checks and applies it; raises ServingError when it is refused)."""
        if self._reload_config is None:
            raise ServingError(StatusCode.UNIMPLEMENTED, "This server cannot reload its model config")
        await self._reload_config(model_server_config)

    async def offload(self, fn: Callable, *args):
        """Runs CPU-heavy translation work (big tensors to or from JSON) off the loop."""
        return await asyncio.get_running_loop().run_in_executor(self._run_executor, fn, *args)

    def _runner(self, ver: LoadedVersion, signature_name: str) -> SignatureRunner | BatchQueue:
        runner = ver.runners.get(signature_name)
        if runner is None:
            runner = SignatureRunner(ver.servable, signature_name, self._run_executor, self._inline_threshold)
            batching = getattr(ver.servable, "batch_options", None)
            if batching is not None and batchable(ver.servable.signatures[signature_name]):
                runner = BatchQueue(runner, batching, ver.id.name)
            ver.runners[signature_name] = runner
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

    async def _acquire(self, spec: ModelSpec | None, timeout_ms: int = 0) -> LoadedVersion:
        """A reference to the version `spec` names (ServerCore::GetServableHandle's
        checks); in a version swap's gap it waits for the new version."""
        if spec is None:
            raise invalid_argument("Missing ModelSpec")
        if not spec.name:
            raise invalid_argument("ModelSpec has no name specified.")
        _check_version_choice(spec)
        return await self.manager.acquire_or_wait(spec.name, spec.version, spec.version_label, timeout_ms)

    async def predict(
        self,
        spec: ModelSpec | None,
        decode: InputDecoder,
        output_filter: Sequence[str] | None = None,
        *,
        rest: bool = False,
        offload: bool = False,
        timeout_ms: int = 0,
    ) -> PredictResult:
        """Runs a signature. `offload`: decode the inputs on a worker thread (large
        requests, whose decoding would otherwise hold the event loop for milliseconds).
        `timeout_ms` > 0 bounds the model run (TF Serving's RunOptions timeout)."""
        ver = await self._acquire(spec, timeout_ms)
        try:
            signature_name = spec.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY
            signature = self._signature(ver, signature_name, rest)
            inputs = await self.offload(decode, signature) if offload else decode(signature)
            check_inputs(signature, inputs)
            if output_filter:
                check_output_filter(signature, output_filter)
            started = time.perf_counter()
            outputs = await self._runner(ver, signature_name).run(inputs, output_filter, timeout_ms)
            metrics.record_runtime(spec.name, "Predict", time.perf_counter() - started)
            if self.request_log is not None:
                self.request_log.log_predict(
                    spec, ver.id.version, signature_name, signature, inputs, output_filter, outputs)
            return PredictResult(
                ModelSpec(spec.name, ver.id.version, None, signature_name), signature, outputs
            )
        finally:
            self.manager.release(ver)

    # ---- Classify, Regress, MultiInference: tf.Examples in, results out ------

    @staticmethod
    def _describer(ver: LoadedVersion, signature_name: str) -> inference.DebugString:
        return lambda: inference.debug_string(ver.servable.signature_defs.get(signature_name, b""))

    async def classify(
        self, spec: ModelSpec | None, examples: Input, result: ClassificationResult, *, timeout_ms: int = 0
    ) -> ModelSpec:
        """Fills `result`; returns the spec that ran (classifier.cc's RunClassify)."""
        return await self._classify_or_regress(spec, examples, result, True, timeout_ms)

    async def regress(
        self, spec: ModelSpec | None, examples: Input, result: RegressionResult, *, timeout_ms: int = 0
    ) -> ModelSpec:
        """Fills `result`; returns the spec that ran (regressor.cc's RunRegress)."""
        return await self._classify_or_regress(spec, examples, result, False, timeout_ms)

    @staticmethod
    def _check_examples_input(signature: SignatureSpec) -> None:
        """Serialized examples are strings: a signature whose input is not gets the
        message TF's feed check gives it in TF Serving."""
        spec = signature.inputs[inference.CLASSIFY_INPUTS]
        if dtypes.base(spec.dtype) != dtypes.DataType.DT_STRING:
            raise invalid_argument(f"Expects arg[0] to be {type_string(spec.dtype)} but string is provided")

    async def _classify_or_regress(self, spec, examples: Input, result, classify: bool, timeout_ms: int) -> ModelSpec:
        ver = await self._acquire(spec, timeout_ms)
        try:
            signature_name = spec.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY
            signature = ver.servable.signatures.get(signature_name)
            if signature is None:
                raise invalid_argument(f"No signature was found with the name: {signature_name}")
            describe = self._describer(ver, signature_name)
            if classify:
                wanted = inference.classification_outputs(signature, describe)
            else:
                wanted = inference.regression_outputs(signature, describe)
            serialized = inference.serialized_examples(examples)
            metrics.record_examples(spec.name, len(serialized))
            self._check_examples_input(signature)
            started = time.perf_counter()
            outputs = await self._runner(ver, signature_name).run(
                {inference.CLASSIFY_INPUTS: serialized}, wanted, timeout_ms
            )
            metrics.record_runtime(spec.name, "Classify" if classify else "Regress", time.perf_counter() - started)
            if classify:
                inference.fill_classification_result(outputs, len(serialized), result)
            else:
                inference.fill_regression_result(outputs, len(serialized), result)
            if self.request_log is not None:
                self.request_log.log_classify_or_regress(
                    spec, ver.id.version, signature_name, examples, result, _size(serialized), classify=classify)
            return ModelSpec(spec.name, ver.id.version, None, signature_name)
        finally:
            self.manager.release(ver)

    async def multi_inference(
        self,
        tasks: Sequence[tuple[ModelSpec, str]],
        examples: Input,
        response: MultiInferenceResponse,
        *,
        timeout_ms: int = 0,
    ) -> None:
        """Several classify/regress tasks of one model on one input (multi_inference.cc).

        Each task's signature is run on the same serialized examples; TF Serving fuses
        them into one Session run, which gives the same results for stateless models.
        """
        ver = await self._acquire(tasks[0][0] if tasks else ModelSpec(""), timeout_ms)
        try:
            model_name = ""
            seen: set[str] = set()
            plan: list[tuple[ModelSpec, str, str, list[str]]] = []
            for spec, method_name in tasks:
                if not spec.name:
                    raise invalid_argument("Found ModelSpec with an empty model name.")
                if not model_name:
                    model_name = spec.name
                elif spec.name != model_name:
                    raise invalid_argument(
                        "All ModelSpecs in a MultiInferenceRequest must access the same model name."
                    )
                signature_name = spec.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY
                if signature_name in seen:
                    raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
                seen.add(signature_name)
                signature = ver.servable.signatures.get(signature_name)
                if signature is None:
                    raise invalid_argument(f"Requested signature not found in model graph: {signature_name}")
                wanted = inference.task_outputs(method_name, signature, self._describer(ver, signature_name))
                plan.append((spec, method_name, signature_name, wanted))
            serialized = inference.serialized_examples(examples)
            metrics.record_examples(model_name, len(serialized))
            for _spec, _method, signature_name, _wanted in plan:
                self._check_examples_input(ver.servable.signatures[signature_name])
            inputs = {inference.CLASSIFY_INPUTS: serialized}
            for spec, method_name, signature_name, wanted in plan:
                outputs = await self._runner(ver, signature_name).run(inputs, wanted, timeout_ms)
                task_result = response.results.add()
                if method_name == CLASSIFY_METHOD_NAME:
                    inference.fill_classification_result(
                        outputs, len(serialized), task_result.classification_result
                    )
                else:
                    inference.fill_regression_result(outputs, len(serialized), task_result.regression_result)
                task_spec = task_result.model_spec
                task_spec.name = spec.name
                task_spec.signature_name = signature_name
                task_spec.version.value = ver.id.version
            if self.request_log is not None:
                self.request_log.log_multi_inference(tasks, ver.id.version, examples, response, _size(serialized))
        finally:
            self.manager.release(ver)

    # ---- status and metadata -------------------------------------------------

    def model_status(self, spec: ModelSpec | None, *, rest: bool = False) -> list[VersionStatus]:
        if spec is None:
            raise invalid_argument("Missing ModelSpec")
        if rest and not spec.name:
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

    def version_labels(self, name: str) -> dict[str, int]:
        """`name`'s version labels, label -> version (edgeserve's GET /v1/models)."""
        return self.manager.labels(name)

    async def model_metadata(self, spec: ModelSpec) -> tuple[ModelSpec, Mapping[str, SignatureSpec]]:
        """REST's metadata: the resolved spec and every signature."""
        if not spec.name:
            raise invalid_argument("Missing model name in request.")
        ver = await self._acquire(spec)
        try:
            return ModelSpec(spec.name, ver.id.version), ver.servable.signatures
        finally:
            self.manager.release(ver)

    async def signature_def_map(
        self, spec: ModelSpec | None, metadata_fields: Sequence[str]
    ) -> tuple[ModelSpec, bytes]:
        """GetModelMetadata: the resolved spec and the serialized `SignatureDefMap`
        (get_model_metadata_impl.cc's checks and texts)."""
        if spec is None:
            raise invalid_argument("Missing ModelSpec")
        if not metadata_fields:
            raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
        for field in metadata_fields:
            if field != SIGNATURE_DEF_FIELD:
                raise invalid_argument(f"Metadata field {field} is not supported")
        ver = await self._acquire(spec)
        try:
            if ver.signature_def_map is None:
                from .messages import SignatureDefMap

                signature_map = SignatureDefMap()
                for key, serialized in ver.servable.signature_defs.items():
                    signature_map.signature_def[key].MergeFromString(serialized)
                ver.signature_def_map = signature_map.SerializeToString(deterministic=True)
            return ModelSpec(spec.name, ver.id.version), ver.signature_def_map
        finally:
            self.manager.release(ver)
