"""TF Serving's model warmup: replays a version's recorded requests before it serves.

A version folder may hold `assets.extra/tf_serving_warmup_requests`, a TFRecord file of
`tensorflow.serving.PredictionLog` records. With `--enable_model_warmup` (the default)
the loader replays each record `--num_request_iterations_for_warmup` times (1 when the
flag is 0) against the freshly loaded servable, on the loader's thread, before the
load returns: the version becomes AVAILABLE only once its lazy initialisations have
run. Any failure fails the load with TF Serving's status, so the manager reports it
and keeps serving the version it has.

Follows servables/tensorflow/saved_model_warmup_util.cc (reading, limits, messages)
and saved_model_warmup.cc (which log types replay, and how):

- no file: nothing to do ("No warmup data file found at ...");
- an empty file: 0 records, loads (TF's record reader ends at once);
- each record is parsed, replayed, then counted; the record that takes the count
  above 1000 fails the load ("Number of warmup records exceeds the maximum (1000)
  at ..."), so a file of exactly 1000 records loads;
- a record that is not a PredictionLog: INVALID_ARGUMENT "Failed to parse warmup
  record: ..."; a damaged TFRecord: TF's DATA_LOSS message + ". Please verify your
  warmup data is in TFRecord format.";
- predict_log, classify_log, regress_log and multi_inference_log replay their request
  (its model name and version are ignored: the version being loaded answers);
  session_run_log and predict_streamed_log fail with UNIMPLEMENTED "Unsupported
  log_type for warmup: <field number>"; a record with no log type is skipped;
- a replayed request that fails fails the load with the request's own status.

Requests replay through what requests use: `checks` for inputs and outputs,
`tensor_proto` decoding, `inference` for examples and results, and `Servable.run`,
but not the batcher or the manager (the version is not in the manager yet).
Runtime-agnostic: it takes a Servable and the version folder, and never imports
TensorFlow. `read_tfrecords` reads the file as TF's RecordReader does (io/record_reader.cc,
through tf_record_iterator): lengths and data are CRC32C-checked, and a damaged file
fails with the status and text TF's reader gives.
"""
from __future__ import annotations

import errno
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Iterator

from . import inference, metrics
from .checks import check_input_names, check_inputs, check_output_filter
from .errors import ServingError, StatusCode, invalid_argument
from .servable import CLASSIFY_METHOD_NAME, DEFAULT_SERVING_SIGNATURE_DEF_KEY, Servable
from .tfrecord import FOOTER, HEADER, masked_crc32c

if TYPE_CHECKING:
    from .messages import PredictionLog

log = logging.getLogger("edgeserve.warmup")

ASSETS_EXTRA_DIRECTORY = "assets.extra"  # tensorflow/cc/saved_model/constants.h
WARMUP_REQUESTS_FILE = "tf_serving_warmup_requests"  # WarmupConsts::kRequestsFileName
MAX_NUM_RECORDS = 1000  # WarmupConsts::kMaxNumRecords


def warmup_file(export_dir: str) -> str:
    return os.path.join(export_dir, ASSETS_EXTRA_DIRECTORY, WARMUP_REQUESTS_FILE)


def run_warmup(servable: Servable, export_dir: str, num_request_iterations: int = 0) -> int:
    """Replays the version's warmup records; returns how many were read.

    `num_request_iterations`: the flag's value; used only if > 0, else 1 (as TF
    Serving sets ModelWarmupOptions only for a positive flag). Raises ServingError.
    """
    started = time.monotonic()
    path = warmup_file(export_dir)
    if not os.path.exists(path):
        log.info("No warmup data file found at %s", path)
        return 0
    iterations = num_request_iterations if num_request_iterations > 0 else 1
    options = f"num_request_iterations {{ value: {num_request_iterations} }}" if num_request_iterations > 0 else ""
    log.info("Starting to read warmup data for model at %s with model-warmup-options %s", path, options)
    from .messages import PredictionLog

    num_records = 0
    try:
        for record in read_tfrecords(path):
            try:
                prediction_log = PredictionLog.FromString(record)
            except Exception:  # protobuf's DecodeError
                raise invalid_argument(
                    f"Failed to parse warmup record: {record.decode('utf-8', 'replace')} from {path}"
                ) from None
            for _ in range(iterations):
                replay(servable, prediction_log)
            num_records += 1
            if num_records > MAX_NUM_RECORDS:
                raise invalid_argument(
                    f"Number of warmup records exceeds the maximum ({MAX_NUM_RECORDS}) at {path}"
                )
    except RecordError as exc:  # the reader's: opening, reading, CRCs
        code = exc.code
        message = exc.message
        if code == StatusCode.DATA_LOSS:
            message += ". Please verify your warmup data is in TFRecord format."
        raise _failed(ServingError(code, message), path, num_records, started) from None
    except ServingError as exc:
        raise _failed(exc, path, num_records, started) from None
    metrics.record_warmup(export_dir, "OK", time.monotonic() - started, num_records)
    elapsed_us = int((time.monotonic() - started) * 1e6)
    log.info(
        "Finished reading warmup data for model at %s. Number of warmup records read: %d. "
        "Elapsed time (microseconds): %d.",
        path, num_records, elapsed_us,
    )
    return num_records


def _failed(error: ServingError, path: str, num_records: int, started: float) -> ServingError:
    # TF Serving labels the metrics with Status::ToString: "CODE: message".
    export_dir = os.path.dirname(os.path.dirname(path))
    metrics.record_warmup(export_dir, f"{error.code.name}: {error.message}", time.monotonic() - started, num_records)
    # The status stays TF Serving's; the log says it was the warmup.
    log.error("Model warmup failed at %s after %d record(s): %s", path, num_records, error.message)
    return error


# ---- TFRecord files (the framing: tfrecord.py) -----------------------------------

_SIZE_MAX = 2**64 - 1  # size_t, in ReadChecksummed's "record size too large" check
# (The data's offset is never 0, so its errors never get GetChecksumErrorSuffix's text.)
# TF's status code for an errno (tsl/platform/errors.cc ErrnoToCode), for the errors
# opening or reading a file can give; any other errno is UNKNOWN there too.
_ERRNO_CODES = {
    errno.ENOENT: StatusCode.NOT_FOUND, errno.ENXIO: StatusCode.NOT_FOUND, errno.ENODEV: StatusCode.NOT_FOUND,
    errno.EPERM: StatusCode.PERMISSION_DENIED, errno.EACCES: StatusCode.PERMISSION_DENIED,
    errno.EROFS: StatusCode.PERMISSION_DENIED,
    errno.EISDIR: StatusCode.FAILED_PRECONDITION, errno.ENOTDIR: StatusCode.FAILED_PRECONDITION,
    errno.EBUSY: StatusCode.FAILED_PRECONDITION, errno.EBADF: StatusCode.FAILED_PRECONDITION,
    errno.EINVAL: StatusCode.INVALID_ARGUMENT, errno.ENAMETOOLONG: StatusCode.INVALID_ARGUMENT,
    errno.EFAULT: StatusCode.INVALID_ARGUMENT,
    errno.EMFILE: StatusCode.RESOURCE_EXHAUSTED, errno.ENFILE: StatusCode.RESOURCE_EXHAUSTED,
    errno.ENOMEM: StatusCode.RESOURCE_EXHAUSTED,
    errno.EFBIG: StatusCode.OUT_OF_RANGE, errno.EOVERFLOW: StatusCode.OUT_OF_RANGE,
    errno.EAGAIN: StatusCode.UNAVAILABLE, errno.ETIMEDOUT: StatusCode.DEADLINE_EXCEEDED,
}


class RecordError(Exception):
    """A TFRecord file that cannot be read, with the status TF's reader gives."""

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _suffix(offset: int) -> str:
    # TF's GetChecksumErrorSuffix: a TFRecord file has no magic number to check.
    return " (Is this even a TFRecord file?)" if offset == 0 else ""


def read_tfrecords(path: str) -> Iterator[bytes]:
    """The records of a TFRecord file, read one at a time as they are consumed.

    Statuses and texts are those of TF's RecordReader::ReadRecord as tf_record_iterator
    reports them: a bad length CRC is DATA_LOSS "corrupted record at <offset>" (+ the
    "Is this even a TFRecord file?" reminder at offset 0), a bad data CRC "corrupted
    record at <offset + 12>", data cut short "truncated record at <offset>' failed with
    Read less bytes than requested". A file that ends inside a length header ends the
    records without an error, as TF's reader does (it sees end-of-file there). Raises
    RecordError; open and read errors carry TF's code for their errno.
    """
    try:
        file = open(path, "rb")
    except OSError as exc:
        raise _os_error(path, exc) from None
    with file:
        try:
            size = os.fstat(file.fileno()).st_size
            offset = 0
            while True:
                header = file.read(HEADER.size)
                if len(header) < HEADER.size:
                    if header:
                        log.warning("Ignoring %d byte(s) after the last complete record of %s",
                                    len(header), path)
                    return
                length, length_crc = HEADER.unpack(header)
                if masked_crc32c(header[:8]) != length_crc:
                    raise RecordError(StatusCode.DATA_LOSS, f"corrupted record at {offset}{_suffix(offset)}")
                data_offset = offset + HEADER.size
                if length >= _SIZE_MAX - FOOTER.size:
                    raise RecordError(StatusCode.DATA_LOSS, "record size too large")
                # Checked against the file's size before reading, so that a damaged
                # length cannot make the read allocate gigabytes.
                if data_offset + length + FOOTER.size > size:
                    raise RecordError(
                        StatusCode.DATA_LOSS,
                        f"truncated record at {offset}' failed with Read less bytes than requested")
                data = file.read(length)
                footer = file.read(FOOTER.size)
                if len(data) < length or len(footer) < FOOTER.size:  # shrank while read
                    raise RecordError(
                        StatusCode.DATA_LOSS,
                        f"truncated record at {offset}' failed with Read less bytes than requested")
                if masked_crc32c(data) != FOOTER.unpack(footer)[0]:
                    raise RecordError(StatusCode.DATA_LOSS, f"corrupted record at {data_offset}")
                offset = data_offset + length + FOOTER.size
                yield data
        except OSError as exc:
            raise _os_error(path, exc) from None


def _os_error(path: str, exc: OSError) -> RecordError:
    """As TF's IOError(filename, errno): "<path>; <strerror>"."""
    code = _ERRNO_CODES.get(exc.errno or 0, StatusCode.UNKNOWN)
    return RecordError(code, f"{path}; {exc.strerror or exc}")


def replay(servable: Servable, prediction_log: PredictionLog) -> None:
    """Runs one warmup record's request (saved_model_warmup.cc RunWarmupRequest)."""
    kind = prediction_log.WhichOneof("log_type")
    if kind == "predict_log":
        _predict(servable, prediction_log.predict_log.request)
    elif kind == "classify_log":
        _classify_or_regress(servable, prediction_log.classify_log.request, classify=True)
    elif kind == "regress_log":
        _classify_or_regress(servable, prediction_log.regress_log.request, classify=False)
    elif kind == "multi_inference_log":
        _multi_inference(servable, prediction_log.multi_inference_log.request)
    elif kind is not None:  # session_run_log, predict_streamed_log
        number = prediction_log.DESCRIPTOR.fields_by_name[kind].number
        raise ServingError(StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")


def _signature_name(model_spec: Any) -> str:
    return model_spec.signature_name or DEFAULT_SERVING_SIGNATURE_DEF_KEY


def _describer(servable: Servable, signature_name: str) -> inference.DebugString:
    return lambda: inference.debug_string(servable.signature_defs.get(signature_name, b""))


def _predict(servable: Servable, request: Any) -> None:
    """As a gRPC Predict (predict_util.cc RunPredict), response included."""
    from . import tensor_proto
    from .messages import PredictResponse

    signature_name = _signature_name(request.model_spec)
    signature = servable.signatures.get(signature_name)
    if signature is None:
        raise ServingError(StatusCode.FAILED_PRECONDITION, f'Serving signature key "{signature_name}" not found.')
    check_input_names(signature, request.inputs)
    inputs = {alias: tensor_proto.to_ndarray(proto, alias) for alias, proto in request.inputs.items()}
    check_inputs(signature, inputs)
    output_filter = list(request.output_filter)
    if output_filter:
        check_output_filter(signature, output_filter)
    outputs = servable.run(signature_name, inputs, output_filter or None)
    response = PredictResponse()
    for alias, array in outputs.items():
        tensor_proto.from_ndarray(array, signature.outputs[alias].dtype, response.outputs[alias])


def _classify_or_regress(servable: Servable, request: Any, *, classify: bool) -> None:
    """As a Classify or Regress (classifier.cc RunClassify, regressor.cc RunRegress)."""
    from .messages import ClassificationResult, RegressionResult

    signature_name = _signature_name(request.model_spec)
    signature = servable.signatures.get(signature_name)
    if signature is None:
        raise invalid_argument(f"No signature was found with the name: {signature_name}")
    describe = _describer(servable, signature_name)
    if classify:
        wanted = inference.classification_outputs(signature, describe)
    else:
        wanted = inference.regression_outputs(signature, describe)
    serialized = inference.serialized_examples(request.input)
    inputs = {inference.CLASSIFY_INPUTS: serialized}
    check_inputs(signature, inputs)
    outputs = servable.run(signature_name, inputs, wanted)
    if classify:
        inference.fill_classification_result(outputs, len(serialized), ClassificationResult())
    else:
        inference.fill_regression_result(outputs, len(serialized), RegressionResult())


def _multi_inference(servable: Servable, request: Any) -> None:
    """As a MultiInference (multi_inference.cc): every task's checks, then its runs."""
    from .messages import MultiInferenceResponse

    model_name = ""
    seen: set[str] = set()
    plan: list[tuple[str, str, list[str]]] = []
    for task in request.tasks:
        if not task.model_spec.name:
            raise invalid_argument("Found ModelSpec with an empty model name.")
        if not model_name:
            model_name = task.model_spec.name
        elif task.model_spec.name != model_name:
            raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
        signature_name = _signature_name(task.model_spec)
        if signature_name in seen:
            raise invalid_argument(f"Duplicate evaluation of signature: {signature_name}")
        seen.add(signature_name)
        signature = servable.signatures.get(signature_name)
        if signature is None:
            raise invalid_argument(f"Requested signature not found in model graph: {signature_name}")
        wanted = inference.task_outputs(task.method_name, signature, _describer(servable, signature_name))
        plan.append((task.method_name, signature_name, wanted))
    serialized = inference.serialized_examples(request.input)
    inputs = {inference.CLASSIFY_INPUTS: serialized}
    for _method, signature_name, _wanted in plan:
        check_inputs(servable.signatures[signature_name], inputs)
    response = MultiInferenceResponse()
    for method_name, signature_name, wanted in plan:
        outputs = servable.run(signature_name, inputs, wanted)
        result = response.results.add()
        if method_name == CLASSIFY_METHOD_NAME:
            inference.fill_classification_result(outputs, len(serialized), result.classification_result)
        else:
            inference.fill_regression_result(outputs, len(serialized), result.regression_result)
