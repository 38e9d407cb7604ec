"""Fuzz target: --batching_parameters_file's text (BatchingParameters) -> BatchOptions.

The bytes are written to a real file and read by `batch_options.read_file`, as the server
reads --batching_parameters_file (and a version's batching_params.pbtxt). It must give
complete, checked BatchOptions that say what the text says, or ServingError
INVALID_ARGUMENT "Invalid batching parameters in <file>: ..." whose syntax errors name
"<line>:<column>" ("Could not read ..." for bytes that are not UTF-8). It is pure: the
same file, the same outcome.

    python -m tests.fuzz.batching_config [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/batching_config
"""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_common  # noqa: E402

# protobuf's text parser (pure Python) is instrumented too: it is most of the code here.
with fuzz_common.instrumented(__name__, "google.protobuf.text_format"):
    from google.protobuf import text_format
    from edgeserve import batch_options
    from edgeserve.batch_options import BatchOptions
    from edgeserve.errors import ServingError, StatusCode
    from edgeserve.protos.batching_parameters_pb2 import BatchingParameters

_SCRATCH = fuzz_common.ScratchFile("fuzz-batching")
_FILE = _SCRATCH.path
_PREFIX = f"Invalid batching parameters in {_FILE}: "
_SYNTAX = re.compile(re.escape(_PREFIX) + r"\d+:\d+ : \S")


def _reference(text: str):
    message = BatchingParameters()
    try:
        # C++ TextFormat's depth limit; ValueError: an enum number beyond int32.
        text_format.Parse(text, message, max_recursion_depth=100)
    except (text_format.ParseError, ValueError, RecursionError):
        return None
    return message


def _check_options(options: BatchOptions, reference) -> None:
    assert reference is not None
    for name in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if reference.HasField(name):
            assert getattr(options, name) == getattr(reference, name).value, name
    assert options.allowed_batch_sizes == tuple(reference.allowed_batch_sizes)
    assert options.pad_variable_length_inputs == reference.pad_variable_length_inputs
    # What the checks promise to the batch queue.
    assert options.max_batch_size >= 1 and options.max_enqueued_batches >= 1 and options.num_batch_threads >= 1
    assert options.batch_timeout_micros >= 0
    assert 1 <= options.batch_limit <= options.max_batch_size
    sizes = options.allowed_batch_sizes
    assert all(a < b for a, b in zip(sizes, sizes[1:]))
    assert not sizes or sizes[-1] == options.batch_limit


def _check_error(exc: ServingError, reference) -> None:
    assert exc.code == StatusCode.INVALID_ARGUMENT, exc
    assert exc.message.startswith(_PREFIX) and len(exc.message) > len(_PREFIX), exc.message
    if reference is None:
        assert _SYNTAX.match(exc.message), f"syntax error without line and column: {exc.message!r}"


def _read():
    try:
        return batch_options.read_file(_FILE)
    except ServingError as exc:
        return exc


def check(data: bytes) -> None:
    _SCRATCH.write(data)  # read from a real file, as the server reads it
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        outcome = _read()  # the server reads the file as UTF-8: it is refused, naming it
        assert isinstance(outcome, ServingError), "a file that is not UTF-8 was read"
        assert outcome.code == StatusCode.INVALID_ARGUMENT
        assert outcome.message.startswith(f"Could not read batching parameters file {_FILE}: "), outcome.message
        return
    reference = _reference(text)
    outcome = _read()
    if isinstance(outcome, ServingError):
        _check_error(outcome, reference)
    else:
        _check_options(outcome, reference)
    again = _read()
    if isinstance(outcome, ServingError):
        assert isinstance(again, ServingError) and again.message == outcome.message
    else:
        assert again == outcome


def main() -> None:
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
