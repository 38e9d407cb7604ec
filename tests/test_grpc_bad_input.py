"""Bad gRPC input: every mistake gets TF Serving's status code and text, and the server
goes on serving (each test ends with a good Predict on the same server).

Servers shared by the module, one model each: half_plus_two with
`--grpc_channel_arguments=grpc.max_receive_message_length=1000`; the `spin` model
(run time set by the request) for deadlines and cancellation; the examples model
(grpc_client.export_tf1_examples_model) whose `matmul` signature TensorFlow itself
refuses for a wrong row length. Texts come from TF Serving's sources named in each test
(predict_util.cc, classifier.cc, regressor.cc, multi_inference.cc, server_core.cc,
basic_manager.cc), TensorFlow's (tensorflow/cc/saved_model/util.cc, the session's
feed check) and gRPC's (C++ proto deserialization, the message size filter).
"""
from __future__ import annotations

import os
import random
import socket
import time

import grpc
import numpy as np
import pytest

from grpc_client import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    TIMEOUT,
    ServerPool,
    channel,
    classify_request,
    example,
    export_tf1_examples_model,
    multi_inference_request,
    predict_request,
    raw_method,
    regress_request,
    rpc_error,
    stubs,
    tensor,
)

MAX_RECEIVE = 1000
PREDICT_PATH = "/tensorflow.serving.PredictionService/Predict"
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture(scope="module")
def pool(model_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grpc_bad_input")

    def examples_model():
        export_tf1_examples_model(tmp / "examples")
        return tmp / "examples"

    pool = ServerPool(
        tmp,
        {"half_plus_two": model_store / "half_plus_two", "spin": model_store / "spin", "examples": examples_model},
        extra_args={"half_plus_two": [f"--grpc_channel_arguments=grpc.max_receive_message_length={MAX_RECEIVE}"]},
    )
    pool.prestart("half_plus_two", "spin")
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def hpt(pool):
    return pool("half_plus_two")


def assert_still_serving(served, name="half_plus_two"):
    """A good Predict, on the server's shared channel and on a new one."""
    request = predict_request(name, {"x": tensor([[1.0], [2.0]])})
    for stub in (served.prediction, None):
        if stub is None:
            with channel(served.server.grpc_port) as chan:
                response = stubs(chan)[0].Predict(request, timeout=TIMEOUT)
        else:
            response = stub.Predict(request, timeout=TIMEOUT)
        assert list(response.outputs["y"].float_val) == [2.5, 3.0]
    assert served.server.proc.poll() is None, "server exited"


def assert_error(call, request, code, message=None, *, contains=None, startswith=None):
    error = rpc_error(call, request)
    assert error.code() == code, (error.code(), error.details())
    if message is not None:
        assert error.details() == message
    if contains is not None:
        assert contains in error.details(), error.details()
    if startswith is not None:
        assert error.details().startswith(startswith), error.details()
    return error


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_idle(pid: int, timeout: float = 90.0) -> None:
    """Waits for runs left over by an earlier test (if a server let them go on)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = cpu_seconds(pid)
        time.sleep(0.5)
        if cpu_seconds(pid) - before < 0.1:
            return
    raise AssertionError(f"server still busy after {timeout}s")


def assert_idle(pid: int, seconds: float = 1.0) -> None:
    """The server burns well under one core: no model run is left going."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    used = cpu_seconds(pid) - before
    assert used < 0.5 * seconds, f"server used {used:.2f}s of CPU in {seconds}s"


# ---- bytes that are not the request -----------------------------------------------------

@pytest.mark.parametrize("payload", [b"\xff\xff\xff\xff", b"\x0a\xff\x01", b"\x0a\x05abc"],
                         ids=["bad_tag", "length_past_end", "truncated_field"])
def test_malformed_protobuf_bytes(hpt, payload):
    predict = raw_method(hpt.channel, PREDICT_PATH)
    error = rpc_error(predict, payload)
    # gRPC C++ GenericDeserialize: a request that does not parse is INTERNAL.
    assert error.code() == grpc.StatusCode.INTERNAL, (error.code(), error.details())
    assert_still_serving(hpt)


def test_unknown_method(hpt):
    nope = raw_method(hpt.channel, "/tensorflow.serving.PredictionService/Nope")
    assert rpc_error(nope, b"").code() == grpc.StatusCode.UNIMPLEMENTED
    nope = raw_method(hpt.channel, "/no.such.Service/Predict")
    assert rpc_error(nope, b"").code() == grpc.StatusCode.UNIMPLEMENTED
    assert_still_serving(hpt)


def test_message_above_max_receive_message_length(hpt):
    request = predict_request("half_plus_two", {"x": tensor(np.ones(2000), shape=(2000, 1), content=True)})
    assert request.ByteSize() > MAX_RECEIVE
    error = assert_error(hpt.prediction.Predict, request, grpc.StatusCode.RESOURCE_EXHAUSTED)
    # grpc core's message size filter: "Received message larger than max (8030 vs. 1000)".
    assert "larger than max" in error.details().lower(), error.details()
    assert_still_serving(hpt)


def test_message_just_under_the_limit_is_served(hpt):
    request = predict_request("half_plus_two", {"x": tensor(np.arange(200), shape=(200, 1), content=True)})
    assert 800 < request.ByteSize() <= MAX_RECEIVE
    response = hpt.prediction.Predict(request, timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == [0.5 * i + 2 for i in range(200)]


# ---- tensors ------------------------------------------------------------------------------

def test_wrong_dtype(hpt):
    # TensorFlow's feed check, as in predict_util_test.cc InputTensorsHaveWrongType /
    # PredictionInvalidTensor: "Expects arg[0] to be float but string is provided".
    for proto, given in [
        (tensor([[1.0]], np.float64), "double"),
        (tensor([["a"]], bytes), "string"),
        (tensor([[1]], np.int32), "int32"),
        (tensor([True], np.bool_), "bool"),
    ]:
        assert_error(hpt.prediction.Predict, predict_request("half_plus_two", {"x": proto}), INVALID_ARGUMENT,
                     contains=f"to be float but {given} is provided")
    assert_still_serving(hpt)


def test_wrong_shape_for_the_model(pool):
    examples = pool("examples")
    good = predict_request("examples", {"m": tensor([[1.0, 2.0]])}, signature_name="matmul")
    assert list(examples.prediction.Predict(good, timeout=TIMEOUT).outputs["row_sums"].float_val) == [3.0]
    bad = predict_request("examples", {"m": tensor([[1.0, 2.0, 3.0]])}, signature_name="matmul")
    # TensorFlow's MatMul: "Matrix size-incompatible: In[0]: [1,3], In[1]: [2,1]"
    # (a server checking shapes first names the same [1,3]).
    assert_error(examples.prediction.Predict, bad, INVALID_ARGUMENT, contains="[1,3]")
    assert list(examples.prediction.Predict(good, timeout=TIMEOUT).outputs["row_sums"].float_val) == [3.0]


def test_tensor_content_of_the_wrong_length(hpt):
    proto = tensor([[1.0]], content=True)
    proto.tensor_content = b"\x00\x00\x80?\x00"  # 5 bytes for one float
    # tensorflow/cc/saved_model/util.cc GetInputValues: Tensor::FromProto fails.
    assert_error(hpt.prediction.Predict, predict_request("half_plus_two", {"x": proto}), INVALID_ARGUMENT,
                 "tensor parsing error: x")
    proto.tensor_content = np.ones(3, np.float32).tobytes()  # 3 floats for shape [1,1]
    assert_error(hpt.prediction.Predict, predict_request("half_plus_two", {"x": proto}), INVALID_ARGUMENT,
                 "tensor parsing error: x")
    assert_still_serving(hpt)


def test_more_values_than_the_shape_holds_are_ignored(hpt):
    # TensorFlow's Tensor::FromProto (tensor.cc FromProtoField) copies the first
    # NumElements values of a value field and ignores the rest (tensor_content must
    # match exactly, above).
    proto = tensor([1.0, 2.0, 3.0])
    del proto.tensor_shape.dim[:]
    proto.tensor_shape.dim.add().size = 1
    response = hpt.prediction.Predict(predict_request("half_plus_two", {"x": proto}), timeout=TIMEOUT)
    assert list(response.outputs["y"].float_val) == [2.5]
    assert_still_serving(hpt)


def test_tensor_proto_that_is_not_a_tensor(hpt):
    no_dtype = tensor([[1.0]])
    no_dtype.dtype = 0  # DT_INVALID
    negative_dim = tensor([[1.0]])
    negative_dim.tensor_shape.dim[0].size = -1
    for proto in (no_dtype, negative_dim):
        assert_error(hpt.prediction.Predict, predict_request("half_plus_two", {"x": proto}), INVALID_ARGUMENT,
                     "tensor parsing error: x")
    assert_still_serving(hpt)


def test_input_aliases_that_do_not_match_the_signature(hpt):
    # predict_util.cc VerifyRequestInputsSize.
    extra = predict_request("half_plus_two", {"x": tensor([[1.0]]), "z": tensor([[1.0]])})
    assert_error(hpt.prediction.Predict, extra, INVALID_ARGUMENT,
                 "input size does not match signature: 2!=1 len({x,z}) != len({x}). "
                 "Sent extra: {z}. Missing but required: {}.")
    empty = predict_request("half_plus_two", {})
    assert_error(hpt.prediction.Predict, empty, INVALID_ARGUMENT,
                 "input size does not match signature: 0!=1 len({}) != len({x}). "
                 "Sent extra: {}. Missing but required: {x}.")
    # tensorflow/cc/saved_model/util.cc GetInputValues.
    renamed = predict_request("half_plus_two", {"z": tensor([[1.0]])})
    assert_error(hpt.prediction.Predict, renamed, INVALID_ARGUMENT,
                 "Signature input alias: x(feed name: x:0) not found in request and no default value "
                 "provided. Inputs expected to be in the request {z}, or default input alias set: ")
    assert_still_serving(hpt)


def test_bad_output_filter(hpt):
    # predict_util.cc PreProcessPrediction.
    unknown = predict_request("half_plus_two", {"x": tensor([[1.0]])}, output_filter=["nope"])
    assert_error(hpt.prediction.Predict, unknown, INVALID_ARGUMENT,
                 "output tensor alias not found in signature: nope Outputs expected to be in the set {y}.")
    twice = predict_request("half_plus_two", {"x": tensor([[1.0]])}, output_filter=["y", "y"])
    assert_error(hpt.prediction.Predict, twice, INVALID_ARGUMENT, "duplicate output tensor alias: y")
    assert_still_serving(hpt)


# ---- model specs ---------------------------------------------------------------------------

def test_missing_model_spec_or_name(hpt):
    from tensorflow_serving.apis import classification_pb2, predict_pb2, regression_pb2

    # predict_impl.cc, classification_service.cc, regression_service.cc: "Missing ModelSpec".
    no_spec = predict_pb2.PredictRequest()
    no_spec.inputs["x"].CopyFrom(tensor([[1.0]]))
    assert_error(hpt.prediction.Predict, no_spec, INVALID_ARGUMENT, "Missing ModelSpec")
    assert_error(hpt.prediction.Classify, classification_pb2.ClassificationRequest(), INVALID_ARGUMENT,
                 "Missing ModelSpec")
    assert_error(hpt.prediction.Regress, regression_pb2.RegressionRequest(), INVALID_ARGUMENT,
                 "Missing ModelSpec")
    # server_core.cc ServableRequestFromModelSpec.
    no_name = predict_request("", {"x": tensor([[1.0]])}, signature_name="serving_default")
    assert_error(hpt.prediction.Predict, no_name, INVALID_ARGUMENT, "ModelSpec has no name specified.")
    no_name = classify_request("", "classify_x_to_y", [example(x=1.0)])
    assert_error(hpt.prediction.Classify, no_name, INVALID_ARGUMENT, "ModelSpec has no name specified.")
    assert_still_serving(hpt)


def test_unknown_model_version_and_signature(hpt):
    stub = hpt.prediction
    x = {"x": tensor([[1.0]])}
    # basic_manager.cc / manager.h ServableRequest::DebugString.
    assert_error(stub.Predict, predict_request("nope", x), grpc.StatusCode.NOT_FOUND,
                 "Servable not found for request: Latest(nope)")
    assert_error(stub.Predict, predict_request("half_plus_two", x, version=42), grpc.StatusCode.NOT_FOUND,
                 "Servable not found for request: Specific(half_plus_two, 42)")
    assert_error(stub.Classify, classify_request("nope", "classify_x_to_y", [example(x=1.0)]),
                 grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    # predict_util.cc RunPredict.
    assert_error(stub.Predict, predict_request("half_plus_two", x, signature_name="nope"),
                 grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    # classifier.cc GetClassificationSignatureDef, regressor.cc GetRegressionSignatureDef.
    assert_error(stub.Classify, classify_request("half_plus_two", "nope", [example(x=1.0)]), INVALID_ARGUMENT,
                 "No signature was found with the name: nope")
    assert_error(stub.Regress, regress_request("half_plus_two", "nope", [example(x=1.0)]), INVALID_ARGUMENT,
                 "No signature was found with the name: nope")
    assert_still_serving(hpt)


def test_classify_on_a_predict_signature_and_regress_on_a_classify_signature(hpt):
    # classifier.cc PreProcessClassification / regressor.cc PreProcessRegression (the
    # method name check is off by default: --enable_signature_method_name_check).
    assert_error(hpt.prediction.Classify, classify_request("half_plus_two", "serving_default", [example(x=1.0)]),
                 INVALID_ARGUMENT, startswith="No classification inputs found in SignatureDef: ")
    assert_error(hpt.prediction.Regress, regress_request("half_plus_two", "classify_x_to_y", [example(x=1.0)]),
                 INVALID_ARGUMENT, startswith="No regression outputs found in SignatureDef: ")
    assert_error(hpt.prediction.Regress, regress_request("half_plus_two", "serving_default", [example(x=1.0)]),
                 INVALID_ARGUMENT, startswith="No regression inputs found in SignatureDef: ")
    assert_still_serving(hpt)


def test_example_with_a_feature_of_the_wrong_type(hpt):
    request = classify_request("half_plus_two", "classify_x_to_y", [example(x=2)])  # int64_list
    assert_error(hpt.prediction.Classify, request, INVALID_ARGUMENT, contains="Data types don't match")
    assert_still_serving(hpt)


# ---- MultiInference ------------------------------------------------------------------------

def test_multi_inference_errors(hpt):
    stub = hpt.prediction.MultiInference
    one = [example(x=1.0)]
    # multi_inference.cc TensorFlowMultiInferenceRunner::Infer.
    assert_error(stub, multi_inference_request(
        [("half_plus_two", "regress_x_to_y", REGRESS_METHOD), ("half_plus_two_v2", "classify_x_to_y", CLASSIFY_METHOD)],
        one), INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access the same model name.")
    assert_error(stub, multi_inference_request(
        [("half_plus_two", "classify_x_to_y", CLASSIFY_METHOD), ("half_plus_two", "classify_x_to_y", CLASSIFY_METHOD)],
        one), INVALID_ARGUMENT, "Duplicate evaluation of signature: classify_x_to_y")
    assert_error(stub, multi_inference_request([("half_plus_two", "nope", CLASSIFY_METHOD)], one),
                 INVALID_ARGUMENT, "Requested signature not found in model graph: nope")
    assert_error(stub, multi_inference_request(
        [("half_plus_two", "regress_x_to_y", REGRESS_METHOD), ("", "classify_x_to_y", CLASSIFY_METHOD)], one),
        INVALID_ARGUMENT, "Found ModelSpec with an empty model name.")
    assert_error(stub, multi_inference_request([("half_plus_two", "regress_x_to_y", "foo")], one),
                 grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: foo")
    assert_error(stub, multi_inference_request(
        [("half_plus_two", "classify_x_to_y", REGRESS_METHOD)], one),
        INVALID_ARGUMENT, startswith="No regression outputs found in SignatureDef: ")
    # multi_inference_helper.cc: the first task's ModelSpec picks the servable.
    assert_error(stub, multi_inference_request([], one), INVALID_ARGUMENT, "ModelSpec has no name specified.")
    assert_error(stub, multi_inference_request([("nope", "regress_x_to_y", REGRESS_METHOD)], one),
                 grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    # util.cc InputToSerializedExampleTensor.
    assert_error(stub, multi_inference_request([("half_plus_two", "regress_x_to_y", REGRESS_METHOD)], []),
                 INVALID_ARGUMENT, "Input is empty.")
    assert_still_serving(hpt)


# ---- deadlines and cancellation ------------------------------------------------------------

def spin_request(n: int):
    return predict_request("spin", {"n": tensor(n, np.int64, shape=())})


# Counting to this takes the spin model many seconds (about 30 s here): far longer
# than the deadlines below, yet bounded if a server lets the run go on.
LONG_RUN = 10**7


def test_deadline_shorter_than_the_run(pool):
    spin = pool("spin")
    wait_idle(spin.server.proc.pid)
    assert spin.prediction.Predict(spin_request(10), timeout=TIMEOUT).outputs["count"].int64_val == [10]
    for _ in range(2):
        started = time.monotonic()
        error = rpc_error(spin.prediction.Predict, spin_request(LONG_RUN), timeout=0.5)
        assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3
    # TF Serving hands the call's deadline to Session::Run (prediction_service_impl.cc
    # Predict: run_options.set_timeout_in_ms(DeadlineToTimeoutMillis(...)) while
    # enforce_session_run_timeout, true by default in server.h), so the runs end.
    time.sleep(0.5)
    assert_idle(spin.server.proc.pid)
    assert spin.prediction.Predict(spin_request(3), timeout=TIMEOUT).outputs["count"].int64_val == [3]


def test_client_cancels_mid_call(pool):
    spin = pool("spin")
    wait_idle(spin.server.proc.pid)
    future = spin.prediction.Predict.future(spin_request(LONG_RUN), timeout=2)
    time.sleep(0.5)
    assert future.cancel()
    assert future.cancelled()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    # Other calls go on at once, on the same channel and on a new one.
    assert spin.prediction.Predict(spin_request(7), timeout=TIMEOUT).outputs["count"].int64_val == [7]
    with channel(spin.server.grpc_port) as chan:
        assert stubs(chan)[0].Predict(spin_request(8), timeout=TIMEOUT).outputs["count"].int64_val == [8]
    # The cancelled run ends no later than its deadline.
    time.sleep(2)
    assert_idle(spin.server.proc.pid)


def test_many_cancelled_calls_leave_the_server_serving(hpt):
    futures = [hpt.prediction.Predict.future(predict_request("half_plus_two", {"x": tensor([[float(i)]])}),
                                              timeout=TIMEOUT) for i in range(100)]
    for future in futures[::2]:
        future.cancel()
    for i, future in enumerate(futures):
        if i % 2 and not future.cancelled():
            assert list(future.result(timeout=TIMEOUT).outputs["y"].float_val) == [0.5 * i + 2]
    assert_still_serving(hpt)


# ---- not gRPC at all -------------------------------------------------------------------------

def read_until_closed(sock: socket.socket, limit: float = 5.0) -> tuple[bytes, bool]:
    """Reads what the server sends in `limit` seconds: (bytes, whether it closed)."""
    received = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            return received, True
        if not chunk:
            return received, True
        received += chunk
    return received, False


def raw_exchange(port: int, data: bytes) -> tuple[bytes, bool]:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            return b"", True
        return read_until_closed(sock)


def test_http1_request_to_the_grpc_port(hpt):
    received, closed = raw_exchange(
        hpt.server.grpc_port,
        b"POST /v1/models/half_plus_two:predict HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"instances\": [1.0]}\r\n")
    # Never a hang: an HTTP/1.x error, an HTTP/2 GOAWAY, or the connection closed.
    assert closed or received, "no answer and the connection stayed open"
    assert b"predictions" not in received
    assert_still_serving(hpt)


def test_random_garbage_bytes_to_the_grpc_port(hpt):
    garbage = random.Random(1234).randbytes(4096)
    received, closed = raw_exchange(hpt.server.grpc_port, garbage)
    assert closed or received, "no answer and the connection stayed open"
    assert_still_serving(hpt)


def test_http2_preface_then_garbage(hpt):
    preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
    garbage = random.Random(99).randbytes(2048)
    received, closed = raw_exchange(hpt.server.grpc_port, preface + garbage)
    assert closed or received, "no answer and the connection stayed open"
    assert_still_serving(hpt)


def test_silent_connections_do_not_block_others(hpt):
    silent = [socket.create_connection(("127.0.0.1", hpt.server.grpc_port), timeout=5) for _ in range(5)]
    try:
        assert_still_serving(hpt)
    finally:
        for sock in silent:
            sock.close()
    assert_still_serving(hpt)


def test_long_error_messages_are_cut_as_tf_serving_cuts_them(hpt):
    # grpc_status_util.cc ToGRPCStatus: at most 1024 characters, then "...TRUNCATED".
    # (This server takes messages up to 1000 bytes: three long input names fit, and the
    # size error lists them twice.)
    names = sorted(c * 200 for c in "abc")
    request = predict_request("half_plus_two", {n: tensor([[1.0]]) for n in names})
    error = rpc_error(hpt.prediction.Predict, request, timeout=TIMEOUT)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    joined = ",".join(names)
    full = (f"input size does not match signature: 3!=1 len({{{joined}}}) != len({{x}}). "
            f"Sent extra: {{{joined}}}. Missing but required: {{x}}.")
    assert len(full) > 1024
    assert error.details() == full[:1024] + "...TRUNCATED"
    assert_still_serving(hpt)
