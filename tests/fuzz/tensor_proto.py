"""Fuzz target: a TensorProto (a gRPC Predict input) -> numpy (`tensor_proto.to_ndarray`).

The bytes are a serialized TensorProto; bytes that do not parse as one (and any that
start with 0xFF) instead drive an atheris.FuzzedDataProvider that builds one: any dtype
number, up to 255 dimensions drawn from 0, 1, 3, -1, 2^31, 2^40, 2^62, int64 max...,
tensor_content of any length, and values in any typed field.

`to_ndarray` must give an array of exactly the proto's shape and dtype, or ServingError
INVALID_ARGUMENT "tensor parsing error: x"; never another exception, and never an
array beyond the size cap, which this harness lowers to 1 MiB so that a 2^40-element
shape with one value would show at once as an allocation (and one that allocates
before it checks would pass libFuzzer's -rss_limit_mb). An array read back is written
with `from_ndarray` (typed fields and tensor_content) and must read back the same.
With TensorFlow installed (and EDGESERVE_FUZZ_TF not "0"), TF's own Tensor::FromProto
(`tf.io.parse_tensor`) is the oracle: every array edgeserve reads, TF reads the same;
every shape edgeserve calls invalid, TF refuses.

    python -m tests.fuzz.tensor_proto [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/tensor_proto
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_common  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
tf = None
if os.environ.get("EDGESERVE_FUZZ_TF", "1") != "0":
    try:  # before the instrumented imports: TensorFlow itself is not fuzzed
        import tensorflow as tf  # noqa: F811
    except ImportError:  # pragma: no cover - the lite install
        tf = None

with fuzz_common.instrumented(__name__):
    from edgeserve import tensor_proto
    from edgeserve.dtypes import DataType, to_numpy
    from edgeserve.errors import ServingError, StatusCode
    from edgeserve.messages import TensorProto
    from edgeserve.tensor_proto import from_ndarray, to_ndarray

import numpy as np  # noqa: E402
from google.protobuf.message import DecodeError  # noqa: E402

CAP = 1 << 20  # the server's cap is 1 GiB; check() lowers it while it runs

# Dimension sizes worth trying, and dtype numbers (valid, reference, unknown, invalid).
_SIZES = [0, 1, 2, 3, 7, 1000, -1, -(2**63), 2**31, 2**32 + 1, 2**40, 2**62, 2**63 - 1]
_DTYPES = [int(t) for t in DataType] + [0, 24, 25, 29, 99, 200, -1, 2**31 - 1]
_RANKS = [0, 0, 1, 1, 2, 2, 3, 4, 6, 64, 65, 255]
_VALUE_FIELDS = ["float_val", "double_val", "int_val", "int64_val", "uint32_val", "uint64_val",
                 "bool_val", "string_val", "scomplex_val", "dcomplex_val", "half_val"]
# The refusals TF makes too, before it allocates anything (TensorShape::IsValid).
_SHAPE_REFUSALS = ("negative dimension", "overflows int64", "dimensions, more than 254")


def _field_value(fdp, field: str):
    if field in ("float_val", "scomplex_val"):
        return fdp.ConsumeRegularFloat() if fdp.ConsumeBool() else fdp.ConsumeFloat()
    if field in ("double_val", "dcomplex_val"):
        return fdp.ConsumeFloat()
    if field in ("int_val", "half_val"):
        return fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)
    if field == "int64_val":
        return fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
    if field == "uint32_val":
        return fdp.ConsumeIntInRange(0, 2**32 - 1)
    if field == "uint64_val":
        return fdp.ConsumeIntInRange(0, 2**64 - 1)
    if field == "bool_val":
        return fdp.ConsumeBool()
    return fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 8))


def build(data: bytes) -> TensorProto:
    """The TensorProto the bytes stand for (see the module's docstring)."""
    if data[:1] != b"\xff":
        try:
            return TensorProto.FromString(data)
        except DecodeError:
            pass
    import atheris

    fdp = atheris.FuzzedDataProvider(data[1:] if data[:1] == b"\xff" else data)
    proto = TensorProto(dtype=fdp.PickValueInList(_DTYPES))
    shape = proto.tensor_shape
    shape.SetInParent()
    rank = fdp.PickValueInList(_RANKS)
    many = rank > 6
    for _ in range(rank):
        size = 1 if many and fdp.ConsumeIntInRange(0, 7) else (
            fdp.PickValueInList(_SIZES) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(-2, 40))
        shape.dim.add(size=size)
    shape.unknown_rank = fdp.ConsumeIntInRange(0, 15) == 0
    if fdp.ConsumeIntInRange(0, 3) == 0:
        proto.tensor_content = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 300))
    for _ in range(fdp.ConsumeIntInRange(0, 2)):
        field = fdp.PickValueInList(_VALUE_FIELDS)
        values = getattr(proto, field)
        for _ in range(fdp.ConsumeIntInRange(0, 70)):
            values.append(_field_value(fdp, field))
    return proto


def _nbytes(array: np.ndarray) -> int:
    return array.size * (8 if array.dtype == object else array.dtype.itemsize)


def _same(actual: np.ndarray, expected: np.ndarray) -> bool:
    """Equal dtype, shape and bits (any NaN equal to any NaN: a float_val passes through
    a Python float, which may quiet a signalling NaN, as documented)."""
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if not actual.size:  # (no copies: [2**40, 0, 2**20] is valid, numpy cannot copy it)
        return True
    if actual.dtype == object:
        return actual.tolist() == expected.tolist()
    if actual.dtype.kind == "c":
        return _same(actual.real, expected.real) and _same(actual.imag, expected.imag)
    if actual.dtype.kind in "fV":
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[actual.dtype.itemsize]
        with np.errstate(invalid="ignore"):
            nan = np.isnan(actual.astype(np.float64)) & np.isnan(expected.astype(np.float64))
        return bool(np.all((actual.view(bits) == expected.view(bits)) | nan))
    return bool(np.array_equal(actual, expected))


def _tf_read(proto: TensorProto):
    """TF's Tensor::FromProto of the proto: a tf.Tensor, or None when TF refuses it."""
    try:
        return tf.io.parse_tensor(proto.SerializeToString(), tf.dtypes.as_dtype(proto.dtype))
    except (tf.errors.InvalidArgumentError, TypeError, ValueError):
        return None


def _tf_same(array: np.ndarray, tensor) -> bool:
    if tuple(tensor.shape) != array.shape:
        return False
    if not array.size:  # [2**40, 0, 2**20]: valid, but beyond what .numpy() can make
        return True
    if array.ndim > 32:  # TF 2.21's .numpy() of a DT_STRING tensor of 33+ dims segfaults
        return True
    expected = tensor.numpy()
    if array.dtype == object:
        expected = np.array(expected, dtype=object)
    return _same(array, expected)


def _check_refusal(exc: ServingError, proto: TensorProto) -> None:
    assert exc.code == StatusCode.INVALID_ARGUMENT, exc
    assert exc.message == "tensor parsing error: x", exc.message
    assert isinstance(exc.__cause__, ValueError) and str(exc.__cause__), exc.__cause__
    if tf is not None and any(reason in str(exc.__cause__) for reason in _SHAPE_REFUSALS):
        if to_numpy(proto.dtype) is not None and proto.dtype < 100:
            assert _tf_read(proto) is None, f"TF reads what edgeserve refuses: {exc.__cause__}"


def check(data: bytes) -> None:
    saved = tensor_proto.MAX_TENSOR_BYTES
    tensor_proto.MAX_TENSOR_BYTES = CAP
    try:
        _check(data)
    finally:
        tensor_proto.MAX_TENSOR_BYTES = saved


def _check(data: bytes) -> None:
    proto = build(data)
    try:
        array = to_ndarray(proto, "x")
    except ServingError as exc:
        _check_refusal(exc, proto)
        return
    assert type(array) is np.ndarray
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    assert array.shape == shape, (array.shape, shape)
    assert array.dtype == to_numpy(proto.dtype), (array.dtype, proto.dtype)
    assert _nbytes(array) <= CAP, f"{_nbytes(array)} bytes from a {len(data)}-byte input"
    if array.dtype == object:
        assert all(type(v) is bytes for v in array.ravel().tolist())
    if tf is not None:
        expected = _tf_read(proto)
        assert expected is not None, "edgeserve reads what TF refuses"
        assert _tf_same(array, expected), (array, expected)
    # What the server writes back (Predict outputs) reads back the same.
    for as_content in (False, True):
        out = TensorProto()
        from_ndarray(array, proto.dtype, out, as_content=as_content)
        again = to_ndarray(TensorProto.FromString(out.SerializeToString()), "x")
        assert _same(again, array), (as_content, array, again)


def main() -> None:
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
