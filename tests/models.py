"""Real SavedModels for the tests, exported with TensorFlow (TF1 graphs and TF2 modules)."""
from __future__ import annotations

import os


def export_tf2_half_plus_two(base_path: str, version: int = 1) -> str:
    """TF2: tf.saved_model.save of a tf.Module; serving_default x [-1,1] -> y."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = tf.Variable(0.5)
            self.b = tf.Variable(2.0)

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": self.a * x + self.b}

    module = HalfPlusTwo()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def export_tf2_kitchen_sink(base_path: str, version: int = 1) -> str:
    """TF2 model with several inputs and outputs of many dtypes.

    inputs:  f float32 [-1,2], i int64 [-1], s string [-1], b bool [-1], h float16 [-1], u8 uint8 [-1]
    outputs: f_sum float32 [-1] (row sums), i_double int64, s_upper string,
             s_bytes string (the input, echoed: an alias ending in _bytes is base64 in JSON),
             b_not bool, h_half float16, u8_inc uint8 (wraps at 255)
    """
    import tensorflow as tf

    class Sink(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="f"),
            tf.TensorSpec([None], tf.int64, name="i"),
            tf.TensorSpec([None], tf.string, name="s"),
            tf.TensorSpec([None], tf.bool, name="b"),
            tf.TensorSpec([None], tf.float16, name="h"),
            tf.TensorSpec([None], tf.uint8, name="u8"),
        ])
        def serve(self, f, i, s, b, h, u8):
            return {
                "f_sum": tf.reduce_sum(f, axis=1),
                "i_double": i * 2,
                "s_upper": tf.strings.upper(s),
                "s_bytes": tf.identity(s),
                "b_not": tf.logical_not(b),
                "h_half": h / tf.constant(2.0, tf.float16),
                "u8_inc": u8 + tf.constant(1, tf.uint8),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="v")])
        def norm(self, v):
            return {"norm": tf.norm(v, axis=1)}

    module = Sink()
    path = os.path.join(base_path, str(version))
    tf.saved_model.save(
        module, path, signatures={"serving_default": module.serve, "norm": module.norm}
    )
    return path


def export_tf1_counter(base_path: str, version: int = 1) -> str:
    """TF1 stateful counter (ref variable), like TF Serving's saved_model_counter.

    Signatures: incr_counter (no inputs), incr_counter_by (delta float scalar),
    reset_counter, get_counter; each outputs the counter as "output".
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    path = os.path.join(base_path, str(version))
    graph = tf.Graph()
    with graph.as_default():
        counter = v1.Variable(0.0, name="counter", use_resource=False)
        delta = v1.placeholder(tf.float32, shape=[], name="delta")
        incr = v1.assign_add(counter, 1.0, name="incr_counter_op")
        incr_by = v1.assign_add(counter, delta, name="incr_counter_by_op")
        reset = v1.assign(counter, 0.0, name="reset_counter_op")
        info = v1.saved_model.utils.build_tensor_info
        predict = v1.saved_model.signature_constants.PREDICT_METHOD_NAME

        def sig(inputs, output):
            return v1.saved_model.signature_def_utils.build_signature_def(
                inputs={k: info(t) for k, t in inputs.items()},
                outputs={"output": info(output)},
                method_name=predict,
            )

        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            save_tf1(session, path, {
                "incr_counter": sig({}, incr),
                "incr_counter_by": sig({"delta": delta}, incr_by),
                "reset_counter": sig({}, reset),
                "get_counter": sig({}, counter),
            })
    return path


def export_tf1_spin(base_path: str, version: int = 1) -> str:
    """TF1 graph that counts to n in a while loop: a model whose run time the request sets.

    Signature serving_default: n int64 scalar -> count int64 scalar.
    """
    import tensorflow as tf

    v1 = tf.compat.v1
    path = os.path.join(base_path, str(version))
    graph = tf.Graph()
    with graph.as_default():
        n = v1.placeholder(tf.int64, shape=[], name="n")
        count = tf.while_loop(lambda i: i < n, lambda i: i + 1, [tf.constant(0, tf.int64)])[0]
        count = tf.identity(count, name="count")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"n": info(n)}, outputs={"count": info(count)},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        with v1.Session(graph=graph) as session:
            save_tf1(session, path, {"serving_default": sig})
    return path


def save_tf1(session, path: str, signatures: dict) -> None:
    """Saves a TF1 session's graph and variables as a SavedModel with the serve tag."""
    import tensorflow as tf

    builder = tf.compat.v1.saved_model.Builder(path)
    builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
    builder.save()
