"""TFLite models through the real server: REST and gRPC, next to SavedModels, and alone
in a process that never loads TensorFlow.

The mixed server's config serves "lite" (model_platform "tflite"), "saved" (the
SavedModel half_plus_two), "auto" (platform "tensorflow", but its version holds only
a model.tflite) and "both" (a version holding the SavedModel y = 0.5x + 2 and a
model.tflite computing y = 0.5x + 3, so the answer says which runtime served it).
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import grpc_client
import tflite_models
from conftest import REPO, ServerProcess
from reload_load import config_text

PREDICT = "/v1/models/{}:predict"
INSTANCES = {"instances": [[1.0], [2.0], [5.0]]}


def entry(name: str, base_path: Path, platform: str) -> str:
    return f'  config {{ name: "{name}" base_path: "{base_path}" model_platform: "{platform}" }}'


def tensorflow_mapped(pid: int) -> list[str]:
    """TensorFlow's shared libraries in the process's memory map (empty: never imported)."""
    with open(f"/proc/{pid}/maps") as f:
        return sorted({line.split()[-1] for line in f if "tensorflow" in line.split()[-1]})


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def models(tmp_path_factory, model_store) -> Path:
    root = tmp_path_factory.mktemp("tflite_models")
    tflite_models.convert_half_plus_two(root / "lite" / "1")
    tflite_models.convert_half_plus_two(root / "auto" / "1")
    shutil.copytree(model_store / "half_plus_two", root / "saved")
    shutil.copytree(model_store / "half_plus_two", root / "both")
    tflite_models.convert_half_plus_two(root / "both" / "1", add=3.0)  # tells the runtimes apart
    return root


def start(tmp: Path, args: list[str], env: dict | None = None) -> ServerProcess:
    return ServerProcess(tmp, args, env).wait_ready()


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, models):
    tmp = tmp_path_factory.mktemp("mixed")
    (tmp / "models.config").write_text(config_text(
        entry("lite", models / "lite", "tflite"), entry("saved", models / "saved", "tensorflow"),
        entry("auto", models / "auto", "tensorflow"), entry("both", models / "both", "tensorflow"),
    ))
    # With batching on, as TF Serving runs TFLite models in production: requests of
    # the concurrency test share batches, and every answer must still be its own.
    (tmp / "monitoring.config").write_text('prometheus_config { enable: true path: "/metrics" }')
    server = start(tmp, [f"--model_config_file={tmp / 'models.config'}", "--num_tflite_pools=2",
                         "--enable_batching", f"--monitoring_config_file={tmp / 'monitoring.config'}"])
    yield server
    server.cleanup()


def test_tflite_answers_as_the_savedmodel_does_over_rest(mixed):
    client = mixed.client()
    expected = {"predictions": [[2.5], [3.0], [4.5]]}
    for name in ("lite", "auto", "saved"):
        assert client.post(PREDICT.format(name), INSTANCES) == (200, expected), name
    # Columnar input and a version in the path work the same way.
    status, body = client.post("/v1/models/lite/versions/1:predict", {"inputs": {"x": [[4.0]]}})
    assert (status, body) == (200, {"outputs": [[4.0]]})


def test_a_version_with_both_files_is_its_savedmodel_unless_tflite_is_preferred(mixed, models, tmp_path):
    assert mixed.client().post(PREDICT.format("both"), {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
    preferring = start(tmp_path, ["--model_name=both", f"--model_base_path={models / 'both'}",
                                  "--prefer_tflite_model"])
    try:
        assert preferring.client().post(PREDICT.format("both"), {"instances": [[2.0]]}) == (
            200, {"predictions": [[4.0]]})
    finally:
        preferring.cleanup()


def test_tflite_over_grpc(mixed):
    with grpc_client.channel(mixed.grpc_port) as chan:
        prediction, model_service = grpc_client.stubs(chan)
        request = grpc_client.predict_request("lite", {"x": grpc_client.tensor([[1.0], [2.0]])})
        response = prediction.Predict(request, timeout=10)
        assert grpc_client.ndarray(response.outputs["y"]).tolist() == [[2.5], [3.0]]
        assert (response.model_spec.name, response.model_spec.version.value) == ("lite", 1)
        assert response.model_spec.signature_name == "serving_default"
        # A wrong dtype gets INVALID_ARGUMENT; the model keeps serving.
        bad = grpc_client.predict_request("lite", {"x": grpc_client.tensor([[1]], np.int32)})
        assert grpc_client.rpc_error(prediction.Predict, bad, timeout=10).code().name == "INVALID_ARGUMENT"
        assert grpc_client.ndarray(prediction.Predict(request, timeout=10).outputs["y"]).tolist() == [[2.5], [3.0]]
        from tensorflow_serving.apis import get_model_metadata_pb2

        metadata = grpc_client.model_spec(get_model_metadata_pb2.GetModelMetadataRequest(), "lite")
        metadata.metadata_field.append("signature_def")
        response = prediction.GetModelMetadata(metadata, timeout=10)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signatures)
        signature = signatures.signature_def["serving_default"]
        assert (sorted(signature.inputs), sorted(signature.outputs)) == (["x"], ["y"])
        assert [d.size for d in signature.inputs["x"].tensor_shape.dim] == [-1, 1]


def test_rest_metadata_and_status_of_a_tflite_model(mixed):
    client = mixed.client()
    status, body = client.get("/v1/models/lite")
    assert status == 200
    assert body["model_version_status"][0]["state"] == "AVAILABLE"
    status, body = client.get("/v1/models/lite/metadata")
    assert status == 200
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert inputs["x"]["dtype"] == "DT_FLOAT"


def test_concurrent_requests_through_the_interpreter_pool(mixed):
    from concurrent.futures import ThreadPoolExecutor

    from conftest import Client

    def many(i: int) -> list:
        client = Client(mixed.rest_port)
        try:
            return [client.post(PREDICT.format("lite"), {"instances": [[float(i + k)]]}) for k in range(30)]
        finally:
            client.close()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(many, range(8)))
    for i, answers in enumerate(results):
        assert answers == [(200, {"predictions": [[0.5 * (i + k) + 2]]}) for k in range(30)]
    # The batcher sat in front of the interpreters: its batches are in the metrics.
    status, page = Client(mixed.rest_port).get("/metrics")
    assert status == 200
    batches = [line for line in page.decode().splitlines()
               if line.startswith(':tensorflow:serving:batching:batch_size_count{model_name="lite"')]
    assert len(batches) == 1 and float(batches[0].split()[-1]) > 0, batches


def test_a_corrupt_tflite_version_fails_alone(tmp_path, models):
    base = tmp_path / "m"
    shutil.copytree(models / "lite", base)
    server = start(tmp_path, ["--model_name=m", f"--model_base_path={base}", "--max_num_load_retries=0",
                              "--file_system_poll_wait_seconds=1"])
    try:
        client = server.client()
        # Version 2 arrives cut short (published wrongly, with a plain copy that died).
        os.makedirs(tmp_path / "staging")
        (tmp_path / "staging" / "model.tflite").write_bytes((base / "1" / "model.tflite").read_bytes()[:100])
        os.rename(tmp_path / "staging", base / "2")

        def version_2_ended():
            states = {s["version"]: s for s in client.get("/v1/models/m")[1]["model_version_status"]}
            return states if states.get("2", {}).get("state") == "END" else None

        states = server.wait_for(version_2_ended, timeout=30)
        assert states["2"]["status"]["error_code"] == "INVALID_ARGUMENT", states["2"]
        assert str(base / "2" / "model.tflite") in states["2"]["status"]["error_message"], states["2"]
        assert states["1"]["state"] == "AVAILABLE"
        assert client.post(PREDICT.format("m"), {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
    finally:
        server.cleanup()


# ---- the lite flavour: no TensorFlow in the process ---------------------------------------

def test_tflite_only_server_never_loads_tensorflow(tmp_path, models):
    server = start(tmp_path, ["--model_name=lite", f"--model_base_path={models / 'lite'}"])
    try:
        client = server.client()
        assert client.post(PREDICT.format("lite"), INSTANCES) == (200, {"predictions": [[2.5], [3.0], [4.5]]})
        with grpc_client.channel(server.grpc_port) as chan:
            prediction, _ = grpc_client.stubs(chan)
            request = grpc_client.predict_request("lite", {"x": grpc_client.tensor([[1.0]])})
            assert grpc_client.ndarray(prediction.Predict(request, timeout=10).outputs["y"]).tolist() == [[2.5]]
        assert tensorflow_mapped(server.proc.pid) == []
        rss = rss_mib(server.proc.pid)
        assert rss < 150, f"{rss:.0f} MiB"
    finally:
        server.cleanup()


SITECUSTOMIZE = '''
import sys
class _NoTensorFlow:
    """A lite install: the tensorflow package is not there."""
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, _NoTensorFlow())
'''


def test_a_savedmodel_in_a_lite_install_says_to_use_the_full_one(tmp_path, models):
    hide = tmp_path / "lite_site"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"PYTHONPATH": os.pathsep.join([str(hide), str(REPO), os.environ.get("PYTHONPATH", "")])}
    (tmp_path / "models.config").write_text(config_text(
        entry("lite", models / "lite", "tflite"), entry("saved", models / "saved", "tensorflow")))
    server = start(tmp_path, [f"--model_config_file={tmp_path / 'models.config'}", "--max_num_load_retries=0"], env)
    try:
        client = server.client()
        assert client.post(PREDICT.format("lite"), {"instances": [[2.0]]}) == (200, {"predictions": [[3.0]]})
        status, body = client.get("/v1/models/saved")
        assert status == 200
        version = body["model_version_status"][0]
        assert version["state"] == "END"
        assert version["status"]["error_code"] == "UNIMPLEMENTED"
        assert version["status"]["error_message"] == (
            f"{models / 'saved' / '1'} holds a SavedModel, and this is edgeserve's lite install, without "
            "TensorFlow: it serves model.tflite files only. Serve SavedModels with the full install "
            "(pip install 'edgeserve[tensorflow]', or edgeserve.pyz instead of edgeserve-lite.pyz).")
        assert tensorflow_mapped(server.proc.pid) == []
    finally:
        server.cleanup()
