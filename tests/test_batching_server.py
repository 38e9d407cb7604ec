"""Batching end to end: the real server with --enable_batching, over REST and gRPC.

Three servers, started together and shared by the module:

- "batching": --enable_batching, a --batching_parameters_file (max_batch_size 64,
  allowed_batch_sizes 4, 16, 64; batch_timeout_micros 100000; 2 batch threads) and
  --enable_per_model_batching_parameters, serving by --model_config_file:
  reveal (test_batch_queue.export_reveal: each answer says the size of the batch it
  ran in and the batch's total), examples (classify/regress that tell the batch size
  too), counter (scalar signatures: no batch dimension), split (reveal with its own
  batching_params.pbtxt: splitting, max_execution_batch_size 8, no padding), slow
  (reveal with its own file: 1 row, 1 batch queued, 1 thread), bad (version 1 good,
  version 2 with a bad batching_params.pbtxt), and TF Serving's half_plus_two and
  matrix_half_plus_two when ../shared/testdata/tfserving is present (read in place).
- "plain": reveal without batching (the latency baseline).
- "fixed": reveal with --adaptive_batching=false and the same 100 ms timeout.
"""
from __future__ import annotations

import http.client
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import grpc_client
from conftest import REPO, TFSERVING_TESTDATA, ServerProcess
from reload_load import config_text, model_entry
from test_batch_queue import export_examples, export_reveal

SERVER_PARAMETERS = """
max_batch_size { value: 64 }
allowed_batch_sizes: 4
allowed_batch_sizes: 16
allowed_batch_sizes: 64
batch_timeout_micros { value: 100000 }
max_enqueued_batches { value: 1000 }
num_batch_threads { value: 2 }
"""
SPLIT_PARAMETERS = """
max_batch_size { value: 128 }
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 8 }
max_enqueued_batches { value: 1000 }
"""
SLOW_PARAMETERS = """
max_batch_size { value: 1 }
max_enqueued_batches { value: 1 }
num_batch_threads { value: 1 }
"""
BAD_PARAMETERS = "max_batch_size { value: 8 }\nallowed_batch_sizes: 4\n"
QUEUE_FULL = ("The batch scheduling queue to which this task was submitted is full; "
              "currently 1 batches enqueued and max_enqueued_batches is 1")
TESTDATA = {
    "half_plus_two": TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu",
    "matrix": TFSERVING_TESTDATA / "matrix_half_plus_two",
}


class Served:
    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.channel = grpc_client.channel(server.grpc_port)
        self.prediction, self.model = grpc_client.stubs(self.channel)
        self._local = threading.local()

    def rest(self, method: str, path: str, body=None):
        """One keep-alive connection per client thread."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection("127.0.0.1", self.server.rest_port, timeout=30)
        conn.request(method, path, body=json.dumps(body) if body is not None else None)
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    def predict_rest(self, name: str, inputs: dict, signature: str = ""):
        body = {"inputs": {k: v.tolist() for k, v in inputs.items()}}
        if signature:
            body["signature_name"] = signature
        status, answer = self.rest("POST", f"/v1/models/{name}:predict", body)
        if status != 200:
            return status, answer["error"]
        outputs = answer["outputs"]
        if not isinstance(outputs, dict):  # a signature's only output comes unnamed: y here
            outputs = {"y": outputs}
        return status, {k: np.asarray(v, np.float32) for k, v in outputs.items()}

    def predict_grpc(self, name: str, inputs: dict, signature: str = "", timeout: float = 20):
        request = grpc_client.predict_request(
            name, {k: grpc_client.tensor(v, v.dtype.type) for k, v in inputs.items()}, signature)
        try:
            response = self.prediction.Predict(request, timeout=timeout)
        except grpc.RpcError as error:
            return error.code(), error.details()
        return grpc.StatusCode.OK, {k: grpc_client.ndarray(v) for k, v in response.outputs.items()}

    def statuses(self, name: str) -> dict[int, tuple[str, str, str]]:
        status, body = self.rest("GET", f"/v1/models/{name}")
        assert status == 200, body
        return {int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
                for v in body["model_version_status"]}


@pytest.fixture(scope="module")
def servers(tmp_path_factory, request):
    import models as conftest_models

    root = tmp_path_factory.mktemp("batching_server")
    export_reveal(root / "reveal")
    export_examples(root / "examples")
    conftest_models.export_tf1_counter(str(root / "counter"))
    for name, parameters in (("split", SPLIT_PARAMETERS), ("slow", SLOW_PARAMETERS)):
        shutil.copytree(root / "reveal", root / name)
        (root / name / "1" / "batching_params.pbtxt").write_text(parameters)
    shutil.copytree(root / "reveal" / "1", root / "bad" / "1")
    shutil.copytree(root / "reveal" / "1", root / "bad" / "2")
    (root / "bad" / "2" / "batching_params.pbtxt").write_text(BAD_PARAMETERS)
    entries = [model_entry(name, root / name) for name in ("reveal", "examples", "counter", "split", "slow")]
    entries.append(model_entry("bad", root / "bad", versions=[1, 2]))
    present = [name for name, path in TESTDATA.items() if path.exists()]
    entries += [model_entry(name, TESTDATA[name]) for name in present]
    (root / "models.config").write_text(config_text(*entries))
    parameters = root / "batching.txt"
    parameters.write_text(SERVER_PARAMETERS)
    fixed = root / "fixed.txt"
    fixed.write_text("max_batch_size { value: 64 }\nbatch_timeout_micros { value: 100000 }\n")

    started = {
        "batching": ServerProcess(root, [
            f"--model_config_file={root / 'models.config'}", "--enable_batching",
            f"--batching_parameters_file={parameters}", "--enable_per_model_batching_parameters",
            "--max_num_load_retries=0"]),
        "plain": ServerProcess(root, ["--model_name=reveal", f"--model_base_path={root / 'reveal'}"]),
        "fixed": ServerProcess(root, [
            "--model_name=reveal", f"--model_base_path={root / 'reveal'}", "--enable_batching",
            f"--batching_parameters_file={fixed}", "--adaptive_batching=false"]),
    }
    served = {}
    try:
        for name, server in started.items():
            server.wait_ready()
            served[name] = Served(server)
        main = served["batching"]
        # Every model up before the tests start (bad: its version 1).
        main.server.wait_for(lambda: all(
            any(state == "AVAILABLE" for state, _, _ in main.statuses(name).values())
            for name in ("reveal", "examples", "counter", "split", "slow", "bad", *present)))
        served["present"] = present
        served["root"] = root
        yield served
    finally:
        for s in served.values():
            if isinstance(s, Served):
                s.channel.close()
        for server in started.values():
            server.cleanup()


def column(values) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(-1, 1)


def half_plus_two(x: np.ndarray) -> np.ndarray:
    return x * np.float32(0.5) + np.float32(2)


def ok(status) -> bool:
    return status in (200, grpc.StatusCode.OK)


# ---- correctness under concurrency ------------------------------------------------------------


def test_200_concurrent_requests_over_rest_and_grpc_each_get_their_own_answer(servers):
    """Mixed row counts against reveal, half_plus_two and matrix_half_plus_two (when
    present), half over REST and half over gRPC, from 24 client threads at once."""
    main = servers["batching"]
    models = ["reveal", "reveal", *servers["present"]]
    rng = np.random.default_rng(3)
    jobs = []
    for i in range(200):
        name = models[i % len(models)]
        rows = int(rng.integers(1, 10))
        shape = (rows, 3, 3) if name == "matrix" else (rows, 1)
        # Distinct positive values in every request: an answer can only be its own.
        x = (np.arange(np.prod(shape), dtype=np.float32).reshape(shape) + 1000 * i + 1)
        jobs.append((name, x, "rest" if i % 2 else "grpc"))

    def call(job):
        name, x, protocol = job
        if protocol == "rest":
            return main.predict_rest(name, {"x": x})
        return main.predict_grpc(name, {"x": x})

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, jobs))
    shared = 0
    for (name, x, protocol), (status, out) in zip(jobs, answers):
        assert ok(status), (name, protocol, status, out)
        np.testing.assert_array_equal(out["y"].reshape(x.shape), half_plus_two(x))
        if name == "reveal":
            rows = len(x)
            batch = out["batch"].ravel().tolist()
            assert len(set(batch)) == 1 and batch[0] in (4, 16, 64) and batch[0] >= rows
            total = out["total"].ravel()[0]
            # Alone, a batch is the request plus copies of its first row; anything else
            # in the total came from other requests.
            alone = float(x.sum()) + (batch[0] - rows) * float(x[0, 0])
            if not np.isclose(total, alone, rtol=1e-6):
                shared += 1
    assert shared > 0, "no request shared a batch with another"


def test_classify_and_regress_go_through_batching(servers):
    """A lone Classify or Regress of one example runs in a batch padded to 4 (a direct
    run would say 1); concurrent ones get their own results."""
    main = servers["batching"]
    status, body = main.rest("POST", "/v1/models/examples:classify",
                             {"signature_name": "classify", "examples": [{"x": 7.0}]})
    assert (status, body) == (200, {"results": [[["x", 7.0], ["batch", 4.0]]]})
    status, body = main.rest("POST", "/v1/models/examples:regress",
                             {"signature_name": "regress", "examples": [{"x": 7.0}, {"x": 8.0}]})
    assert (status, body) == (200, {"results": [4007.0, 4008.0]})

    def classify(values, protocol):
        if protocol == "rest":
            status, body = main.rest("POST", "/v1/models/examples:classify", {
                "signature_name": "classify", "examples": [{"x": v} for v in values]})
            assert status == 200, body
            return [[tuple(c) for c in r] for r in body["results"]]
        request = grpc_client.classify_request("examples", "classify", [grpc_client.example(x=v) for v in values])
        return [[(label, score) for label, score in r]
                for r in grpc_client.classifications(main.prediction.Classify(request, timeout=20).result)]

    def regress(values, protocol):
        if protocol == "rest":
            status, body = main.rest("POST", "/v1/models/examples:regress", {
                "signature_name": "regress", "examples": [{"x": v} for v in values]})
            assert status == 200, body
            return body["results"]
        request = grpc_client.regress_request("examples", "regress", [grpc_client.example(x=v) for v in values])
        return grpc_client.regressions(main.prediction.Regress(request, timeout=20).result)

    jobs = [(classify if i % 2 else regress, [float(10 * i + j) for j in range(1 + i % 5)],
             "rest" if i % 4 < 2 else "grpc") for i in range(60)]
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda job: job[0](job[1], job[2]), jobs))
    for (fn, values, protocol), answer in zip(jobs, answers):
        assert len(answer) == len(values), (fn.__name__, protocol)
        if fn is classify:
            batches = {r[1][1] for r in answer}
            assert [r[0] for r in answer] == [("x", v) for v in values]
            assert [r[1][0] for r in answer] == ["batch"] * len(values)
        else:
            batches = {(r - (r % 1000)) / 1000 for r in answer}
            assert [r % 1000 for r in answer] == values
        assert len(batches) == 1 and batches.pop() in (4, 16, 64)


def test_signature_without_a_batch_dimension_runs_directly(servers):
    """The counter's signatures take and give scalars: no batch dimension, so they run
    as without batching (a BatchQueue would refuse a scalar input)."""
    main = servers["batching"]

    def call(signature, inputs):
        return main.rest("POST", "/v1/models/counter:predict", {"signature_name": signature, "inputs": inputs})

    assert call("reset_counter", {}) == (200, {"outputs": 0.0})
    assert call("incr_counter_by", {"delta": 3.0}) == (200, {"outputs": 3.0})
    request = grpc_client.predict_request("counter", {"delta": grpc_client.tensor(2.0)}, "incr_counter_by")
    response = main.prediction.Predict(request, timeout=20)
    assert grpc_client.ndarray(response.outputs["output"]) == 5.0
    assert call("get_counter", {}) == (200, {"outputs": 5.0})


# ---- batching parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("rows, padded", [(1, 4), (4, 4), (5, 16), (17, 64), (64, 64)])
def test_lone_request_is_padded_to_an_allowed_size_clients_never_see_padding(servers, rows, padded):
    main = servers["batching"]
    x = column(range(1, rows + 1))
    for status, out in (main.predict_rest("reveal", {"x": x}), main.predict_grpc("reveal", {"x": x})):
        assert ok(status), out
        assert out["y"].shape == (rows, 1)
        np.testing.assert_array_equal(out["y"], half_plus_two(x))
        assert out["batch"].ravel().tolist() == [padded] * rows
        assert out["total"].ravel().tolist() == [x.sum() + (padded - rows) * 1.0] * rows


def test_request_over_max_batch_size_is_refused(servers):
    main = servers["batching"]
    x = column(range(65))
    message = "Task size 65 is larger than maximum input batch size 64"
    assert main.predict_rest("reveal", {"x": x}) == (400, message)
    assert main.predict_grpc("reveal", {"x": x}) == (grpc.StatusCode.INVALID_ARGUMENT, message)


def test_per_model_parameters_override_the_server_wide_file(servers):
    """split's own batching_params.pbtxt: max_batch_size 128, split into batches of at most
    8, no allowed sizes; the same requests to reveal follow the server-wide file."""
    main = servers["batching"]
    x = column(range(1, 11))
    status, out = main.predict_rest("split", {"x": x})
    assert status == 200, out
    np.testing.assert_array_equal(out["y"], half_plus_two(x))
    assert out["batch"].ravel().tolist() == [8] * 8 + [2] * 2
    status, out = main.predict_rest("reveal", {"x": x})
    assert out["batch"].ravel().tolist() == [16] * 10
    big = column(range(100))
    status, out = main.predict_grpc("split", {"x": big})
    assert status == grpc.StatusCode.OK, out
    np.testing.assert_array_equal(out["y"], half_plus_two(big))
    assert out["batch"].ravel().tolist() == [8] * 96 + [4] * 4
    assert main.predict_rest("reveal", {"x": big}) == (
        400, "Task size 100 is larger than maximum input batch size 64")
    assert main.predict_rest("split", {"x": column(range(129))}) == (
        400, "Task size 129 is larger than maximum input batch size 128")


def test_bad_per_model_file_fails_that_version_only(servers):
    main = servers["batching"]

    def settled():
        now = main.statuses("bad")
        return now if now.get(2, ("",))[0] == "END" else None

    statuses = main.server.wait_for(settled, timeout=15)
    path = servers["root"] / "bad" / "2" / "batching_params.pbtxt"
    assert statuses[1] == ("AVAILABLE", "OK", "")
    state, code, message = statuses[2]
    assert (state, code) == ("END", "INVALID_ARGUMENT")
    assert message == (f"Invalid batching parameters in {path}: Last entry in allowed_batch_sizes "
                       "must match max_batch_size; last entry was 4; expected 8")
    # Nothing else disturbed: version 1 serves, batched with the server-wide
    # parameters, and so do the other models.
    assert main.statuses("reveal") == {1: ("AVAILABLE", "OK", "")}
    assert main.statuses("split") == {1: ("AVAILABLE", "OK", "")}
    status, out = main.predict_rest("bad", {"x": column([2])})
    assert status == 200 and out["y"].tolist() == [[3.0]] and out["batch"].tolist() == [[4.0]]


@pytest.mark.parametrize("text, error", [
    ("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
     "Invalid batching parameters in {path}: Last entry in allowed_batch_sizes must match "
     "max_batch_size; last entry was 4; expected 8"),
    ("max_batch_size { value: 8 }\nnum_batch_threads { valeu: 2 }",
     'Invalid batching parameters in {path}: 2:21 : Message type "google.protobuf.Int64Value" '
     'has no field named "valeu".'),
    (None, "Could not read batching parameters file {path}: [Errno 2] No such file or directory: '{path}'"),
])
def test_bad_batching_parameters_file_stops_the_server_naming_it(tmp_path, text, error):
    path = tmp_path / "params.txt"
    if text is not None:
        path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "edgeserve", "--port=0", "--rest_api_port=0", "--model_name=m",
         f"--model_base_path={tmp_path}", "--enable_batching", f"--batching_parameters_file={path}"],
        cwd=str(REPO), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if str(path) in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].endswith("Failed to start server. Error: " + error.format(path=path)), lines[0]


# ---- queue full -------------------------------------------------------------------------------


def test_full_queue_is_503_over_rest_and_unavailable_over_grpc(servers):
    """slow: one batch thread, batches of one row, one batch queued. With one request
    running (~0.8 s) and one queued, the next are refused at once."""
    main = servers["batching"]

    def slow(x, spin, protocol):
        inputs = {"x": column([x]), "spin": np.array([spin], np.int64)}
        started = time.monotonic()
        if protocol == "rest":
            result = main.predict_rest("slow", inputs, "slow")
        else:
            result = main.predict_grpc("slow", inputs, "slow")
        return result, time.monotonic() - started

    (status, out), _ = slow(1, 1, "rest")  # the signature's first run
    assert status == 200 and out["y"].tolist() == [[2.5]]
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(slow, 2, 100000, "rest")
        time.sleep(0.1)
        queued = pool.submit(slow, 4, 1, "grpc")
        time.sleep(0.1)
        refused = [slow(6, 1, "rest"), slow(8, 1, "grpc")]
        (first, _), (second, _) = running.result(), queued.result()
    assert first[0] == 200 and first[1]["y"].tolist() == [[3.0]], first
    assert second[0] == grpc.StatusCode.OK and second[1]["y"].tolist() == [[4.0]], second
    assert refused[0][0] == (503, QUEUE_FULL)
    assert refused[1][0] == (grpc.StatusCode.UNAVAILABLE, QUEUE_FULL)
    assert refused[0][1] < 0.1 and refused[1][1] < 0.1  # refused at once


# ---- when a batch starts ----------------------------------------------------------------------


def test_lone_request_is_not_delayed_by_batch_timeout(servers):
    """batch_timeout_micros is 100 ms: the p50 latency of 50 sequential requests is about
    the same as without batching (interleaved, so both see the same machine), and far
    under 100 ms. With --adaptive_batching=false (TF Serving's rule) each waits 100 ms."""
    on, off = servers["batching"], servers["plain"]
    x = {"x": column([3.0])}
    for served in (on, off):
        for _ in range(40):  # warm up: the signature's runner settles
            assert served.predict_rest("reveal", x)[0] == 200
    timings = {"on": [], "off": []}
    for _ in range(50):
        for name, served in (("on", on), ("off", off)):
            started = time.perf_counter()
            status, out = served.predict_rest("reveal", x)
            timings[name].append(time.perf_counter() - started)
            assert status == 200 and out["batch"].tolist() == [[4.0 if name == "on" else 1.0]]
    p50_on, p50_off = statistics.median(timings["on"]), statistics.median(timings["off"])
    assert p50_on <= 1.5 * p50_off, (p50_on, p50_off)
    assert p50_on < 0.02, p50_on

    fixed = servers["fixed"]
    fixed.predict_rest("reveal", x)
    waits = []
    for _ in range(4):
        started = time.perf_counter()
        status, out = fixed.predict_rest("reveal", x)
        waits.append(time.perf_counter() - started)
        assert status == 200 and out["batch"].tolist() == [[1.0]]
    assert min(waits) >= 0.095, waits
