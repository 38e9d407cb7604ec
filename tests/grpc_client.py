"""Helpers for the gRPC end-to-end tests: official grpcio stubs, request builders, a model.

Everything here speaks to the server the way a TF Serving user's client does: the
`tensorflow-serving-api` stubs over a grpcio channel. Raw calls (bytes in, bytes out)
use a channel's `unary_unary` with identity serializers.
"""
from __future__ import annotations

import os
from pathlib import Path

import grpc
import numpy as np

import models

# Every call carries a deadline: a hung server fails the test instead of the run.
TIMEOUT = 10.0

PREDICT_METHOD = "tensorflow/serving/predict"
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"


def channel(target: str | int) -> grpc.Channel:
    """A plaintext channel to 127.0.0.1:<port>, or to a target string such as unix:/path."""
    if isinstance(target, int):
        target = f"127.0.0.1:{target}"
    return grpc.insecure_channel(target)


def stubs(chan: grpc.Channel):
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    return (
        prediction_service_pb2_grpc.PredictionServiceStub(chan),
        model_service_pb2_grpc.ModelServiceStub(chan),
    )


# ---- requests ---------------------------------------------------------------------

_VALUE_FIELD = {
    np.float32: "float_val", np.float64: "double_val", np.int32: "int_val",
    np.int64: "int64_val", np.bool_: "bool_val", np.uint8: "int_val", np.int8: "int_val",
    np.int16: "int_val", np.uint16: "int_val", np.uint32: "uint32_val", np.uint64: "uint64_val",
}


def tensor(values, dtype=np.float32, shape=None, *, content: bool = False):
    """A TensorProto with typed value fields (float_val, ...) or with tensor_content bytes.

    dtype=bytes makes a DT_STRING tensor (string_val); float16 goes to half_val as bits.
    """
    import tensorflow as tf
    from tensorflow.core.framework import tensor_pb2, types_pb2

    if dtype is bytes:
        array = np.asarray(values, dtype=object)
        if shape is not None:
            array = array.reshape(shape)
        proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING)
        proto.string_val.extend(v.encode() if isinstance(v, str) else v for v in array.reshape(-1))
    else:
        array = np.asarray(values, dtype=dtype)
        if shape is not None:
            array = array.reshape(shape)
        proto = tensor_pb2.TensorProto(dtype=tf.as_dtype(array.dtype).as_datatype_enum)
        if content:
            proto.tensor_content = array.tobytes()
        elif array.dtype == np.float16:
            proto.half_val.extend(array.reshape(-1).view(np.uint16).tolist())
        else:
            getattr(proto, _VALUE_FIELD[array.dtype.type]).extend(array.reshape(-1).tolist())
    proto.tensor_shape.SetInParent()  # a scalar still has a (present, empty) shape
    for size in array.shape:
        proto.tensor_shape.dim.add().size = size
    return proto


def model_spec(message, name: str, signature_name: str = "", version: int | None = None,
               version_label: str | None = None):
    message.model_spec.name = name
    if signature_name:
        message.model_spec.signature_name = signature_name
    if version is not None:
        message.model_spec.version.value = version
    if version_label is not None:
        message.model_spec.version_label = version_label
    return message


def predict_request(name: str, inputs: dict, signature_name: str = "", version: int | None = None,
                    version_label: str | None = None, output_filter=()):
    from tensorflow_serving.apis import predict_pb2

    request = model_spec(predict_pb2.PredictRequest(), name, signature_name, version, version_label)
    for alias, proto in inputs.items():
        request.inputs[alias].CopyFrom(proto)
    request.output_filter.extend(output_filter)
    return request


def example(**features):
    """A tf.train.Example: floats -> float_list, ints/bools -> int64_list, str/bytes -> bytes_list."""
    from tensorflow.core.example import example_pb2

    ex = example_pb2.Example()
    for name, value in features.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        feature = ex.features.feature[name]
        if all(isinstance(v, (bytes, str)) for v in values):
            feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)
        elif all(isinstance(v, (bool, int)) for v in values):
            feature.int64_list.value.extend(int(v) for v in values)
        else:
            feature.float_list.value.extend(float(v) for v in values)
    return ex


def fill_input(input_message, examples, context=None) -> None:
    """Fills a tensorflow.serving.Input: example_list, or example_list_with_context."""
    if context is None:
        for ex in examples:
            input_message.example_list.examples.add().CopyFrom(ex)
    else:
        input_message.example_list_with_context.context.CopyFrom(context)
        for ex in examples:
            input_message.example_list_with_context.examples.add().CopyFrom(ex)


def classify_request(name: str, signature_name: str, examples, context=None, version=None):
    from tensorflow_serving.apis import classification_pb2

    request = model_spec(classification_pb2.ClassificationRequest(), name, signature_name, version)
    fill_input(request.input, examples, context)
    return request


def regress_request(name: str, signature_name: str, examples, context=None, version=None):
    from tensorflow_serving.apis import regression_pb2

    request = model_spec(regression_pb2.RegressionRequest(), name, signature_name, version)
    fill_input(request.input, examples, context)
    return request


def multi_inference_request(tasks, examples, context=None):
    """tasks: (model name, signature name, method name) triples."""
    from tensorflow_serving.apis import inference_pb2

    request = inference_pb2.MultiInferenceRequest()
    for name, signature_name, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = name
        if signature_name:
            task.model_spec.signature_name = signature_name
        task.method_name = method
    fill_input(request.input, examples, context)
    return request


# ---- responses and errors ---------------------------------------------------------

def ndarray(proto) -> np.ndarray:
    import tensorflow as tf

    return tf.make_ndarray(proto)


def rpc_error(call, *args, **kwargs) -> grpc.RpcError:
    """Calls call(*args, **kwargs) (with the test timeout) and returns the RpcError it raises."""
    kwargs.setdefault("timeout", TIMEOUT)
    try:
        result = call(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"expected an RPC error, got a response: {result}")


def classifications(response):
    """ClassificationResult as [[(label, score), ...], ...]."""
    return [[(c.label, c.score) for c in cl.classes] for cl in response.classifications]


def regressions(response):
    return [r.value for r in response.regressions]


def raw_method(chan: grpc.Channel, path: str, response_deserializer=None):
    """A unary-unary callable that sends its request bytes as they are (no protobuf encoding)."""
    return chan.unary_unary(path, request_serializer=None, response_deserializer=response_deserializer)


# ---- a TF1 model with every classify/regress output shape TF Serving accepts -----------

def export_tf1_examples_model(base_path: str | os.PathLike, version: int = 1) -> str:
    """TF1 SavedModel whose signatures parse serialized tf.Examples.

    Features: x float [1] (required), bias float [1] (default 0), word bytes [1]
    (default ""), n int64 [1] (default 0). With v = x + bias:

    - classify_classes_scores (classify): classes [-1,2] = ["neg", "pos"],
      scores [-1,2] = [v, 2v]
    - classify_classes_only (classify): classes only
    - regress_flat (regress): outputs [-1] = 3v
    - regress_x_plus_bias (regress): outputs [-1,1] = v
    - regress_two_columns (regress): outputs [-1,2] = [v, 2v] (not a regression shape)
    - regress_word_length (regress, own parse: no x): outputs [-1] = len(word) + n
    - serving_default (predict): x float [-1,1] -> y = 2x
    - matmul (predict): m float [-1,2] -> row_sums [-1,1] = m @ [[1], [1]] (a MatMul,
      so TensorFlow itself refuses any other row length)
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    sm = v1.saved_model
    path = os.path.join(str(base_path), str(version))
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.io.parse_example(serialized, {
            "x": v1.io.FixedLenFeature([1], tf.float32),
            "bias": v1.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
        })
        v = tf.add(parsed["x"], parsed["bias"], name="v")  # [-1,1]
        two_columns = tf.concat([v, 2.0 * v], axis=1, name="two_columns")  # [-1,2]
        batch = tf.shape(v)[0]
        classes = tf.tile(tf.constant([["neg", "pos"]]), tf.stack([batch, 1]), name="classes")
        flat = tf.reshape(3.0 * v, [-1], name="flat")
        words = v1.io.parse_example(serialized, {
            "word": v1.io.FixedLenFeature([1], tf.string, default_value=[""]),
            "n": v1.io.FixedLenFeature([1], tf.int64, default_value=[0]),
        })
        word_length = tf.reshape(
            tf.cast(tf.strings.length(words["word"]), tf.float32) + tf.cast(words["n"], tf.float32),
            [-1], name="word_length")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.multiply(x, 2.0, name="y")
        m = v1.placeholder(tf.float32, shape=[None, 2], name="m")
        row_sums = tf.matmul(m, tf.ones([2, 1]), name="row_sums")
        signatures = {
            "classify_classes_scores": sm.classification_signature_def(serialized, classes, two_columns),
            "classify_classes_only": sm.classification_signature_def(serialized, classes, None),
            "regress_flat": sm.regression_signature_def(serialized, flat),
            "regress_x_plus_bias": sm.regression_signature_def(serialized, v),
            "regress_two_columns": sm.regression_signature_def(serialized, two_columns),
            "regress_word_length": sm.regression_signature_def(serialized, word_length),
            "serving_default": sm.predict_signature_def({"x": x}, {"y": y}),
            "matmul": sm.predict_signature_def({"m": m}, {"row_sums": row_sums}),
        }
        with v1.Session(graph=graph) as session:
            models.save_tf1(session, path, signatures)
    return path


# ---- servers ----------------------------------------------------------------------

class Served:
    """One running server (conftest.ServerProcess) with a gRPC channel and the stubs."""

    def __init__(self, server) -> None:
        self.server = server
        self.channel = channel(server.grpc_port)
        self.prediction, self.model = stubs(self.channel)
        self.rest = server.client()

    def close(self) -> None:
        self.channel.close()
        self.server.terminate()
        self.server.cleanup()


class ServerPool:
    """Servers of one test module, one model each, started on first use and kept.

    (`--model_config_file` would let one server hold them all; until edgeserve reads
    it, each model gets its own server, started lazily so skipped tests cost nothing.)
    """

    def __init__(self, tmp: Path, models: dict, common_args=(), extra_args: dict | None = None) -> None:
        self.tmp = tmp
        self.models = models  # name -> base path (or a callable returning one)
        self.common_args = list(common_args)
        self.extra_args = extra_args or {}
        self.served: dict[str, Served] = {}
        self.pending: dict[str, object] = {}

    def _args(self, name: str) -> list[str]:
        path = self.models[name]
        if callable(path):
            path = path()
        return [f"--model_name={name}", f"--model_base_path={path}",
                *self.common_args, *self.extra_args.get(name, ())]

    def prestart(self, *names: str) -> None:
        """Starts servers now without waiting, so their TensorFlow imports overlap."""
        from conftest import ServerProcess

        for name in names:
            if name not in self.served and name not in self.pending:
                self.pending[name] = ServerProcess(self.tmp, self._args(name))

    def __call__(self, name: str) -> Served:
        if name not in self.served:
            self.prestart(name)
            server = self.pending.pop(name)
            try:
                server.wait_ready()
            except BaseException:
                server.cleanup()
                raise
            self.served[name] = Served(server)
        return self.served[name]

    def close(self) -> None:
        for server in self.pending.values():
            server.cleanup()
        for served in self.served.values():
            served.close()
