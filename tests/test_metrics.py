"""Prometheus metrics: --monitoring_config_file, and the page after real requests.

One server for the module serves two half_plus_two models, "a" (with a warmup file)
and "b", with --enable_batching and the page at a custom path. The test sends a known
mix of REST and gRPC requests (successes and failures) and reads the counts back
from the page with prometheus-client's own parser; then a new version of "a" replaces
version 1 and the page shows the unload and both versions' states.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

import grpc_client
from conftest import REPO, TFSERVING_TESTDATA, ServerProcess
from reload_load import config_text, model_entry
from test_warmup import classify_log, predict_log, write_warmup

from edgeserve import metrics

PAGE = "/metrics"


# ---- the config file ------------------------------------------------------------

def test_tf_servings_own_monitoring_config_parses():
    path = TFSERVING_TESTDATA / "monitoring_config.txt"
    if not path.exists():
        pytest.skip(f"TF Serving test data not present: {path}")
    assert metrics.read_config(str(path)) == "/monitoring/prometheus/metrics"


@pytest.mark.parametrize("text, expected", [
    ('prometheus_config { enable: true path: "/m" }', "/m"),
    ("prometheus_config { enable: true }", metrics.DEFAULT_PATH),  # TF Serving's default path
    ('prometheus_config { enable: false path: "/m" }', None),
    ("", None),
])
def test_config_gives_the_page_path_or_none(tmp_path, text, expected):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    assert metrics.read_config(str(path)) == expected


@pytest.mark.parametrize("text, message", [
    ("prometheus_config { enable: yes }", ":1:"),
    ("prometheus_config {\n  enabled: true\n}", ':2:3: not a MonitoringConfig text proto: '
     'Message type "tensorflow.serving.PrometheusConfig" has no field named "enabled".'),
    ('prometheus_config { enable: true path: "metrics" }', "prometheus_config.path must start with '/'"),
])
def test_a_bad_config_is_refused_with_where_and_why(tmp_path, text, message):
    path = tmp_path / "monitoring.config"
    path.write_text(text)
    with pytest.raises(ValueError) as info:
        metrics.read_config(str(path))
    assert str(info.value).startswith(f"--monitoring_config_file {path}")
    assert message in str(info.value)


def test_a_missing_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cannot read: No such file or directory"):
        metrics.read_config(str(tmp_path / "absent.config"))


def test_server_with_a_bad_config_does_not_start(tmp_path, model_store):
    config = tmp_path / "monitoring.config"
    config.write_text("prometheus_config { enable: maybe }")
    server = ServerProcess(tmp_path, [
        "--model_name=a", f"--model_base_path={model_store / 'half_plus_two'}",
        f"--monitoring_config_file={config}",
    ])
    try:
        assert server.proc.wait(60) == 1
        assert f"Failed to start server. Error: --monitoring_config_file {config}:1:" in server.log()
    finally:
        server.cleanup()


# ---- the page, from a running server ------------------------------------------------

def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """(sample name, labels) -> value, parsed by prometheus-client's parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(page: dict, name: str, **labels) -> float:
    return page.get((name, frozenset(labels.items())), 0.0)


def total(page: dict, name: str, **labels) -> float:
    """Sum over every sample of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in page.items() if n == name and wanted <= ls)


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_store):
    tmp = tmp_path_factory.mktemp("metrics")
    a = tmp / "a"
    shutil.copytree(model_store / "half_plus_two", a)
    write_warmup(a / "1", [predict_log(x=np.array([[1.0]], np.float32)), classify_log()])
    shutil.copytree(model_store / "half_plus_two", tmp / "b")
    (tmp / "models.config").write_text(config_text(model_entry("a", a), model_entry("b", tmp / "b")))
    (tmp / "monitoring.config").write_text(f'prometheus_config {{ enable: true, path: "{PAGE}" }}\n')
    proc = ServerProcess(tmp, [
        f"--model_config_file={tmp / 'models.config'}",
        f"--monitoring_config_file={tmp / 'monitoring.config'}",
        "--file_system_poll_wait_seconds=1",
        "--enable_batching",
    ]).wait_ready()
    proc.base = a
    yield proc
    proc.cleanup()


def read_page(server) -> dict:
    status, body = server.client().get(PAGE)
    assert status == 200, body
    return samples(body.decode())


def test_page_counts_requests_by_model_and_status(server, model_store):
    client = server.client()
    for x in (1.0, 2.0, 3.0):
        status, body = client.post("/v1/models/a:predict", {"instances": [[x]]})
        assert (status, body) == (200, {"predictions": [[0.5 * x + 2]]})
    status, body = client.post("/v1/models/a:predict", {"instances": [["not a number"]]})
    assert status == 400, body
    status, body = client.post("/v1/models/a:classify", {
        "signature_name": "classify_x_to_y", "examples": [{"x": [1.0]}, {"x": [2.0]}, {"x": [3.0]}]})
    assert status == 200, body
    assert client.get("/v1/models/a")[0] == 200

    with grpc_client.channel(server.grpc_port) as chan:
        prediction, _ = grpc_client.stubs(chan)
        for _ in range(2):
            request = grpc_client.predict_request("b", {"x": grpc_client.tensor([[4.0]])})
            assert grpc_client.ndarray(prediction.Predict(request, timeout=10).outputs["y"]).tolist() == [[4.0]]
        error = grpc_client.rpc_error(
            prediction.Predict, grpc_client.predict_request("nope", {"x": grpc_client.tensor([[1.0]])}), timeout=10)
        assert error.code().name == "NOT_FOUND"

    page = read_page(server)
    count = ":tensorflow:serving:request_count"
    # TF Serving counts every REST request by its model, the GET of a's status too.
    assert value(page, count, model_name="a", status="OK") == 5
    assert value(page, count, model_name="a", status="INVALID_ARGUMENT") == 1
    assert value(page, count, model_name="b", status="OK") == 2
    assert value(page, count, model_name="nope", status="NOT_FOUND") == 1

    latency = ":tensorflow:serving:request_latency_count"
    assert value(page, latency, model_name="a", API="predict", entrypoint="REST") == 3
    assert value(page, latency, model_name="a", API="classify", entrypoint="REST") == 1
    assert value(page, latency, model_name="b", API="Predict", entrypoint="GRPC") == 2
    assert total(page, latency, model_name="nope") == 0  # failures are counted, not timed
    runtime = ":tensorflow:serving:runtime_latency_count"
    assert value(page, runtime, model_name="a", API="Predict", runtime="TF1") == 3
    assert value(page, runtime, model_name="a", API="Classify", runtime="TF1") == 1
    assert value(page, runtime, model_name="b", API="Predict", runtime="TF1") == 2
    assert value(page, ":tensorflow:serving:request_example_count_total", model="a") == 3

    # Each predict that ran went through its batch queue, alone (one client at a time);
    # the classify signature's input has no batch dimension, so it is not batched.
    assert total(page, ":tensorflow:serving:batching:batch_size_count", model_name="a") == 3
    assert value(page, ":tensorflow:serving:batching:processed_batch_size_v2",
                 model_name="a", op_name="serving_default", batch_size="1") == 3
    assert value(page, ":tensorflow:serving:batching:processed_batch_size_v2",
                 model_name="b", op_name="serving_default", batch_size="1") == 2
    assert value(page, ":tensorflow:serving:batching_session:queuing_latency_count",
                 thread_pool_name="batch_threads") == 5


def test_page_shows_loads_warmup_memory_and_the_process(server):
    page = read_page(server)
    path_a, path_b = str(server.base / "1"), str(server.base.parent / "b" / "1")
    loads = ":tensorflow:cc:saved_model:load_attempt_count"
    assert value(page, loads, model_path=path_a, status="success") == 1
    assert value(page, loads, model_path=path_b, status="success") == 1
    assert value(page, ":tensorflow:cc:saved_model:load_latency", model_path=path_a) > 0
    assert value(page, "edgeserve_model_load_seconds_count", model_name="a", status="OK") == 1
    # Only a has a warmup file: its two records, once each.
    assert value(page, ":tensorflow:serving:model_warmup_latency_count", model_path=path_a, status="OK") == 1
    assert value(page, ":tensorflow:serving:model_warmup_records_read", model_path=path_a, status="OK") == 2
    assert total(page, ":tensorflow:serving:model_warmup_latency_count", model_path=path_b) == 0

    for model in ("a", "b"):
        assert value(page, "edgeserve_model_version_state", model_name=model, version="1", state="AVAILABLE") == 1
        assert value(page, "edgeserve_model_version_memory_bytes", model_name=model, version="1") > 0
    assert value(page, "edgeserve_model_memory_bytes") == total(page, "edgeserve_model_version_memory_bytes")
    assert value(page, "edgeserve_model_memory_limit_bytes") == 0
    assert value(page, "process_resident_memory_bytes") > 100 * 2**20  # TensorFlow alone is more
    assert value(page, "edgeserve_event_loop_lag_seconds_count") > 0
    assert value(page, "edgeserve_batch_queue_depth", model_name="a", version="1", signature="serving_default") == 0


def test_page_follows_a_version_swap(server, model_store):
    shutil.copytree(model_store / "half_plus_two_v2" / "2", server.base / "2")

    def swapped():
        page = read_page(server)
        if value(page, "edgeserve_model_unload_seconds_count", model_name="a") == 1:
            return page
        return None

    page = server.wait_for(swapped, timeout=60)
    assert value(page, "edgeserve_model_version_state", model_name="a", version="2", state="AVAILABLE") == 1
    assert value(page, "edgeserve_model_version_state", model_name="a", version="1", state="END") == 1
    assert value(page, "edgeserve_model_version_memory_bytes", model_name="a", version="1") == 0
    assert value(page, ":tensorflow:cc:saved_model:load_attempt_count",
                 model_path=str(server.base / "2"), status="success") == 1


def test_page_answers_get_and_head_only(server):
    client = server.client()
    status, body = client.request("HEAD", PAGE)
    assert status == 200 and body is None
    status, body = client.post(PAGE, b"")
    assert status == 405
    assert body == {"error": f"Malformed request: POST {PAGE} (this path answers GET)"}
    conn = client.conn
    conn.request("GET", PAGE)
    response = conn.getresponse()
    response.read()
    assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"


def test_page_is_not_served_without_the_config(start_server, model_store):
    # The status page (on by default) reads the metrics page, so it serves it too.
    server = start_server(["--model_name=a", f"--model_base_path={model_store / 'half_plus_two'}",
                           "--enable_status_page=false"])
    status, body = server.client().get(metrics.DEFAULT_PATH)
    assert status == 404
    assert body == {"error": f"Malformed request: GET {metrics.DEFAULT_PATH}"}
    assert server.client().get("/") == (404, {"error": "Malformed request: GET /"})
