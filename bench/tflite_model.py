"""Writes half_plus_two as TFLite (y = 0.5x + 2, x float32 [None, 1], signature
serving_default) into a version folder, beside the SavedModel that run.py exports:
`--prefer_tflite_model` then serves the same function from the same folder.

    python bench/tflite_model.py <version folder>
"""
from __future__ import annotations

import os
import sys


def main(folder: str) -> int:
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + 2.0}

    module = HalfPlusTwo()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.serve.get_concrete_function()], module)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "model.tflite"), "wb") as f:
        f.write(converter.convert())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
