"""TensorProto ⇄ numpy on the gRPC path (edgeserve.tensor_proto).

The oracles are TensorFlow's own code, not edgeserve's output:
- reading: `tf.io.parse_tensor`, whose kernel is `Tensor::FromProto` (what TF Serving
  calls on every Predict input), and `tf.make_ndarray` on `tf.make_tensor_proto` protos;
- writing: `tf.io.serialize_tensor`, which is `Tensor::AsProtoField` for strings and
  `AsProtoTensorContent` otherwise, and a field-by-field AsProtoField built here the
  plain way (the packing tricks must give the same bytes).
"""
from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = pytest.importorskip("tensorflow")
ml_dtypes = pytest.importorskip("ml_dtypes")

from edgeserve import tensor_proto  # noqa: E402
from edgeserve.dtypes import DataType, from_numpy  # noqa: E402
from edgeserve.errors import ServingError, StatusCode  # noqa: E402
from edgeserve.messages import TensorProto  # noqa: E402
from edgeserve.tensor_proto import from_ndarray, to_ndarray  # noqa: E402

DT = DataType
BF16 = np.dtype(ml_dtypes.bfloat16)

# DataType -> (numpy dtype, TF dtype, typed field)
DTYPES = {
    DT.DT_FLOAT: (np.dtype(np.float32), tf.float32, "float_val"),
    DT.DT_DOUBLE: (np.dtype(np.float64), tf.float64, "double_val"),
    DT.DT_INT32: (np.dtype(np.int32), tf.int32, "int_val"),
    DT.DT_UINT8: (np.dtype(np.uint8), tf.uint8, "int_val"),
    DT.DT_INT16: (np.dtype(np.int16), tf.int16, "int_val"),
    DT.DT_INT8: (np.dtype(np.int8), tf.int8, "int_val"),
    DT.DT_UINT16: (np.dtype(np.uint16), tf.uint16, "int_val"),
    DT.DT_INT64: (np.dtype(np.int64), tf.int64, "int64_val"),
    DT.DT_UINT32: (np.dtype(np.uint32), tf.uint32, "uint32_val"),
    DT.DT_UINT64: (np.dtype(np.uint64), tf.uint64, "uint64_val"),
    DT.DT_BOOL: (np.dtype(np.bool_), tf.bool, "bool_val"),
    DT.DT_STRING: (np.dtype(object), tf.string, "string_val"),
    DT.DT_COMPLEX64: (np.dtype(np.complex64), tf.complex64, "scomplex_val"),
    DT.DT_COMPLEX128: (np.dtype(np.complex128), tf.complex128, "dcomplex_val"),
    DT.DT_HALF: (np.dtype(np.float16), tf.float16, "half_val"),
    DT.DT_BFLOAT16: (BF16, tf.bfloat16, "half_val"),
}
SHAPES = [(), (0,), (1,), (3,), (2, 3), (1, 0, 2), (7, 1), (1000,), (2, 2, 2, 2)]
PARSE_ERROR = "tensor parsing error: x"


def sample(dtype: DataType, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values that exercise every byte: extremes, negatives, NaN, NUL bytes."""
    rng = np.random.default_rng(seed)
    np_dtype = DTYPES[dtype][0]
    n = int(np.prod(shape))
    if dtype == DT.DT_STRING:
        pool = [b"", b"a", b"\x00", b"a\x00b\x00", bytes(range(256)), "é".encode()]
        return np.array([pool[i % len(pool)] for i in range(n)] or [], dtype=object).reshape(shape)
    if np_dtype.kind == "b":
        return (rng.integers(0, 2, n) == 1).reshape(shape)
    if np_dtype.kind in "iu":
        info = np.iinfo(np_dtype)
        values = rng.integers(info.min, info.max, n, dtype=np_dtype, endpoint=True)
        values[: min(n, 3)] = [info.min, info.max, 0][: min(n, 3)]
        return values.reshape(shape)
    if np_dtype.kind == "c":
        real = rng.normal(size=n) * 1e3
        imag = rng.normal(size=n)
        values = (real + 1j * imag).astype(np_dtype)
        if n:
            values[0] = complex(np.inf, np.nan)
        return values.reshape(shape)
    values = (rng.normal(size=n) * 100).astype(np_dtype)
    specials = [np.nan, -np.inf, np.inf, -0.0, 65504.0]
    values[: min(n, 5)] = np.array(specials[: min(n, 5)]).astype(np_dtype)
    return values.reshape(shape)


def same(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Equal dtype, shape and values, bit for bit (any NaN equal to any NaN)."""
    expected = np.asarray(expected)
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if actual.dtype == object:
        return actual.tolist() == expected.tolist()
    if actual.dtype.kind == "c":
        return same(actual.real, expected.real) and same(actual.imag, expected.imag)
    if actual.dtype.kind == "f" or actual.dtype == BF16:
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[actual.dtype.itemsize]
        with np.errstate(invalid="ignore"):  # casting a signalling NaN
            nan = np.isnan(actual.astype(np.float64)) & np.isnan(expected.astype(np.float64))
        return bool(np.all((actual.view(bits) == expected.view(bits)) | nan))
    return bool(np.array_equal(actual, expected))


def full(shape: tuple[int, ...], value, dtype: np.dtype) -> np.ndarray:
    """np.full without its trip through numpy "S" (which drops a string's trailing NULs)."""
    array = np.empty(shape, dtype)
    array.fill(value)
    return array


def tf_from_proto(proto: TensorProto) -> np.ndarray | None:
    """What TensorFlow's Tensor::FromProto makes of `proto` (None: it refuses it)."""
    out_type = DTYPES[DataType(proto.dtype)][1] if proto.dtype in set(DTYPES) else tf.float32
    try:
        value = tf.io.parse_tensor(proto.SerializeToString(), out_type)
    except tf.errors.InvalidArgumentError:
        return None
    array = value.numpy()
    if out_type == tf.string:
        array = np.array(array, dtype=object)
    return array


def parse_error(proto: TensorProto, alias: str = "x") -> ServingError:
    with pytest.raises(ServingError) as info:
        to_ndarray(proto, alias)
    error = info.value
    assert error.code == StatusCode.INVALID_ARGUMENT
    assert error.message == f"tensor parsing error: {alias}"
    return error


def proto(dtype: int, dims: list[int] | None = None, **fields) -> TensorProto:
    message = TensorProto(dtype=dtype, **fields)
    message.tensor_shape.SetInParent()
    for size in dims or []:
        message.tensor_shape.dim.add(size=size)
    return message


def as_field_proto(array: np.ndarray, dtype: DataType) -> TensorProto:
    """Tensor::AsProtoField written the plain way: every element appended to its field."""
    message = proto(int(dtype), list(array.shape))
    field = getattr(message, DTYPES[dtype][2])
    flat = array.ravel()
    if dtype == DT.DT_STRING:
        field.extend(flat.tolist())
    elif dtype in (DT.DT_HALF, DT.DT_BFLOAT16):
        field.extend(flat.view(np.uint16).tolist())
    elif dtype in (DT.DT_COMPLEX64, DT.DT_COMPLEX128):
        field.extend(flat.view(flat.real.dtype).tolist())
    else:
        field.extend(flat.tolist())
    return message


# ------------------------------------------------------------------ round trips, oracles


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_round_trip(dtype, shape):
    array = sample(dtype, shape)
    message = TensorProto()
    from_ndarray(array, dtype, message)
    assert message.dtype == dtype
    assert tuple(d.size for d in message.tensor_shape.dim) == shape
    result = to_ndarray(message, "x")
    assert same(result, array)
    if dtype == DT.DT_STRING:
        assert all(type(item) is bytes for item in result.ravel())
    # And TF reads what we wrote as the same tensor.
    assert same(tf_from_proto(message), array)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_from_ndarray_is_as_proto_field_byte_for_byte(dtype, shape):
    array = sample(dtype, shape, seed=1)
    message = TensorProto()
    from_ndarray(array, dtype, message)
    assert not message.tensor_content
    assert message.SerializeToString() == as_field_proto(array, dtype).SerializeToString()


@pytest.mark.parametrize(
    "values",
    [
        np.array(b"a\x00b", dtype=object),
        np.array([[b"x", b""], [b"yy", b"\x00"]], dtype=object),
        np.array([], dtype=object),
        np.zeros((0, 3), dtype=object),
        np.array([b"long" * 100] * 50, dtype=object),
    ],
    ids=["scalar", "2x2", "empty", "0x3", "50-long"],
)
def test_strings_are_written_as_tf_writes_them(values):
    # SerializeTensor uses AsProtoField for DT_STRING: the real C++ encoder.
    expected = tf.io.serialize_tensor(tf.constant(values, dtype=tf.string)).numpy()
    message = TensorProto()
    from_ndarray(values, DT.DT_STRING, message)
    assert message.SerializeToString() == expected


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [d for d in DTYPES if d != DT.DT_STRING], ids=lambda d: d.name)
def test_reads_tensor_content_as_tf_writes_it(dtype, shape):
    # SerializeTensor uses AsProtoTensorContent for every other dtype.
    array = sample(dtype, shape, seed=2)
    message = TensorProto.FromString(tf.io.serialize_tensor(tf.constant(array, DTYPES[dtype][1])).numpy())
    assert message.tensor_content or array.size == 0
    assert same(to_ndarray(message, "x"), array)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_matches_make_ndarray(dtype, shape):
    array = sample(dtype, shape, seed=3)
    message = TensorProto.FromString(
        tf.make_tensor_proto(array, dtype=DTYPES[dtype][1], shape=shape).SerializeToString()
    )
    ours = to_ndarray(message, "x")
    assert same(ours, array)
    theirs = tf.make_ndarray(message)
    if dtype == DT.DT_STRING:
        theirs = theirs.astype(object)
    assert same(ours, theirs.reshape(shape))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_make_tensor_proto_broadcast_scalar_repeats_it(dtype):
    # make_tensor_proto(value, shape=...) sends the one value; the reader repeats it.
    value = sample(dtype, (1,), seed=4)[0]
    if dtype == DT.DT_STRING:
        value = b"a\x00"
    made = tf.make_tensor_proto(value, dtype=DTYPES[dtype][1], shape=[2, 3])
    message = TensorProto.FromString(made.SerializeToString())
    expected = full((2, 3), value, DTYPES[dtype][0])
    assert same(to_ndarray(message, "x"), expected)
    assert same(tf_from_proto(message), expected)


# ------------------------------------------------------------------ FromProto's rules


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_fewer_values_repeat_the_last_and_none_give_zeros(dtype):
    array = sample(dtype, (5,), seed=5)
    short = as_field_proto(array[:2], dtype)
    short.tensor_shape.dim[0].size = 5
    expected = np.concatenate([array[:2], np.repeat(array[1:2], 3)])
    assert same(to_ndarray(short, "x"), expected)
    assert same(tf_from_proto(short), expected)

    empty = proto(int(dtype), [2, 2])
    zeros = full((2, 2), b"" if dtype == DT.DT_STRING else 0, DTYPES[dtype][0])
    assert same(to_ndarray(empty, "x"), zeros)
    assert same(tf_from_proto(empty), zeros)


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_more_values_than_elements_are_ignored_as_tf_does(dtype):
    # Tensor::FromProto copies the first N values and ignores the rest (checked against
    # tf.io.parse_tensor below); TF Serving therefore accepts such a request.
    array = sample(dtype, (6,), seed=6)
    message = as_field_proto(array, dtype)
    message.tensor_shape.dim[0].size = 4
    assert same(to_ndarray(message, "x"), array[:4])
    assert same(tf_from_proto(message), array[:4])


def test_values_repeat_over_a_many_long_tensor():
    message = proto(DT.DT_FLOAT, [100, 100], float_val=[1.0, 2.0, 3.5])
    result = to_ndarray(message, "x")
    assert result.shape == (100, 100)
    assert result.ravel()[:3].tolist() == [1.0, 2.0, 3.5]
    assert (result.ravel()[2:] == 3.5).all()
    assert same(result, tf_from_proto(message))


def test_complex_pairs_ignore_an_odd_last_number():
    message = proto(DT.DT_COMPLEX64, [3], scomplex_val=[1, 2, 3, 4, 5])
    expected = np.array([1 + 2j, 3 + 4j, 3 + 4j], np.complex64)
    assert same(to_ndarray(message, "x"), expected)
    assert same(tf_from_proto(message), expected)
    message = proto(DT.DT_COMPLEX128, [2], dcomplex_val=[7])  # no whole pair: zeros
    assert same(to_ndarray(message, "x"), np.zeros(2, np.complex128))
    assert same(tf_from_proto(message), np.zeros(2, np.complex128))


@pytest.mark.parametrize(
    "dtype, values",
    [
        (DT.DT_UINT8, [300, -1, 5, 256]),
        (DT.DT_INT8, [200, -129, 127, -128]),
        (DT.DT_INT16, [40000, -40000, 1, 2]),
        (DT.DT_UINT16, [70000, -1, 65535, 0]),
        (DT.DT_HALF, [0x3C00, 0x13C00, -1, 0x7C00]),
        (DT.DT_BFLOAT16, [0x3F80, 0x13F80, -1, 0xFF80]),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
@pytest.mark.parametrize("copies", [1, 20], ids=["short", "long"])  # fromiter / __array__ paths
def test_narrow_fields_are_cut_as_a_c_cast(dtype, values, copies):
    field = "half_val" if dtype in (DT.DT_HALF, DT.DT_BFLOAT16) else "int_val"
    message = proto(dtype, [4 * copies], **{field: values * copies})
    theirs = tf_from_proto(message)
    assert theirs is not None
    assert same(to_ndarray(message, "x"), theirs)


def test_only_the_dtypes_own_field_is_read():
    # TF ignores every other field: int64_val for DT_INT32, int_val for DT_BOOL,
    # float_val for DT_BFLOAT16 (which reads half_val).
    for message in [
        proto(DT.DT_INT32, [2], int64_val=[1, 2]),
        proto(DT.DT_BOOL, [2], int_val=[1, 1]),
        proto(DT.DT_BFLOAT16, [2], float_val=[1.5, 2.5]),
        proto(DT.DT_STRING, [2], int_val=[1, 2]),
    ]:
        theirs = tf_from_proto(message)
        assert same(to_ndarray(message, "x"), theirs)
        assert not np.any(theirs.astype(bool)) if message.dtype != DT.DT_STRING else theirs.tolist() == [b"", b""]


def test_tensor_content_wins_over_fields():
    content = np.array([1, 2], np.float32).tobytes()
    message = proto(DT.DT_FLOAT, [2], tensor_content=content, float_val=[7, 8, 9])
    assert same(to_ndarray(message, "x"), np.array([1, 2], np.float32))
    assert same(tf_from_proto(message), np.array([1, 2], np.float32))


def test_tensor_content_array_is_a_read_only_view_that_a_session_feeds():
    message = proto(DT.DT_FLOAT, [2, 2], tensor_content=np.arange(4, dtype=np.float32).tobytes())
    array = to_ndarray(message, "x")
    assert not array.flags.writeable and array.flags.aligned
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 2])
        y = x * 2
        with tf.compat.v1.Session() as session:
            assert session.run(y, {x: array}).tolist() == [[0, 2], [4, 6]]


def test_bool_content_takes_bytes_0_and_1_only_as_tf_does():
    # Found by tests/fuzz/tensor_proto.py: TF's FromProto refuses any other byte.
    message = proto(DT.DT_BOOL, [2, 2], tensor_content=bytes([0, 1, 1, 0]))
    result = to_ndarray(message, "x")
    assert result.tolist() == [[False, True], [True, False]]
    assert same(tf_from_proto(message), result)
    for byte in (2, 0x11, 255):
        message = proto(DT.DT_BOOL, [3], tensor_content=bytes([1, 0, byte]))
        error = parse_error(message)
        assert "neither 0 nor 1" in str(error.__cause__)
        assert tf_from_proto(message) is None


def test_unknown_rank_is_ignored_as_tf_does():
    message = proto(DT.DT_FLOAT, [2], float_val=[5])
    message.tensor_shape.unknown_rank = True
    assert same(to_ndarray(message, "x"), np.array([5, 5], np.float32))
    assert same(tf_from_proto(message), np.array([5, 5], np.float32))
    scalar = proto(DT.DT_FLOAT, [], float_val=[5])
    scalar.tensor_shape.unknown_rank = True
    assert same(to_ndarray(scalar, "x"), np.array(5, np.float32))


def test_no_tensor_shape_is_a_scalar():
    message = TensorProto(dtype=DT.DT_INT64, int64_val=[-3])
    assert same(to_ndarray(message, "x"), np.array(-3, np.int64))


@pytest.mark.parametrize("dtype", list(DTYPES), ids=lambda d: d.name)
def test_empty_tensor_ignores_content_and_values(dtype):
    message = proto(int(dtype), [3, 0], tensor_content=b"\x01" * 7)
    getattr(message, DTYPES[dtype][2]).extend([b"a"] if dtype == DT.DT_STRING else [True] if dtype == DT.DT_BOOL else [1])
    expected = np.zeros((3, 0), DTYPES[dtype][0])
    assert same(to_ndarray(message, "x"), expected)
    assert tf_from_proto(message).shape == (3, 0)


def test_string_tensor_content_is_tf_string_list_encoding():
    strings = [b"ab", b"", b"c\x00d", b"x" * 300]
    lengths = b"".join(bytes([len(s)]) if len(s) < 128 else bytes([len(s) & 0x7F | 0x80, len(s) >> 7]) for s in strings)
    message = proto(DT.DT_STRING, [2, 2], tensor_content=lengths + b"".join(strings))
    expected = np.array(strings, dtype=object).reshape(2, 2)
    assert same(to_ndarray(message, "x"), expected)
    assert same(tf_from_proto(message), expected)


def test_deep_but_valid_shapes():
    message = proto(DT.DT_FLOAT, [1] * 64, float_val=[2])
    assert to_ndarray(message, "x").shape == (1,) * 64


def test_huge_empty_shape_is_empty():
    message = proto(DT.DT_FLOAT, [2**40, 0, 2**20])
    assert to_ndarray(message, "x").shape == (2**40, 0, 2**20)


# ------------------------------------------------------------------ refusals


def _string_list(strings: list[bytes]) -> bytes:
    return bytes(len(s) for s in strings) + b"".join(strings)


BAD = {
    # Refused by TF too (tf.io.parse_tensor), with TF Serving's one message.
    "content too short": (proto(DT.DT_FLOAT, [2], tensor_content=b"\x00" * 7), "tensor_content is 7 bytes, expected 8"),
    "content too long": (proto(DT.DT_FLOAT, [2], tensor_content=b"\x00" * 12), "tensor_content is 12 bytes, expected 8"),
    "content of a scalar": (proto(DT.DT_INT64, [], tensor_content=b"\x00" * 4), "expected 8"),
    "content half": (proto(DT.DT_HALF, [3], tensor_content=b"\x00" * 4), "expected 6"),
    "negative dim": (proto(DT.DT_FLOAT, [2, -1], float_val=[1]), "negative dimension -1"),
    "negative dim of empty": (proto(DT.DT_FLOAT, [0, -5]), "negative dimension -5"),
    "255 dims": (proto(DT.DT_FLOAT, [1] * 255, float_val=[1]), "255 dimensions"),
    "count overflows int64": (proto(DT.DT_FLOAT, [2**40, 2**40], float_val=[1]), "overflows int64"),
    "overflow before a zero": (proto(DT.DT_FLOAT, [2**62, 4, 0]), "overflows int64"),
    "huge": (proto(DT.DT_FLOAT, [2**40], float_val=[1]), "MAX_TENSOR_BYTES"),
    "huge strings": (proto(DT.DT_STRING, [2**37], string_val=[b"a"]), "MAX_TENSOR_BYTES"),
    "DT_INVALID": (proto(DT.DT_INVALID, [1], float_val=[1]), "unsupported dtype DT_INVALID"),
    "DT_INVALID empty": (proto(DT.DT_INVALID, [0]), "unsupported dtype DT_INVALID"),
    "DT_INVALID scalar no fields": (TensorProto(), "unsupported dtype DT_INVALID"),
    "reference dtype": (proto(DT.DT_FLOAT_REF, [1], float_val=[1]), "unsupported dtype DT_FLOAT_REF"),
    "unknown dtype number": (proto(99, [0]), "unsupported dtype 99"),
    "string content short": (proto(DT.DT_STRING, [2], tensor_content=_string_list([b"ab", b"c"])[:-1]), "lengths add up to 3"),
    "string content long": (proto(DT.DT_STRING, [2], tensor_content=_string_list([b"ab", b"c"]) + b"x"), "lengths add up to 3"),
    "string content, more elements": (proto(DT.DT_STRING, [3], tensor_content=_string_list([b"ab", b"c"])), "lengths add up to 100"),
    "string content, too few bytes": (proto(DT.DT_STRING, [9], tensor_content=b"\x00" * 8), "too short"),
    "string content, endless varint": (proto(DT.DT_STRING, [1], tensor_content=b"\xff\xff"), "bad string length"),
    "string content, varint over 32 bits": (proto(DT.DT_STRING, [1], tensor_content=b"\xff\xff\xff\xff\x1f"), "lengths add up to 4294967295"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_refused_as_tf_refuses(case):
    message, detail = BAD[case]
    error = parse_error(message)
    assert isinstance(error.__cause__, ValueError) and detail in str(error.__cause__)
    if case not in ("huge strings",):  # 1 TiB of pointers: TF would try to allocate it
        assert tf_from_proto(message) is None


# Accepted by TF, refused here (documented in tensor_proto's docstring).
DEVIATIONS = {
    "over MAX_TENSOR_BYTES": (proto(DT.DT_FLOAT, [(1 << 28) + 1], float_val=[1]), "MAX_TENSOR_BYTES"),
    "65 dims": (proto(DT.DT_FLOAT, [1] * 65, float_val=[1]), "numpy's 64"),
    "numpy too big though empty": (proto(DT.DT_FLOAT, [2**62, 0]), "too big"),
    "quantized": (proto(DT.DT_QINT8, [2], int_val=[1]), "unsupported dtype DT_QINT8"),
    "resource": (proto(DT.DT_RESOURCE, [0]), "unsupported dtype DT_RESOURCE"),
    "variant": (proto(DT.DT_VARIANT, [0]), "unsupported dtype DT_VARIANT"),
}


@pytest.mark.parametrize("case", list(DEVIATIONS))
def test_refused_here_though_tf_takes_it(case):
    message, detail = DEVIATIONS[case]
    error = parse_error(message, alias="input_1")
    assert error.message == "tensor parsing error: input_1"
    assert detail in str(error.__cause__)


def test_huge_shapes_are_refused_without_allocating():
    message = proto(DT.DT_FLOAT, [2**40], float_val=[1])
    tracemalloc.start()
    try:
        parse_error(message)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_the_cap_can_be_moved(monkeypatch):
    monkeypatch.setattr(tensor_proto, "MAX_TENSOR_BYTES", 400)
    assert to_ndarray(proto(DT.DT_FLOAT, [100], float_val=[1]), "x").shape == (100,)
    parse_error(proto(DT.DT_FLOAT, [101], float_val=[1]))
    parse_error(proto(DT.DT_STRING, [51], string_val=[b"a"]))


def test_a_refused_shape_is_refused_every_time():
    message = proto(DT.DT_FLOAT, [-1], float_val=[1])
    parse_error(message)
    parse_error(message)  # not cached as valid
    assert same(to_ndarray(proto(DT.DT_FLOAT, [1], float_val=[1]), "x"), np.ones(1, np.float32))


# ------------------------------------------------------------------ from_ndarray inputs


def test_scalars_from_a_session_are_encoded():
    for value, dtype, expected in [
        (np.float32(1.5), DT.DT_FLOAT, np.array(1.5, np.float32)),
        (b"a\x00", DT.DT_STRING, np.array(b"a\x00", dtype=object)),
        (np.bool_(True), DT.DT_BOOL, np.array(True)),
    ]:
        message = TensorProto()
        from_ndarray(value, dtype, message)
        assert message.SerializeToString() == as_field_proto(expected, dtype).SerializeToString()


def test_text_and_fixed_width_string_arrays_become_bytes():
    message = TensorProto()
    from_ndarray(np.array(["é", "b"]), DT.DT_STRING, message)
    assert list(message.string_val) == ["é".encode(), b"b"]
    from_ndarray(np.array([b"x", b"yz"]), DT.DT_STRING, message)
    assert list(message.string_val) == [b"x", b"yz"]
    from_ndarray(np.array(["é", b"b"], dtype=object), DT.DT_STRING, message)
    assert list(message.string_val) == ["é".encode(), b"b"]


def test_the_arrays_own_type_wins_and_references_are_their_base():
    message = TensorProto()
    from_ndarray(np.array([1, 2], np.int64), DT.DT_FLOAT, message)
    assert message.dtype == DT.DT_INT64 and list(message.int64_val) == [1, 2]
    from_ndarray(np.array([1.5], np.float32), DT.DT_FLOAT_REF, message)
    assert message.dtype == DT.DT_FLOAT and list(message.float_val) == [1.5]
    from_ndarray(np.array([1.5], np.float32), DT.DT_STRING, message)
    assert message.dtype == DT.DT_FLOAT and not message.string_val


def test_out_is_cleared_first():
    message = proto(DT.DT_STRING, [5], string_val=[b"old"], tensor_content=b"zz")
    from_ndarray(np.array([1, 2], np.int32), DT.DT_INT32, message)
    assert message.SerializeToString() == as_field_proto(np.array([1, 2], np.int32), DT.DT_INT32).SerializeToString()


def test_float_bit_patterns_survive_writing():
    bits = np.array([0x7F800001, 0x7FC00001, 0xFF800123, 0x80000000, 1], np.uint32)
    message = TensorProto()
    from_ndarray(bits.view(np.float32), DT.DT_FLOAT, message)
    assert message.SerializeToString() == (
        b"\x08\x01\x12\x04\x12\x02\x08\x05\x2a\x14" + bits.astype("<u4").tobytes()
    )
    assert same(to_ndarray(message, "x"), bits.view(np.float32))


def test_wide_varints_in_every_width():
    values = np.array([0, 1, 127, 128, 16383, 16384, 2**21, 2**28, 2**35, 2**63 - 1, -1, -(2**63)], np.int64)
    for repeat in (1, 3):  # short (extend) and long (packed) paths
        array = np.tile(values, repeat)
        message = TensorProto()
        from_ndarray(array, DT.DT_INT64, message)
        assert message.SerializeToString() == as_field_proto(array, DT.DT_INT64).SerializeToString()
    small = np.arange(0, 16384, 3, dtype=np.uint16)
    message = TensorProto()
    from_ndarray(small, DT.DT_UINT16, message)
    assert message.SerializeToString() == as_field_proto(small, DT.DT_UINT16).SerializeToString()


# ------------------------------------------------------------------ property


def _arrays(draw) -> tuple[DataType, np.ndarray]:
    dtype = draw(st.sampled_from(list(DTYPES)))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    if dtype == DT.DT_STRING:
        items = draw(st.lists(st.binary(max_size=20), min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return dtype, array.reshape(shape)
    if dtype == DT.DT_BFLOAT16:
        return dtype, draw(hnp.arrays(np.uint16, shape)).view(BF16)
    return dtype, draw(hnp.arrays(DTYPES[dtype][0], shape))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_property_round_trip(data):
    dtype, array = _arrays(data.draw)
    message = TensorProto()
    from_ndarray(array, dtype, message)
    assert message.SerializeToString() == as_field_proto(array, dtype).SerializeToString()
    back = to_ndarray(TensorProto.FromString(message.SerializeToString()), "x")
    assert same(back, array)


# ---- --enable_serialization_as_tensor_content ----------------------------------------

@pytest.mark.parametrize("array", [
    np.array([[1.5, -2.0]], np.float32), np.array([1, -2, 3], np.int64), np.array([True, False]),
    np.array([b"ab", b"", b"c\x00"], dtype=object), np.array([1 + 2j], np.complex64),
    np.array([1.5], np.float16), np.array(7, np.int32),
], ids=lambda a: str(a.dtype))
def test_outputs_as_tensor_content_parse_back_in_tensorflow(array):
    import tensorflow as tf

    proto = TensorProto()
    from_ndarray(array, from_numpy(array.dtype), proto, as_content=True)
    assert proto.tensor_content and not proto.float_val and not proto.string_val
    parsed = tf.io.parse_tensor(proto.SerializeToString(), tf.as_dtype(proto.dtype)).numpy()
    assert parsed.shape == array.shape and (parsed == array).all()
    assert (to_ndarray(proto, "y") == array).all()
