"""Exports the example model: half_plus_two (y = 0.5 * x + 2) as a SavedModel.

`python -m edgeserve.example_model DIR` writes DIR/<version>/ (version 1 unless
--version says otherwise) the way TF Serving's own test model is built: a TF1 graph
with the signatures serving_default (predict: x -> y), classify_x_to_y and
regress_x_to_y (tf.Example in). Imports TensorFlow; the server never imports this.
"""
from __future__ import annotations

import argparse
import os
import sys


def export_half_plus_two(base_path: str, version: int = 1, *, add: float = 2.0) -> str:
    """Writes the SavedModel to base_path/version and returns that path."""
    import tensorflow as tf

    v1 = tf.compat.v1
    export_dir = os.path.join(base_path, str(version))
    graph = tf.Graph()
    with graph.as_default():
        a = v1.Variable(0.5, name="a")
        b = v1.Variable(add, name="b")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
        y = tf.add(tf.multiply(a, x), b, name="y")
        serialized = v1.placeholder(tf.string, name="tf_example")
        features = v1.io.parse_example(
            serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)}
        )
        y_example = tf.add(tf.multiply(a, features["x"]), b, name="y_from_example")
        info = v1.saved_model.utils.build_tensor_info
        predict = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"x": info(x)},
            outputs={"y": info(y)},
            method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME,
        )
        classify = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"scores": info(y_example)},
            method_name=v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME,
        )
        regress = v1.saved_model.signature_def_utils.build_signature_def(
            inputs={"inputs": info(serialized)},
            outputs={"outputs": info(y_example)},
            method_name=v1.saved_model.signature_constants.REGRESS_METHOD_NAME,
        )
        with v1.Session(graph=graph) as session:
            session.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(export_dir)
            builder.add_meta_graph_and_variables(
                session,
                [v1.saved_model.tag_constants.SERVING],
                signature_def_map={
                    "serving_default": predict,
                    "classify_x_to_y": classify,
                    "regress_x_to_y": regress,
                },
                strip_default_attrs=True,
            )
            builder.save()
    return export_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeserve.example_model",
        description="Export the half_plus_two example SavedModel to BASE_PATH/VERSION.",
    )
    parser.add_argument("base_path")
    parser.add_argument("--version", type=int, default=1)
    args = parser.parse_args(argv)
    target = os.path.join(args.base_path, str(args.version))
    if os.path.exists(os.path.join(target, "saved_model.pb")):
        print(f"{target} exists already; left as it is", file=sys.stderr)
        return 0
    print(export_half_plus_two(args.base_path, args.version), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
