"""End to end: the real server serving real SavedModels over HTTP, as a user runs it."""
from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time

import pytest

from conftest import Client

PREDICT = "/v1/models/{}:predict"


def model_args(name, base_path, *extra):
    return [f"--model_name={name}", f"--model_base_path={base_path}", *extra]


def version_states(client, name):
    status, body = client.get(f"/v1/models/{name}")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def test_tf1_half_plus_two_predict_row_and_columnar(start_server, model_store):
    server = start_server(model_args("half_plus_two", model_store / "half_plus_two"))
    client = server.client()
    assert client.post(PREDICT.format("half_plus_two"), {"instances": [[1.0], [2.0], [5.0]]}) == (
        200, {"predictions": [[2.5], [3.0], [4.5]]})
    assert client.post(PREDICT.format("half_plus_two"), {"inputs": {"x": [[1.0], [2.0]]}}) == (
        200, {"outputs": [[2.5], [3.0]]})
    assert client.post("/v1/models/half_plus_two/versions/1:predict", {"inputs": [[4.0]]}) == (
        200, {"outputs": [[4.0]]})
    # Named row format and an explicit signature.
    assert client.post(PREDICT.format("half_plus_two"), {
        "signature_name": "serving_default", "instances": [{"x": [6.0]}]}) == (
        200, {"predictions": [[5.0]]})


def test_tf2_saved_model_predicts(start_server, model_store):
    server = start_server(model_args("tf2", model_store / "tf2_half_plus_two"))
    client = server.client()
    assert client.post(PREDICT.format("tf2"), {"instances": [[1.0], [3.0]]}) == (
        200, {"predictions": [[2.5], [3.5]]})


def test_every_dtype_round_trips_through_json(start_server, model_store):
    server = start_server(model_args("sink", model_store / "kitchen_sink"))
    client = server.client()
    status, body = client.post(PREDICT.format("sink"), {"instances": [
        {"f": [1.5, 2.0], "i": 4, "s": "ab", "b": True, "h": 3.0, "u8": 255},
        {"f": [-1.0, 0.25], "i": -7, "s": {"b64": "eHk="}, "b": False, "h": -1.0, "u8": 0},
    ]})
    assert status == 200, body
    assert body == {"predictions": [
        {"f_sum": 3.5, "i_double": 8, "s_upper": "AB", "s_bytes": {"b64": "YWI="},
         "b_not": False, "h_half": 1.5, "u8_inc": 0},
        {"f_sum": -0.75, "i_double": -14, "s_upper": "XY", "s_bytes": {"b64": "eHk="},
         "b_not": True, "h_half": -0.5, "u8_inc": 1},
    ]}
    status, body = client.post(PREDICT.format("sink"), {
        "signature_name": "norm", "inputs": {"v": [[3.0, 4.0, 0.0]]}})
    assert (status, body) == (200, {"outputs": [5.0]})
    status, body = client.post(PREDICT.format("sink"), {"instances": [
        {"f": [1.0, 2.0], "i": 1.5, "s": "a", "b": True, "h": 1.0, "u8": 1}]})
    assert status == 400
    assert "i" in body["error"] and "int" in body["error"].lower()


def test_stateful_counter_signatures(start_server, model_store):
    server = start_server(model_args("counter", model_store / "counter"))
    client = server.client()
    path = PREDICT.format("counter")

    def call(signature, inputs):
        return client.post(path, {"signature_name": signature, "inputs": inputs})

    assert call("incr_counter_by", {"delta": 3.0}) == (200, {"outputs": 3.0})
    assert call("incr_counter_by", {"delta": 2.0}) == (200, {"outputs": 5.0})
    # Signatures without inputs: edgeserve takes {"inputs": {}} (TF Serving's REST
    # API cannot call them at all: "Failed to get input map for signature").
    assert call("get_counter", {}) == (200, {"outputs": 5.0})
    assert call("incr_counter", {}) == (200, {"outputs": 6.0})
    assert call("reset_counter", {}) == (200, {"outputs": 0.0})
    assert call("get_counter", {}) == (200, {"outputs": 0.0})


def test_two_versions_serves_latest_and_status_reports_it(start_server, copy_model, model_store):
    base = copy_model("half_plus_two", "two")
    shutil.copytree(model_store / "half_plus_two_v2" / "2", base / "2")
    server = start_server(model_args("two", base))
    client = server.client()
    assert client.get("/v1/models/two") == (200, {"model_version_status": [{
        "version": "2", "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""}}]})
    assert client.post(PREDICT.format("two"), {"instances": [[2.0]]}) == (200, {"predictions": [[4.0]]})
    status, body = client.post("/v1/models/two/versions/1:predict", {"instances": [[2.0]]})
    assert (status, body) == (404, {"error": "Servable not found for request: Specific(two, 1)"})
    status, body = client.get("/v1/models/two/versions/1")
    assert (status, body) == (404, {"error": "Could not find version 1 of model two"})


def test_new_version_dir_is_served_after_one_poll_and_old_one_unloaded(
        start_server, copy_model, model_store, tmp_path):
    base = copy_model("half_plus_two", "live")
    server = start_server(model_args("live", base, "--file_system_poll_wait_seconds=1"))
    client = server.client()
    assert client.post(PREDICT.format("live"), {"instances": [[2.0]]})[1] == {"predictions": [[3.0]]}
    # Copy beside, then rename into place: what a careful deploy does.
    shutil.copytree(model_store / "half_plus_two_v2" / "2", tmp_path / "staging")
    (tmp_path / "staging").rename(base / "2")
    copied = time.monotonic()
    server.wait_for(lambda: client.post(PREDICT.format("live"), {"instances": [[2.0]]})[1]
                    == {"predictions": [[4.0]]}, timeout=20, interval=0.05)
    # One poll (1 s) plus a load; generous for a busy 2-core machine.
    assert time.monotonic() - copied < 10
    server.wait_for(lambda: version_states(client, "live") == {2: "AVAILABLE", 1: "END"})
    assert "Unloaded servable version {name: live version: 1}" in server.log()


def test_half_copied_version_is_reported_retried_and_old_version_keeps_serving(
        start_server, copy_model, model_store):
    base = copy_model("half_plus_two", "partial")
    server = start_server(model_args(
        "partial", base, "--file_system_poll_wait_seconds=1", "--max_num_load_retries=100",
        "--load_retry_interval_micros=60000000"))
    client = server.client()
    # A copy under way: saved_model.pb is there, the variables are not yet.
    (base / "2").mkdir()
    shutil.copy(model_store / "half_plus_two_v2" / "2" / "saved_model.pb", base / "2")

    def v2_failed():
        status, body = client.get("/v1/models/partial/versions/2")
        if status == 200 and body["model_version_status"][0]["status"]["error_code"] != "OK":
            return body["model_version_status"][0]
        return None

    failed = server.wait_for(v2_failed, timeout=30)
    assert failed["state"] in ("LOADING", "END")
    assert failed["status"]["error_message"]
    # A version that is not loaded is not found, as TF Serving says it.
    assert client.post("/v1/models/partial/versions/2:predict", {"instances": [[2.0]]}) == (
        404, {"error": "Servable not found for request: Specific(partial, 2)"})
    # The old version is untouched by the broken copy.
    assert client.post(PREDICT.format("partial"), {"instances": [[2.0]]}) == (
        200, {"predictions": [[3.0]]})
    assert version_states(client, "partial")[1] == "AVAILABLE"
    # The copy finishes: the next poll sees the files change and loads it at
    # once, without waiting out the 60 s retry interval.
    shutil.copytree(model_store / "half_plus_two_v2" / "2" / "variables", base / "2" / "variables")
    server.wait_for(lambda: client.post(PREDICT.format("partial"), {"instances": [[2.0]]})[1]
                    == {"predictions": [[4.0]]}, timeout=20)
    server.wait_for(lambda: version_states(client, "partial") == {2: "AVAILABLE", 1: "END"})


def test_missing_base_path_is_logged_and_picked_up_when_it_appears(
        start_server, model_store, tmp_path):
    base = tmp_path / "later"
    server = start_server(model_args("later", base, "--file_system_poll_wait_seconds=1"))
    client = server.client()
    assert client.post(PREDICT.format("later"), {"instances": [[1.0]]}) == (
        404, {"error": "Servable not found for request: Latest(later)"})
    assert f"Could not find base path {base} for servable later" in server.log()
    shutil.copytree(model_store / "half_plus_two", base)
    server.wait_for(lambda: client.post(PREDICT.format("later"), {"instances": [[1.0]]})[0] == 200)


def test_metadata_lists_every_signature(start_server, model_store):
    server = start_server(model_args("half_plus_two", model_store / "half_plus_two"))
    status, body = server.client().get("/v1/models/half_plus_two/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
    assert sigs["serving_default"] == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
            "name": "x:0"}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": {
            "dim": [{"size": "-1", "name": ""}, {"size": "1", "name": ""}], "unknown_rank": False},
            "name": "y:0"}},
        "method_name": "tensorflow/serving/predict",
        "defaults": {},
    }


def test_sigterm_with_requests_in_flight_loses_none(start_server, model_store):
    server = start_server(model_args("half_plus_two", model_store / "half_plus_two",
                                     "--shutdown_grace_period_seconds=10"))
    results: list = []
    stop = threading.Event()
    started = threading.Barrier(5)

    def hammer():
        client = Client(server.rest_port)
        started.wait()
        try:
            while not stop.is_set():
                try:
                    results.append(client.post(PREDICT.format("half_plus_two"), {"instances": [[1.0]]}))
                except (ConnectionError, OSError):
                    # Refused or closed between requests is fine: nothing was sent
                    # and lost. A request that was sent must get its answer.
                    break
        finally:
            client.close()

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    started.wait()
    time.sleep(1.0)
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(30)
    stop.set()
    for t in threads:
        t.join(10)
    assert code == 0, server.log()
    assert len(results) > 20
    assert all(r == (200, {"predictions": [[2.5]]}) for r in results), set(map(str, results))
    log = server.log()
    assert "Received SIGTERM" in log
    assert "Unloaded servable version {name: half_plus_two version: 1}" in log
    assert "Traceback" not in log


def test_console_script_is_installed():
    script = shutil.which("edgeserve")
    if script is None:
        pytest.skip("edgeserve is not installed (pip install .)")
    result = subprocess.run([script, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("TensorFlow ModelServer: edgeserve-")


def test_flags_errors_exit_2_with_one_line(tmp_path):
    result = subprocess.run(
        ["python", "-m", "edgeserve", "--no_such_flag=1"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "--no_such_flag" in result.stderr
    result = subprocess.run(
        ["python", "-m", "edgeserve", "--rest_api_port=8501"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2
    assert "model_base_path" in result.stderr
    result = subprocess.run(["python", "-m", "edgeserve", "--version"], capture_output=True,
                            text=True, timeout=30)
    assert result.returncode == 0
    assert result.stdout.startswith("TensorFlow ModelServer: edgeserve-")


def test_large_request_is_decoded_off_the_loop_and_answered(start_server, model_store):
    server = start_server(model_args("half_plus_two", model_store / "half_plus_two"))
    client = server.client()
    rows = [[float(i)] for i in range(20000)]  # ~200 KB of JSON: decoded on a worker
    status, body = client.post(PREDICT.format("half_plus_two"), {"instances": rows})
    assert status == 200
    assert body["predictions"][:3] == [[2.0], [2.5], [3.0]]
    assert body["predictions"][-1] == [0.5 * 19999 + 2]
    assert len(body["predictions"]) == 20000
    # A large malformed body is refused quickly, with a parse error.
    started = time.monotonic()
    status, body = client.post(PREDICT.format("half_plus_two"),
                               b'{"instances": [' + b"1.0," * 400000 + b"x]}")
    assert status == 400
    assert body["error"].startswith("JSON Parse error:")
    assert time.monotonic() - started < 5
    assert client.post(PREDICT.format("half_plus_two"), {"instances": [[1.0]]}) == (
        200, {"predictions": [[2.5]]})


def test_slow_run_ends_with_deadline_exceeded_and_the_loop_keeps_serving(start_server, model_store):
    server = start_server(model_args("spin", model_store / "spin", "--rest_api_timeout_in_ms=500"))
    client, other = server.client(), server.client()
    assert client.post(PREDICT.format("spin"), {"inputs": {"n": 10}}) == (200, {"outputs": 10})
    answers = []
    slow = threading.Thread(target=lambda: answers.append(
        client.post(PREDICT.format("spin"), {"inputs": {"n": 10**12}})))
    started = time.monotonic()
    slow.start()
    time.sleep(0.1)
    # While the slow run is under way, status requests are answered at once.
    assert other.get("/v1/models/spin")[0] == 200
    assert time.monotonic() - started < 0.45
    slow.join(20)
    status, body = answers[0]
    assert status == 504, body
    assert "deadline" in body["error"].lower() or "timed out" in body["error"].lower()
    assert time.monotonic() - started < 5
    assert client.post(PREDICT.format("spin"), {"inputs": {"n": 3}}) == (200, {"outputs": 3})
