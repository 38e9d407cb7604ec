"""TF Serving's gRPC API as its users' clients see it: the official grpcio stubs.

Each model is served by its own server, shared by the module and started on first
use (edgeserve does not read --model_config_file yet): edgeserve's exports, TF
Serving's own test models when present, a TF1 model with every classify/regress
output shape (grpc_client.export_tf1_examples_model, served with
--enable_serialization_as_tensor_content) and a model whose only version cannot load.
half_plus_two's server also listens on a Unix socket. Expected values, codes and texts are
TF Serving's: tensorflow_model_server_test.py, predict_util_test.cc and the sources
named in each test.
"""
from __future__ import annotations

import concurrent.futures
import json
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import TFSERVING_TESTDATA, tfserving_testdata
from grpc_client import (
    CLASSIFY_METHOD,
    PREDICT_METHOD,
    REGRESS_METHOD,
    TIMEOUT,
    Served,
    ServerPool,
    channel,
    classifications,
    classify_request,
    example,
    export_tf1_examples_model,
    multi_inference_request,
    ndarray,
    predict_request,
    regress_request,
    regressions,
    rpc_error,
    stubs,
    tensor,
)

# TF Serving's test models, served under the names TF Serving's own tests use.
TESTDATA_MODELS = {
    "default": "saved_model_half_plus_two_cpu",
    "tf2": "saved_model_half_plus_two_tf2_cpu",
    "saved_model_half_plus_two_2_versions": "saved_model_half_plus_two_2_versions",
    "half_plus_three": "saved_model_half_plus_three",
}
TESTDATA_VERSION = 123

HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"


@pytest.fixture(scope="module")
def api(model_store, tmp_path_factory):
    """api(name) -> Served: the module's server for that model (started on first use)."""
    tmp = tmp_path_factory.mktemp("grpc_api")

    def examples_model():
        export_tf1_examples_model(tmp / "examples")
        return tmp / "examples"

    def broken_model():
        broken = tmp / "broken" / "1"
        broken.mkdir(parents=True)
        (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel")
        return tmp / "broken"

    models = {
        "half_plus_two": model_store / "half_plus_two",
        "tf2_half_plus_two": model_store / "tf2_half_plus_two",
        "kitchen_sink": model_store / "kitchen_sink",
        "examples": examples_model,
        "broken": broken_model,
        **{name: TFSERVING_TESTDATA / folder for name, folder in TESTDATA_MODELS.items()},
    }
    pool = ServerPool(
        tmp, models,
        common_args=["--enable_grpc_healthcheck_service=true", "--max_num_load_retries=0"],
        extra_args={
            "half_plus_two": [f"--grpc_socket_path={tmp / 'grpc.sock'}"],
            "examples": ["--enable_serialization_as_tensor_content=true"],
        },
    )
    pool.socket_path = tmp / "grpc.sock"
    pool.prestart("half_plus_two", "tf2_half_plus_two", "examples")
    yield pool
    pool.close()


def tfs(api, name: str) -> Served:
    """The server of TF Serving's model `name`; skips when TF Serving's test data is absent."""
    tfserving_testdata(TESTDATA_MODELS[name])
    return api(name)


def served(api, name: str) -> Served:
    return tfs(api, name) if name in TESTDATA_MODELS else api(name)


def expected_predict_response(name, version, signature_name, outputs: dict):
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = name
    response.model_spec.version.value = version
    response.model_spec.signature_name = signature_name
    for alias, proto in outputs.items():
        response.outputs[alias].CopyFrom(proto)
    return response


def check_model_spec(spec, name, signature_name, version):
    """tensorflow_model_server_test_base._VerifyModelSpec."""
    assert spec.name == name
    assert spec.signature_name == signature_name
    assert spec.version.value == version


def scalar(value, dtype=np.float32):
    """A scalar TensorProto with value fields: `tensor_shape {}` and one value."""
    return tensor(value, dtype, shape=())
# ---- Predict --------------------------------------------------------------------------

@pytest.mark.parametrize("content", [False, True], ids=["float_val", "tensor_content"])
@pytest.mark.parametrize("name", ["half_plus_two", "tf2_half_plus_two"])
def test_predict_answers_with_value_fields_and_a_filled_model_spec(api, name, content):
    request = predict_request(name, {"x": tensor([1.0, 2.0, 5.0], shape=(3, 1), content=content)})
    response = api(name).prediction.Predict(request, timeout=TIMEOUT)
    # TF Serving's default serialization is AsProtoField (predict_util.cc
    # PostProcessPredictionResult): float_val, not tensor_content.
    assert response == expected_predict_response(
        name, 1, "serving_default", {"y": tensor([2.5, 3.0, 4.5], shape=(3, 1))})


@pytest.mark.parametrize("name,batch_input", [("default", False), ("default", True), ("tf2", False)])
def test_tf_serving_verify_predict_request(api, name, batch_input):
    """tensorflow_model_server_test_base.VerifyPredictRequest, against TF Serving's models."""
    shape = (1, 1) if batch_input else (1,)
    request = predict_request(name, {"x": tensor([2.0], shape=shape)},
                              signature_name="serving_default", output_filter=["y"])
    response = tfs(api, name).prediction.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs) == ["y"]
    assert response.outputs["y"].dtype == 1  # DT_FLOAT
    assert list(response.outputs["y"].float_val) == [3.0]
    check_model_spec(response.model_spec, name, "serving_default", TESTDATA_VERSION)


def test_predict_on_named_regression_signature(api):
    """predict_util_test.cc PredictionWithNamedRegressionSignature: y3 = 0.5 * 2 + 3."""
    request = predict_request("default", {"inputs": scalar(2.0)}, signature_name="regress_x2_to_y3",
                              version=TESTDATA_VERSION)
    response = tfs(api, "default").prediction.Predict(request, timeout=TIMEOUT)
    assert response == expected_predict_response(
        "default", TESTDATA_VERSION, "regress_x2_to_y3", {"outputs": scalar(4.0)})


def test_predict_on_named_classification_signature(api):
    """predict_util_test.cc PredictionWithNamedClassificationSignature."""
    name = "saved_model_half_plus_two_2_versions"
    request = predict_request(name, {"inputs": scalar(2.0)}, signature_name="classify_x2_to_y3")
    response = tfs(api, name).prediction.Predict(request, timeout=TIMEOUT)
    assert response == expected_predict_response(name, 124, "classify_x2_to_y3", {"scores": scalar(4.0)})


def test_predict_fewer_values_than_the_shape_repeats_the_last_one(api):
    # TensorFlow's Tensor::FromProto (which TF Serving uses to decode inputs) fills a
    # short value list up with its last value.
    request = predict_request("half_plus_two", {"x": tensor([2.0, 4.0], shape=(2, 1))})
    request.inputs["x"].tensor_shape.dim[0].size = 3
    response = api("half_plus_two").prediction.Predict(request, timeout=TIMEOUT)
    assert ndarray(response.outputs["y"]).tolist() == [[3.0], [4.0], [4.0]]


KITCHEN_SINK_INPUTS = {
    "f": tensor([[1.0, 2.0], [3.0, 4.5]]),
    "i": tensor([1, -2], np.int64),
    "s": tensor(["ab", b"\xffc"], bytes),
    "b": tensor([True, False], np.bool_),
    "h": tensor([1.0, 3.0], np.float16),
    "u8": tensor([1, 255], np.uint8),
}


def test_predict_every_dtype_of_the_kitchen_sink(api):
    request = predict_request("kitchen_sink", KITCHEN_SINK_INPUTS)
    response = api("kitchen_sink").prediction.Predict(request, timeout=TIMEOUT)
    outputs = {alias: ndarray(proto) for alias, proto in response.outputs.items()}
    assert sorted(outputs) == ["b_not", "f_sum", "h_half", "i_double", "s_bytes", "s_upper", "u8_inc"]
    assert outputs["f_sum"].dtype == np.float32 and outputs["f_sum"].tolist() == [3.0, 7.5]
    assert outputs["i_double"].dtype == np.int64 and outputs["i_double"].tolist() == [2, -4]
    assert outputs["s_upper"].tolist() == [b"AB", b"\xffC"]
    assert outputs["s_bytes"].tolist() == [b"ab", b"\xffc"]
    assert outputs["b_not"].tolist() == [False, True]
    assert outputs["h_half"].dtype == np.float16 and outputs["h_half"].tolist() == [0.5, 1.5]
    assert outputs["u8_inc"].dtype == np.uint8 and outputs["u8_inc"].tolist() == [2, 0]
    # Value fields, as TF Serving's AsProtoField writes them.
    assert list(response.outputs["s_upper"].string_val) == [b"AB", b"\xffC"]
    assert list(response.outputs["i_double"].int64_val) == [2, -4]
    assert list(response.outputs["b_not"].bool_val) == [False, True]
    assert list(response.outputs["u8_inc"].int_val) == [2, 0]
    assert not any(proto.tensor_content for proto in response.outputs.values())


def test_predict_kitchen_sink_inputs_as_tensor_content(api):
    inputs = {alias: tensor(ndarray(proto), ndarray(proto).dtype, content=True)
              for alias, proto in KITCHEN_SINK_INPUTS.items() if alias != "s"}
    inputs["s"] = KITCHEN_SINK_INPUTS["s"]
    response = api("kitchen_sink").prediction.Predict(predict_request("kitchen_sink", inputs), timeout=TIMEOUT)
    assert ndarray(response.outputs["f_sum"]).tolist() == [3.0, 7.5]
    assert ndarray(response.outputs["h_half"]).tolist() == [0.5, 1.5]
    assert ndarray(response.outputs["u8_inc"]).tolist() == [2, 0]


def test_output_filter_returns_only_the_named_outputs(api):
    request = predict_request("kitchen_sink", KITCHEN_SINK_INPUTS, output_filter=["i_double", "f_sum"])
    response = api("kitchen_sink").prediction.Predict(request, timeout=TIMEOUT)
    assert sorted(response.outputs) == ["f_sum", "i_double"]
    assert list(response.outputs["f_sum"].float_val) == [3.0, 7.5]


def test_predict_by_version(api):
    stub = api("half_plus_two").prediction
    response = stub.Predict(predict_request("half_plus_two", {"x": tensor([[4.0]])}, version=1), timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == [4.0]
    assert response.model_spec.version.value == 1
    error = rpc_error(stub.Predict, predict_request("half_plus_two", {"x": tensor([[4.0]])}, version=2))
    # basic_manager.cc ServingMap::GetUntypedServableHandle; manager.h ServableRequest::DebugString.
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Specific(half_plus_two, 2)"


def test_two_versions_model_serves_the_latest_only(api):
    name = "saved_model_half_plus_two_2_versions"
    stub = tfs(api, name).prediction
    response = stub.Predict(predict_request(name, {"x": tensor([[2.0]])}), timeout=TIMEOUT)
    assert response.model_spec.version.value == 124
    error = rpc_error(stub.Predict, predict_request(name, {"x": tensor([[2.0]])}, version=123))
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == f"Servable not found for request: Specific({name}, 123)"


def test_predict_by_label_when_the_model_has_no_labels(api):
    request = predict_request("half_plus_two", {"x": tensor([[4.0]])}, version_label="stable")
    error = rpc_error(api("half_plus_two").prediction.Predict, request)
    # server_core.cc GetModelVersionForLabel.
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: stable"


def test_enable_serialization_as_tensor_content(api):
    # The examples model's server runs with --enable_serialization_as_tensor_content:
    # Predict outputs are written with Tensor::AsProtoTensorContent (predict_util.cc
    # PostProcessPredictionResult, kAsProtoContent).
    request = predict_request("examples", {"x": tensor([[1.0], [2.5]])})
    response = api("examples").prediction.Predict(request, timeout=TIMEOUT)
    assert response == expected_predict_response(
        "examples", 1, "serving_default", {"y": tensor([[2.0], [5.0]], content=True)})


def test_half_plus_three(api):
    request = predict_request("half_plus_three", {"x": tensor([2.0], shape=(1,))})
    response = tfs(api, "half_plus_three").prediction.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == [4.0]  # testGoodModelConfig: 4.0
    check_model_spec(response.model_spec, "half_plus_three", "serving_default", TESTDATA_VERSION)


# ---- Classify and Regress -------------------------------------------------------------

SERVED_HALF_PLUS_TWO = [("half_plus_two", 1), ("default", TESTDATA_VERSION), ("tf2", TESTDATA_VERSION)]


@pytest.mark.parametrize("name,version", SERVED_HALF_PLUS_TWO)
def test_classify_half_plus_two(api, name, version):
    """tensorflow_model_server_test.py _TestClassify (TF1 and TF2)."""
    request = classify_request(name, "classify_x_to_y", [example(x=2.0)])
    response = served(api, name).prediction.Classify(request, timeout=TIMEOUT)
    assert classifications(response.result) == [[("", 3.0)]]
    check_model_spec(response.model_spec, name, "classify_x_to_y", version)


@pytest.mark.parametrize("name,version", SERVED_HALF_PLUS_TWO)
def test_regress_half_plus_two(api, name, version):
    """tensorflow_model_server_test.py _TestRegress (TF1 and TF2)."""
    request = regress_request(name, "regress_x_to_y", [example(x=2.0)])
    response = served(api, name).prediction.Regress(request, timeout=TIMEOUT)
    assert regressions(response.result) == [3.0]
    check_model_spec(response.model_spec, name, "regress_x_to_y", version)


def test_regress_on_the_second_output_of_tf_serving_model(api):
    # regress_x_to_y2: y2 = 0.5 * x + 3 (saved_model_half_plus_two.py).
    request = regress_request("default", "regress_x_to_y2", [example(x=2.0), example(x=4.0)])
    response = tfs(api, "default").prediction.Regress(request, timeout=TIMEOUT)
    assert regressions(response.result) == [4.0, 5.0]


@pytest.mark.parametrize("name", ["half_plus_two", "default", "tf2"])
def test_examples_with_context_take_missing_features_from_the_context(api, name):
    # util.cc InputToSerializedExampleTensor: each example is the serialized context
    # followed by the serialized example, so the example's own features win.
    stub = served(api, name).prediction
    request = regress_request(name, "regress_x_to_y", [example(x=2.0), example()], context=example(x=10.0))
    assert regressions(stub.Regress(request, timeout=TIMEOUT).result) == [3.0, 7.0]
    request = classify_request(name, "classify_x_to_y", [example(x=2.0), example()], context=example(x=10.0))
    assert classifications(stub.Classify(request, timeout=TIMEOUT).result) == [[("", 3.0)], [("", 7.0)]]


def test_classify_with_classes_and_scores(api):
    request = classify_request("examples", "classify_classes_scores", [example(x=1.0), example(x=3.0)])
    response = api("examples").prediction.Classify(request, timeout=TIMEOUT)
    assert classifications(response.result) == [[("neg", 1.0), ("pos", 2.0)], [("neg", 3.0), ("pos", 6.0)]]
    check_model_spec(response.model_spec, "examples", "classify_classes_scores", 1)


def test_classify_with_classes_only_has_zero_scores(api):
    request = classify_request("examples", "classify_classes_only", [example(x=1.0)])
    response = api("examples").prediction.Classify(request, timeout=TIMEOUT)
    assert classifications(response.result) == [[("neg", 0.0), ("pos", 0.0)]]


def test_regress_accepts_batch_and_batch_by_one_outputs(api):
    stub = api("examples").prediction
    request = regress_request("examples", "regress_flat", [example(x=1.0), example(x=2.0)])
    assert regressions(stub.Regress(request, timeout=TIMEOUT).result) == [3.0, 6.0]
    request = regress_request("examples", "regress_x_plus_bias", [example(x=1.0), example(x=2.0, bias=-2.0)],
                              context=example(bias=10.0))
    assert regressions(stub.Regress(request, timeout=TIMEOUT).result) == [11.0, 0.0]


def test_regress_with_bytes_and_int64_features(api):
    request = regress_request("examples", "regress_word_length",
                              [example(word=b"hello"), example(word="ab", n=3), example()])
    response = api("examples").prediction.Regress(request, timeout=TIMEOUT)
    assert regressions(response.result) == [5.0, 5.0, 0.0]


def test_classify_without_signature_name_uses_serving_default(api):
    # classifier.cc GetClassificationSignatureDef picks serving_default, here a
    # predict signature without an "inputs" input (PreProcessClassification).
    request = classify_request("examples", "", [example(x=1.0)])
    error = rpc_error(api("examples").prediction.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No classification inputs found in SignatureDef: ")


def test_regress_output_of_two_columns_is_refused(api):
    request = regress_request("examples", "regress_two_columns", [example(x=1.0)])
    error = rpc_error(api("examples").prediction.Regress, request)
    # regressor.cc PostProcessRegressionResult; TensorShape::DebugString is "[1,2]".
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]")


def test_regress_on_a_float_input_signature_fails_in_tensorflow(api):
    # regress_x2_to_y3's "inputs" is a float tensor: the serialized examples (strings)
    # are fed to it and TensorFlow refuses the feed.
    request = regress_request("default", "regress_x2_to_y3", [example(x=2.0)])
    error = rpc_error(tfs(api, "default").prediction.Regress, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "to be float but string is provided" in error.details()


def test_classify_example_without_a_required_feature(api):
    request = classify_request("half_plus_two", "classify_x_to_y", [example(y=1.0)])
    error = rpc_error(api("half_plus_two").prediction.Classify, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "Feature: x (data type: float) is required but could not be found" in error.details()


@pytest.mark.parametrize("method", ["Classify", "Regress"])
def test_empty_input_is_refused(api, method):
    make = classify_request if method == "Classify" else regress_request
    signature = "classify_x_to_y" if method == "Classify" else "regress_x_to_y"
    error = rpc_error(getattr(api("half_plus_two").prediction, method), make("half_plus_two", signature, []))
    # util.cc InputToSerializedExampleTensor.
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Input is empty."


# ---- MultiInference -------------------------------------------------------------------

@pytest.mark.parametrize("name,version", SERVED_HALF_PLUS_TWO)
def test_multi_inference_half_plus_two(api, name, version):
    """tensorflow_model_server_test.py _TestMultiInference (TF1 and TF2)."""
    request = multi_inference_request(
        [(name, "regress_x_to_y", REGRESS_METHOD), (name, "classify_x_to_y", CLASSIFY_METHOD)],
        [example(x=2.0)])
    response = served(api, name).prediction.MultiInference(request, timeout=TIMEOUT)
    assert len(response.results) == 2
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for result, task in zip(response.results, request.tasks):
        check_model_spec(result.model_spec, name, task.model_spec.signature_name, version)


def test_multi_inference_with_context_and_classes(api):
    request = multi_inference_request(
        [("examples", "classify_classes_scores", CLASSIFY_METHOD), ("examples", "regress_flat", REGRESS_METHOD)],
        [example(x=1.0), example(x=2.0, bias=0.0)], context=example(bias=1.0))
    response = api("examples").prediction.MultiInference(request, timeout=TIMEOUT)
    assert classifications(response.results[0].classification_result) == [
        [("neg", 2.0), ("pos", 4.0)], [("neg", 2.0), ("pos", 4.0)]]
    assert regressions(response.results[1].regression_result) == [6.0, 6.0]
    assert [r.model_spec.signature_name for r in response.results] == ["classify_classes_scores", "regress_flat"]


def test_multi_inference_refuses_a_predict_task(api):
    request = multi_inference_request([("half_plus_two", "serving_default", PREDICT_METHOD)], [example(x=1.0)])
    error = rpc_error(api("half_plus_two").prediction.MultiInference, request)
    # multi_inference.cc TensorFlowMultiInferenceRunner::Infer.
    assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    assert error.details() == f"Unsupported signature method_name: {PREDICT_METHOD}"


# ---- GetModelMetadata -----------------------------------------------------------------

def metadata_request(name, version=None, fields=("signature_def",)):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    request.metadata_field.extend(fields)
    return request


def signature_def_map(response):
    from tensorflow_serving.apis import get_model_metadata_pb2

    assert list(response.metadata) == ["signature_def"]
    any_message = response.metadata["signature_def"]
    assert any_message.type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    result = get_model_metadata_pb2.SignatureDefMap()
    assert any_message.Unpack(result)
    return result


def signature_def_map_from_json(path: Path):
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    expected = json.loads(path.read_text())
    return json_format.ParseDict(expected["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap())


def saved_model_signature_defs(path: Path) -> dict:
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((path / "saved_model.pb").read_bytes())
    return dict(saved_model.meta_graphs[0].signature_def)


@pytest.mark.parametrize("name,version,metadata_file", [
    ("default", 123, "half_plus_two_model_metadata.json"),
    ("saved_model_half_plus_two_2_versions", 124, "saved_model_half_plus_two_2_versions_metadata.json"),
    ("tf2", 123, "saved_model_half_plus_two_tf2_2_versions_metadata.json"),
])
def test_metadata_matches_tf_serving_metadata_files(api, name, version, metadata_file):
    """tensorflow_model_server_test.py testGetModelMetadata, compared with TF Serving's files."""
    response = tfs(api, name).prediction.GetModelMetadata(metadata_request(name), timeout=TIMEOUT)
    assert response.model_spec.name == name
    assert response.model_spec.version.value == version
    assert response.model_spec.signature_name == ""  # get_model_metadata_impl.cc sets name and version only
    actual = signature_def_map(response)
    # get_model_metadata_impl.cc copies the MetaGraphDef's signature_def map as it is.
    folder = TFSERVING_TESTDATA / TESTDATA_MODELS[name] / f"{version:08d}"
    assert dict(actual.signature_def) == saved_model_signature_defs(folder)
    expected = signature_def_map_from_json(tfserving_testdata(metadata_file))
    if name == "tf2":
        # That file predates SignatureDef.defaults, which this export carries for x.
        for signature_map in (actual, expected):
            for signature in signature_map.signature_def.values():
                signature.ClearField("defaults")
    assert actual == expected


def test_metadata_is_the_saved_model_signature_defs(api, model_store):
    response = api("half_plus_two").prediction.GetModelMetadata(
        metadata_request("half_plus_two", version=1), timeout=TIMEOUT)
    expected = saved_model_signature_defs(model_store / "half_plus_two" / "1")
    assert dict(signature_def_map(response).signature_def) == expected


def test_metadata_errors(api):
    from tensorflow_serving.apis import get_model_metadata_pb2

    cases = [
        # get_model_metadata_impl.cc
        (metadata_request("half_plus_two", fields=()), grpc.StatusCode.INVALID_ARGUMENT,
         "GetModelMetadataRequest must specify at least one metadata_field"),
        (metadata_request("half_plus_two", fields=("signature_def", "foo")), grpc.StatusCode.INVALID_ARGUMENT,
         "Metadata field foo is not supported"),
        (get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]),
         grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
        # basic_manager.cc, via ServerCore::GetServableHandle
        (metadata_request("nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
        (metadata_request("half_plus_two", version=99), grpc.StatusCode.NOT_FOUND,
         "Servable not found for request: Specific(half_plus_two, 99)"),
    ]
    stub = api("half_plus_two").prediction
    for request, code, message in cases:
        error = rpc_error(stub.GetModelMetadata, request)
        assert (error.code(), error.details()) == (code, message), request


# ---- GetModelStatus and HandleReloadConfigRequest -------------------------------------

def status_request(name=None, version=None):
    from tensorflow_serving.apis import get_model_status_pb2

    request = get_model_status_pb2.GetModelStatusRequest()
    if name is not None:
        request.model_spec.name = name
    if version is not None:
        request.model_spec.version.value = version
    return request


@pytest.mark.parametrize("version", [None, 1])
def test_model_status_available(api, version):
    from tensorflow_serving.apis import get_model_status_pb2

    response = api("half_plus_two").model.GetModelStatus(status_request("half_plus_two", version), timeout=TIMEOUT)
    expected = get_model_status_pb2.GetModelStatusResponse()
    status = expected.model_version_status.add()
    status.version = 1
    status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
    status.status.error_code = 0
    status.status.error_message = ""
    assert response == expected


def test_model_status_of_tf_serving_model(api):
    """tensorflow_model_server_test.py testGetModelStatus."""
    response = tfs(api, "default").model.GetModelStatus(status_request("default"), timeout=TIMEOUT)
    assert len(response.model_version_status) == 1
    assert response.model_version_status[0].version == 123
    assert response.model_version_status[0].status.error_code == 0


def test_model_status_errors(api):
    cases = [
        # get_model_status_impl.cc
        (status_request("nope"), grpc.StatusCode.NOT_FOUND, "Could not find any versions of model nope"),
        (status_request("half_plus_two", 7), grpc.StatusCode.NOT_FOUND,
         "Could not find version 7 of model half_plus_two"),
        (status_request(), grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec"),
    ]
    stub = api("half_plus_two").model
    for request, code, message in cases:
        error = rpc_error(stub.GetModelStatus, request)
        assert (error.code(), error.details()) == (code, message), request


def test_handle_reload_config_request_refuses_a_bad_config_whole(api):
    from tensorflow_serving.apis import model_management_pb2

    served_ = api("half_plus_two")
    request = model_management_pb2.ReloadConfigRequest()
    for _ in range(2):  # the same name twice: server_core.cc's ValidateModelConfigList
        config = request.config.model_config_list.config.add()
        config.name = "half_plus_two"
        config.base_path = "/nonexistent"
        config.model_platform = "tensorflow"
    error = rpc_error(served_.model.HandleReloadConfigRequest, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Illegal to list model half_plus_two multiple times in config list"
    # Nothing changed: the model is still served.
    response = served_.prediction.Predict(predict_request("half_plus_two", {"x": tensor([[2.0]])}), timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == [3.0]


# ---- health and reflection ------------------------------------------------------------

def health_check(chan, service: str):
    from grpclib.health.v1 import health_pb2

    check = chan.unary_unary(
        HEALTH_CHECK,
        request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
        response_deserializer=health_pb2.HealthCheckResponse.FromString,
    )
    return check(health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT)


def test_health_of_the_server_and_of_its_model(api):
    from grpclib.health.v1 import health_pb2

    serving = health_pb2.HealthCheckResponse.SERVING
    for name in ("half_plus_two", "tf2_half_plus_two", "examples"):
        chan = api(name).channel
        assert health_check(chan, "").status == serving, name
        assert health_check(chan, name).status == serving, name
    with pytest.raises(grpc.RpcError) as raised:
        health_check(api("half_plus_two").channel, "nope")
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_of_a_model_whose_version_failed_to_load(api):
    from grpclib.health.v1 import health_pb2

    chan = api("broken").channel
    # The server is up; the model is known but has no AVAILABLE version.
    assert health_check(chan, "").status == health_pb2.HealthCheckResponse.SERVING
    assert health_check(chan, "broken").status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_health_knows_tf_serving_service_names(api):
    # server.cc BuildAndStart: with --enable_grpc_healthcheck_service TF Serving marks
    # "ModelService" and "PredictionService" SERVING.
    from grpclib.health.v1 import health_pb2

    chan = api("half_plus_two").channel
    for service in ("ModelService", "PredictionService"):
        assert health_check(chan, service).status == health_pb2.HealthCheckResponse.SERVING, service


def reflection(chan, requests):
    from grpclib.reflection.v1alpha import reflection_pb2

    info = chan.stream_stream(
        REFLECTION,
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    return list(info(iter(requests), timeout=TIMEOUT))


def test_reflection_lists_the_services(api):
    from google.protobuf import descriptor_pb2
    from grpclib.reflection.v1alpha import reflection_pb2

    responses = reflection(api("half_plus_two").channel, [
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="tensorflow.serving.PredictionService"),
    ])
    assert len(responses) == 2
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"tensorflow.serving.PredictionService", "tensorflow.serving.ModelService",
            "grpc.health.v1.Health"} <= services
    files = [descriptor_pb2.FileDescriptorProto.FromString(raw)
             for raw in responses[1].file_descriptor_response.file_descriptor_proto]
    described = {f"{f.package}.{s.name}" for f in files for s in f.service}
    assert "tensorflow.serving.PredictionService" in described


# ---- transports, concurrency, REST agreement ------------------------------------------

def test_predict_over_the_unix_socket(api):
    """tensorflow_model_server_test.py testPredictUDS."""
    api("half_plus_two")
    with channel(f"unix:{api.socket_path}") as chan:
        prediction, model = stubs(chan)
        request = predict_request("half_plus_two", {"x": tensor([2.0], shape=(1,))}, output_filter=["y"])
        response = prediction.Predict(request, timeout=TIMEOUT)
        assert list(response.outputs["y"].float_val) == [3.0]
        check_model_spec(response.model_spec, "half_plus_two", "serving_default", 1)
        status = model.GetModelStatus(status_request("half_plus_two"), timeout=TIMEOUT)
        assert [s.version for s in status.model_version_status] == [1]
        assert health_check(chan, "half_plus_two").status == 1  # SERVING


def test_two_hundred_concurrent_calls_on_one_channel(api):
    stub = api("half_plus_two").prediction
    futures = [
        stub.Predict.future(predict_request("half_plus_two", {"x": tensor([[float(i)]])}), timeout=30)
        for i in range(200)
    ]
    answers = [list(f.result(timeout=60).outputs["y"].float_val) for f in futures]
    assert answers == [[0.5 * i + 2.0] for i in range(200)]


def test_concurrent_calls_of_every_kind(api):
    stub = api("half_plus_two").prediction

    def call(i):
        kind = i % 3
        if kind == 0:
            response = stub.Predict(predict_request("half_plus_two", {"x": tensor([[float(i)]])}), timeout=30)
            return list(response.outputs["y"].float_val)
        if kind == 1:
            request = regress_request("half_plus_two", "regress_x_to_y", [example(x=float(i))])
            return regressions(stub.Regress(request, timeout=30).result)
        request = classify_request("half_plus_two", "classify_x_to_y", [example(x=float(i))])
        return [row[0][1] for row in classifications(stub.Classify(request, timeout=30).result)]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, range(150)))
    assert answers == [[0.5 * i + 2.0] for i in range(150)]


def test_rest_and_grpc_give_the_same_numbers(api):
    values = (np.random.default_rng(7).normal(size=50) * 1000).astype(np.float32)
    half_plus_two = api("half_plus_two")
    grpc_answer = ndarray(half_plus_two.prediction.Predict(
        predict_request("half_plus_two", {"x": tensor(values, shape=(50, 1))}), timeout=TIMEOUT).outputs["y"])
    status, body = half_plus_two.rest.post("/v1/models/half_plus_two:predict",
                                           {"instances": [[float(v)] for v in values]})
    assert status == 200
    assert np.array_equal(np.asarray(body["predictions"], dtype=np.float32), grpc_answer)

    examples = api("examples")
    rows = [{"x": float(v)} for v in values[:5]]
    grpc_regress = regressions(examples.prediction.Regress(
        regress_request("examples", "regress_flat", [example(**row) for row in rows]), timeout=TIMEOUT).result)
    status, body = examples.rest.post("/v1/models/examples:regress",
                                      {"signature_name": "regress_flat", "examples": rows})
    assert status == 200, body
    assert np.array_equal(np.asarray(body["results"], dtype=np.float32), np.asarray(grpc_regress, np.float32))
    grpc_classify = classifications(examples.prediction.Classify(
        classify_request("examples", "classify_classes_scores", [example(**row) for row in rows]),
        timeout=TIMEOUT).result)
    status, body = examples.rest.post("/v1/models/examples:classify",
                                      {"signature_name": "classify_classes_scores", "examples": rows})
    assert status == 200, body
    assert [[(label, np.float32(score)) for label, score in row] for row in body["results"]] == [
        [(label, np.float32(score)) for label, score in row] for row in grpc_classify]
