"""Request logging in-process: logging_config checks, sampling, the files' format,
rotation, the total cap and a full disk (edgeserve/request_log.py).

The writer thread runs for real and writes real files; they are read back with
TensorFlow's own TFRecord reader and TF Serving's PredictionLog class. The server
end to end (REST and gRPC, reloads, start-up with a missing folder): test_request_log_e2e.py.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from edgeserve import request_log
from edgeserve.api import ModelSpec
from edgeserve.config import ConfigError, parse_config_text
from edgeserve.dtypes import DataType
from edgeserve.errors import StatusCode
from edgeserve.servable import SignatureSpec, TensorSpec

tf = pytest.importorskip("tensorflow")
from tensorflow_serving.apis import prediction_log_pb2  # noqa: E402

SIGNATURE = SignatureSpec(
    method_name="tensorflow/serving/predict",
    inputs={"x": TensorSpec("x:0", DataType.DT_FLOAT, (-1,))},
    outputs={"y": TensorSpec("y:0", DataType.DT_FLOAT, (-1,))},
)


def config_text(prefix: str, rate: float | str = 1.0, collector: str = "tfrecord", extra: str = "") -> str:
    return f"""
    model_config_list {{ config {{
      name: "m" base_path: "/models/m" model_platform: "tensorflow"
      logging_config {{
        log_collector_config {{ type: "{collector}" filename_prefix: "{prefix}" }}
        sampling_config {{ sampling_rate: {rate} {extra} }}
      }}
    }} }}"""


def models(prefix: str, rate: float = 1.0):
    return parse_config_text(config_text(prefix, rate)).models


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"not true within {timeout} s: {predicate}")


def read_records(prefix: str) -> list[prediction_log_pb2.PredictionLog]:
    """Every record of every file of `prefix`, through TF's reader (which checks CRCs)."""
    records = []
    for path in request_log.log_files(prefix):
        for raw in tf.data.TFRecordDataset(path):
            records.append(prediction_log_pb2.PredictionLog.FromString(raw.numpy()))
    return records


@pytest.fixture
def logger():
    made = []

    def make(prefix: str, rate: float = 1.0, **kwargs) -> request_log.RequestLog:
        kwargs.setdefault("max_file_bytes", 1 << 20)
        kwargs.setdefault("max_total_bytes", 0)
        log = request_log.RequestLog(**kwargs)
        log.update(models(prefix, rate))
        made.append(log)
        return log

    yield make
    for log in made:
        log.stop()


def predict(log: request_log.RequestLog, n: int = 1, values=(1.0, 2.0), spec=ModelSpec("m", None, "stable")):
    x = np.array(values, np.float32)
    for _ in range(n):
        log.log_predict(spec, 3, "serving_default", SIGNATURE, {"x": x}, ["y"], {"y": x * 0.5 + 2})


# ---- logging_config checks --------------------------------------------------------------


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "nan", "inf"])
def test_a_sampling_rate_outside_zero_to_one_is_refused(rate):
    with pytest.raises(ConfigError) as caught:
        parse_config_text(config_text("/var/log/m", rate))
    assert caught.value.code == StatusCode.INVALID_ARGUMENT
    assert caught.value.message.startswith("logging_config of model m: sampling_rate must be in [0, 1]; got ")


def test_a_per_task_rate_outside_zero_to_one_is_refused_too():
    with pytest.raises(ConfigError, match=r"sampling_rate must be in \[0, 1\]; got 2.0"):
        parse_config_text(config_text("/var/log/m", 0.5, extra="per_task_sampling_configs { sampling_rate: 2 }"))


def test_an_unknown_collector_type_is_not_found_as_in_tf_serving():
    with pytest.raises(ConfigError) as caught:
        parse_config_text(config_text("/var/log/m", collector="bigtable"))
    assert caught.value.code == StatusCode.NOT_FOUND
    assert caught.value.message == "Cannot find LogCollector::Factory for type: bigtable"


@pytest.mark.parametrize("prefix", ["", "logs/m", "gs://bucket/m", "/var/log/"])
def test_a_prefix_must_be_an_absolute_file_name(prefix):
    with pytest.raises(ConfigError) as caught:
        parse_config_text(config_text(prefix))
    assert caught.value.code == StatusCode.INVALID_ARGUMENT
    assert "logging_config of model m: log_collector_config.filename_prefix" in caught.value.message


def test_the_collector_type_may_be_left_empty_and_per_task_rules_pick_the_rate():
    parsed = parse_config_text(config_text(
        "/var/log/m", 0.25, collector="",
        extra='per_task_sampling_configs { dc: "aa" sampling_rate: 1 } '
              'per_task_sampling_configs { task_index: 0 sampling_rate: 0.75 }'))
    logging = parsed.models[0].logging
    assert logging.filename_prefix == "/var/log/m"
    assert logging.sampling_rate == 0.75  # the first rule matching this task (dc "", task 0)


def test_folder_problems_are_named(tmp_path):
    assert request_log.folder_problem(str(tmp_path / "m")) is None
    assert request_log.folder_problem(str(tmp_path / "nope" / "m")) == f"folder {tmp_path / 'nope'} does not exist"
    (tmp_path / "file").write_text("")
    assert request_log.folder_problem(str(tmp_path / "file" / "m")) == f"{tmp_path / 'file'} is not a folder"


# ---- records --------------------------------------------------------------------------


def test_a_logged_predict_reads_back_as_a_prediction_log(tmp_path, logger):
    prefix = str(tmp_path / "m")
    log = logger(prefix)
    before = int(time.time())
    predict(log, values=(1.0, 2.0, 5.0))
    records = wait_until(lambda: read_records(prefix))
    assert len(records) == 1
    record = records[0]
    metadata = record.log_metadata
    assert (metadata.model_spec.name, metadata.model_spec.version.value, metadata.model_spec.signature_name) == (
        "m", 3, "serving_default")
    assert metadata.sampling_config.sampling_rate == 1.0
    assert list(metadata.saved_model_tags) == ["serve"]
    assert before <= metadata.timestamp_secs <= time.time() + 1
    request, response = record.predict_log.request, record.predict_log.response
    assert request.model_spec.version_label == "stable"  # as the client asked
    assert not request.model_spec.HasField("version")
    assert list(request.output_filter) == ["y"]
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs["x"]), np.array([1, 2, 5], np.float32))
    assert response.model_spec.version.value == 3
    np.testing.assert_array_equal(tf.make_ndarray(response.outputs["y"]), np.array([2.5, 3, 4.5], np.float32))
    name = os.path.basename(request_log.log_files(prefix)[0])
    assert name.startswith("m.") and name.endswith(".0.tfrecord"), name


def test_strings_and_empty_tensors_survive_the_round_trip(tmp_path, logger):
    prefix = str(tmp_path / "m")
    log = logger(prefix)
    signature = SignatureSpec(
        "tensorflow/serving/predict",
        {"s": TensorSpec("s:0", DataType.DT_STRING, None), "e": TensorSpec("e:0", DataType.DT_INT64, None)},
        {"n": TensorSpec("n:0", DataType.DT_INT32, None)},
    )
    strings = np.array([b"a\x00b", "é".encode(), b""], dtype=object)
    log.log_predict(ModelSpec("m"), 1, "serving_default", signature,
                    {"s": strings, "e": np.zeros((0, 3), np.int64)}, None, {"n": np.int32(7)})
    record = wait_until(lambda: read_records(prefix))[0]
    inputs = record.predict_log.request.inputs
    assert tf.make_ndarray(inputs["s"]).tolist() == [b"a\x00b", "é".encode(), b""]
    assert tf.make_ndarray(inputs["e"]).shape == (0, 3)
    assert tf.make_ndarray(record.predict_log.response.outputs["n"]) == 7


@pytest.mark.parametrize("rate", [0.0, 0.3, 1.0])
def test_the_sampling_rate_is_honoured(tmp_path, logger, rate):
    prefix = str(tmp_path / "m")
    log = logger(prefix, rate)
    n = 10_000
    predict(log, n)
    expected = n * rate
    sigma = math.sqrt(n * rate * (1 - rate))
    if rate in (0.0, 1.0):
        time.sleep(0.3) if rate == 0.0 else wait_until(lambda: len(read_records(prefix)) == n)
        assert len(read_records(prefix)) == expected
        return
    wait_until(lambda: log.figures().counts.get(("m", "OK"), 0) > expected - 6 * sigma)
    time.sleep(0.2)
    count = len(read_records(prefix))
    assert abs(count - expected) < 6 * sigma, (count, expected, sigma)  # fails once in ~5e8 runs
    assert log.figures().counts == {("m", "OK"): count}


def test_a_new_rate_applies_to_the_next_request(tmp_path, logger):
    prefix = str(tmp_path / "m")
    log = logger(prefix, 0.0)
    predict(log, 100)
    log.update(models(prefix, 1.0))
    predict(log, 5)
    wait_until(lambda: len(read_records(prefix)) == 5)
    log.update(models(prefix, 0.0))
    predict(log, 100)
    time.sleep(0.3)
    assert len(read_records(prefix)) == 5
    log.update(())  # the model's logging_config removed
    predict(log, 100)
    time.sleep(0.3)
    assert len(read_records(prefix)) == 5


# ---- rotation, the cap, a full disk ---------------------------------------------------


def record_size(tmp_path, logger) -> int:
    prefix = str(tmp_path / "probe")
    log = logger(prefix)
    predict(log)
    wait_until(lambda: request_log.log_files(prefix) and os.path.getsize(request_log.log_files(prefix)[0]))
    size = os.path.getsize(request_log.log_files(prefix)[0])
    log.stop()
    shutil.rmtree(tmp_path)
    tmp_path.mkdir()
    return size


def one_at_a_time(log, prefix: str, n: int) -> None:
    """Logs n requests, each written before the next (one record per batch)."""
    for i in range(n):
        predict(log)
        wait_until(lambda: sum(log.figures().counts.values()) == i + 1)  # by status: OK or not


def test_files_rotate_at_the_size_and_every_record_reads_back(tmp_path, logger):
    size = record_size(tmp_path, logger)
    prefix = str(tmp_path / "m")
    log = logger(prefix, max_file_bytes=size * 4)
    one_at_a_time(log, prefix, 10)
    files = request_log.log_files(prefix)
    assert [os.path.getsize(f) for f in files] == [size * 4, size * 4, size * 2]
    stamps = [os.path.basename(f).split(".")[1] for f in files]
    if len(set(stamps)) == 1:  # started within one second: numbered
        assert [f.rsplit(".", 2)[-2] for f in files] == ["0", "1", "2"]
    assert len(read_records(prefix)) == 10


def test_at_the_cap_logging_pauses_and_resumes_once_files_are_moved_away(tmp_path, logger, caplog):
    size = record_size(tmp_path, logger)
    prefix = str(tmp_path / "m")
    old = tmp_path / "m.20200101T000000Z.0.tfrecord"  # a file of an earlier run counts too
    old.write_bytes(b"x" * size)
    log = logger(prefix, max_file_bytes=1 << 20, max_total_bytes=size * 5, retry_seconds=0.3)
    with caplog.at_level("INFO", logger="edgeserve.request_log"):
        one_at_a_time(log, prefix, 6)
        figures = log.figures()
        assert figures.counts == {("m", "OK"): 4, ("m", "RESOURCE_EXHAUSTED"): 2}
        assert figures.dropped == {"paused": 2}
        assert figures.paused == {prefix: "cap"}
        assert figures.total_bytes == size * 5
        assert sum(os.path.getsize(f) for f in request_log.log_files(prefix)) == size * 5
        paused = [r.getMessage() for r in caplog.records if "paused" in r.getMessage()]
        assert len(paused) == 1, paused  # said once, not per dropped request
        assert f"would pass --request_log_max_total_bytes={size * 5}" in paused[0]
        old.unlink()
        # Seen while idle: the metric and the log say so before another request comes.
        wait_until(lambda: log.figures().paused == {})
        assert any("Request logging resumed" in r.getMessage() for r in caplog.records)
        predict(log)
        wait_until(lambda: log.figures().counts.get(("m", "OK")) == 5)
    assert len(read_records(prefix)) == 5


def test_a_missing_folder_pauses_logging_until_it_appears(tmp_path, logger, caplog):
    prefix = str(tmp_path / "later" / "m")
    with caplog.at_level("ERROR", logger="edgeserve.request_log"):
        log = logger(prefix, retry_seconds=0.3)
        wait_until(lambda: log.figures().paused == {prefix: "unwritable"})
    assert f"Request logging to {prefix} paused: folder {tmp_path / 'later'} does not exist" in caplog.text
    predict(log)
    wait_until(lambda: log.figures().dropped == {"paused": 1})
    (tmp_path / "later").mkdir()
    wait_until(lambda: log.figures().paused == {})  # seen while idle, before a request
    predict(log)
    wait_until(lambda: len(read_records(prefix)) == 1)


def test_the_writer_queue_is_bounded(tmp_path, logger):
    prefix = str(tmp_path / "m")
    log = logger(prefix, queue_bytes=1000)
    big = np.zeros(300, np.float32)  # 1.2 KB each way: over the bound alone
    log.log_predict(ModelSpec("m"), 1, "serving_default", SIGNATURE, {"x": big}, None, {"y": big})
    assert log.figures().dropped == {"queue_full": 1}
    predict(log)
    wait_until(lambda: len(read_records(prefix)) == 1)


def test_a_full_disk_pauses_logging_and_leaves_whole_records(tmpfs, tmp_path, logger, caplog):
    prefix = str(tmpfs(tmp_path / "disk", "size=64k") / "m")
    log = logger(prefix, retry_seconds=0.3)
    big = np.arange(1500, dtype=np.float32)  # ~12 KB a record: the 64 KB disk fills on the 6th
    spec = ModelSpec("m")
    with caplog.at_level("ERROR", logger="edgeserve.request_log"):
        for i in range(8):
            log.log_predict(spec, 1, "serving_default", SIGNATURE, {"x": big}, None, {"y": big})
            wait_until(lambda: sum(log.figures().counts.values()) == i + 1)
    figures = log.figures()
    written = figures.counts[("m", "OK")]
    assert 3 <= written < 8 and figures.counts[("m", "RESOURCE_EXHAUSTED")] == 8 - written
    assert figures.paused == {prefix: "disk_full"}
    assert f"Request logging to {prefix} paused: the disk is full" in caplog.text
    records = read_records(prefix)  # TF's reader: no torn record at the end
    assert len(records) == written
    np.testing.assert_array_equal(tf.make_ndarray(records[-1].predict_log.request.inputs["x"]), big)
    for path in request_log.log_files(prefix):
        os.unlink(path)
    time.sleep(0.4)
    log.log_predict(spec, 1, "serving_default", SIGNATURE, {"x": big}, None, {"y": big})
    wait_until(lambda: len(read_records(prefix)) == 1)
    assert log.figures().paused == {}


def test_stop_writes_what_is_queued(tmp_path):
    prefix = str(tmp_path / "m")
    log = request_log.RequestLog(max_file_bytes=1 << 20, max_total_bytes=0)
    log.update(models(prefix))
    predict(log, 200)
    log.stop()
    assert len(read_records(prefix)) == 200
    assert all(Path(f).stat().st_size > 0 for f in request_log.log_files(prefix))
