"""TF Serving's own test exports (TF1 and TF2), read in place from ../shared/testdata.

They show edgeserve answers real exports the way TF Serving does; every test skips
when that folder is absent (it is never copied into this repository).
"""
from __future__ import annotations

import json

import pytest

from conftest import tfserving_testdata

PREDICT = "/v1/models/{}:predict"


@pytest.fixture(scope="module")
def testdata_server(tmp_path_factory):
    """One server for the module, serving several of TF Serving's models via symlinks."""
    from conftest import ServerProcess

    root = tmp_path_factory.mktemp("tfs")
    servers = {}

    def serve(model: str, name: str) -> ServerProcess:
        if name not in servers:
            path = tfserving_testdata(model)
            server = ServerProcess(root, [f"--model_name={name}", f"--model_base_path={path}"])
            servers[name] = server.wait_ready()
        return servers[name]

    yield serve
    for server in servers.values():
        server.terminate()
        server.cleanup()


@pytest.mark.parametrize("model", ["saved_model_half_plus_two_cpu", "saved_model_half_plus_two_tf2_cpu"])
def test_half_plus_two_tf1_and_tf2_predict(testdata_server, model):
    name = "tf2" if "tf2" in model else "default"
    client = testdata_server(model, name).client()
    assert client.post(PREDICT.format(name), {"instances": [1.0, 2.0, 5.0]}) == (
        200, {"predictions": [2.5, 3.0, 4.5]})
    assert client.post(f"/v1/models/{name}/versions/123:predict", {"inputs": {"x": [[1.0]]}}) == (
        200, {"outputs": [[2.5]]})


def test_two_versions_serve_124_and_metadata_matches_tf_serving(testdata_server):
    server = testdata_server("saved_model_half_plus_two_2_versions", "saved_model_half_plus_two_2_versions")
    client = server.client()
    name = "saved_model_half_plus_two_2_versions"
    assert client.get(f"/v1/models/{name}") == (200, {"model_version_status": [{
        "version": "124", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]})
    status, body = client.get(f"/v1/models/{name}/metadata")
    assert status == 200
    expected = json.loads(tfserving_testdata("saved_model_half_plus_two_2_versions_metadata.json").read_text())
    assert body["model_spec"] == {**expected["model_spec"], "version": "124"}
    assert body["metadata"] == expected["metadata"]


def test_tf2_metadata_matches_tf_serving(testdata_server):
    server = testdata_server("saved_model_half_plus_two_tf2_cpu", "tf2")
    status, body = server.client().get("/v1/models/tf2/versions/123/metadata")
    assert status == 200
    expected = json.loads(
        tfserving_testdata("saved_model_half_plus_two_tf2_2_versions_metadata.json").read_text())
    # That file predates SignatureDef's `defaults` field in some entries and not in
    # others; compare everything else. (edgeserve always prints "defaults": {}.)
    for metadata in (body["metadata"], expected["metadata"]):
        for sig in metadata["signature_def"]["signature_def"].values():
            sig.pop("defaults", None)
    assert body["metadata"] == expected["metadata"]


def test_tf1_metadata_matches_tf_serving(testdata_server):
    server = testdata_server("saved_model_half_plus_two_cpu", "default")
    status, body = server.client().get("/v1/models/default/metadata")
    assert status == 200
    expected = json.loads(tfserving_testdata("half_plus_two_model_metadata.json").read_text())
    assert body == expected


def test_half_plus_three_and_counter(testdata_server):
    client = testdata_server("saved_model_half_plus_three", "three").client()
    assert client.post(PREDICT.format("three"), {"instances": [[1.0]]}) == (200, {"predictions": [[3.5]]})
    client = testdata_server("saved_model_counter", "counter").client()
    path = PREDICT.format("counter")
    assert client.post(path, {"signature_name": "incr_counter_by", "inputs": {"delta": 2.0}}) == (
        200, {"outputs": 2.0})
    assert client.post(path, {"signature_name": "incr_counter_by", "inputs": {"delta": 2.0}}) == (
        200, {"outputs": 4.0})
