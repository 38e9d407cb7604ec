"""Classification and regression signature rules (inference.py) and gRPC channel arguments,
without a server: TF Serving's checks and message texts on hand-made signatures and outputs."""
from __future__ import annotations

import numpy as np
import pytest

from edgeserve import inference
from edgeserve.dtypes import DataType
from edgeserve.errors import ServingError, StatusCode
from edgeserve.grpc_api import DEFAULT_MAX_MESSAGE_BYTES, MessageLimits, parse_channel_arguments
from edgeserve.messages import ClassificationResult, Example, Input, RegressionResult
from edgeserve.servable import CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME, SignatureSpec, TensorSpec


def _spec(dtype=DataType.DT_STRING, shape=(-1,)):
    return TensorSpec("t:0", dtype, shape)


def _signature(inputs=("inputs",), outputs=("classes", "scores"), method=CLASSIFY_METHOD_NAME):
    return SignatureSpec(method, {a: _spec() for a in inputs}, {a: _spec() for a in outputs})


def _describe():
    return "<signature>"


def _error(fn, *args) -> ServingError:
    with pytest.raises(ServingError) as info:
        fn(*args)
    return info.value


# ---- which outputs a signature is run for ------------------------------------------

@pytest.mark.parametrize("outputs, wanted", [
    (("classes", "scores"), ["classes", "scores"]),
    (("scores",), ["scores"]),
    (("classes",), ["classes"]),
    (("classes", "other"), ["classes"]),
])
def test_classification_runs_for_classes_and_scores_present(outputs, wanted):
    assert inference.classification_outputs(_signature(outputs=outputs), _describe) == wanted


@pytest.mark.parametrize("signature, message", [
    (_signature(inputs=("inputs", "b")), "Expected one input Tensor."),
    (_signature(outputs=("classes", "scores", "c")), "Expected one or two output Tensors, found 3"),
    (_signature(inputs=("x",)), "No classification inputs found in SignatureDef: <signature>"),
    (_signature(outputs=("y",)),
     'Expected classification signature outputs to contain at least one of "classes" or "scores". '
     "Signature was: <signature>"),
])
def test_classification_signature_checks(signature, message):
    error = _error(inference.classification_outputs, signature, _describe)
    assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize("signature, message", [
    (_signature(inputs=("inputs", "b"), outputs=("outputs",)), "Expected one input Tensor."),
    (_signature(outputs=("outputs", "b")), "Expected one output Tensor."),
    (_signature(inputs=("x",), outputs=("outputs",)), "No regression inputs found in SignatureDef: <signature>"),
    (_signature(outputs=("y",)), "No regression outputs found in SignatureDef: <signature>"),
])
def test_regression_signature_checks(signature, message):
    error = _error(inference.regression_outputs, signature, _describe)
    assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, message)


def test_multi_inference_task_method_must_be_classify_or_regress():
    assert inference.task_outputs(REGRESS_METHOD_NAME, _signature(outputs=("outputs",)), _describe) == ["outputs"]
    error = _error(inference.task_outputs, "tensorflow/serving/predict", _signature(), _describe)
    assert (error.code, error.message) == (
        StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict")


# ---- examples in -------------------------------------------------------------------

def _example(**features) -> Example:
    example = Example()
    for name, value in features.items():
        example.features.feature[name].float_list.value.append(value)
    return example


def test_example_list_is_one_serialized_example_per_entry():
    message = Input()
    message.example_list.examples.extend([_example(x=1.0), _example(x=2.0)])
    serialized = inference.serialized_examples(message)
    assert serialized.dtype == object and serialized.shape == (2,)
    assert [Example.FromString(s) for s in serialized] == [_example(x=1.0), _example(x=2.0)]


def test_context_is_merged_into_every_example():
    message = Input()
    message.example_list_with_context.context.CopyFrom(_example(c=9.0))
    message.example_list_with_context.examples.extend([_example(x=1.0), _example(x=2.0)])
    parsed = [Example.FromString(s) for s in inference.serialized_examples(message)]
    assert [dict(p.features.feature) == dict(_example(c=9.0, x=v).features.feature) for p, v in
            zip(parsed, (1.0, 2.0))] == [True, True]


@pytest.mark.parametrize("kind", ["none", "example_list", "example_list_with_context"])
def test_no_examples_is_input_is_empty(kind):
    message = Input()
    if kind != "none":
        getattr(message, kind).SetInParent()
    error = _error(inference.serialized_examples, message)
    assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, "Input is empty.")


# ---- results out -------------------------------------------------------------------

def test_classification_result_pairs_labels_and_scores():
    result = ClassificationResult()
    inference.fill_classification_result({
        "classes": np.array([[b"a", b"b"], [b"c", b"d"]], dtype=object),
        "scores": np.array([[0.25, 0.75], [1.0, 0.0]], dtype=np.float32),
    }, 2, result)
    got = [[(c.label, c.score) for c in row.classes] for row in result.classifications]
    assert got == [[("a", 0.25), ("b", 0.75)], [("c", 1.0), ("d", 0.0)]]


def test_classification_with_scores_only_has_no_labels():
    result = ClassificationResult()
    inference.fill_classification_result({"scores": np.array([[3.0]], dtype=np.float32)}, 1, result)
    assert [(c.label, c.score) for c in result.classifications[0].classes] == [("", 3.0)]


@pytest.mark.parametrize("outputs, message", [
    ({"scores": np.zeros((2,), np.float32)}, "Expected Tensor shape: [batch_size num_classes] but got [2]"),
    ({"scores": np.zeros((2, 1), np.float64)}, "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ({"classes": np.zeros((2, 1), np.float32)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
    ({"scores": np.zeros((3, 1), np.float32)}, "Expected scores output batch size of 2. Got: 3"),
    ({"classes": np.full((2, 2), b"a", dtype=object), "scores": np.zeros((2, 3), np.float32)},
     "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
])
def test_classification_output_checks(outputs, message):
    error = _error(inference.fill_classification_result, outputs, 2, ClassificationResult())
    assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, message)


@pytest.mark.parametrize("shape", [(2,), (2, 1)])
def test_regression_result_is_one_value_per_example(shape):
    result = RegressionResult()
    inference.fill_regression_result({"outputs": np.array([1.5, -2.0], np.float32).reshape(shape)}, 2, result)
    assert [r.value for r in result.regressions] == [1.5, -2.0]


@pytest.mark.parametrize("output, message", [
    (np.zeros((2, 2), np.float32),
     "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [2,2]"),
    (np.zeros((3,), np.float32), "Input batch size did not match output batch size: 2 vs. 3"),
    (np.zeros((2,), np.int64), "Expected output Tensor of DT_FLOAT.  Got: DT_INT64"),
])
def test_regression_output_checks(output, message):
    error = _error(inference.fill_regression_result, {"outputs": output}, 2, RegressionResult())
    assert (error.code, error.message) == (StatusCode.INVALID_ARGUMENT, message)


# ---- --grpc_channel_arguments ------------------------------------------------------

def test_channel_arguments_default_to_tf_servings_int32_max():
    assert parse_channel_arguments("") == MessageLimits(DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_MAX_MESSAGE_BYTES)
    assert DEFAULT_MAX_MESSAGE_BYTES == 2**31 - 1


def test_channel_arguments_set_message_limits_and_ignore_the_rest(caplog):
    limits = parse_channel_arguments(
        "grpc.max_receive_message_length=1000,grpc.keepalive_time_ms=5,grpc.max_send_message_length=-1")
    assert limits == MessageLimits(1000, -1)
    assert "grpc.keepalive_time_ms is not used by edgeserve" in caplog.text


@pytest.mark.parametrize("text, message", [
    ("grpc.max_receive_message_length", "is not key=value"),
    ("grpc.max_receive_message_length=big", "needs an integer"),
])
def test_bad_channel_arguments_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        parse_channel_arguments(text)
