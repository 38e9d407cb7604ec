"""The TFLite runtime (edgeserve.runtimes.tflite) on LiteRT: signatures as TF Serving
derives them, values, batch resizing, the interpreter pool under threads, and the
errors for bad files, missing ops and inputs the interpreter refuses.

Models are converted once per session with TensorFlow's converter (tflite_models);
TF Serving's own .tflite test models are read in place from ../shared/testdata.
"""
from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, tfserving_testdata

import tflite_models
from edgeserve.dtypes import DataType
from edgeserve.errors import ServingError, StatusCode
from edgeserve.runtimes.tflite import TFLITE_FILENAME, TfLiteLoader, has_tflite_model
from edgeserve.servable import TensorSpec

pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.timeout(120)

PREDICT = "tensorflow/serving/predict"


@pytest.fixture(scope="session")
def tflite_store(tmp_path_factory) -> Path:
    """Every converted model once per session: <root>/<name>/model.tflite."""
    root = tmp_path_factory.mktemp("tflite")
    tflite_models.convert_half_plus_two(root / "half_plus_two")
    tflite_models.convert_several_signatures(root / "several")
    tflite_models.convert_integers(root / "integers")
    tflite_models.convert_with_flex_op(root / "flex")
    content = (root / "half_plus_two" / TFLITE_FILENAME).read_bytes()
    tflite_models.write(root / "no_signatures", tflite_models.rewrite(content, drop_signatures=True))
    return root


def load(path, **options):
    return TfLiteLoader(str(path), **options).load()


def load_error(path, **options) -> ServingError:
    with pytest.raises(ServingError) as info:
        load(path, **options)
    return info.value


def sigdef(servable, key):
    from edgeserve import messages

    return messages.SignatureDef.FromString(servable.signature_defs[key])


def column(*values) -> np.ndarray:
    return np.array(values, dtype=np.float32).reshape(-1, 1)


# Signatures and values


def test_half_plus_two_signature_and_values(tflite_store):
    servable = load(tflite_store / "half_plus_two")
    assert list(servable.signatures) == ["serving_default"]
    spec = servable.signatures["serving_default"]
    assert spec.method_name == PREDICT
    assert spec.inputs == {"x": TensorSpec("serving_default_x:0", DataType.DT_FLOAT, (-1, 1))}
    (alias, out), = spec.outputs.items()
    assert alias == "y" and out.dtype == DataType.DT_FLOAT and out.shape == (-1, 1)
    message = sigdef(servable, "serving_default")
    assert message.method_name == PREDICT
    assert message.inputs["x"].name == "serving_default_x:0"
    assert message.inputs["x"].dtype == DataType.DT_FLOAT
    assert [d.size for d in message.inputs["x"].tensor_shape.dim] == [-1, 1]
    assert [d.size for d in message.outputs["y"].tensor_shape.dim] == [-1, 1]
    result = servable.run("serving_default", {"x": column(1.0, 2.0, 5.0)})
    assert list(result) == ["y"]
    np.testing.assert_array_equal(result["y"], column(2.5, 3.0, 4.5))
    assert result["y"].dtype == np.float32
    assert servable.memory_bytes is not None and servable.memory_bytes >= 0
    assert servable.batch_options is None
    servable.close()


def test_batch_resizing_up_and_down(tflite_store):
    servable = load(tflite_store / "half_plus_two")
    for rows in (1, 5, 1, 3, 64, 2):
        x = column(*range(rows))
        np.testing.assert_array_equal(servable.run("serving_default", {"x": x})["y"], x * 0.5 + 2)
    servable.close()


def test_outputs_are_copies_not_views_into_the_interpreter(tflite_store):
    servable = load(tflite_store / "half_plus_two")
    first = servable.run("serving_default", {"x": column(2.0)})["y"]
    kept = first.copy()
    servable.run("serving_default", {"x": column(100.0)})
    np.testing.assert_array_equal(first, kept)  # the second run did not write into it
    assert first.flags.owndata and first.flags.writeable
    servable.close()


def test_several_signatures_each_on_its_own_subgraph(tflite_store):
    servable = load(tflite_store / "several")
    assert sorted(servable.signatures) == ["add", "scale"]
    add, scale = servable.signatures["add"], servable.signatures["scale"]
    assert list(add.inputs) == ["a", "b"] and list(add.outputs) == ["sum"]
    assert add.inputs["a"].shape == (-1, 2) and add.inputs["a"].dtype == DataType.DT_FLOAT
    assert list(scale.inputs) == ["x"] and scale.inputs["x"].shape == (-1,)
    assert sorted(sigdef(servable, "add").inputs) == ["a", "b"]
    a = np.arange(6, dtype=np.float32).reshape(3, 2)
    b = np.full((3, 2), 10, dtype=np.float32)
    for _ in range(2):  # alternating signatures on one interpreter
        np.testing.assert_array_equal(servable.run("add", {"a": a, "b": b})["sum"], a + b)
        x = np.array([1, -2, 4, 0.5], dtype=np.float32)
        np.testing.assert_array_equal(servable.run("scale", {"x": x})["scaled"], 3 * x)
    servable.close()


def test_integer_inputs_and_output_filter(tflite_store):
    servable = load(tflite_store / "integers")
    spec = servable.signatures["serving_default"]
    assert spec.inputs["ids"].dtype == DataType.DT_INT64
    assert spec.inputs["counts"].dtype == DataType.DT_INT32
    assert spec.outputs["ids_out"].dtype == DataType.DT_INT64
    ids = np.array([0, 1, 2**40], dtype=np.int64)
    counts = np.array([[1, 2], [3, -4]], dtype=np.int32)
    result = servable.run("serving_default", {"ids": ids, "counts": counts})
    np.testing.assert_array_equal(result["ids_out"], ids * 3 + 1)
    assert result["ids_out"].dtype == np.int64
    np.testing.assert_array_equal(result["counts_out"], counts * 2)
    assert result["counts_out"].dtype == np.int32
    only = servable.run("serving_default", {"ids": ids, "counts": counts}, output_filter=["counts_out"])
    assert list(only) == ["counts_out"]
    servable.close()


# TF Serving's fallback signature and its stored SignatureDefs


def test_model_without_signatures_gets_tf_servings_fallback(tflite_store):
    """No SignatureDefs: one serving_default over the model's inputs and outputs, each
    aliased by its tensor name up to the first ":" (the tensor name stays whole)."""
    servable = load(tflite_store / "no_signatures")
    assert list(servable.signatures) == ["serving_default"]
    spec = servable.signatures["serving_default"]
    assert spec.method_name == PREDICT
    assert spec.inputs == {"serving_default_x": TensorSpec("serving_default_x:0", DataType.DT_FLOAT, (-1, 1))}
    (alias, out), = spec.outputs.items()
    assert alias == out.name.split(":")[0] and ":" in out.name
    x = column(4.0, 6.0)
    result = servable.run("serving_default", {"serving_default_x": x})
    np.testing.assert_array_equal(result[alias], x * 0.5 + 2)
    servable.close()


def test_tf_servings_half_plus_two_tflite_matches_its_own_test():
    """TF Serving's tflite_session_test BasicTest: signature x -> y, [1,1] float, and
    a batch of three given as a vector."""
    from edgeserve import messages

    servable = load(tfserving_testdata("saved_model_half_plus_two_tflite") / "00000123")
    expected = messages.SignatureDef(method_name=PREDICT)
    for infos, name in ((expected.inputs, "x"), (expected.outputs, "y")):
        infos[name].name = name
        infos[name].dtype = DataType.DT_FLOAT
        infos[name].tensor_shape.dim.add().size = 1
        infos[name].tensor_shape.dim.add().size = 1
    assert list(servable.signature_defs) == ["serving_default"]
    assert sigdef(servable, "serving_default") == expected
    result = servable.run("serving_default", {"x": np.array([1.0, 2.0, 3.0], dtype=np.float32)})
    np.testing.assert_array_equal(result["y"], [2.5, 3.0, 3.5])
    np.testing.assert_array_equal(servable.run("serving_default", {"x": column(2.0)})["y"], column(3.0))
    servable.close()


def test_tf_servings_model_with_stored_sigdef_repairs_legacy_names():
    """ModelFromLegacyConverterWithSigdef: the SignatureDef names "tflite_input:0", the
    TF1 converter named the tensor "tflite_input"; alias x keeps its shape [1,1]."""
    servable = load(tfserving_testdata("saved_model_half_plus_two_tflite_with_sigdef") / "00000123")
    assert list(servable.signatures) == ["serving_default"]
    spec = servable.signatures["serving_default"]
    assert spec.inputs == {"x": TensorSpec("tflite_input", DataType.DT_FLOAT, (1, 1))}
    assert spec.outputs == {"y": TensorSpec("y", DataType.DT_FLOAT, (1, 1))}
    message = sigdef(servable, "serving_default")
    assert message.inputs["x"].name == "tflite_input" and message.outputs["y"].name == "y"
    result = servable.run("serving_default", {"x": np.array([1.0, 2.0, 3.0], dtype=np.float32)})
    np.testing.assert_array_equal(result["y"], [2.5, 3.0, 3.5])
    servable.close()


def test_stored_signature_defs_win_over_litert_signatures(tflite_store, tmp_path):
    """SignatureDefs stored as TF Serving reads them (metadata) are served as written,
    method name included; the model's own LiteRT signature is then not served."""
    from edgeserve import messages

    converted = load(tflite_store / "half_plus_two")
    out_name = converted.signatures["serving_default"].outputs["y"].name
    converted.close()
    stored = messages.SignatureDef(method_name="tensorflow/serving/regress")
    stored.inputs["inputs"].name = "serving_default_x:0"
    stored.outputs["outputs"].name = out_name
    for info in (stored.inputs["inputs"], stored.outputs["outputs"]):
        info.dtype = DataType.DT_FLOAT
        info.tensor_shape.dim.add().size = -1
        info.tensor_shape.dim.add().size = 1
    content = (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes()
    folder = tflite_models.write(tmp_path / "stored", tflite_models.rewrite(
        content, signature_defs={"regress_x_to_y": stored.SerializeToString()}))
    servable = load(folder)
    assert list(servable.signatures) == ["regress_x_to_y"]
    assert servable.signatures["regress_x_to_y"].method_name == "tensorflow/serving/regress"
    assert servable.signatures["regress_x_to_y"].inputs["inputs"] == TensorSpec(
        "serving_default_x:0", DataType.DT_FLOAT, (-1, 1))
    assert sigdef(servable, "regress_x_to_y") == stored
    result = servable.run("regress_x_to_y", {"inputs": column(8.0)})
    np.testing.assert_array_equal(result["outputs"], column(6.0))
    servable.close()


def test_stored_signature_def_naming_an_unknown_tensor_fails_the_load(tflite_store, tmp_path):
    from edgeserve import messages

    stored = messages.SignatureDef(method_name=PREDICT)
    stored.inputs["x"].name = "no_such_tensor:0"
    content = (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes()
    folder = tflite_models.write(tmp_path / "bad_sigdef", tflite_models.rewrite(
        content, signature_defs={"serving_default": stored.SerializeToString()}))
    error = load_error(folder)
    assert error.code == StatusCode.INTERNAL
    assert "input x references an unknown tensor 'no_such_tensor:0'" in error.message
    assert "serving_default_x:0" in error.message  # what the model does have


def test_damaged_signature_defs_metadata_fails_the_load(tflite_store, tmp_path):
    content = (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes()
    folder = tflite_models.write(tmp_path / "bad_meta", tflite_models.rewrite(
        content, signature_defs={"serving_default": b"\xff\xff not a proto"}))
    error = load_error(folder)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message.startswith("Invalid SignatureDefs found in TfLite model")
    assert str(folder / TFLITE_FILENAME) in error.message


# The interpreter pool


def test_eight_threads_through_a_pool_of_two(tflite_store):
    servable = load(tflite_store / "half_plus_two", num_pools=2)
    assert servable.pool_size == 2
    wrong: list[str] = []
    start = threading.Barrier(8)

    def work(thread: int) -> None:
        start.wait()
        for i in range(50):
            rows = (thread + i) % 5 + 1  # every thread resizes as it goes
            x = column(*[thread * 1000 + i + r for r in range(rows)])
            y = servable.run("serving_default", {"x": x})["y"]
            if y.shape != x.shape or not np.array_equal(y, x * 0.5 + 2):
                wrong.append(f"thread {thread} run {i}: {x.ravel()} -> {y.ravel()}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert wrong == []
    assert servable._pool.qsize() == 2  # every interpreter came back
    servable.close()


def test_pool_size_is_pools_times_interpreters_per_pool(tflite_store):
    servable = load(tflite_store / "half_plus_two", num_pools=2, interpreters_per_pool=3)
    assert servable.pool_size == 6 and servable._pool.qsize() == 6
    servable.close()


def test_deadline_while_every_interpreter_is_busy(tflite_store):
    servable = load(tflite_store / "half_plus_two", num_pools=1)
    busy = servable._pool.get()  # the only interpreter, held as a long run would
    try:
        with pytest.raises(ServingError) as info:
            servable.run("serving_default", {"x": column(1.0)}, timeout_ms=50)
        assert info.value.code == StatusCode.DEADLINE_EXCEEDED
        assert "waiting for one of the model's 1 TFLite interpreters" in info.value.message
    finally:
        servable._pool.put(busy)
    np.testing.assert_array_equal(servable.run("serving_default", {"x": column(1.0)}, timeout_ms=50)["y"], column(2.5))
    servable.close()


def test_closed_servable_refuses_runs(tflite_store):
    servable = load(tflite_store / "half_plus_two")
    servable.close()
    with pytest.raises(ServingError) as info:
        servable.run("serving_default", {"x": column(1.0)})
    assert info.value.code == StatusCode.UNAVAILABLE


# Inputs the model refuses


def test_wrong_dtype_names_the_input_and_both_types(tflite_store):
    servable = load(tflite_store / "half_plus_two")
    with pytest.raises(ServingError) as info:
        servable.run("serving_default", {"x": np.array([[1.0]], dtype=np.float64)})
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Input 'x' of signature 'serving_default' expects float tensors but double is provided"
    integers = load(tflite_store / "integers")
    with pytest.raises(ServingError) as info:
        integers.run("serving_default", {"ids": np.array([1], np.int32), "counts": np.zeros((1, 2), np.int32)})
    assert info.value.message == "Input 'ids' of signature 'serving_default' expects int64 tensors but int32 is provided"
    servable.close()
    integers.close()


def test_shape_the_interpreter_refuses_then_it_still_serves(tflite_store):
    servable = load(tflite_store / "several")
    a = np.ones((2, 2), np.float32)
    with pytest.raises(ServingError) as info:  # [2,3] + [2,2] cannot broadcast
        servable.run("add", {"a": np.ones((2, 3), np.float32), "b": a})
    error = info.value
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert "Signature 'add': input 'a' has shape [2,3] but the signature expects [-1,2] (-1: any size). " in error.message
    assert "input 'b'" not in error.message  # b's shape is fine
    assert "The TFLite interpreter refused them:" in error.message
    np.testing.assert_array_equal(servable.run("add", {"a": a, "b": a})["sum"], a + a)
    servable.close()


def test_missing_and_unknown_inputs_and_outputs(tflite_store):
    servable = load(tflite_store / "integers")
    with pytest.raises(ServingError) as info:
        servable.run("serving_default", {"ids": np.array([1], np.int64), "extra": np.array([1], np.int64)})
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == (
        "Signature 'serving_default' takes inputs {counts,ids}; missing: {counts}, unknown: {extra}"
    )
    ok = {"ids": np.array([1], np.int64), "counts": np.zeros((1, 2), np.int32)}
    with pytest.raises(ServingError) as info:
        servable.run("serving_default", ok, output_filter=["nope"])
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert "output tensor alias not found in signature: nope" in info.value.message
    servable.close()


def test_unknown_signature(tflite_store):
    servable = load(tflite_store / "several")
    with pytest.raises(ServingError) as info:
        servable.run("serving_default", {"x": np.ones(1, np.float32)})
    assert info.value.code == StatusCode.FAILED_PRECONDITION
    assert info.value.message == 'Serving signature key "serving_default" not found. The model has: add, scale'
    servable.close()


# Files that are not a servable model


def test_missing_model_file(tmp_path):
    assert not has_tflite_model(str(tmp_path))
    error = load_error(tmp_path)
    assert error.code == StatusCode.NOT_FOUND
    assert error.message == f"TFLite model not found: {tmp_path / TFLITE_FILENAME} does not exist"


def test_empty_file(tmp_path):
    tflite_models.write(tmp_path, b"")
    assert has_tflite_model(str(tmp_path))
    error = load_error(tmp_path)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message == f"Invalid TFLite model {tmp_path / TFLITE_FILENAME}: the file is empty"


def test_random_bytes(tmp_path):
    tflite_models.write(tmp_path, np.random.default_rng(7).bytes(4096))
    error = load_error(tmp_path)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message == (
        f"Invalid TFLite model {tmp_path / TFLITE_FILENAME}: it is not a TFLite flatbuffer "
        "(4096 bytes, no TFL3 identifier)"
    )


def test_truncated_copy_of_a_good_model(tflite_store, tmp_path):
    content = (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes()
    tflite_models.write(tmp_path, content[: len(content) // 2])
    error = load_error(tmp_path)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message == (
        f"Invalid TFLite model {tmp_path / TFLITE_FILENAME}: it has TFLite's identifier but does not "
        f"verify ({len(content) // 2} bytes): the file is truncated or damaged"
    )


def test_model_file_that_is_a_folder(tmp_path):
    (tmp_path / TFLITE_FILENAME).mkdir()
    assert not has_tflite_model(str(tmp_path))
    error = load_error(tmp_path)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert str(tmp_path / TFLITE_FILENAME) in error.message


def test_flex_op_fails_the_load_naming_the_op(tflite_store):
    error = load_error(tflite_store / "flex")
    assert error.code == StatusCode.INTERNAL
    assert error.message.startswith(f"Failed to load TFLite model {tflite_store / 'flex' / TFLITE_FILENAME}: op Flex")
    assert "StringLength is not supported by the LiteRT runtime" in error.message


def test_tf_servings_parse_example_model_needs_an_op_litert_lacks():
    """TF Serving links its ParseExample kernel into TFLite; ai-edge-litert has none."""
    folder = tfserving_testdata("parse_example_tflite") / "00000123"
    error = load_error(folder)
    assert error.code == StatusCode.INTERNAL
    assert error.message.startswith(
        f"Failed to load TFLite model {folder / TFLITE_FILENAME}: op ParseExampleV2 is not supported "
        "by the LiteRT runtime (ai-edge-litert "
    )
    assert "Encountered unresolved custom op: ParseExampleV2." in error.message


# Batching parameters travel with the servable


def test_per_model_batching_parameters(tflite_store, tmp_path):
    from edgeserve.batch_options import BatchOptions

    folder = tflite_models.write(tmp_path / "v1", (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes())
    (folder / "batching_params.pbtxt").write_text("max_batch_size { value: 8 }\nnum_batch_threads { value: 2 }\n")
    server_wide = BatchOptions(max_batch_size=64, max_execution_batch_size=64)
    servable = load(folder, batching=server_wide, per_model_batching=True)
    assert servable.batch_options.max_batch_size == 8 and servable.batch_options.num_batch_threads == 2
    servable.close()
    assert load(folder, batching=server_wide).batch_options == server_wide
    (folder / "batching_params.pbtxt").write_text("max_batch_size { value: 0 }\n")
    error = load_error(folder, batching=server_wide, per_model_batching=True)
    assert error.code == StatusCode.INVALID_ARGUMENT and "max_batch_size must be positive" in error.message


def test_warmup_records_are_replayed_before_the_load_returns(tflite_store, tmp_path):
    """A damaged warmup file fails the load with TF Serving's warmup status; without
    warmup the same folder loads."""
    folder = tflite_models.write(tmp_path / "v1", (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes())
    (folder / "assets.extra").mkdir()
    (folder / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"not a tfrecord file at all")
    error = load_error(folder)
    assert error.code == StatusCode.DATA_LOSS
    assert "Please verify your warmup data is in TFRecord format." in error.message
    load(folder, warmup=False).close()


def test_warmup_predict_records_run_through_the_interpreters(tflite_store, tmp_path):
    import tensorflow as tf

    from edgeserve import messages

    def write_warmup(folder, alias):
        record = messages.PredictionLog()
        request = record.predict_log.request
        request.model_spec.name = "half_plus_two"
        # Across as bytes: edgeserve's message classes are not TensorFlow's.
        tensor = tf.make_tensor_proto(np.ones((3, 1), np.float32)).SerializeToString()
        request.inputs[alias].MergeFromString(tensor)
        os.makedirs(folder / "assets.extra", exist_ok=True)
        with tf.io.TFRecordWriter(str(folder / "assets.extra" / "tf_serving_warmup_requests")) as writer:
            writer.write(record.SerializeToString())

    folder = tflite_models.write(tmp_path / "v1", (tflite_store / "half_plus_two" / TFLITE_FILENAME).read_bytes())
    write_warmup(folder, "x")
    load(folder, warmup_iterations=3).close()
    write_warmup(folder, "not_x")
    error = load_error(folder)
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert "not_x" in error.message


# No TensorFlow


def _tensorflow_modules(code: str) -> list[str]:
    script = code + "\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith('tensorflow')))\n"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr
    return eval(done.stdout.strip().splitlines()[-1])


def test_importing_the_runtime_and_litert_imports_no_tensorflow():
    assert _tensorflow_modules("import edgeserve.runtimes.tflite\nimport ai_edge_litert.interpreter") == []


def test_loading_and_running_a_model_imports_no_tensorflow(tflite_store):
    """Needs edgeserve.messages without TensorFlow: the signature_defs are its messages."""
    code = (
        "import numpy as np\n"
        "from edgeserve.runtimes.tflite import TfLiteLoader\n"
        f"s = TfLiteLoader({str(tflite_store / 'half_plus_two')!r}).load()\n"
        "assert s.run('serving_default', {'x': np.ones((2, 1), np.float32)})['y'].tolist() == [[2.5], [2.5]]\n"
    )
    assert _tensorflow_modules(code) == []
