"""Model warmup: assets.extra/tf_serving_warmup_requests replayed before a version serves.

Warmup files are written the way TF Serving's users write them (tf.io.TFRecordWriter
and tensorflow_serving.apis.prediction_log_pb2). The `counter` model counts replays:
each incr_counter record bumps its variable, which get_counter reads afterwards.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from edgeserve import warmup
from edgeserve.errors import ServingError, StatusCode
from edgeserve.runtimes import savedmodel
from edgeserve.runtimes.savedmodel import SavedModelLoader

PREDICT = "/v1/models/{}:predict"


# --- writing warmup files ------------------------------------------------------------

def predict_log(signature: str = "", **inputs) -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    request = log.predict_log.request
    request.model_spec.name = "ignored by warmup"
    request.model_spec.signature_name = signature
    for alias, value in inputs.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return log


def _examples(input_message, *xs: float) -> None:
    for x in xs:
        example = input_message.example_list.examples.add()
        example.features.feature["x"].float_list.value.append(x)


def classify_log(signature: str = "classify_x_to_y") -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.classify_log.request.model_spec.signature_name = signature
    _examples(log.classify_log.request.input, 1.0, 2.0)
    return log


def regress_log(signature: str = "regress_x_to_y") -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    log.regress_log.request.model_spec.signature_name = signature
    _examples(log.regress_log.request.input, 3.0)
    return log


def multi_inference_log() -> prediction_log_pb2.PredictionLog:
    log = prediction_log_pb2.PredictionLog()
    request = log.multi_inference_log.request
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "half_plus_two"
        task.model_spec.signature_name = signature
        task.method_name = method
    _examples(request.input, 4.0)
    return log


def incr() -> prediction_log_pb2.PredictionLog:
    return predict_log("incr_counter")


def write_warmup(version_dir: Path, records) -> Path:
    """Writes records (PredictionLogs or raw bytes) as the version's warmup file."""
    path = Path(warmup.warmup_file(str(version_dir)))
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return path


def load(version_dir: Path, **kwargs):
    return SavedModelLoader(str(version_dir), **kwargs).load()


def counter_value(servable) -> float:
    return float(servable.run("get_counter", {})["output"])


def load_error(version_dir: Path, **kwargs) -> ServingError:
    with pytest.raises(ServingError) as info:
        load(version_dir, **kwargs)
    return info.value


class CountingServable:
    """A loaded servable whose runs are counted by signature (the real session runs)."""

    def __init__(self, servable) -> None:
        self.servable = servable
        self.signatures = servable.signatures
        self.signature_defs = servable.signature_defs
        self.runs: dict[str, int] = {}

    def run(self, signature_name, inputs, output_filter=None, caller_thread=False, timeout_ms=0):
        self.runs[signature_name] = self.runs.get(signature_name, 0) + 1
        return self.servable.run(signature_name, inputs, output_filter, caller_thread, timeout_ms)


@pytest.fixture
def counter(copy_model) -> Path:
    """A private copy of the counter model's version folder."""
    return copy_model("counter") / "1"


@pytest.fixture
def half_plus_two(copy_model) -> Path:
    return copy_model("half_plus_two") / "1"


def counter_after_load(path, **kwargs) -> float:
    """Loads the counter model (warming it up), reads its counter, closes it."""
    servable = load(path, **kwargs)
    try:
        return counter_value(servable)
    finally:
        servable.close()


# --- in process: SavedModelLoader ------------------------------------------------------

def test_predict_records_are_replayed_before_load_returns(counter, caplog):
    path = write_warmup(counter, [incr(), incr(), incr()])
    with caplog.at_level(logging.INFO, logger="edgeserve.warmup"):
        assert counter_after_load(counter) == 3.0
    finished = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Finished")]
    assert len(finished) == 1
    assert finished[0].startswith(
        f"Finished reading warmup data for model at {path}. Number of warmup records read: 3. "
        "Elapsed time (microseconds): ")
    assert finished[0].endswith(".")


def test_each_record_is_replayed_num_request_iterations_times(counter):
    write_warmup(counter, [incr(), incr(), predict_log("incr_counter_by", delta=10.0)])
    assert counter_after_load(counter, warmup_iterations=3) == 3 * (1 + 1 + 10)


def test_zero_iterations_means_once(counter):
    write_warmup(counter, [incr(), incr()])
    assert counter_after_load(counter, warmup_iterations=0) == 2.0


def test_warmup_off_replays_nothing(counter):
    write_warmup(counter, [incr(), b"not even a PredictionLog"])
    assert counter_after_load(counter, warmup=False) == 0.0


def test_no_warmup_file_loads_as_before(counter, caplog):
    with caplog.at_level(logging.INFO, logger="edgeserve.warmup"):
        assert counter_after_load(counter) == 0.0
    assert f"No warmup data file found at {warmup.warmup_file(str(counter))}" in caplog.text


def test_empty_warmup_file_loads_with_no_records(counter, caplog):
    # TF Serving's WarmupDataFileEmpty: the record reader is at its end at once: OK.
    path = write_warmup(counter, [])
    assert path.stat().st_size == 0
    with caplog.at_level(logging.INFO, logger="edgeserve.warmup"):
        assert counter_after_load(counter) == 0.0
    assert "Number of warmup records read: 0." in caplog.text


def test_classify_regress_and_multi_inference_records_run_their_signatures(half_plus_two):
    write_warmup(half_plus_two, [classify_log(), regress_log(), multi_inference_log(), predict_log(x=[[1.0]])])
    servable = CountingServable(load(half_plus_two, warmup=False))
    try:
        assert warmup.run_warmup(servable, str(half_plus_two), 2) == 4
        assert servable.runs == {"classify_x_to_y": 4, "regress_x_to_y": 4, "serving_default": 2}
    finally:
        servable.servable.close()
    # And through the loader, as the server loads it.
    load(half_plus_two, warmup_iterations=2).close()


def test_a_record_with_no_log_type_is_read_and_skipped(counter):
    write_warmup(counter, [prediction_log_pb2.PredictionLog(), incr()])
    servable = CountingServable(load(counter, warmup=False))
    try:
        assert warmup.run_warmup(servable, str(counter)) == 2
        assert servable.runs == {"incr_counter": 1}
    finally:
        servable.servable.close()


def test_a_thousand_records_load_and_one_more_fails(counter):
    write_warmup(counter, [incr()] * warmup.MAX_NUM_RECORDS)
    assert counter_after_load(counter) == 1000.0
    path = write_warmup(counter, [incr()] * (warmup.MAX_NUM_RECORDS + 1))
    error = load_error(counter)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message == f"Number of warmup records exceeds the maximum (1000) at {path}"


def test_corrupt_tfrecord_fails_with_data_loss(counter, monkeypatch):
    closed = []
    close = savedmodel.SavedModelServable.close
    monkeypatch.setattr(savedmodel.SavedModelServable, "close", lambda self: (closed.append(self), close(self)))
    path = write_warmup(counter, [incr(), incr()])
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # inside the second record's data: its CRC no longer matches
    path.write_bytes(bytes(data))
    error = load_error(counter)
    assert error.code == StatusCode.DATA_LOSS
    assert error.message.startswith("corrupted record at ")
    assert error.message.endswith(". Please verify your warmup data is in TFRecord format.")
    assert len(closed) == 1  # the session of the version that failed is closed


def test_file_that_is_not_a_tfrecord_fails_with_data_loss(counter):
    path = Path(warmup.warmup_file(str(counter)))
    path.parent.mkdir()
    path.write_text('{"instances": [1.0, 2.0, 5.0]} is JSON, not a TFRecord file')
    error = load_error(counter)
    assert error.code == StatusCode.DATA_LOSS
    assert error.message == (
        "corrupted record at 0 (Is this even a TFRecord file?). "
        "Please verify your warmup data is in TFRecord format.")


def test_truncated_tfrecord_fails_with_data_loss(counter):
    path = write_warmup(counter, [incr()])
    path.write_bytes(path.read_bytes()[:-3])
    error = load_error(counter)
    assert error.code == StatusCode.DATA_LOSS
    assert "truncated record at 0" in error.message


def test_record_that_is_not_a_prediction_log_fails(counter):
    path = write_warmup(counter, [b"\xff\xff\xff\xff"])
    error = load_error(counter)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("Failed to parse warmup record: ")
    assert error.message.endswith(f" from {path}")


def test_record_naming_an_unknown_signature_fails_with_the_predict_error(counter):
    write_warmup(counter, [incr(), predict_log("nope")])
    error = load_error(counter)
    assert (error.code, error.message) == (
        StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')


@pytest.mark.parametrize("record, code, message", [
    (predict_log("incr_counter_by", delta="text"), StatusCode.INVALID_ARGUMENT,
     "Expects arg[0] to be float but string is provided"),
    (predict_log("incr_counter", extra=1.0), StatusCode.INVALID_ARGUMENT,
     "input size does not match signature: 1!=0 len({extra}) != len({}). "
     "Sent extra: {extra}. Missing but required: {}."),
    (classify_log("incr_counter"), StatusCode.INVALID_ARGUMENT, "Expected one input Tensor."),
    (classify_log("nope"), StatusCode.INVALID_ARGUMENT, "No signature was found with the name: nope"),
])
def test_record_that_fails_to_run_fails_the_load_with_the_request_error(counter, record, code, message):
    write_warmup(counter, [record])
    error = load_error(counter)
    assert (error.code, error.message) == (code, message)


def test_classify_record_on_a_predict_signature_fails(half_plus_two):
    write_warmup(half_plus_two, [classify_log("serving_default")])
    error = load_error(half_plus_two)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("No classification inputs found in SignatureDef: ")


@pytest.mark.parametrize("field, number", [("session_run_log", 5), ("predict_streamed_log", 7)])
def test_session_run_and_streamed_logs_are_unimplemented(counter, field, number):
    log = prediction_log_pb2.PredictionLog()
    getattr(log, field).SetInParent()
    write_warmup(counter, [log])
    error = load_error(counter)
    assert (error.code, error.message) == (
        StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {number}")


# --- the real server ----------------------------------------------------------------

def _states(client, name):
    status, body = client.get(f"/v1/models/{name}")
    assert status == 200, body
    return {int(v["version"]): (v["state"], v["status"]["error_message"]) for v in body["model_version_status"]}


def test_server_warms_up_before_serving_and_reports_warmup_failures(
        start_server, copy_model, model_store, tmp_path):
    counter = copy_model("counter")
    write_warmup(counter / "1", [incr(), incr()])
    hpt = copy_model("half_plus_two", "hpt")
    write_warmup(hpt / "1", [classify_log(), regress_log(), multi_inference_log(), predict_log(x=[[1.0]])])
    bad = copy_model("half_plus_two", "bad")
    write_warmup(bad / "1", [predict_log("nope")])
    config = tmp_path / "models.config"
    config.write_text("model_config_list {\n" + "".join(
        f'  config {{ name: "{name}" base_path: "{path}" model_platform: "tensorflow" }}\n'
        for name, path in (("counter", counter), ("hpt", hpt), ("bad", bad))) + "}\n")
    server = start_server([
        f"--model_config_file={config}", "--num_request_iterations_for_warmup=3",
        "--file_system_poll_wait_seconds=1", "--max_num_load_retries=0",
    ])
    client = server.client()
    get_counter = {"signature_name": "get_counter", "inputs": {}}
    # Ports open after the first loads: 2 records x 3 iterations already ran.
    assert client.post(PREDICT.format("counter"), get_counter) == (200, {"outputs": 6.0})
    assert client.post(PREDICT.format("hpt"), {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
    assert _states(client, "bad") == {1: ("END", 'Serving signature key "nope" not found.')}
    log = server.log()
    assert "Number of warmup records read: 2." in log
    assert f"Finished reading warmup data for model at {hpt / '1' / 'assets.extra'}" in log

    # A new version whose warmup file is damaged fails; version 1 keeps serving.
    staging = tmp_path / "staging"
    shutil.copytree(model_store / "counter" / "1", staging)
    path = write_warmup(staging, [incr()])
    path.write_bytes(path.read_bytes()[:-3])
    staging.rename(counter / "2")
    states = server.wait_for(lambda: (s := _states(client, "counter")).get(2, ("",))[0] == "END" and s)
    assert states[2][1].endswith(". Please verify your warmup data is in TFRecord format.")
    assert states[1] == ("AVAILABLE", "")
    assert client.post(PREDICT.format("counter"), get_counter) == (200, {"outputs": 6.0})

    # Fixed: version 3, warmed up (1 record x 3), replaces version 1.
    shutil.copytree(model_store / "counter" / "1", tmp_path / "staging3")
    write_warmup(tmp_path / "staging3", [incr()])
    (tmp_path / "staging3").rename(counter / "3")
    started = time.monotonic()
    server.wait_for(lambda: _states(client, "counter").get(3, ("",))[0] == "AVAILABLE", timeout=20)
    assert time.monotonic() - started < 20
    assert client.post(PREDICT.format("counter"), get_counter) == (200, {"outputs": 3.0})


def test_server_with_warmup_disabled_replays_nothing(start_server, copy_model):
    counter = copy_model("counter")
    write_warmup(counter / "1", [incr(), b"not a PredictionLog"])
    server = start_server([
        "--model_name=counter", f"--model_base_path={counter}", "--enable_model_warmup=false",
    ])
    client = server.client()
    assert client.post(PREDICT.format("counter"), {"signature_name": "get_counter", "inputs": {}}) == (
        200, {"outputs": 0.0})
