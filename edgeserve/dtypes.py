"""TensorFlow's DataType enum and its numpy equivalents, without importing TensorFlow.

The numbers and names are those of tensorflow/core/framework/types.proto, so they
match TensorProto.dtype and TensorInfo.dtype on the wire and in TF Serving's JSON
("DT_FLOAT"). bfloat16 maps through ml_dtypes when it is installed (TensorFlow
brings it); without it DT_BFLOAT16 tensors are refused as unsupported.
"""
from __future__ import annotations

import enum
import importlib.util

import numpy as np


class DataType(enum.IntEnum):
    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_QINT8 = 11
    DT_QUINT8 = 12
    DT_QINT32 = 13
    DT_BFLOAT16 = 14
    DT_QINT16 = 15
    DT_QUINT16 = 16
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_RESOURCE = 20
    DT_VARIANT = 21
    DT_UINT32 = 22
    DT_UINT64 = 23
    # Reference types (TF1 ref variables, e.g. an AssignAdd output): base + 100.
    DT_FLOAT_REF = 101
    DT_DOUBLE_REF = 102
    DT_INT32_REF = 103
    DT_UINT8_REF = 104
    DT_INT16_REF = 105
    DT_INT8_REF = 106
    DT_STRING_REF = 107
    DT_COMPLEX64_REF = 108
    DT_INT64_REF = 109
    DT_BOOL_REF = 110
    DT_BFLOAT16_REF = 114
    DT_UINT16_REF = 117
    DT_COMPLEX128_REF = 118
    DT_HALF_REF = 119
    DT_UINT32_REF = 122
    DT_UINT64_REF = 123


REF_OFFSET = 100


def base(dtype: DataType | int) -> DataType:
    """The value type of a reference type (DT_FLOAT_REF -> DT_FLOAT); others unchanged."""
    value = int(dtype)
    if value > REF_OFFSET:
        value -= REF_OFFSET
    try:
        return DataType(value)
    except ValueError:
        return DataType.DT_INVALID


_NUMPY: dict[DataType, np.dtype] = {
    DataType.DT_FLOAT: np.dtype(np.float32),
    DataType.DT_DOUBLE: np.dtype(np.float64),
    DataType.DT_INT32: np.dtype(np.int32),
    DataType.DT_UINT8: np.dtype(np.uint8),
    DataType.DT_INT16: np.dtype(np.int16),
    DataType.DT_INT8: np.dtype(np.int8),
    # Strings travel as numpy object arrays of bytes, which is what
    # tf.Session.run accepts and returns.
    DataType.DT_STRING: np.dtype(object),
    DataType.DT_COMPLEX64: np.dtype(np.complex64),
    DataType.DT_INT64: np.dtype(np.int64),
    DataType.DT_BOOL: np.dtype(np.bool_),
    DataType.DT_UINT16: np.dtype(np.uint16),
    DataType.DT_COMPLEX128: np.dtype(np.complex128),
    DataType.DT_HALF: np.dtype(np.float16),
    DataType.DT_UINT32: np.dtype(np.uint32),
    DataType.DT_UINT64: np.dtype(np.uint64),
}
try:
    # bfloat16 comes from ml_dtypes, whose import takes ~0.6 s here. TensorFlow imports
    # it anyway; the lite install (no TensorFlow) goes without: more than its whole
    # start-up otherwise, for a type TFLite models' inputs and outputs rarely have.
    if importlib.util.find_spec("tensorflow") is not None:
        import ml_dtypes

        _NUMPY[DataType.DT_BFLOAT16] = np.dtype(ml_dtypes.bfloat16)
except (ImportError, ValueError):  # pragma: no cover - depends on the install
    pass

_FROM_NUMPY: dict[np.dtype, DataType] = {v: k for k, v in _NUMPY.items()}


def to_numpy(dtype: DataType | int) -> np.dtype | None:
    """The numpy dtype for a DataType (or its reference type), or None when numpy cannot hold it."""
    found = _NUMPY.get(dtype)  # the common case, on every request: no enum conversion
    return found if found is not None or dtype <= REF_OFFSET else _NUMPY.get(base(dtype))


def from_numpy(dtype: np.dtype) -> DataType:
    """The DataType for a numpy dtype; bytes/str arrays are DT_STRING."""
    dt = _FROM_NUMPY.get(np.dtype(dtype))
    if dt is not None:
        return dt
    if np.dtype(dtype).kind in ("S", "U", "O"):
        return DataType.DT_STRING
    return DataType.DT_INVALID


def name(dtype: DataType | int) -> str:
    """TF's name for a DataType number ("DT_FLOAT"), as TF Serving's JSON writes it."""
    try:
        return DataType(dtype).name
    except ValueError:
        return str(int(dtype))
