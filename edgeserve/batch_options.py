"""TF Serving's batching parameters: the text file -> checked, complete `BatchOptions`.

Reads a `BatchingParameters` text proto (--batching_parameters_file, or a version
folder's `batching_params.pbtxt` with --enable_per_model_batching_parameters) and
fills what it leaves unset with the defaults TF Serving's batch scheduler takes
(SharedBatchScheduler::QueueOptions: 1000 rows, no timeout, 10 batches queued;
num_batch_threads: the CPUs this process may use). The checks and their texts are
TF Serving's (bundle_factory_util.cc). Nothing here runs a batch.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from .errors import ServingError, invalid_argument

# A version folder's own parameters (TF Serving's kBatchingParamsFilename).
PER_MODEL_FILENAME = "batching_params.pbtxt"

DEFAULT_MAX_BATCH_SIZE = 1000
DEFAULT_MAX_ENQUEUED_BATCHES = 10


@dataclass(frozen=True)
class BatchOptions:
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # largest request (input task), in rows
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = DEFAULT_MAX_ENQUEUED_BATCHES
    num_batch_threads: int = 1
    allowed_batch_sizes: tuple[int, ...] = ()
    pad_variable_length_inputs: bool = False
    enable_large_batch_splitting: bool = False
    max_execution_batch_size: int = DEFAULT_MAX_BATCH_SIZE  # largest batch run
    # edgeserve's --adaptive_batching: False = TF Serving's fixed batch_timeout_micros wait.
    adaptive: bool = True

    @property
    def batch_limit(self) -> int:
        """Rows in one batch run: without splitting, max_batch_size."""
        return self.max_execution_batch_size if self.enable_large_batch_splitting else self.max_batch_size

    def padded_size(self, rows: int) -> int:
        """The allowed batch size a batch of `rows` is padded up to."""
        for size in self.allowed_batch_sizes:
            if size >= rows:
                return size
        return rows


def _cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def parse(text: str, origin: str) -> BatchOptions:
    """BatchOptions from BatchingParameters text; INVALID_ARGUMENT naming `origin` and
    the line when the text does not parse or the values do not hold together."""
    from google.protobuf import text_format

    from .protos.batching_parameters_pb2 import BatchingParameters
    from .text_proto import parse as parse_text

    message = BatchingParameters()
    try:
        parse_text(text, message)
    except text_format.ParseError as exc:
        raise invalid_argument(f"Invalid batching parameters in {origin}: {exc}") from None
    return from_proto(message, origin)


def from_proto(message, origin: str) -> BatchOptions:
    def value(field: str, default):
        return getattr(message, field).value if message.HasField(field) else default

    max_batch_size = value("max_batch_size", DEFAULT_MAX_BATCH_SIZE)
    splitting = value("enable_large_batch_splitting", False)
    options = BatchOptions(
        max_batch_size=max_batch_size,
        batch_timeout_micros=value("batch_timeout_micros", 0),
        max_enqueued_batches=value("max_enqueued_batches", DEFAULT_MAX_ENQUEUED_BATCHES),
        num_batch_threads=value("num_batch_threads", _cpus()),
        allowed_batch_sizes=tuple(message.allowed_batch_sizes),
        pad_variable_length_inputs=message.pad_variable_length_inputs,
        enable_large_batch_splitting=splitting,
        # TF Serving: without max_execution_batch_size, splitting cuts at max_batch_size.
        max_execution_batch_size=value("max_execution_batch_size", max_batch_size) if splitting
        else max_batch_size,
    )
    _check(options, origin)
    return options


def _check(options: BatchOptions, origin: str) -> None:
    def bad(message: str) -> ServingError:
        return invalid_argument(f"Invalid batching parameters in {origin}: {message}")

    for field in ("max_batch_size", "max_enqueued_batches", "num_batch_threads", "max_execution_batch_size"):
        if getattr(options, field) < 1:
            raise bad(f"{field} must be positive, got {getattr(options, field)}")
    if options.batch_timeout_micros < 0:
        raise bad(f"batch_timeout_micros must not be negative, got {options.batch_timeout_micros}")
    sizes = options.allowed_batch_sizes
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
            raise bad("allowed_batch_sizes entries must be positive and increasing, got "
                      + ", ".join(map(str, sizes)))
        # bundle_factory_util.cc's check and text.
        if sizes[-1] != options.batch_limit:
            raise bad(
                "Last entry in allowed_batch_sizes must match max_batch_size; last "
                f"entry was {sizes[-1]}; expected {options.batch_limit}"
            )
    if options.enable_large_batch_splitting and options.max_execution_batch_size > options.max_batch_size:
        raise bad(
            f"max_execution_batch_size ({options.max_execution_batch_size}) must not exceed "
            f"max_batch_size ({options.max_batch_size})"
        )


def read_file(path: str) -> BatchOptions:
    """--batching_parameters_file; a missing or unreadable file is INVALID_ARGUMENT."""
    try:
        # newline="": the bytes as TF Serving's C++ parser sees them (a lone "\r" ends
        # no comment there).
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise invalid_argument(f"Could not read batching parameters file {path}: {exc}") from None
    return parse(text, path)


def for_version(server_wide: BatchOptions, version_path: str, per_model: bool) -> BatchOptions:
    """The parameters one version runs with: its own batching_params.pbtxt when
    per-model parameters are on and the file exists, the server's otherwise."""
    if not per_model:
        return server_wide
    path = os.path.join(version_path, PER_MODEL_FILENAME)
    if not os.path.isfile(path):
        return server_wide
    # A bad file fails the version's load with its status; the rule is the server's.
    return dataclasses.replace(read_file(path), adaptive=server_wide.adaptive)
