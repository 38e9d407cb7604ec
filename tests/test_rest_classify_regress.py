"""REST :classify and :regress with TF Serving's JSON (util/json_tensor.cc).

Request: {"signature_name": ..., "context": {...}, "examples": [{...}, ...]}, each
feature a value or a list of values: JSON strings and {"b64": ...} become bytes_list,
decimals float_list, integers and booleans int64_list. Response: {"results": ...},
for classify one list of [label, score] pairs per example, for regress one number per
example, numbers written as json_tensor.cc's WriteDecimal writes them. Errors are
{"error": "<message>"} with TF Serving's HTTP status for the code.

Servers (one model each, shared by the module): edgeserve's half_plus_two export, the
examples model (grpc_client.export_tf1_examples_model) and, when present, TF Serving's
own saved_model_half_plus_two_cpu served as "default" (tensorflow_model_server_test.py).
"""
from __future__ import annotations

import base64
import re

import pytest

from conftest import TFSERVING_TESTDATA, tfserving_testdata
from grpc_client import ServerPool, export_tf1_examples_model


@pytest.fixture(scope="module")
def rest(model_store, tmp_path_factory):
    """rest(name) -> conftest.Client of the server serving that model."""
    tmp = tmp_path_factory.mktemp("rest_classify_regress")

    def examples_model():
        export_tf1_examples_model(tmp / "examples")
        return tmp / "examples"

    pool = ServerPool(tmp, {
        "half_plus_two": model_store / "half_plus_two",
        "examples": examples_model,
        "default": TFSERVING_TESTDATA / "saved_model_half_plus_two_cpu",
    })
    pool.prestart("half_plus_two", "examples")

    def client(name: str):
        if name == "default":
            tfserving_testdata("saved_model_half_plus_two_cpu")
        return pool(name).rest

    yield client
    pool.close()


def classify(rest, name, body, path_extra=""):
    return rest(name).post(f"/v1/models/{name}{path_extra}:classify", body)


def regress(rest, name, body, path_extra=""):
    return rest(name).post(f"/v1/models/{name}{path_extra}:regress", body)


# ---- TF Serving's own end-to-end cases ------------------------------------------------------

@pytest.mark.parametrize("name", ["default", "half_plus_two"])
def test_classify_rest(rest, name):
    """tensorflow_model_server_test.py testClassifyREST."""
    body = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert classify(rest, name, body) == (200, {"results": [[["", 3.0]]]})


@pytest.mark.parametrize("name", ["default", "half_plus_two"])
def test_regress_rest(rest, name):
    """tensorflow_model_server_test.py testRegressREST."""
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert regress(rest, name, body) == (200, {"results": [3.0]})


def test_regress_on_tf_serving_second_output(rest):
    body = {"signature_name": "regress_x_to_y2", "examples": [{"x": 2.0}, {"x": [4.0]}]}
    assert regress(rest, "default", body) == (200, {"results": [4.0, 5.0]})


# ---- requests ----------------------------------------------------------------------------

def test_several_examples_and_a_feature_given_as_a_list(rest):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": [4.0]}, {"x": -6.0}]}
    assert regress(rest, "half_plus_two", body) == (200, {"results": [3.0, 4.0, -1.0]})


def test_context_features_fill_in_for_every_example(rest):
    # util.cc: each example is the context followed by the example, so the example's
    # own features win over the context's.
    body = {"signature_name": "regress_x_to_y", "context": {"x": 10.0}, "examples": [{"x": 2.0}, {}]}
    assert regress(rest, "half_plus_two", body) == (200, {"results": [3.0, 7.0]})
    body = {"signature_name": "regress_x_plus_bias", "context": {"bias": 10.0},
            "examples": [{"x": 1.0}, {"x": 2.0, "bias": -2.0}]}
    assert regress(rest, "examples", body) == (200, {"results": [11.0, 0.0]})


def test_classes_and_scores(rest):
    body = {"signature_name": "classify_classes_scores", "examples": [{"x": 1.0}, {"x": 3.0}]}
    assert classify(rest, "examples", body) == (
        200, {"results": [[["neg", 1.0], ["pos", 2.0]], [["neg", 3.0], ["pos", 6.0]]]})


def test_classes_without_scores(rest):
    body = {"signature_name": "classify_classes_only", "examples": [{"x": 1.0}]}
    assert classify(rest, "examples", body) == (200, {"results": [[["neg", 0.0], ["pos", 0.0]]]})


def test_classify_and_regress_with_context_on_the_examples_model(rest):
    body = {"signature_name": "classify_classes_scores", "context": {"bias": 1.0},
            "examples": [{"x": 1.0}, {"x": 2.0, "bias": 0.0}]}
    assert classify(rest, "examples", body) == (
        200, {"results": [[["neg", 2.0], ["pos", 4.0]], [["neg", 2.0], ["pos", 4.0]]]})
    body["signature_name"] = "regress_flat"
    assert regress(rest, "examples", body) == (200, {"results": [6.0, 6.0]})


def test_strings_b64_bytes_integers_and_booleans(rest):
    # json_tensor.cc AddValueToFeature: strings and {"b64": ...} are bytes_list,
    # integers and true/false int64_list.
    body = {"signature_name": "regress_word_length", "examples": [
        {"word": {"b64": base64.b64encode(b"hello").decode()}},
        {"word": "ab", "n": 3},
        {"n": True},
        {"word": [{"b64": base64.b64encode(b"\xff\x00\xfe").decode()}], "n": [False]},
        {},
    ]}
    assert regress(rest, "examples", body) == (200, {"results": [5.0, 5.0, 1.0, 3.0, 0.0]})


def test_signature_name_omitted_means_serving_default(rest):
    # classifier.cc GetClassificationSignatureDef: serving_default is half_plus_two's
    # predict signature, without an "inputs" input.
    status, body = classify(rest, "half_plus_two", {"examples": [{"x": 2.0}]})
    assert status == 400
    assert body["error"].startswith("No classification inputs found in SignatureDef: ")
    status, body = regress(rest, "half_plus_two", {"examples": [{"x": 2.0}]})
    assert status == 400
    assert body["error"].startswith("No regression inputs found in SignatureDef: ")


def test_by_version_and_by_label(rest):
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert regress(rest, "half_plus_two", body, "/versions/1") == (200, {"results": [3.0]})
    assert classify(rest, "half_plus_two", {**body, "signature_name": "classify_x_to_y"}, "/versions/1") == (
        200, {"results": [[["", 3.0]]]})
    assert regress(rest, "half_plus_two", body, "/versions/2") == (
        404, {"error": "Servable not found for request: Specific(half_plus_two, 2)"})
    # server_core.cc GetModelVersionForLabel: no labels are configured.
    assert regress(rest, "half_plus_two", body, "/labels/stable") == (
        400, {"error": "Unrecognized servable version label: stable"})


# ---- numbers as TF Serving writes them --------------------------------------------------------

def numbers(raw: bytes) -> list[str]:
    return re.findall(rb"-?(?:Infinity|NaN|[0-9][0-9.e+-]*)", raw.split(b"[", 1)[1])


def raw_post(client, path: str, body: dict) -> tuple[int, bytes]:
    import json

    client.conn.request("POST", path, body=json.dumps(body))
    response = client.conn.getresponse()
    return response.status, response.read()


def test_regress_numbers_are_written_like_tf_serving(rest):
    # json_tensor.cc WriteDecimal: shortest round-tripping text, ".0" on whole
    # numbers, %g's exponent form for large ones.
    body = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}, {"x": 0.2}, {"x": 17999996.0}]}
    status, raw = raw_post(rest("half_plus_two"), "/v1/models/half_plus_two:regress", body)
    assert status == 200, raw
    assert numbers(raw) == [b"3.0", b"2.1", b"9e+06"]


def test_non_finite_regressions(rest):
    # JSON in accepts NaN and Infinity (kParseNanAndInfFlag); out they are written as
    # the bare words (json_tensor_test.cc JsonFromRegressionResultWithNonFinite).
    client = rest("half_plus_two")
    client.conn.request("POST", "/v1/models/half_plus_two:regress",
                        body='{"signature_name": "regress_x_to_y", '
                             '"examples": [{"x": Infinity}, {"x": -Infinity}, {"x": NaN}]}')
    response = client.conn.getresponse()
    raw = response.read()
    assert response.status == 200, raw
    assert numbers(raw) == [b"Infinity", b"-Infinity", b"NaN"]


def test_classify_scores_are_written_like_tf_serving(rest):
    body = {"signature_name": "classify_classes_scores", "examples": [{"x": 0.1}]}
    status, raw = raw_post(rest("examples"), "/v1/models/examples:classify", body)
    assert status == 200, raw
    assert re.findall(rb'"(neg|pos)"', raw) == [b"neg", b"pos"]
    assert numbers(raw.replace(b'"neg"', b"").replace(b'"pos"', b"")) == [b"0.1", b"0.2"]


# ---- errors ------------------------------------------------------------------------------------

def error_of(result):
    status, body = result
    assert isinstance(body, dict) and list(body) == ["error"], body
    return status, body["error"]


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_json_shape_errors(rest, method):
    client = rest("half_plus_two")
    path = f"/v1/models/half_plus_two:{method}"

    def post(body):
        return error_of(client.post(path, body))

    # json_tensor.cc ParseJson.
    assert post(b"") == (400, "JSON Parse error: The document is empty")
    status, message = post(b'{"examples": [')
    assert status == 400 and message.startswith("JSON Parse error: ")
    status, message = post(b"[1, 2]")
    assert status == 400 and message.startswith("JSON Value: ") and message.endswith(" Is not object")
    # FillSignature.
    status, message = post({"signature_name": ["hello"], "examples": [{"x": 1.0}]})
    assert status == 400
    assert message.endswith("not formatted correctly. 'signature_name' key must be a string value.")
    # FillClassifyRegressRequestFromJson (the text says classify for regress too).
    status, message = post({"signature_name": "regress_x_to_y"})
    assert status == 400 and message.startswith("JSON Value: ")
    assert message.endswith("When method is classify, key 'examples' is expected and was not found")
    status, message = post({"examples": {"x": 1.0}})
    assert status == 400 and message.endswith("Expecting 'examples' value to be an list/array")
    status, message = post({"examples": []})
    assert status == 400 and message.endswith("'examples' value is an empty array")
    # MakeExampleFromJsonObject.
    assert post({"examples": [[{"x": 1.0}]]}) == (400, "Example must be JSON object but got JSON Array")
    assert post({"examples": [1.0]}) == (400, "Example must be JSON object but got JSON Number")
    assert post({"context": [{"x": 1.0}], "examples": [{"x": 1.0}]}) == (
        400, "Example must be JSON object but got JSON Array")


@pytest.mark.parametrize("method", ["classify", "regress"])
def test_feature_value_errors(rest, method):
    """json_tensor_test.cc ClassifyRegressRequestTest.JsonErrors, on a real server."""
    client = rest("half_plus_two")
    path = f"/v1/models/half_plus_two:{method}"

    def post(raw: bytes):
        return error_of(client.post(path, raw))

    assert post(b'{"examples": [{"names": [10, null]}]}') == (
        400, "Feature: names has element with unexpected JSON type: Null")
    assert post(b'{"examples": [{"names": [10, 10.0]}]}') == (
        400, "Unexpected element type in feature: names expecting type: int64")
    assert post(b'{"examples": [{"names": [10, {"test": 10}]}]}') == (
        400, "Feature: names has element with unexpected JSON type: Object")
    assert post(b'{"examples": [{"names": [[10], 20]}]}') == (
        400, "Feature: names has element with unexpected JSON type: Array")
    assert post(b'{"examples": [{"names": [20, 18446744073709551603]}]}') == (
        400, "Feature: names has uint64_t element. Only int64_t is supported.")
    assert post(b'{"examples": [{"names": ["a", 1.5]}]}') == (
        400, "Unexpected element type in feature: names expecting type: bytes")
    assert post(b'{"examples": [{"names": [1.5, true]}]}') == (
        400, "Unexpected element type in feature: names expecting type: float")
    assert post(b'{"examples": [{"names": {"b64": "not base64!"}}]}') == (400, "Unable to base64 decode")
    assert post(b'{"context": {"names": null}, "examples": [{"x": 1.0}]}') == (
        400, "Feature: names has element with unexpected JSON type: Null")


def test_model_and_signature_errors(rest):
    client = rest("half_plus_two")
    one = [{"x": 2.0}]
    assert error_of(client.post("/v1/models/nope:classify", {"examples": one})) == (
        404, "Servable not found for request: Latest(nope)")
    # classifier.cc / regressor.cc Get*SignatureDef.
    assert error_of(client.post("/v1/models/half_plus_two:classify",
                                {"signature_name": "nope", "examples": one})) == (
        400, "No signature was found with the name: nope")
    assert error_of(client.post("/v1/models/half_plus_two:regress",
                                {"signature_name": "nope", "examples": one})) == (
        400, "No signature was found with the name: nope")
    # regressor.cc PreProcessRegression: a classify signature has no "outputs".
    status, message = error_of(client.post("/v1/models/half_plus_two:regress",
                                           {"signature_name": "classify_x_to_y", "examples": one}))
    assert status == 400 and message.startswith("No regression outputs found in SignatureDef: ")
    # The model's own example parsing (TensorFlow's ParseExample).
    status, message = error_of(client.post("/v1/models/half_plus_two:regress",
                                           {"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}))
    assert status == 400 and "Data types don't match" in message
    status, message = error_of(client.post("/v1/models/half_plus_two:classify",
                                           {"signature_name": "classify_x_to_y", "examples": [{"y": 2.0}]}))
    assert status == 400 and "Feature: x (data type: float) is required but could not be found" in message
    # The server goes on answering.
    assert client.post("/v1/models/half_plus_two:regress",
                       {"signature_name": "regress_x_to_y", "examples": one}) == (200, {"results": [3.0]})


def test_result_shape_errors(rest):
    client = rest("examples")
    # regressor.cc PostProcessRegressionResult.
    assert error_of(client.post("/v1/models/examples:regress",
                                {"signature_name": "regress_two_columns", "examples": [{"x": 1.0}]})) == (
        400, "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]")
