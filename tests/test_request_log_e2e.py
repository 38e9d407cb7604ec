"""Request logging end to end: a model's logging_config, the real server, real clients.

One server for the module (started once, ~5 s) serves half_plus_two under several
names, each logging to its own filename_prefix with --request_log_max_file_bytes=4096:

- hpt: rate 1.0, label "stable" -> 1; the inference calls of every kind;
- mark: rate 1.0; the barrier. The writer is one thread taking one FIFO queue, and a
  request's record is queued before its answer is sent, so once a mark request sent
  after some answered requests is in mark's files, their records are on disk too
  (or never will be): "exactly one record" and "not logged" are then facts, not races;
- rated: rate 0.0, changed live by HandleReloadConfigRequest;
- late: its prefix's folder is missing at start-up (logging paused, serving goes on);
- rot: rotation at 4096 bytes;
- warm: its own base path, polled each second; a log file becomes version 2's warmup file;
- bye: requests answered just before SIGTERM are in the files after the exit. This
  test stops the shared server, so it is the module's last.

The files are read back with TensorFlow (tf.data.TFRecordDataset) and parsed with
tensorflow-serving-api's PredictionLog; the metrics page comes from a
--monitoring_config_file written here.
"""
from __future__ import annotations

import calendar
import os
import re
import shutil
import signal
import struct
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import grpc_client
from conftest import ServerProcess
from grpc_client import (
    TIMEOUT,
    classify_request,
    example,
    multi_inference_request,
    predict_request,
    regress_request,
    rpc_error,
    tensor,
)

from edgeserve.request_log import RETRY_SECONDS

MAX_FILE_BYTES = 4096
PAGE = "/monitoring/prometheus/metrics"
WAIT = 15.0  # seconds a record may take to reach the disk, at most (it takes milliseconds)
pytestmark = pytest.mark.timeout(120)  # each test, the shared server's start included

_NAME_TAIL = re.compile(r"\.(\d{8}T\d{6}Z)\.(\d+)\.tfrecord")


# ---- reading the files back ----------------------------------------------------------

def log_files(prefix: Path) -> list[Path]:
    """`<prefix>.<YYYYmmddTHHMMSSZ>.<n>.tfrecord`, oldest first."""
    found = []
    if prefix.parent.is_dir():
        for path in prefix.parent.iterdir():
            if path.name.startswith(prefix.name):
                match = _NAME_TAIL.fullmatch(path.name[len(prefix.name):])
                if match:
                    found.append(((match[1], int(match[2])), path))
    return [path for _, path in sorted(found)]


def read_records(paths) -> list:
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = []
    for path in paths:
        for raw in tf.data.TFRecordDataset(str(path)):
            records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return records


def records_of(prefix: Path) -> list:
    return read_records(log_files(prefix))


def ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(proto)


def first_record_bytes(path: Path) -> int:
    """The framed size of a file's first record (TFRecord: u64 length, u32 CRC, data, u32 CRC)."""
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
    return 8 + 4 + length + 4


# ---- the metrics page ----------------------------------------------------------------

def metric_samples(text: str) -> dict:
    """(sample name, labels) -> value, by prometheus-client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def metric(page: dict, name: str, **labels) -> float | None:
    return page.get((name, frozenset(labels.items())))


# ---- the server ----------------------------------------------------------------------

def model_entry(name: str, base_path: Path, prefix: Path | str, rate: float,
                collector: str = "tfrecord", labels: dict | None = None) -> str:
    lines = [
        "  config {",
        f'    name: "{name}"',
        f'    base_path: "{base_path}"',
        '    model_platform: "tensorflow"',
    ]
    for label, version in (labels or {}).items():
        lines.append(f'    version_labels {{ key: "{label}" value: {version} }}')
    lines += [
        "    logging_config {",
        f'      log_collector_config {{ type: "{collector}" filename_prefix: "{prefix}" }}',
        f"      sampling_config {{ sampling_rate: {rate!r} }}",
        "    }",
        "  }",
    ]
    return "\n".join(lines)


class LoggingServer:
    """The module's server, its models' settings, and the clients that talk to it."""

    def __init__(self, tmp: Path, model_store: Path) -> None:
        self.tmp = tmp
        self.logs = tmp / "logs"
        self.logs.mkdir()
        self.late_dir = tmp / "late_logs"  # missing at start-up
        self.warm_base = tmp / "warm"
        shutil.copytree(model_store / "half_plus_two", self.warm_base)
        base = model_store / "half_plus_two"
        self.models = {name: {"base_path": base, "prefix": self.logs / name, "rate": 1.0}
                       for name in ("hpt", "mark", "rated", "late", "rot", "warm", "bye")}
        self.models["hpt"]["labels"] = {"stable": 1}
        self.models["rated"]["rate"] = 0.0
        self.models["late"]["prefix"] = self.late_dir / "late"
        self.models["warm"]["base_path"] = self.warm_base
        self.config_path = tmp / "models.config"
        self.config_path.write_text(self.config_text())
        monitoring = tmp / "monitoring.config"
        monitoring.write_text(f'prometheus_config {{ enable: true path: "{PAGE}" }}\n')
        self.server = ServerProcess(tmp, [
            f"--model_config_file={self.config_path}",
            f"--monitoring_config_file={monitoring}",
            "--file_system_poll_wait_seconds=1",
            f"--request_log_max_file_bytes={MAX_FILE_BYTES}",
            "--enable_model_warmup=true",
        ])
        self.channel = None
        self.marks = 0

    def start(self) -> None:
        import tensorflow  # noqa: F401  (imported here while the server starts)

        self.server.wait_ready(timeout=60)
        self.rest = self.server.client()
        self.channel = grpc_client.channel(self.server.grpc_port)
        self.prediction, self.model_service = grpc_client.stubs(self.channel)

    def close(self) -> None:
        if self.channel is not None:
            self.channel.close()
        self.server.terminate()
        self.server.cleanup()

    def prefix(self, name: str) -> Path:
        return self.models[name]["prefix"]

    def config_text(self, **changes: dict) -> str:
        """The config text with `changes` (model name -> settings to replace)."""
        entries = []
        for name, settings in self.models.items():
            entries.append(model_entry(name, **{**settings, **changes.get(name, {})}))
        return "model_config_list {\n" + "\n".join(entries) + "\n}\n"

    def reload(self, **changes: dict):
        """HandleReloadConfigRequest with the config and `changes`; the response."""
        from tensorflow_serving.apis import model_management_pb2

        request = model_management_pb2.ReloadConfigRequest(config=config_proto(self.config_text(**changes)))
        return self.model_service.HandleReloadConfigRequest(request, timeout=60)

    def page(self) -> dict:
        status, body = self.rest.get(PAGE)
        assert status == 200, body
        return metric_samples(body.decode())

    def rest_predict(self, name: str, xs, path_extra: str = "") -> list:
        status, body = self.rest.post(f"/v1/models/{name}{path_extra}:predict", {"instances": [[x] for x in xs]})
        assert status == 200, body
        return body["predictions"]

    def barrier(self) -> None:
        """Returns once every request answered before it has had its record written."""
        self.marks += 1
        x = float(self.marks)
        assert self.rest_predict("mark", [x]) == [[0.5 * x + 2]]

        def written():
            try:
                records = records_of(self.prefix("mark"))
            except Exception:  # a file caught mid-append: read again
                return False
            return bool(records) and ndarray(records[-1].predict_log.request.inputs["x"]).item() == x

        self.server.wait_for(written, timeout=WAIT, interval=0.02)

    def logged(self, name: str, call) -> tuple[object, list]:
        """(call's result, the records of `name` written because of it)."""
        self.barrier()
        before = len(records_of(self.prefix(name)))
        result = call()
        self.barrier()
        return result, records_of(self.prefix(name))[before:]


def config_proto(text: str):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


@pytest.fixture(scope="module")
def served(tmp_path_factory, model_store):
    server = LoggingServer(tmp_path_factory.mktemp("request_log"), model_store)
    try:
        server.start()
        yield server
    finally:
        server.close()


def check_metadata(record, signature_name: str, started: float, name: str = "hpt", version: int = 1,
                   rate: float = 1.0) -> None:
    """LogMetadata: the servable that ran, the sampling config, the tags and the time."""
    metadata = record.log_metadata
    assert metadata.model_spec.name == name
    assert metadata.model_spec.HasField("version") and metadata.model_spec.version.value == version
    assert metadata.model_spec.signature_name == signature_name
    assert metadata.sampling_config.sampling_rate == rate
    assert list(metadata.saved_model_tags) == ["serve"]
    assert int(started) <= metadata.timestamp_secs <= time.time()


def resolved_spec(signature_name: str, name: str = "hpt", version: int = 1):
    from tensorflow_serving.apis import model_pb2

    spec = model_pb2.ModelSpec(name=name, signature_name=signature_name)
    spec.version.value = version
    return spec


def both_tasks(name: str) -> list:
    """MultiInference's tasks: half_plus_two's classify and regress signatures."""
    return [(name, "classify_x_to_y", grpc_client.CLASSIFY_METHOD),
            (name, "regress_x_to_y", grpc_client.REGRESS_METHOD)]


def check_tensor(proto, expected: np.ndarray) -> None:
    """The tensor as logged: same dtype, shape and values (in whichever TensorProto
    field form the server chose: tensor_content or the typed value fields)."""
    value = ndarray(proto)
    assert value.dtype == expected.dtype and value.shape == expected.shape
    np.testing.assert_array_equal(value, expected)


# ---- 1. every kind of request, either protocol ----------------------------------------

def test_rest_predict_is_logged_with_its_inputs_outputs_and_version(served):
    started = time.time()
    answer, records = served.logged("hpt", lambda: served.rest_predict("hpt", [1.0, 2.0], "/versions/1"))
    assert answer == [[2.5], [3.0]]
    assert len(records) == 1
    record = records[0]
    assert record.WhichOneof("log_type") == "predict_log"
    check_metadata(record, "serving_default", started)
    request, response = record.predict_log.request, record.predict_log.response
    # The spec the client sent (a version, no signature name); the spec that answered.
    assert request.model_spec.name == "hpt"
    assert request.model_spec.version.value == 1 and request.model_spec.signature_name == ""
    assert list(request.inputs) == ["x"] and list(request.output_filter) == []
    check_tensor(request.inputs["x"], np.array([[1.0], [2.0]], np.float32))
    assert response.model_spec == resolved_spec("serving_default")
    assert list(response.outputs) == ["y"]
    check_tensor(response.outputs["y"], np.array([[2.5], [3.0]], np.float32))


def test_grpc_predict_keeps_the_label_and_output_filter_the_client_sent(served):
    started = time.time()
    sent = predict_request("hpt", {"x": tensor([[4.0], [6.0], [8.0]])}, version_label="stable", output_filter=["y"])
    answer, records = served.logged("hpt", lambda: served.prediction.Predict(sent, timeout=TIMEOUT))
    assert ndarray(answer.outputs["y"]).tolist() == [[4.0], [5.0], [6.0]]
    assert len(records) == 1
    record = records[0]
    assert record.WhichOneof("log_type") == "predict_log"
    check_metadata(record, "serving_default", started)
    request, response = record.predict_log.request, record.predict_log.response
    assert request.model_spec == sent.model_spec  # the label, not the version it named
    assert request.model_spec.version_label == "stable" and not request.model_spec.HasField("version")
    assert list(request.output_filter) == ["y"]
    check_tensor(request.inputs["x"], np.array([[4.0], [6.0], [8.0]], np.float32))
    assert response.model_spec == answer.model_spec == resolved_spec("serving_default")
    assert list(response.outputs) == ["y"]
    check_tensor(response.outputs["y"], ndarray(answer.outputs["y"]))


@pytest.mark.parametrize("kind", ["classify", "regress"])
def test_grpc_classify_and_regress_are_logged_as_sent_and_answered(served, kind):
    started = time.time()
    examples = [example(x=2.0), example(x=10.0)]
    if kind == "classify":
        sent = classify_request("hpt", "classify_x_to_y", examples, version=1)
        call = served.prediction.Classify
    else:
        sent = regress_request("hpt", "regress_x_to_y", examples)
        call = served.prediction.Regress
    answer, records = served.logged("hpt", lambda: call(sent, timeout=TIMEOUT))
    if kind == "classify":
        assert grpc_client.classifications(answer.result) == [[("", 3.0)], [("", 7.0)]]
    else:
        assert grpc_client.regressions(answer.result) == [3.0, 7.0]
    assert len(records) == 1
    record = records[0]
    assert record.WhichOneof("log_type") == f"{kind}_log"
    check_metadata(record, f"{kind}_x_to_y", started)
    entry = getattr(record, f"{kind}_log")
    assert entry.request == sent  # spec as sent (classify names version 1; regress none), examples
    assert entry.response == answer  # resolved spec and the result, as answered
    assert entry.response.model_spec == resolved_spec(f"{kind}_x_to_y")


@pytest.mark.parametrize("kind", ["classify", "regress"])
def test_rest_classify_and_regress_are_logged(served, kind):
    from tensorflow_serving.apis import classification_pb2, regression_pb2

    started = time.time()
    body = {"signature_name": f"{kind}_x_to_y", "examples": [{"x": 2.0}, {"x": [6.0]}]}
    (status, answer), records = served.logged("hpt", lambda: served.rest.post(f"/v1/models/hpt:{kind}", body))
    if kind == "classify":
        assert (status, answer) == (200, {"results": [[["", 3.0]], [["", 5.0]]]})
        expected_request = classify_request("hpt", "classify_x_to_y", [example(x=2.0), example(x=6.0)])
        expected_result = classification_pb2.ClassificationResult()
        for score in (3.0, 5.0):
            expected_result.classifications.add().classes.add(label="", score=score)
    else:
        assert (status, answer) == (200, {"results": [3.0, 5.0]})
        expected_request = regress_request("hpt", "regress_x_to_y", [example(x=2.0), example(x=6.0)])
        expected_result = regression_pb2.RegressionResult()
        for value in (3.0, 5.0):
            expected_result.regressions.add(value=value)
    assert len(records) == 1
    record = records[0]
    assert record.WhichOneof("log_type") == f"{kind}_log"
    check_metadata(record, f"{kind}_x_to_y", started)
    entry = getattr(record, f"{kind}_log")
    assert entry.request == expected_request
    assert entry.response.model_spec == resolved_spec(f"{kind}_x_to_y")
    assert entry.response.result == expected_result


def test_grpc_multi_inference_is_logged_as_sent_and_answered(served):
    started = time.time()
    sent = multi_inference_request(
        both_tasks("hpt"), [example(x=4.0)])
    answer, records = served.logged("hpt", lambda: served.prediction.MultiInference(sent, timeout=TIMEOUT))
    assert [r.WhichOneof("result") for r in answer.results] == ["classification_result", "regression_result"]
    assert answer.results[0].classification_result.classifications[0].classes[0].score == 4.0
    assert answer.results[1].regression_result.regressions[0].value == 4.0
    assert len(records) == 1
    record = records[0]
    assert record.WhichOneof("log_type") == "multi_inference_log"
    check_metadata(record, "classify_x_to_y", started)  # the first task's signature
    assert record.multi_inference_log.request == sent
    assert record.multi_inference_log.response == answer


def test_failed_requests_are_not_logged(served):
    def failures():
        status, body = served.rest.post("/v1/models/hpt:predict", {"instances": [["not a number"]]})
        assert status == 400, body
        status, body = served.rest.post("/v1/models/hpt:predict", {"instances": [[1.0, 2.0]]})  # shape [-1, 1]
        assert status == 400, body
        status, body = served.rest.post("/v1/models/hpt/versions/7:predict", {"instances": [[1.0]]})
        assert status == 404, body
        codes = [
            rpc_error(served.prediction.Predict, predict_request("hpt", {"nope": tensor([[1.0]])})).code(),
            # The example lacks the feature the graph parses: TensorFlow fails the run.
            rpc_error(served.prediction.Classify, classify_request("hpt", "classify_x_to_y", [example(z=1.0)])).code(),
            rpc_error(served.prediction.Regress, regress_request("hpt", "no_such_signature", [example(x=1.0)])).code(),
        ]
        assert codes == [grpc.StatusCode.INVALID_ARGUMENT] * 3

    _, records = served.logged("hpt", failures)
    assert records == []


def test_metrics_count_the_records_written(served):
    served.barrier()
    page = served.page()
    for name in ("hpt", "mark"):
        written = len(records_of(served.prefix(name)))
        assert written > 0
        assert metric(page, ":tensorflow:serving:request_log_count", model_name=name, status_code="OK") == written
    # rated samples nothing: it has no file, and no count.
    assert log_files(served.prefix("rated")) == []
    assert metric(page, ":tensorflow:serving:request_log_count", model_name="rated", status_code="OK") is None


# ---- 2. the sampling rate changes live -----------------------------------------------

def test_a_reloaded_sampling_rate_applies_to_the_next_requests(served):
    prefix = served.prefix("rated")
    for x in range(20):
        served.rest_predict("rated", [float(x)])
    served.barrier()
    assert log_files(prefix) == []  # rate 0.0: nothing

    response = served.reload(rated={"rate": 1.0})
    assert response.status.error_code == 0
    started = time.time()
    for x in (101.0, 102.0, 103.0):
        assert served.rest_predict("rated", [x]) == [[0.5 * x + 2]]
    served.barrier()
    records = records_of(prefix)
    assert [ndarray(r.predict_log.request.inputs["x"]).tolist() for r in records] == [[[101.0]], [[102.0]], [[103.0]]]
    for record in records:
        check_metadata(record, "serving_default", started, name="rated", rate=1.0)

    assert served.reload().status.error_code == 0  # back to 0.0
    for x in range(20):
        served.rest_predict("rated", [float(x)])
    served.barrier()
    assert len(records_of(prefix)) == 3
    assert served.server.log().count("Model config replaced by HandleReloadConfigRequest") >= 2


# ---- 3. a bad logging_config on reload is refused whole --------------------------------

def check_refused(served, code: grpc.StatusCode, message: str, **changes) -> None:
    error = rpc_error(served.reload, **changes)
    assert (error.code(), error.details()) == (code, message)
    assert f"ReloadConfig failed: {message}" in served.server.log()


def check_old_config_in_force(served) -> None:
    """Predict still answers, and hpt still logs every request to its first prefix."""
    started = time.time()
    answer, records = served.logged("hpt", lambda: served.rest_predict("hpt", [12.0]))
    assert answer == [[8.0]]
    assert len(records) == 1
    check_metadata(records[0], "serving_default", started, rate=1.0)
    check_tensor(records[0].predict_log.request.inputs["x"], np.array([[12.0]], np.float32))
    _, records = served.logged("rated", lambda: served.rest_predict("rated", [1.0]))
    assert records == []  # and rated still samples nothing


def test_a_bad_sampling_rate_or_collector_or_prefix_is_refused(served):
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    where = "logging_config of model hpt"
    for rate, shown in ((1.5, "1.5"), (-0.25, "-0.25"), (float("nan"), "nan")):
        check_refused(served, invalid, f"{where}: sampling_rate must be in [0, 1]; got {shown}", hpt={"rate": rate})
    check_refused(served, not_found, "Cannot find LogCollector::Factory for type: kafka", hpt={"collector": "kafka"})
    for prefix in ("logs/hpt", f"{served.logs}/"):
        check_refused(served, invalid, f"{where}: log_collector_config.filename_prefix must be an absolute local "
                      f"path ending in a file name part, such as /var/log/edgeserve/hpt; got {prefix}",
                      hpt={"prefix": prefix})
    check_old_config_in_force(served)


def test_a_prefix_in_a_missing_folder_or_under_a_file_is_refused(served):
    absent = served.tmp / "absent"
    check_refused(served, grpc.StatusCode.INVALID_ARGUMENT,
                  f"Cannot write the request logs of model hpt to {absent}/hpt: folder {absent} does not exist",
                  hpt={"prefix": absent / "hpt"})
    a_file = served.tmp / "a_file"
    a_file.write_text("not a folder")
    check_refused(served, grpc.StatusCode.INVALID_ARGUMENT,
                  f"Cannot write the request logs of model hpt to {a_file}/hpt: {a_file} is not a folder",
                  hpt={"prefix": a_file / "hpt"})
    check_old_config_in_force(served)


def test_a_prefix_in_a_missing_folder_is_refused_on_sighup_too(served):
    absent = served.tmp / "absent_too"
    text = served.config_text(rated={"prefix": absent / "rated", "rate": 1.0})
    try:
        served.config_path.write_text(text)
        served.server.proc.send_signal(signal.SIGHUP)
        message = (f"Model config reload refused; the config in force stays: Cannot write the request "
                   f"logs of model rated to {absent}/rated: folder {absent} does not exist")
        served.server.wait_for(lambda: message in served.server.log(), timeout=WAIT)
    finally:
        served.config_path.write_text(served.config_text())
    check_old_config_in_force(served)


def test_a_prefix_in_a_read_only_folder_is_refused(served, tmpfs):
    read_only = served.tmp / "read_only"
    read_only.mkdir()
    root = os.geteuid() == 0
    if root:  # root writes through mode bits: a read-only file system it is
        tmpfs(read_only, "ro,size=64k")
    else:
        read_only.chmod(0o555)
    try:
        check_refused(served, grpc.StatusCode.INVALID_ARGUMENT,
                      f"Cannot write the request logs of model hpt to {read_only}/hpt: folder {read_only} "
                      "is not writable (read-only file system or permissions)",
                      hpt={"prefix": read_only / "hpt"})
    finally:
        if not root:
            read_only.chmod(0o755)
    check_old_config_in_force(served)


# ---- 4. a missing folder at start-up pauses logging, not serving -------------------------

def test_a_missing_folder_at_start_up_pauses_logging_until_it_exists(served):
    prefix, folder = served.prefix("late"), served.late_dir
    assert (f"Request logging to {prefix} paused: folder {folder} does not exist. "
            f"Serving goes on; logging retries every {RETRY_SECONDS:g} s") in served.server.log()
    for x in (1.0, 2.0):
        assert served.rest_predict("late", [x]) == [[0.5 * x + 2]]
    served.barrier()
    page = served.page()
    assert metric(page, "edgeserve_request_log_paused", filename_prefix=str(prefix), reason="unwritable") == 1
    assert metric(page, "edgeserve_request_log_dropped_total", reason="paused") >= 2
    assert metric(page, ":tensorflow:serving:request_log_count",
                  model_name="late", status_code="RESOURCE_EXHAUSTED") >= 2
    assert not folder.exists()

    folder.mkdir()
    created = time.monotonic()
    sent = []

    def logged():
        x = float(100 + len(sent))
        assert served.rest_predict("late", [x]) == [[0.5 * x + 2]]
        sent.append(x)
        try:
            return records_of(prefix)
        except Exception:  # caught mid-append
            return None

    served.server.wait_for(logged, timeout=RETRY_SECONDS + 10, interval=0.25)
    assert time.monotonic() - created <= RETRY_SECONDS + 5
    served.barrier()
    records = records_of(prefix)
    xs = [ndarray(r.predict_log.request.inputs["x"]).item() for r in records]
    assert xs and set(xs) <= set(sent)  # requests of the pause were dropped, not kept
    assert xs == sent[len(sent) - len(xs):]  # from the first one after the resume, in order
    assert f"Request logging to {prefix} resumed" in served.server.log()
    page = served.page()
    assert metric(page, "edgeserve_request_log_paused", filename_prefix=str(prefix), reason="unwritable") is None
    assert metric(page, ":tensorflow:serving:request_log_count", model_name="late", status_code="OK") == len(xs)


# ---- 5. rotation ---------------------------------------------------------------------------

def test_files_rotate_at_max_file_bytes_and_read_back_whole(served):
    prefix = served.prefix("rot")

    def on_disk() -> int:
        return sum(path.stat().st_size for path in log_files(prefix))

    sent = []
    started = time.time()
    for i in range(30):
        x = (np.arange(32, dtype=np.float32) + 100 * i).reshape(32, 1)
        before = on_disk()
        response = served.prediction.Predict(predict_request("rot", {"x": tensor(x)}), timeout=TIMEOUT)
        np.testing.assert_array_equal(ndarray(response.outputs["y"]), 0.5 * x + 2)
        sent.append(x)
        # One request at a time, each written before the next: every write is one record.
        served.server.wait_for(lambda: on_disk() > before, timeout=WAIT, interval=0.005)
    ended = time.time()

    files = log_files(prefix)
    assert len(files) >= 3
    sizes = [path.stat().st_size for path in files]
    assert all(size <= MAX_FILE_BYTES for size in sizes), sizes
    for size, following in zip(sizes, files[1:]):
        # A file is closed only when the next record would take it past the limit.
        assert size + first_record_bytes(following) > MAX_FILE_BYTES, sizes
    for path in files:
        stamp = _NAME_TAIL.fullmatch(path.name[len(prefix.name):])[1]
        opened = calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))  # the name's time is UTC
        assert int(started) - 1 <= opened <= ended + 1, path.name

    records = read_records(files)
    assert len(records) == len(sent)
    for record, x in zip(records, sent):
        check_tensor(record.predict_log.request.inputs["x"], x)
        check_tensor(record.predict_log.response.outputs["y"], 0.5 * x + 2)

    # The disk every configured prefix's files take, as the metrics page says.
    served.barrier()
    on_all = sum(path.stat().st_size for name in served.models for path in log_files(served.prefix(name)))
    assert served.page()[("edgeserve_request_log_bytes", frozenset())] == on_all


# ---- 6. a log file is a warmup file ----------------------------------------------------------

def test_a_log_file_warms_up_a_new_version_of_the_model(served):
    prefix, base = served.prefix("warm"), served.warm_base
    assert served.rest_predict("warm", [1.0]) == [[2.5]]
    calls = [
        lambda: served.prediction.Classify(
            classify_request("warm", "classify_x_to_y", [example(x=2.0)]), timeout=TIMEOUT),
        lambda: served.prediction.Regress(
            regress_request("warm", "regress_x_to_y", [example(x=3.0)]), timeout=TIMEOUT),
        lambda: served.prediction.MultiInference(multi_inference_request(
            both_tasks("warm"), [example(x=4.0)]), timeout=TIMEOUT),
    ]
    for call in calls:
        call()
    served.barrier()
    files = log_files(prefix)
    assert len(files) == 1
    records = read_records(files)
    assert [r.WhichOneof("log_type") for r in records] == ["predict_log", "classify_log", "regress_log",
                                                          "multi_inference_log"]

    staging = served.tmp / "warm_staging"
    shutil.copytree(base / "1", staging)
    (staging / "assets.extra").mkdir()
    shutil.copyfile(files[0], staging / "assets.extra" / "tf_serving_warmup_requests")
    os.rename(staging, base / "2")  # whole, at once: the next poll finds it complete

    def swapped():
        status, body = served.rest.get("/v1/models/warm")
        states = {s["version"]: s["state"] for s in body["model_version_status"]} if status == 200 else {}
        return states if states.get("2") == "AVAILABLE" else None

    served.server.wait_for(swapped, timeout=60)
    warmup_file = base / "2" / "assets.extra" / "tf_serving_warmup_requests"
    assert (f"Finished reading warmup data for model at {warmup_file}. Number of warmup records read: 4."
            in served.server.log())
    page = served.page()
    assert metric(page, ":tensorflow:serving:model_warmup_records_read", model_path=str(base / "2"), status="OK") == 4

    # Version 2 answers and is logged as such; the warmup's replays were not logged.
    started = time.time()
    response = served.prediction.Predict(predict_request("warm", {"x": tensor([[2.0]])}), timeout=TIMEOUT)
    assert response.model_spec.version.value == 2
    served.barrier()
    records = records_of(prefix)
    assert len(records) == 5
    check_metadata(records[-1], "serving_default", started, name="warm", version=2)


# ---- 7. shutdown writes what was answered (stops the shared server: keep it last) -----------

def test_sigterm_writes_every_answered_request_before_the_exit(served):
    """SIGTERM while requests are in flight: those answered (in the grace period too)
    are all in the files once the process has exited, and no other request is."""
    count = 200
    futures = [
        served.prediction.Predict.future(predict_request("bye", {"x": tensor([[float(i)]])}), timeout=TIMEOUT)
        for i in range(count)
    ]
    futures[0].result()
    served.server.proc.send_signal(signal.SIGTERM)  # at once: no barrier, records may still be queued
    answered = []
    for i, future in enumerate(futures):
        try:
            response = future.result()
        except grpc.RpcError:  # refused while draining: never answered, never logged
            continue
        assert ndarray(response.outputs["y"]).item() == 0.5 * i + 2
        answered.append(float(i))
    assert served.server.proc.wait(30) == 0
    assert "Stopped after" in served.server.log()
    assert answered
    records = records_of(served.prefix("bye"))
    assert sorted(ndarray(r.predict_log.request.inputs["x"]).item() for r in records) == answered
    for record in records:
        x = ndarray(record.predict_log.request.inputs["x"]).item()
        assert ndarray(record.predict_log.response.outputs["y"]).item() == 0.5 * x + 2
