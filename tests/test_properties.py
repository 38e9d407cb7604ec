"""Property tests (hypothesis) on the pure parsing and encoding functions.

They complement the per-module tests (which hold TF Serving's exact texts) and the
coverage-guided fuzzers (tests/fuzz, tests/test_fuzz.py): generated values of every
kind go through the round trips, and generated documents through the fuzz targets' own
`check`, so what the fuzzers assert holds for structured inputs they rarely reach.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeserve import batch_options, metrics, tensor_proto, tensors
from edgeserve.batch_options import BatchOptions
from edgeserve.dtypes import DataType, to_numpy
from edgeserve.errors import ServingError, StatusCode
from edgeserve.messages import TensorProto
from edgeserve.servable import PREDICT_METHOD_NAME, SignatureSpec, TensorSpec

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))
import fuzz_common  # noqa: E402

fuzz_target = fuzz_common.load
DT = DataType
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ---- TensorProto <-> numpy ------------------------------------------------------------

_PROTO_DTYPES = [t for t in DT if t < 100 and to_numpy(t) is not None]


@st.composite
def arrays(draw, dtypes=_PROTO_DTYPES, min_dims=0):
    dtype = draw(st.sampled_from(dtypes))
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=0, max_side=5))
    numpy_dtype = to_numpy(dtype)
    n = int(np.prod(shape))
    if dtype == DT.DT_STRING:
        array = np.empty(n, object)
        array[:] = draw(st.lists(st.binary(max_size=12), min_size=n, max_size=n))
        return dtype, array.reshape(shape)
    if numpy_dtype.kind == "V":  # bfloat16: any 16-bit pattern
        return dtype, draw(hnp.arrays(np.uint16, shape)).view(numpy_dtype)
    return dtype, draw(hnp.arrays(numpy_dtype, shape))


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    if a.dtype == np.bool_:
        return bool(np.array_equal(a, b))
    return a.tobytes() == b.tobytes()


@settings(max_examples=300, **SETTINGS)
@given(arrays(), st.booleans())
def test_tensor_proto_round_trip_keeps_every_bit(dtype_array, as_content):
    dtype, array = dtype_array
    message = TensorProto()
    tensor_proto.from_ndarray(array, dtype, message, as_content=as_content)
    back = tensor_proto.to_ndarray(TensorProto.FromString(message.SerializeToString()), "x")
    if not as_content and array.dtype.kind in "fc" and array.size <= 48:
        # A float_val of <= 48 values passes through Python floats: a signalling NaN
        # arrives quieted (documented in tensor_proto); every other bit is kept.
        with np.errstate(invalid="ignore"):
            assert np.array_equal(back, array, equal_nan=True) and back.dtype == array.dtype
        return
    assert same_bits(back, array)


_dims = st.one_of(st.integers(-3, 9), st.sampled_from([2**31, 2**40, 2**62, 2**63 - 1, -(2**63)]))


@st.composite
def tensor_protos(draw):
    message = TensorProto(dtype=draw(st.one_of(st.sampled_from([int(t) for t in DT]), st.integers(-5, 300))))
    message.tensor_shape.SetInParent()
    for size in draw(st.lists(_dims, max_size=6)):
        message.tensor_shape.dim.add(size=size)
    if draw(st.booleans()):
        message.tensor_content = draw(st.binary(max_size=64))
    field = draw(st.sampled_from(["float_val", "double_val", "int_val", "int64_val", "bool_val",
                                  "string_val", "half_val", "scomplex_val", "uint64_val"]))
    values = {
        "float_val": st.floats(width=32), "double_val": st.floats(), "int_val": st.integers(-(2**31), 2**31 - 1),
        "int64_val": st.integers(-(2**63), 2**63 - 1), "bool_val": st.booleans(), "string_val": st.binary(max_size=5),
        "half_val": st.integers(-(2**31), 2**31 - 1), "scomplex_val": st.floats(width=32),
        "uint64_val": st.integers(0, 2**64 - 1),
    }[field]
    getattr(message, field).extend(draw(st.lists(values, max_size=10)))
    return message


@pytest.fixture(scope="module")
def tensor_proto_check():
    # Imported before the test runs: it imports TensorFlow, which raises the recursion
    # limit, and hypothesis would warn about that happening inside a test.
    return fuzz_target("tensor_proto").check


@settings(max_examples=200, **SETTINGS)
@given(message=tensor_protos())
def test_any_tensor_proto_is_an_array_or_invalid_argument(tensor_proto_check, message):
    # The fuzz target's check: shape and dtype as the proto says, within the size cap,
    # the same as TF's own reading, or INVALID_ARGUMENT; never another exception.
    tensor_proto_check(message.SerializeToString())


# ---- REST JSON <-> numpy -----------------------------------------------------------

_JSON_DTYPES = [DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_INT32, DT.DT_INT64, DT.DT_UINT8, DT.DT_UINT64,
                DT.DT_BOOL, DT.DT_STRING, DT.DT_HALF, DT.DT_BFLOAT16]


@settings(max_examples=150, **SETTINGS)
@given(st.data())
def test_several_outputs_written_then_read_back_are_the_same(data):
    fmt = data.draw(st.sampled_from([tensors.ROW, tensors.COLUMNAR]))
    batch = data.draw(st.integers(1, 3))
    names = data.draw(st.lists(st.sampled_from(["a", "b_bytes", "c", "d"]), min_size=1, max_size=4, unique=True))
    outputs, specs = {}, {}
    for name in names:
        dtype = DT.DT_STRING if name.endswith("_bytes") else data.draw(
            st.sampled_from([t for t in _JSON_DTYPES if t != DT.DT_STRING]))
        inner = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
        if fmt == tensors.ROW:
            inner = (batch, *inner)
        numpy_dtype = to_numpy(dtype)
        if dtype == DT.DT_STRING:
            n = int(np.prod(inner))
            array = np.empty(n, object)
            array[:] = data.draw(st.lists(st.binary(max_size=6), min_size=n, max_size=n))
            array = array.reshape(inner)
        elif numpy_dtype.kind == "V":
            array = data.draw(hnp.arrays(np.uint16, inner)).view(numpy_dtype)
        else:
            array = data.draw(hnp.arrays(numpy_dtype, inner))
        outputs[name] = array
        specs[name] = TensorSpec(f"{name}:0", dtype, None)
    signature = SignatureSpec(PREDICT_METHOD_NAME, specs, specs)
    written = tensors.encode_predict_response(outputs, fmt, signature)
    document = json.loads(written)
    key = "predictions" if fmt == tensors.ROW else "outputs"
    request = json.dumps({"instances" if fmt == tensors.ROW else "inputs": document[key]}).encode()
    back = tensors.decode_inputs(tensors.parse_predict_request(request), signature)
    assert back.keys() == outputs.keys()
    for name, array in outputs.items():
        got = back[name]
        assert got.dtype == array.dtype and got.shape == array.shape, (name, got, array)
        if array.dtype == object:
            assert got.tolist() == array.tolist()
            continue
        expected = array.astype(np.float64) if array.dtype.kind in "fV" else array
        actual = got.astype(np.float64) if got.dtype.kind in "fV" else got
        if specs[name].dtype == DT.DT_DOUBLE:  # rapidjson's strtod, as TF Serving reads it
            np.testing.assert_allclose(actual, expected, rtol=1e-15, atol=0)
        else:
            np.testing.assert_array_equal(actual, expected)


json_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**65), 2**65), st.floats(), st.text(max_size=6),
    st.builds(lambda raw: {"b64": raw}, st.sampled_from(["", "AA==", "aGk", "!!", "YQ ==", "x"])),
)
json_documents = st.recursive(
    json_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.sampled_from(["instances", "inputs", "examples", "context", "signature_name",
                                         "x", "x_bytes", "a", "b", "s_bytes", "f", "b64"]), children, max_size=4),
    ),
    max_leaves=25,
)
request_bodies = st.one_of(
    st.builds(lambda key, value: {key: value}, st.sampled_from(["instances", "inputs", "examples"]), json_documents),
    json_documents,
)


@settings(max_examples=400, **SETTINGS)
@given(request_bodies, st.booleans())
def test_any_json_body_gives_tensors_or_a_4xx(document, python_json):
    # The fuzz target's check against every signature it knows, and classify/regress:
    # arrays of the signature's dtypes (which write and read back the same), or
    # INVALID_ARGUMENT (UNIMPLEMENTED for complex inputs) with an {"error"} body.
    body = json.dumps(document) if python_json else json.dumps(document, allow_nan=True, separators=(",", ":"))
    fuzz_target("rest_json").check(body.encode())


# ---- the text-proto config parsers -------------------------------------------------------

_int64 = st.one_of(st.integers(-3, 70), st.integers(-(2**63), 2**63 - 1))


@settings(max_examples=300, **SETTINGS)
@given(
    fields=st.fixed_dictionaries({}, optional={
        "max_batch_size": _int64, "batch_timeout_micros": _int64, "max_enqueued_batches": _int64,
        "num_batch_threads": _int64, "max_execution_batch_size": _int64,
        "enable_large_batch_splitting": st.booleans(), "thread_pool_name": st.text(max_size=5),
    }),
    sizes=st.lists(st.integers(-2, 70), max_size=4),
    pad=st.booleans(),
)
def test_batching_parameters_round_trip_or_the_rule_they_break(fields, sizes, pad):
    from edgeserve.protos.batching_parameters_pb2 import BatchingParameters

    message = BatchingParameters(allowed_batch_sizes=sizes, pad_variable_length_inputs=pad)
    for name, value in fields.items():
        getattr(message, name).value = value
    text = text_format.MessageToString(message)
    max_batch = fields.get("max_batch_size", 1000)
    splitting = fields.get("enable_large_batch_splitting", False)
    execution = fields.get("max_execution_batch_size", max_batch) if splitting else max_batch
    limit = execution if splitting else max_batch
    valid = (
        all(fields.get(n, 1) >= 1 for n in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"))
        and execution >= 1 and fields.get("batch_timeout_micros", 0) >= 0
        and (not sizes or (sizes[0] >= 1 and all(a < b for a, b in zip(sizes, sizes[1:])) and sizes[-1] == limit))
        and not (splitting and execution > max_batch)
    )
    try:
        options = batch_options.parse(text, "generated")
    except ServingError as exc:
        assert not valid, exc
        assert exc.code == StatusCode.INVALID_ARGUMENT and exc.message.startswith("Invalid batching parameters in generated: ")
        return
    assert valid, text
    assert isinstance(options, BatchOptions)
    assert (options.max_batch_size, options.allowed_batch_sizes, options.pad_variable_length_inputs,
            options.batch_limit) == (max_batch, tuple(sizes), pad, limit)
    for name in ("batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"):
        if name in fields:
            assert getattr(options, name) == fields[name]


@settings(max_examples=100, **SETTINGS)
@given(enable=st.booleans(), path=st.one_of(st.none(), st.text(max_size=8)), windows=st.booleans())
def test_monitoring_config_round_trip(tmp_path, enable, path, windows):
    from edgeserve.protos.monitoring_config_pb2 import MonitoringConfig

    message = MonitoringConfig()
    message.prometheus_config.enable = enable
    if path is not None:
        message.prometheus_config.path = path
    text = text_format.MessageToString(message)
    if windows:
        text = text.replace("\n", "\r\n")
    file = tmp_path / "monitoring.config"
    file.write_bytes(text.encode())
    try:
        page = metrics.read_config(str(file))
    except ValueError as exc:
        assert enable and path and not path.startswith("/"), exc
        return
    assert page == ((path or metrics.DEFAULT_PATH) if enable else None)


_TOKENS = [
    "model_config_list", "config", "{", "}", "<", ">", ":", ",", ";", "name", "base_path", '"/a"', '"a"', '"b"',
    "model_platform", '"tensorflow"', '"tflite"', '"t\\nf"', "model_type", "TENSORFLOW", "OTHER", "1", "7",
    "99999999999", "-0x80000001", "model_version_policy", "latest", "num_versions", "all", "specific",
    "versions", "version_labels", "key", "value", "custom_model_config", "logging_config", "#", "\n", "\r",
    "[", "]", "'x'", '"\\377"', "1e9", "-1",
]


@settings(max_examples=400, **SETTINGS)
@given(st.lists(st.sampled_from(_TOKENS), max_size=40).map(" ".join))
def test_model_config_token_soup_is_a_whole_config_or_a_located_error(text):
    # The fuzz target's check: a ServerConfig with every model as written, or a one-line
    # ConfigError ("<file>:<line>:<column>: ..." for syntax), the same with or without a
    # config in force.
    fuzz_target("model_config").check(text.encode())


# ---- a refused reload changes nothing ---------------------------------------------------


class _Servable:
    signatures = {}
    signature_defs = {}

    def run(self, *args, **kwargs):  # pragma: no cover - never called
        raise AssertionError

    def close(self) -> None:
        pass


class _Loader:
    def estimate_bytes(self) -> int:
        return 0

    def load(self) -> _Servable:
        return _Servable()


# Mostly valid (so that reloads get applied too), some of every way to be refused.
_entry = st.fixed_dictionaries({
    "name": st.sampled_from(["a", "b", "c", "a", "b", "c", ""]),
    "base": st.sampled_from(["", "", "", "", "a", "missing", "relative"]),  # "": the model's own folder
    "platform": st.sampled_from(["tensorflow"] * 6 + ["tflite", "", "other"]),
    "labels": st.one_of(st.just({}), st.just({}), st.dictionaries(
        st.sampled_from(["stable", "canary"]), st.sampled_from([1, 1, 2]), max_size=2)),
})
_config_texts = st.one_of(
    st.lists(_entry, max_size=3),
    st.lists(_entry, max_size=3, unique_by=lambda e: e["name"]),
    st.lists(_entry, max_size=3, unique_by=lambda e: e["name"]),
    st.sampled_from(["", "improperly formatted file", "model_config_list {", "custom_model_config {}",
                     'model_config_list { config { name: "a" model_type: 77777777777777777777 } }']),
)


def _text(value, root: str) -> str:
    if isinstance(value, str):
        return value
    parts = []
    for e in value:
        base = "relative/path" if e["base"] == "relative" else f"{root}/{e['base'] or e['name']}"
        platform = f' model_platform: "{e["platform"]}"' if e["platform"] else ""
        labels = "".join(f' version_labels {{ key: "{k}" value: {v} }}' for k, v in e["labels"].items())
        parts.append(f'config {{ name: "{e["name"]}" base_path: "{base}"{platform}{labels} }}')
    return "model_config_list { " + " ".join(parts) + " }"


def _model(name: str, **labels: int) -> dict:
    return {"name": name, "base": "", "platform": "tensorflow", "labels": labels}


@settings(max_examples=40, **SETTINGS)
@given(st.lists(_config_texts, min_size=1, max_size=6))
@example([
    [_model("a", stable=1), _model("b")],  # applied: a label on a version that serves
    [_model("a", stable=1, canary=2), _model("c")],  # refused: version 2 is not there; c stays out
    [_model("b", stable=1)],  # applied: a goes, b gets the label
    "improperly formatted file",
])
def test_a_refused_config_reload_changes_nothing(tmp_path_factory, texts):
    # ServerCore.reload_config_file (a poll or SIGHUP): a config is applied whole or not
    # at all. Refused: the config in force, the models' sources and their labels stay as
    # they were. Applied: they are the new config's.
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from edgeserve.config import ConfigError, parse_config_text
    from edgeserve.core import ServerCore
    from edgeserve.manager import Manager

    root = tmp_path_factory.mktemp("models")
    for name in ("a", "b", "c"):
        (root / name / "1").mkdir(parents=True)
    config_file = root / "models.config"
    first = (f'model_config_list {{ config {{ name: "a" base_path: "{root}/a" model_platform: "tensorflow" }} '
             f'config {{ name: "b" base_path: "{root}/b" model_platform: "tensorflow" }} }}')
    config_file.write_text(first)

    def state(core, manager):
        sources = {name: (s.base_path, s.policy) for name, s in core._sources.items()}
        labels = {name: {label: manager.label_version(name, label) for label in ("stable", "canary")}
                  for name in manager.model_names()}
        return core.config, sources, labels

    async def scenario():
        executor = ThreadPoolExecutor(2)
        manager = Manager(lambda name, aspired: _Loader(), load_executor=executor, unload_executor=executor)
        core = ServerCore(manager, file_system_poll_wait_seconds=0, model_config_file=str(config_file))
        try:
            _, config = await core.read_config_file()
            await core.load_initial_config(config, first)
            for value in texts:
                text = _text(value, str(root))
                config_file.write_text(text)
                before = state(core, manager)
                try:
                    expected = parse_config_text(text, str(config_file), previous=core.config)
                except ConfigError:
                    expected = None
                applied = await core.reload_config_file()
                after = state(core, manager)
                if not applied:
                    assert after == before, text
                    continue
                assert expected is not None and core.config == expected, text
                assert after[1] == {m.name: (m.base_path, m.version_policy) for m in expected.models}, text
                for m in expected.models:
                    wanted = dict(m.version_labels)
                    assert after[2][m.name] == {k: wanted.get(k) for k in ("stable", "canary")}, text
        finally:
            await core.stop()
            await manager.stop()
            executor.shutdown(wait=False)

    asyncio.run(scenario())
