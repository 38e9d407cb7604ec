"""The plain types every layer speaks: servable ids and states, signatures, servables.

This module owns the vocabulary of TF Serving's core (ServableId, ServableState with
its manager states and numbers) and what a loaded version offers (signatures and
`run`). It imports nothing heavier than numpy and must never import TensorFlow.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping, Protocol, Sequence

import numpy as np

from .dtypes import DataType

DEFAULT_SERVING_SIGNATURE_DEF_KEY = "serving_default"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"


@dataclass(frozen=True, order=True)
class ServableId:
    name: str
    version: int

    def __str__(self) -> str:  # TF Serving's ServableId::DebugString
        return f"{{name: {self.name} version: {self.version}}}"


class ManagerState(enum.IntEnum):
    """ModelVersionStatus.State: the numbers GetModelStatus reports."""

    UNKNOWN = 0
    START = 10
    LOADING = 20
    AVAILABLE = 30
    UNLOADING = 40
    END = 50


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a signature (TF's TensorInfo, dense encoding).

    `name` is the graph tensor name ("x:0"); `shape` is None for unknown rank,
    otherwise one int per dimension with -1 where the size is unknown.
    """

    name: str
    dtype: DataType
    shape: tuple[int, ...] | None


@dataclass(frozen=True)
class SignatureSpec:
    """A SignatureDef: method name and inputs/outputs by alias, in a stable order."""

    method_name: str
    inputs: Mapping[str, TensorSpec]
    outputs: Mapping[str, TensorSpec]
    # Inputs that have defaults in the SignatureDef may be omitted by a request.
    defaults: frozenset[str] = field(default_factory=frozenset)


class Servable(Protocol):
    """What a loaded model version offers. Runtimes implement it; nothing else does."""

    signatures: Mapping[str, SignatureSpec]
    # Each signature's SignatureDef message, serialized: GetModelMetadata returns
    # them as they are and error messages quote them.
    signature_defs: Mapping[str, bytes]

    def run(
        self,
        signature_name: str,
        inputs: Mapping[str, np.ndarray],
        output_filter: Sequence[str] | None = None,
        caller_thread: bool = False,
        timeout_ms: int = 0,
    ) -> dict[str, np.ndarray]:
        """Runs a signature on validated inputs; returns outputs by alias.

        Blocking; called on a worker thread or inline for fast signatures.
        `caller_thread`: the run is known to be tiny, do all of it on this thread
        (no handoff to a runtime-internal pool). `timeout_ms` > 0: a run that takes
        longer ends with DEADLINE_EXCEEDED (not enforced for caller-thread runs).
        Raises ServingError for failures a client should see.
        """
        ...

    def close(self) -> None:
        """Releases the version's resources; called once, after its last request."""
        ...


class Loader(Protocol):
    """Loads one version; TF Serving's Loader: load, (unload via the servable's close).
    The estimate comes from the version's files (resources.estimate_bytes); a servable
    may say what its load measured in `memory_bytes`."""

    def load(self) -> Servable: ...
