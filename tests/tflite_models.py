"""TFLite test models: converted from tf.functions with TensorFlow's own converter,
and rewritten (signatures dropped, SignatureDefs stored as metadata) without it.

Each `convert_*` writes `<folder>/model.tflite` and returns the folder, which is what
`TfLiteLoader` takes (a version folder). TensorFlow is imported only inside them.
"""
from __future__ import annotations

import os
from pathlib import Path


def write(folder: Path, content: bytes) -> Path:
    os.makedirs(folder, exist_ok=True)
    (folder / "model.tflite").write_bytes(content)
    return folder


def _convert(functions, module, **converter_options) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_concrete_functions(functions, module)
    for name, value in converter_options.items():
        if name == "supported_ops":
            converter.target_spec.supported_ops = value
        else:
            setattr(converter, name, value)
    return converter.convert()


def convert_half_plus_two(folder: Path, add: float = 2.0) -> Path:
    """y = 0.5x + 2 (or + `add`) on x: float32 [None, 1]; one signature, "serving_default"."""
    import tensorflow as tf

    class HalfPlusTwo(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return {"y": 0.5 * x + add}

    module = HalfPlusTwo()
    return write(folder, _convert([module.serve.get_concrete_function()], module))


def convert_several_signatures(folder: Path) -> Path:
    """Two signatures from two concrete functions: add(a, b) -> sum, scale(x) -> scaled (3x)."""
    import tensorflow as tf

    class Several(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None, 2], tf.float32, name="a"),
            tf.TensorSpec([None, 2], tf.float32, name="b"),
        ])
        def add(self, a, b):
            return {"sum": a + b}

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def scale(self, x):
            return {"scaled": 3.0 * x}

    module = Several()
    functions = [module.add.get_concrete_function(), module.scale.get_concrete_function()]
    return write(folder, _convert(functions, module))


def convert_integers(folder: Path) -> Path:
    """Integer inputs: ids int64 [None] -> ids*3+1 (int64); counts int32 [None, 2] -> counts*2 (int32)."""
    import tensorflow as tf

    class Integers(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.int64, name="ids"),
            tf.TensorSpec([None, 2], tf.int32, name="counts"),
        ])
        def serve(self, ids, counts):
            return {"ids_out": ids * 3 + 1, "counts_out": counts * 2}

    module = Integers()
    return write(folder, _convert([module.serve.get_concrete_function()], module))


def convert_with_flex_op(folder: Path) -> Path:
    """A model that needs TensorFlow's own kernels (a Flex op, here for tf.strings.length),
    which the LiteRT runtime does not have."""
    import tensorflow as tf

    class Lengths(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="text")])
        def serve(self, text):
            return {"length": tf.strings.length(text)}

    module = Lengths()
    return write(folder, _convert(
        [module.serve.get_concrete_function()], module,
        supported_ops=[tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS],
    ))


def rewrite(content: bytes, *, drop_signatures: bool = False, signature_defs: dict[str, bytes] | None = None) -> bytes:
    """The model again, without its LiteRT signatures and/or with SignatureDefs stored
    the way TF's signature_def_utils.set_signature_defs stores them (TF Serving's
    format: a "signature_defs_metadata" entry holding a FlexBuffer map of
    key -> serialized SignatureDef, each a FlexBuffer string)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema
    from flatbuffers import flexbuffers

    model = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    if drop_signatures:
        model.signatureDefs = []
    if signature_defs is not None:
        builder = flexbuffers.Builder()
        with builder.Map():
            for key, data in sorted(signature_defs.items()):
                builder.Key(key)
                # A string of arbitrary bytes, as the C++ writer makes it (the Python
                # builder's String() takes only text).
                builder._WriteBlob(data, append_zero=True, type_=flexbuffers.Type.STRING)
        buffer = schema.BufferT()
        buffer.data = list(builder.Finish())
        model.buffers.append(buffer)
        entry = schema.MetadataT()
        entry.name = "signature_defs_metadata"
        entry.buffer = len(model.buffers) - 1
        model.metadata = [m for m in (model.metadata or []) if m.name != b"signature_defs_metadata"] + [entry]
    out = flatbuffers.Builder(1024)
    out.Finish(model.Pack(out), file_identifier=b"TFL3")
    return bytes(out.Output())
