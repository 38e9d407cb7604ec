"""Fuzz target: a REST request body -> tensors (predict) and -> Examples (classify/regress).

The bytes are a body as `RestApi` hands it over. Predict: `tensors.parse_predict_request`
once, then `tensors.decode_inputs` against a set of real signatures (float, double,
int32, int64, uint8, uint64, bool, string/b64, half, bfloat16, complex, several inputs).
Each must give arrays of the signature's dtypes (row format: one shared first
dimension), or a ServingError whose code is INVALID_ARGUMENT (a 4xx), or UNIMPLEMENTED
for a dtype JSON cannot express (TF Serving's 501). Decoded arrays then go through the
response writer (`encode_predict_response`) as outputs of the same names; its JSON,
sent back as a request, must decode to the same arrays. Classify/regress:
`example_json.parse_classify_regress_request` gives an Input with at least one Example,
or ServingError INVALID_ARGUMENT. Any other exception is a defect.

    python -m tests.fuzz.rest_json [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/rest_json
"""
from __future__ import annotations

import json
import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_common  # noqa: E402

with fuzz_common.instrumented(__name__):
    from edgeserve import example_json, tensors
    from edgeserve.dtypes import DataType, to_numpy
    from edgeserve.errors import ServingError, StatusCode
    from edgeserve.servable import PREDICT_METHOD_NAME, SignatureSpec, TensorSpec

import numpy as np  # noqa: E402

DT = DataType


def _signature(**inputs: DataType) -> SignatureSpec:
    specs = {name: TensorSpec(f"{name}:0", dtype, None) for name, dtype in inputs.items()}
    return SignatureSpec(PREDICT_METHOD_NAME, specs, specs)


# String inputs are named *_bytes so the writer answers {"b64": ...} and any bytes
# come back through JSON unchanged.
SIGNATURES = {
    "float": _signature(x=DT.DT_FLOAT),
    "double": _signature(x=DT.DT_DOUBLE),
    "int32": _signature(x=DT.DT_INT32),
    "int64": _signature(x=DT.DT_INT64),
    "uint8": _signature(x=DT.DT_UINT8),
    "uint64": _signature(x=DT.DT_UINT64),
    "bool": _signature(x=DT.DT_BOOL),
    "string": _signature(x_bytes=DT.DT_STRING),
    "half": _signature(x=DT.DT_HALF),
    "bfloat16": _signature(x=DT.DT_BFLOAT16),
    "complex": _signature(x=DT.DT_COMPLEX64),
    "multi": _signature(a=DT.DT_FLOAT, b=DT.DT_INT64, s_bytes=DT.DT_STRING, f=DT.DT_BOOL),
    "none": _signature(),
}
_JSON_CANNOT = frozenset({int(DT.DT_COMPLEX64), int(DT.DT_COMPLEX128)})
_OK_CODES = frozenset({StatusCode.INVALID_ARGUMENT})


def _check_error(exc: ServingError, signature: SignatureSpec | None = None) -> None:
    allowed = _OK_CODES
    if signature is not None and any(int(s.dtype) in _JSON_CANNOT for s in signature.inputs.values()):
        allowed = allowed | {StatusCode.UNIMPLEMENTED}
    assert exc.code in allowed, f"{exc!r} for a bad body"
    assert exc.http_status < 500 or exc.code == StatusCode.UNIMPLEMENTED
    assert exc.message, "empty error message"
    body = json.loads(exc.json_body())
    assert type(body) is dict and list(body) == ["error"] and body["error"] == exc.message


def _same(actual: np.ndarray, expected: np.ndarray, dtype: int) -> bool:
    if actual.dtype != expected.dtype or actual.shape != expected.shape:
        return False
    if actual.dtype == object:
        return actual.tolist() == expected.tolist()
    if actual.dtype.kind in "fV" or dtype in (int(DT.DT_HALF), int(DT.DT_BFLOAT16)):
        a = actual.astype(np.float64)
        e = expected.astype(np.float64)
        nan = np.isnan(a) & np.isnan(e)
        if dtype == int(DT.DT_DOUBLE):
            # The writer's 17 digits read back through rapidjson's StrtodNormalPrecision,
            # which TF Serving uses and which is not always correctly rounded.
            close = np.isclose(a, e, rtol=1e-15, atol=0) | (a == e)
        else:
            close = a == e
        return bool(np.all(close | nan))
    return bool(np.array_equal(actual, expected))


def _round_trip(arrays: dict, fmt: str, signature: SignatureSpec) -> None:
    """Writes the arrays as a predict response, sends that back as a request, and
    expects the same arrays."""
    try:
        written = tensors.encode_predict_response(arrays, fmt, signature)
    except ServingError as exc:
        _check_error(exc)
        return
    text = written.decode("utf-8")  # *_bytes strings are base64: always UTF-8
    response = json.loads(text)  # NaN and Infinity are Python's extensions too
    key = "predictions" if fmt == tensors.ROW else "outputs"
    assert type(response) is dict and list(response) == [key], text[:200]
    request = json.dumps({"instances" if fmt == tensors.ROW else "inputs": response[key]}).encode()
    again = tensors.decode_inputs(tensors.parse_predict_request(request), signature)
    assert again.keys() == arrays.keys()
    for name, array in arrays.items():
        dtype = int(signature.inputs[name].dtype)
        assert _same(again[name], array, dtype), (name, array, again[name], text[:300])


def _check_predict(body: bytes) -> None:
    try:
        request = tensors.parse_predict_request(body)
    except ServingError as exc:
        _check_error(exc)
        return
    assert request.format in (tensors.ROW, tensors.COLUMNAR, "")
    assert isinstance(request.signature_name, str)
    request.signature_name.encode("utf-8")  # it goes into messages and metrics
    for signature in SIGNATURES.values():
        try:
            arrays = tensors.decode_inputs(request, signature)
        except ServingError as exc:
            _check_error(exc, signature)
            continue
        assert type(arrays) is dict and arrays.keys() == signature.inputs.keys(), arrays.keys()
        if not arrays:
            continue
        firsts = set()
        for name, array in arrays.items():
            assert type(array) is np.ndarray, type(array)
            dtype = int(signature.inputs[name].dtype)
            expected = to_numpy(dtype)
            assert array.dtype == expected or (dtype in _JSON_CANNOT and array.size == 0), (name, array.dtype)
            assert array.ndim <= 64
            if request.format == tensors.ROW:
                assert array.ndim >= 1 and array.shape[0] >= 1, array.shape
                firsts.add(array.shape[0])
            if array.dtype == object:
                assert all(type(v) is bytes for v in array.ravel().tolist())
        assert len(firsts) <= 1, firsts
        if not any(int(s.dtype) in _JSON_CANNOT for s in signature.inputs.values()):
            _round_trip(arrays, request.format, signature)


def _check_examples(body: bytes) -> None:
    try:
        examples, signature_name = example_json.parse_classify_regress_request(body)
    except ServingError as exc:
        _check_error(exc)
        return
    assert isinstance(signature_name, str)
    kind = examples.WhichOneof("kind")
    assert kind in ("example_list", "example_list_with_context"), kind
    listed = getattr(examples, kind).examples
    assert len(listed) >= 1
    examples.SerializeToString()  # what goes to the model: must be a valid message
    for example in listed:
        for feature in example.features.feature.values():
            for value in feature.float_list.value:
                assert isinstance(value, float) and (math.isnan(value) or abs(value) <= math.inf)


def check(data: bytes) -> None:
    _check_predict(data)
    _check_examples(data)


def main() -> None:
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
