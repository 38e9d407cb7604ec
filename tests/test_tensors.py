"""REST JSON ⇄ numpy for predict, as TF Serving's json_tensor.cc does it.

Expected bodies and messages come from TF Serving's json_tensor_test.cc where it has them,
and otherwise from a harness that drove json_tensor.cc's logic over rapidjson 1.1.0 (the
version TF Serving pins) — not from edgeserve's own output.
"""
from __future__ import annotations

import base64
import json
import math
import struct
import sys
import warnings

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgeserve import tensors
from edgeserve.dtypes import DataType
from edgeserve.errors import ServingError, StatusCode
from edgeserve.servable import PREDICT_METHOD_NAME, SignatureSpec, TensorSpec
from edgeserve.tensors import decode_inputs, encode_predict_response, parse_predict_request

DT = DataType


def signature(inputs: dict[str, DataType] | None = None, outputs: dict[str, DataType] | None = None) -> SignatureSpec:
    inputs = {"x": DT.DT_FLOAT} if inputs is None else inputs
    outputs = outputs or {}
    return SignatureSpec(
        PREDICT_METHOD_NAME,
        {k: TensorSpec(f"{k}:0", v, None) for k, v in inputs.items()},
        {k: TensorSpec(f"{k}:0", v, None) for k, v in outputs.items()},
    )


def decode(body: bytes | str, **inputs: DataType) -> dict[str, np.ndarray]:
    if isinstance(body, str):
        body = body.encode()
    return decode_inputs(parse_predict_request(body), signature(inputs or None))


def error_of(body: bytes | str, **inputs: DataType) -> ServingError:
    with pytest.raises(ServingError) as info:
        decode(body, **inputs)
    return info.value


def message_of(body: bytes | str, **inputs: DataType) -> str:
    error = error_of(body, **inputs)
    assert error.code == StatusCode.INVALID_ARGUMENT
    return error.message


def assert_array(actual: np.ndarray, expected, dtype) -> None:
    expected = np.asarray(expected, dtype=dtype)
    assert actual.dtype == expected.dtype
    assert actual.shape == expected.shape
    if actual.dtype.kind == "f":
        np.testing.assert_array_equal(actual, expected)
        assert (np.signbit(actual) == np.signbit(expected)).all()
    else:
        assert actual.tolist() == expected.tolist()


# ---------------------------------------------------------------- parsing the body


def test_half_plus_two_request_decodes_to_a_float_batch():
    req = parse_predict_request(b'{"instances": [[1.0],[2.0],[5.0]]}')
    assert (req.signature_name, req.format) == ("", "row")
    result = decode_inputs(req, signature({"x": DT.DT_FLOAT}))
    assert list(result) == ["x"]
    assert_array(result["x"], [[1.0], [2.0], [5.0]], np.float32)


def test_signature_name_and_columnar_format_are_reported():
    req = parse_predict_request(b'{"signature_name": "predict_images", "inputs": [[1, 2]]}')
    assert (req.signature_name, req.format) == ("predict_images", "columnar")


@pytest.mark.parametrize(
    "body, message",
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
        (b'{"instances": [1.0,]}', "JSON Parse error: Invalid value. at offset: 19"),
        (b'{"instances": [1.0]', "JSON Parse error: Missing a comma or '}' after an object member. at offset: 19"),
        (b"\xff\xfe", "JSON Parse error: Invalid value. at offset: 0"),
        (b'{"instances": [1e400]}', "JSON Parse error: Number too big to be stored in double. at offset: 15"),
        (b'{"instances": ["\\ud800"]}', "JSON Parse error: The surrogate pair in string is invalid. at offset: 16"),
        (b'{"instances": ["a\x01"]}', "JSON Parse error: Invalid escape character in string. at offset: 17"),
        (b'{"instances": ["ab', "JSON Parse error: Missing a closing quotation mark in string. at offset: 18"),
        (b'{"instances" [1]}', "JSON Parse error: Missing a colon after a name of object member. at offset: 13"),
        (b'{"instances": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array element. at offset: 17"),
        (b'{"a": 1,}', "JSON Parse error: Missing a name for object member. at offset: 8"),
        (b'{"a": 1.}', "JSON Parse error: Miss fraction part in number. at offset: 8"),
        (b'{"a": 1e}', "JSON Parse error: Miss exponent in number. at offset: 8"),
        (b'{"a": "\\x"}', "JSON Parse error: Invalid escape character in string. at offset: 7"),
        (b'{"a": "\\u12g4"}', "JSON Parse error: Incorrect hex digit after \\u escape in string. at offset: 7"),
        (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
        (b'"x"', 'JSON Value: "x" Is not object'),
        (
            b'{"signature_name": 5, "instances": [[1,2],[3,4],[5,6,7]]}',
            'JSON Value: {\n    "signature_name": 5,\n    "instances": [[1, 2], [3, 4], [5, 6, 7]]\n} '
            "not formatted correctly. 'signature_name' key must be a string value.",
        ),
    ],
)
def test_malformed_bodies_get_tf_servings_messages(body, message):
    with pytest.raises(ServingError) as info:
        parse_predict_request(body)
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_quoted_json_is_cut_after_256_bytes_like_tf_serving():
    body = b'{"signature_name": 1, "instances": [' + b", ".join(b"%d.25" % i for i in range(100)) + b"]}"
    expected = (
        'JSON Value: {\n    "signature_name": 1,\n    "instances": ['
        + ", ".join(f"{i}.25" for i in range(32))
        + " not formatted correctly. 'signature_name' key must be a string value."
    )
    with pytest.raises(ServingError) as info:
        parse_predict_request(body)
    assert info.value.message == expected


def test_quoted_json_writes_numbers_and_strings_as_rapidjson_does():
    body = (
        b'{"signature_name": null, "instances": [{"b64": "\\u0001\\"x"}], "k": {"a": {"b": []}, '
        b'"c": -0.0, "d": 1e21, "e": 1.5e-7, "f": 18446744073709551615, "g": -9223372036854775808}}'
    )
    expected = (
        'JSON Value: {\n    "signature_name": null,\n    "instances": [{\n            "b64": "\\u0001\\"x"\n'
        '        }],\n    "k": {\n        "a": {\n            "b": []\n        },\n        "c": -0.0,\n'
        '        "d": 1e21,\n        "e": 1.5e-7,\n        "f": 18446744073709551615,\n'
        "        \"g\": -9223372036854775808 not formatted correctly. 'signature_name' key must be a string value."
    )
    with pytest.raises(ServingError) as info:
        parse_predict_request(body)
    assert info.value.message == expected


def test_nan_stops_the_quoted_json_like_rapidjsons_writer():
    with pytest.raises(ServingError) as info:
        parse_predict_request(b'{"signature_name": [NaN, 1], "instances": [1]}')
    assert info.value.message == (
        'JSON Value: {\n    "signature_name": [ not formatted correctly. '
        "'signature_name' key must be a string value."
    )


@pytest.mark.parametrize(
    "body, message",
    [
        (
            b'{"instances": [1.0], "inputs": [2.0]}',
            'JSON Value: {\n    "instances": [1.0],\n    "inputs": [2.0]\n} Not formatted correctly '
            "expecting only one of 'inputs' or 'instances' keys to exist ",
        ),
        (b'{"signature_name": "serving_default"}', "Missing 'inputs' or 'instances' key"),
        (
            b'{"instances": {"x": 1}}',
            'JSON Value: {\n    "instances": {\n        "x": 1\n    }\n} Expecting \'instances\' to be an list/array',
        ),
        (b'{"instances": []}', 'JSON Value: {\n    "instances": []\n} No values in \'instances\' array'),
    ],
)
def test_instances_and_inputs_problems_are_reported_by_decode(body, message):
    # TF Serving resolves the model and signature before it looks at these keys, so
    # parsing succeeds and decoding (after the api layer's lookups) reports them.
    request = parse_predict_request(body)
    with pytest.raises(ServingError) as info:
        decode_inputs(request, signature({"x": DT.DT_FLOAT}))
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_signature_without_inputs_takes_an_empty_inputs_object_only():
    # TF Serving's REST API cannot call such a signature at all; edgeserve takes {"inputs": {}}.
    assert decode_inputs(parse_predict_request(b'{"inputs": {}}'), signature({})) == {}
    request = parse_predict_request(b'{"instances": [1]}')
    with pytest.raises(ServingError) as info:
        decode_inputs(request, signature({}))
    assert info.value.message == "Failed to get input map for signature: DEFAULT"
    for body in (b'{"signature_name": "sig", "instances": [{}]}', b'{"signature_name": "sig", "inputs": []}'):
        with pytest.raises(ServingError) as info:
            decode_inputs(parse_predict_request(body), signature({}))
        assert info.value.message == "Failed to get input map for signature: sig"


def test_text_after_the_document_is_ignored_like_tf_serving():
    # kParseStopWhenDoneFlag: rapidjson stops after the root value.
    assert_array(decode('{"instances": [1]} trailing garbage', x=DT.DT_INT32)["x"], [1], np.int32)
    assert_array(decode(b'{"instances": [2]}\x00{', x=DT.DT_INT32)["x"], [2], np.int32)
    assert_array(decode(b'\xef\xbb\xbf{"instances": [3]}', x=DT.DT_INT32)["x"], [3], np.int32)


def test_deeply_nested_bodies_parse_without_recursion():
    # From json_tensor_test.cc DeeplyNestedWellFormed / DeeplyNestedMalformed.
    body = b'{"instances":[1], "nested":' + b"[" * 500000 + b"]" * 500000 + b"}"
    assert_array(decode(body, x=DT.DT_INT32)["x"], [1], np.int32)
    body = b'{"signature_name":' + b"[" * 500000 + b"]" * 500000 + b"}"
    with pytest.raises(ServingError) as info:
        parse_predict_request(body)
    assert "key must be a string value" in info.value.message


def test_brackets_inside_strings_neither_hide_nor_fake_deep_nesting():
    # orjson recurses per level and crashes on very deep bodies, so depth is checked first.
    deep = b"[" * 2000 + b"]" * 2000
    assert tensors._too_deep_for_orjson(b'{"s": "' + b"]" * 5000 + b'", "x": ' + deep + b"}")
    assert tensors._too_deep_for_orjson(b'{"s": "\\"]]]", "x": ' + deep + b"}")
    assert not tensors._too_deep_for_orjson(b'{"s": "' + b"[" * 5000 + b'"}')
    assert not tensors._too_deep_for_orjson(b"[" + b"[1],\n" * 3000 + b"[]]")


def test_nesting_beyond_a_million_levels_is_refused():
    # An edgeserve limit (TF Serving has none): a 16 MB body of "[" would otherwise cost GBs.
    # The object is level 1, so the millionth "[" (offset 14 + 999999) is one too many.
    body = b'{"instances": ' + b"[" * 1_000_001
    with pytest.raises(ServingError) as info:
        parse_predict_request(body)
    assert info.value.message == (
        "JSON Parse error: Nesting deeper than 1000000 levels (an edgeserve limit). at offset: 1000013"
    )


def test_nan_and_infinity_bodies_are_parsed_by_orjson_with_stand_ins():
    body = b'{"instances": [NaN, -NaN, Infinity, -Infinity, Inf, -Inf, 1.5], "s": "NaN\\"Inf"}'
    doc, doubles_are_rapidjsons = tensors._loads(body)
    assert not doubles_are_rapidjsons  # orjson read it
    assert doc["s"] == 'NaN"Inf'
    values = doc["instances"]
    assert math.isnan(values[0]) and math.isnan(values[1]) and values[2:] == [math.inf, -math.inf, math.inf, -math.inf, 1.5]
    # rapidjson reads "NaN.5" as 0.5; such bodies (and those holding "\u0000") keep the Python parser.
    assert tensors._loads(b'[NaN.5]') == ([0.5], True)
    assert tensors._loads(b'["\\u0000NaN", NaN]')[0][0] == "\0NaN"


def test_tensor_nested_deeper_than_numpy_allows_is_refused():
    body = b'{"instances": [' + b"[" * 100 + b"1" + b"]" * 100 + b"]}"
    assert message_of(body, x=DT.DT_INT32) == "tensor parsing error: x"


# ---------------------------------------------------------------- typing values


def test_mixed_ints_and_floats_for_float_and_double():
    # json_tensor_test.cc MixedInputForFloatTensor / MixedInputForDoubleTensor.
    assert_array(
        decode('{"instances": [1, 2.0, 3, 4, 5.003, 0.007, 0.0]}', x=DT.DT_FLOAT)["x"],
        [1, 2.0, 3, 4, 5.003, 0.007, 0.0],
        np.float32,
    )
    assert_array(
        decode('{"instances": [1.0, 2, 3, 4, 0.662, 0, 0.0]}', x=DT.DT_DOUBLE)["x"],
        [1.0, 2, 3, 4, 0.662, 0, 0.0],
        np.float64,
    )


def test_float_precision_loss_and_range_follow_getfloat():
    # FloatTensorWithPrecisionLoss, FloatTensorThatExceedsMaxReturnsInf, ...MinReturnsZero.
    assert decode('{"instances": [1435774380]}', x=DT.DT_FLOAT)["x"].tolist() == [1435774336.0]
    assert decode('{"instances": [1435774380.0]}', x=DT.DT_FLOAT)["x"].tolist() == [1435774336.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        big = decode('{"instances": [1.7976931348623157e308, -1.7976931348623157e308]}', x=DT.DT_FLOAT)["x"]
        tiny = decode('{"instances": [2.2250738585072014e-308, -2.2250738585072014e-308]}', x=DT.DT_FLOAT)["x"]
        many = decode('{"instances": [%s]}' % ", ".join(["1e39"] * 100), x=DT.DT_FLOAT)["x"]
    assert big.tolist() == [math.inf, -math.inf]
    assert_array(tiny, [0.0, -0.0], np.float32)
    assert (many == np.inf).all()


def test_large_ints_go_through_double_on_their_way_to_float():
    # static_cast<float>(double(int64)): two roundings, as rapidjson's GetFloat().
    value = 2**60 + 2**36 + 1
    assert decode('{"instances": [%d]}' % value, x=DT.DT_FLOAT)["x"].tolist() == [float(np.float32(float(value)))]


def test_nan_and_infinity_are_accepted_as_tf_serving_does():
    x = decode('{"instances": [NaN, Infinity, -Infinity, Inf, -Inf, 1]}', x=DT.DT_FLOAT)["x"]
    assert np.isnan(x[0]) and x[1:].tolist() == [math.inf, -math.inf, math.inf, -math.inf, 1.0]


def test_rapidjson_reads_digits_after_nan_as_a_zero_significand():
    assert decode('{"instances": [NaN.5, -Infinity.25, NaNe2]}', x=DT.DT_DOUBLE)["x"].tolist() == [0.5, -0.25, 0.0]


def test_doubles_are_read_as_rapidjson_reads_them():
    # rapidjson 1.1.0's default strtod is not correctly rounded for long literals or
    # large exponents, so not even TF Serving's own "%.17g" output always reads back.
    assert decode('{"instances": [123456789.123456789]}', x=DT.DT_DOUBLE)["x"].tolist() == [123456789.12345681]
    assert decode('{"inputs": 1.07261219e+80}', x=DT.DT_DOUBLE)["x"].item() == 1.0726121899999999e80
    assert decode('{"instances": [0.1, 1e22]}', x=DT.DT_DOUBLE)["x"].tolist() == [0.1, 1e22]


@pytest.mark.parametrize(
    "dtype, literals, expected",
    [
        (DT.DT_INT32, "-2147483648, 2147483647", [-(2**31), 2**31 - 1]),
        (DT.DT_INT64, "-9223372036854775808, 9223372036854775807", [-(2**63), 2**63 - 1]),
        (DT.DT_UINT32, "0, 4294967295", [0, 2**32 - 1]),
        (DT.DT_UINT64, "0, 18446744073709551615", [0, 2**64 - 1]),
        (DT.DT_INT16, "-32768, 32767", [-32768, 32767]),
        (DT.DT_INT8, "-128, 127", [-128, 127]),
        (DT.DT_UINT8, "0, 255", [0, 255]),
        (DT.DT_UINT16, "0, 65535", [0, 65535]),
        (DT.DT_BOOL, "true, false", [True, False]),
        (DT.DT_HALF, "1.5, -2", [1.5, -2.0]),
        (DT.DT_BFLOAT16, "1.5, 3", [1.5, 3.0]),
        (DT.DT_INT32, "-0", [0]),
    ],
)
def test_each_dtype_decodes_its_full_range(dtype, literals, expected):
    x = decode('{"instances": [%s]}' % literals, x=dtype)["x"]
    assert x.dtype == tensors._NUMPY_DTYPES[int(dtype)]
    assert x.astype(object).tolist() == expected


def test_narrow_ints_wrap_like_tf_servings_int_val():
    # TF Serving checks only IsInt() for int8/int16/uint8, stores int_val, and
    # Tensor::FromProto narrows with a C++ cast (checked with tf.io.parse_tensor).
    assert decode('{"instances": [300, -1, 255]}', x=DT.DT_UINT8)["x"].tolist() == [44, 255, 255]
    assert decode('{"instances": [200, -129]}', x=DT.DT_INT8)["x"].tolist() == [-56, 127]
    assert decode('{"instances": [70000]}', x=DT.DT_INT16)["x"].tolist() == [4464]


ELEMENT0 = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "


@pytest.mark.parametrize(
    "body, dtype, message",
    [
        ('{"instances": [2147483648]}', DT.DT_INT32, ELEMENT0 + "JSON Value: 2147483648 Type: Number is not of expected type: int32"),
        ('{"instances": [256000000000]}', DT.DT_UINT8, ELEMENT0 + "JSON Value: 256000000000 Type: Number is not of expected type: uint8"),
        ('{"instances": [9223372036854775808]}', DT.DT_INT64, ELEMENT0 + "JSON Value: 9223372036854775808 Type: Number is not of expected type: int64"),
        ('{"instances": [-1]}', DT.DT_UINT64, ELEMENT0 + "JSON Value: -1 Type: Number is not of expected type: uint64"),
        ('{"instances": [-1]}', DT.DT_UINT32, ELEMENT0 + "JSON Value: -1 Type: Number is not of expected type: uint32"),
        ('{"instances": [[1.5]]}', DT.DT_INT32, ELEMENT0 + "JSON Value: 1.5 Type: Number is not of expected type: int32"),
        ('{"instances": [1.0]}', DT.DT_INT64, ELEMENT0 + "JSON Value: 1.0 Type: Number is not of expected type: int64"),
        ('{"instances": ["1.5"]}', DT.DT_FLOAT, ELEMENT0 + 'JSON Value: "1.5" Type: String is not of expected type: float'),
        ('{"instances": [true, 1]}', DT.DT_FLOAT, ELEMENT0 + "JSON Value: true Type: True is not of expected type: float"),
        ('{"instances": [null]}', DT.DT_DOUBLE, ELEMENT0 + "JSON Value: null Type: Null is not of expected type: double"),
        ('{"instances": [1]}', DT.DT_BOOL, ELEMENT0 + "JSON Value: 1 Type: Number is not of expected type: bool"),
        ('{"instances": [1]}', DT.DT_STRING, ELEMENT0 + "JSON Value: 1 Type: Number is not of expected type: string"),
        ('{"instances": [[{"x": 1}]]}', DT.DT_INT32, ELEMENT0 + 'JSON Value: {\n    "x": 1\n} Type: Object is not of expected type: int32'),
        ('{"instances": [NaN]}', DT.DT_INT32, ELEMENT0 + "JSON Value:  Type: Number is not of expected type: int32"),
        ('{"instances": [123456789.123456789]}', DT.DT_INT32, ELEMENT0 + "JSON Value: 123456789.1234568 Type: Number is not of expected type: int32"),
        ('{"instances": [1e400]}', DT.DT_FLOAT, "JSON Parse error: Number too big to be stored in double. at offset: 15"),
    ],
)
def test_wrong_types_and_out_of_range_get_tf_servings_messages(body, dtype, message):
    assert message_of(body, x=dtype) == message


def test_rows_of_different_sizes_or_shapes_are_refused():
    # json_tensor_test.cc SingleUnnamedTensorErrors.
    prefix = "Failed to process element: {} of 'instances' list. Error: INVALID_ARGUMENT: "
    assert message_of('{"instances": [[1,2],[3,4],[5,6,7]]}', x=DT.DT_INT32) == (
        prefix.format(2) + "Expecting tensor size: 2 but got: 3"
    )
    assert message_of('{"instances": [[1,2],[3,4],[[5,6]]]}', x=DT.DT_INT32) == (
        prefix.format(2) + "Expecting shape [2] but got: [1,2]"
    )
    assert message_of('{"instances": [1, [1]]}', x=DT.DT_INT32) == prefix.format(1) + "Expecting shape [] but got: [1]"
    assert message_of('{"instances": [[1,2],["a", "b"]]}', x=DT.DT_INT32) == (
        prefix.format(1) + 'JSON Value: "a" Type: String is not of expected type: int32'
    )


def test_ragged_columnar_values_are_refused():
    assert message_of('{"inputs": [[1, 2], [3]]}', x=DT.DT_INT32) == (
        "Encountered list at unexpected size: 1 at level: 1 expected size: 2"
    )
    assert message_of('{"inputs": [[1, 2], 3]}', x=DT.DT_INT32) == (
        "JSON Value: 3 found at incorrect level: 2 in the JSON DOM. Expected at level: 2"
    )
    assert message_of('{"inputs": [[1], [[2]]]}', x=DT.DT_INT32) == "Encountered list at unexpected level: 2 expected < 2"


def test_several_named_inputs_in_row_format():
    # json_tensor_test.cc MultipleNamedTensor.
    result = decode(
        """{"instances": [
            {"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"],
             "float_tensor": [1.0, NaN], "dbl_tensor": [NaN]},
            {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"],
             "float_tensor": [2.0, Infinity], "dbl_tensor": [2.0]}]}""",
        int_tensor=DT.DT_INT32,
        str_tensor=DT.DT_STRING,
        float_tensor=DT.DT_FLOAT,
        dbl_tensor=DT.DT_DOUBLE,
    )
    assert_array(result["int_tensor"], [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]], np.int32)
    assert result["str_tensor"].dtype == object
    assert result["str_tensor"].tolist() == [[b"foo", b"bar"], [b"baz", b"bat"]]
    assert_array(result["float_tensor"], [[1.0, np.nan], [2.0, np.inf]], np.float32)
    assert_array(result["dbl_tensor"], [[np.nan], [2.0]], np.float64)


def test_named_input_errors_in_row_format():
    # json_tensor_test.cc MultipleNamedTensorErrors.
    two = {"int_tensor": DT.DT_INT32, "str_tensor": DT.DT_STRING}
    first = '{"int_tensor": [[1,2],[3,4],[5,6]], "str_tensor": ["foo", "bar"]}'
    assert message_of(
        '{"instances": [%s, {"int_tensor": [[[7,8],[9,0],[1,2]]], "str_tensor": ["baz", "bat"]}]}' % first, **two
    ) == ("Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: "
          "Expecting shape [3,2] but got: [1,3,2]")
    assert message_of(
        '{"instances": [{"int_tensor": [[1,2],[3,4],[5,6],[7,8]], "str_tensor": ["foo", "bar"]},'
        ' {"int_tensor": [[7,8],[9,0],[1,2]], "str_tensor": ["baz", "bat"]}]}', **two
    ) == ("Failed to process element: 1 key: int_tensor of 'instances' list. Error: INVALID_ARGUMENT: "
          "Expecting tensor size: 8 but got: 6")
    assert message_of('{"instances": [%s, [1, 20, 30]]}' % first, **two) == (
        "Expecting object but got list at item 1 of input list"
    )
    assert message_of('{"instances": [["baz", "bar"], {"str_tensor": ["baz", "bat"]}]}', str_tensor=DT.DT_STRING) == (
        "Expecting value/list but got object at item 1 of input list"
    )


def test_input_names_are_checked_where_tf_serving_checks_them():
    two = {"a": DT.DT_INT32, "b": DT.DT_INT32}
    assert message_of('{"instances": [{"a": 1, "c": 2}]}', **two) == (
        "Failed to process element: 0 key: c of 'instances' list. Error: INVALID_ARGUMENT: "
        "JSON object: does not have named input: c"
    )
    assert message_of('{"instances": [{"a": 1}]}', **two) == (
        "Failed to process element: 0 of 'instances' list. JSON object: {\n    \"a\": 1\n} keys must be equal to: a,b"
    )
    assert message_of('{"instances": [1, 2]}', **two) == (
        "instances is a plain list, but expecting list of objects as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert message_of('{"inputs": [1, 2]}', **two) == (
        "inputs is a plain value/list, but expecting an object as multiple input tensors "
        "required as per tensorinfo_map"
    )
    assert message_of('{"inputs": {"a": [1]}}', **two) == "Missing named input: b in 'inputs' object."
    # Columnar keys that are not inputs are ignored, as json_tensor.cc ignores them.
    result = decode('{"inputs": {"a": [1], "b": 2, "zz": "x"}}', **two)
    assert sorted(result) == ["a", "b"]
    assert_array(result["b"], 2, np.int32)


def test_one_input_may_be_named_in_row_objects():
    assert_array(decode('{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}', x=DT.DT_INT64)["x"], [[1, 2], [3, 4]], np.int64)


def test_columnar_values_keep_their_own_shapes():
    # json_tensor_test.cc SingleUnnamedTensorColumnarFormat / MultipleNamedTensorColumnarFormat.
    expected = [[[1, 2], [3, 4], [5, 6]]]
    assert_array(decode('{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]]}}', int_tensor=DT.DT_INT32)["int_tensor"], expected, np.int32)
    assert_array(decode('{"inputs": [[[1,2],[3,4],[5,6]]]}', int_tensor=DT.DT_INT32)["int_tensor"], expected, np.int32)
    result = decode(
        '{"inputs": {"int_tensor": [[[1,2],[3,4],[5,6]]], "str_tensor": ["foo", "bar"], "bin_tensor": {"b64": "aGVsbG8="}}}',
        int_tensor=DT.DT_INT32,
        str_tensor=DT.DT_STRING,
        bin_tensor=DT.DT_STRING,
    )
    assert result["str_tensor"].tolist() == [b"foo", b"bar"]
    assert result["bin_tensor"].shape == () and result["bin_tensor"].item() == b"hello"
    assert_array(decode('{"inputs": 5}', x=DT.DT_FLOAT)["x"], 5.0, np.float32)


def test_empty_lists_give_empty_dimensions():
    assert_array(decode('{"instances": [[], []]}', x=DT.DT_INT32)["x"], np.zeros((2, 0)), np.int32)
    assert decode('{"instances": [[[]], [[]]]}', x=DT.DT_STRING)["x"].shape == (2, 1, 0)
    assert_array(decode('{"inputs": []}', x=DT.DT_FLOAT)["x"], np.zeros((0,)), np.float32)


def test_base64_strings():
    # json_tensor_test.cc SingleUnnamedTensorBase64Scalars / ...Lists / SingleNamedTensorBase64.
    x = decode('{"instances": [ { "b64" : "aGVsbG8=" }, { "b64": "d29ybGQ=" } ]}', x=DT.DT_STRING)["x"]
    assert x.shape == (2,) and x.tolist() == [b"hello", b"world"]
    x = decode('{"instances": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}', x=DT.DT_STRING)["x"]
    assert x.tolist() == [[b"hello"], [b"world"]]
    x = decode('{"instances": [{"x": [ [{ "b64" : "aGVsbG8=" }], [{ "b64": "d29ybGQ=" }] ]}]}', x=DT.DT_STRING)["x"]
    assert x.shape == (1, 2, 1)


def test_base64_is_decoded_like_absl():
    decoded = decode(
        '{"instances": [{"b64": "aGVsbG8"}, {"b64": "aGVs bG8="}, {"b64": "aGVsbG8."}, {"b64": ""}, {"b64": "QR=="}]}',
        x=DT.DT_STRING,
    )["x"]
    assert decoded.tolist() == [b"hello", b"hello", b"hello", b"", b"A"]
    for bad in ("aGVsbG8==", "a", "aGk!", "aGk=x", "QUJD=", "aG\\u0000k="):
        assert message_of('{"instances": [{"b64": "%s"}]}' % bad, x=DT.DT_STRING) == (
            "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: Unable to base64 decode"
        ), bad
    assert message_of('{"inputs": {"b64": "a"}}', x=DT.DT_STRING) == "Unable to base64 decode"
    assert message_of('{"inputs": [{"b64": 5}]}', x=DT.DT_STRING) == (
        'JSON Value: {\n    "b64": 5\n} not formatted correctly for base64 data'
    )


def test_strings_are_utf8_bytes_and_non_utf8_bytes_pass_through():
    # rapidjson does not validate UTF-8, so TF Serving hands such bytes to the model.
    x = decode(b'{"instances": ["caf\xc3\xa9", "\xff\xfe", "\\u00e9\\ud83d\\ude00", "\\udc80", "a\\u0000b"]}', x=DT.DT_STRING)["x"]
    assert x.tolist() == [b"caf\xc3\xa9", b"\xff\xfe", "é😀".encode(), b"\xed\xb2\x80", b"a\x00b"]


def test_types_json_cannot_carry_are_unimplemented_like_tf_serving():
    error = error_of('{"inputs": [1.5]}', x=DT.DT_COMPLEX64)
    assert error.code == StatusCode.UNIMPLEMENTED
    assert error.message == "Conversion of JSON Value: 1.5 to type: complex64"
    assert message_of('{"instances": [1.5]}', x=DT.DT_COMPLEX64) == (
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        "Conversion of JSON Value: 1.5 to type: complex64"
    )
    assert error_of('{"inputs": [1]}', x=DT.DT_FLOAT_REF).message == "Conversion of JSON Value: 1 to type: float_ref"


def test_error_messages_survive_bytes_that_are_not_utf8():
    message = message_of(b'{"instances": [{"\xff": 1}]}', a=DT.DT_INT32, b=DT.DT_INT32)
    assert "JSON object: does not have named input: \ufffd" in message
    orjson.dumps({"error": message})


# ---------------------------------------------------------------- writing the response


def encode(outputs: dict, format: str = "row", **dtypes: DataType) -> bytes:
    return encode_predict_response(outputs, format, signature({}, dtypes) if dtypes else None)


def test_half_plus_two_response_bytes():
    y = np.array([[2.5], [3.0], [4.5]], np.float32)
    assert encode({"y": y}) == b'{\n    "predictions": [[2.5], [3.0], [4.5]\n    ]\n}'
    assert encode({"y": y.ravel()}) == b'{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    assert encode({"y": y}, "columnar") == (
        b'{\n    "outputs": [\n        [\n            2.5\n        ],\n        [\n            3.0\n'
        b'        ],\n        [\n            4.5\n        ]\n    ]\n}'
    )


def test_single_int_tensor_in_both_formats():
    # json_tensor_test.cc FromJsonSingleTensor.
    t = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2], np.int32).reshape(2, 3, 2)
    assert encode({"int_tensor": t}) == (
        b'{\n    "predictions": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]\n    ]\n}'
    )
    expected = (
        b'{\n    "outputs": [\n        [\n            [\n                1,\n                2\n            ],\n'
        b'            [\n                3,\n                4\n            ],\n            [\n                5,\n'
        b'                6\n            ]\n        ],\n        [\n            [\n                7,\n'
        b'                8\n            ],\n            [\n                9,\n                0\n            ],\n'
        b'            [\n                1,\n                2\n            ]\n        ]\n    ]\n}'
    )
    assert encode({"int_tensor": t}, "columnar") == expected
    # json_tensor_test.cc FromJsonSingleScalarTensor.
    v = np.array([1, 2, 3, 4, 5], np.int32)
    assert json.loads(encode({"int_tensor": v})) == {"predictions": [1, 2, 3, 4, 5]}
    assert json.loads(encode({"int_tensor": v}, "columnar")) == {"outputs": [1, 2, 3, 4, 5]}


def test_bytes_outputs_are_base64_objects():
    # json_tensor_test.cc FromJsonSingleBytesTensor, laid out as rapidjson's PrettyWriter does.
    t = np.array([b"hello", b"world", b"tf", b"serving"], object).reshape(2, 2)
    assert encode({"str_tensor_bytes": t}) == (
        b'{\n    "predictions": [[{\n                "b64": "aGVsbG8="\n            }, {\n'
        b'                "b64": "d29ybGQ="\n            }], [{\n                "b64": "dGY="\n'
        b'            }, {\n                "b64": "c2VydmluZw=="\n            }]\n    ]\n}'
    )


def test_floats_are_written_like_writedecimal():
    # json_tensor_test.cc FromJsonSingleFloatTensorSixDigitPrecision / ...NonFinite.
    t = np.array([9000000, 999999, 0.50000, 0.0003, 0.00003, 555557.5], np.float32).reshape(2, 3)
    assert encode({"float_tensor": t}) == b'{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}'
    t = np.array([np.nan, np.inf, 3, -np.inf], np.float32).reshape(2, 2)
    assert encode({"float_tensor": t}) == b'{\n    "predictions": [[NaN, Infinity], [3.0, -Infinity]\n    ]\n}'
    t = np.array([0.1, 1 / 3, 1.2345678, 1234567.0, -0.0, 3.4028234663852886e38, 1e-45], np.float32)
    assert encode({"y": t}) == (
        b'{\n    "predictions": [0.1, 0.333333343, 1.23456776, 1234567.0, -0.0, 3.40282347e+38, 1.4013e-45\n    ]\n}'
    )
    d = np.array([0.1, 1 / 3, 1e22, 1e-7, 123456789.0, 2.0**60])
    assert encode({"d": d}) == (
        b'{\n    "predictions": [0.1, 0.33333333333333331, 1e+22, 1e-07, 123456789.0, 1.152921504606847e+18\n    ]\n}'
    )


def test_several_outputs_in_both_formats():
    # json_tensor_test.cc FromJsonMultipleNamedTensors.
    outputs = {
        "int_tensor": np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1, 2], np.int32).reshape(2, 3, 2),
        "str_tensor": np.array([b"foo", b"bar", b"baz", b"bat"], object).reshape(2, 2),
        "float_tensor": np.array([[1.0], [2.0]], np.float32),
        "double_scalar_tensor": np.array([8.0, 9.0]),
        "str_tensor_bytes": np.array([b"hello", b"world", b"tf", b"serving"], object).reshape(2, 2),
    }
    assert encode(outputs) == (
        b'{\n    "predictions": [\n        {\n            "double_scalar_tensor": 8.0,\n'
        b'            "float_tensor": [1.0],\n            "int_tensor": [[1, 2], [3, 4], [5, 6]],\n'
        b'            "str_tensor": ["foo", "bar"],\n            "str_tensor_bytes": [{\n'
        b'                    "b64": "aGVsbG8="\n                }, {\n                    "b64": "d29ybGQ="\n'
        b'                }]\n        },\n        {\n            "double_scalar_tensor": 9.0,\n'
        b'            "float_tensor": [2.0],\n            "int_tensor": [[7, 8], [9, 0], [1, 2]],\n'
        b'            "str_tensor": ["baz", "bat"],\n            "str_tensor_bytes": [{\n'
        b'                    "b64": "dGY="\n                }, {\n                    "b64": "c2VydmluZw=="\n'
        b'                }]\n        }\n    ]\n}'
    )
    columnar = encode(outputs, "columnar")
    assert columnar.startswith(
        b'{\n    "outputs": {\n        "double_scalar_tensor": [\n            8.0,\n            9.0\n        ],\n'
        b'        "float_tensor": [\n            [\n                1.0\n            ],\n'
    )
    assert columnar.endswith(
        b'            [\n                {\n                    "b64": "dGY="\n                },\n'
        b'                {\n                    "b64": "c2VydmluZw=="\n                }\n            ]\n'
        b"        ]\n    }\n}"
    )
    assert json.loads(columnar) == {
        "outputs": {
            "double_scalar_tensor": [8.0, 9.0],
            "float_tensor": [[1.0], [2.0]],
            "int_tensor": [[[1, 2], [3, 4], [5, 6]], [[7, 8], [9, 0], [1, 2]]],
            "str_tensor": [["foo", "bar"], ["baz", "bat"]],
            "str_tensor_bytes": [[{"b64": "aGVsbG8="}, {"b64": "d29ybGQ="}], [{"b64": "dGY="}, {"b64": "c2VydmluZw=="}]],
        }
    }


def test_zero_batches():
    # json_tensor_test.cc FromJsonSingleZeroBatchTensor / FromJsonMultipleZeroBatchTensors.
    assert encode({"int_tensor": np.zeros((0, 2), np.int32)}) == b'{\n    "predictions": []\n}'
    assert encode({"s": np.zeros((0, 1, 2), object), "f": np.zeros((0, 3, 4), np.float32)}) == b'{\n    "predictions": []\n}'
    assert encode({"a": np.zeros((2, 0), np.int32), "b": np.zeros((2,), np.int32)}) == (
        b'{\n    "predictions": [\n        {\n            "a": [],\n            "b": 0\n        },\n'
        b'        {\n            "a": [],\n            "b": 0\n        }\n    ]\n}'
    )


@pytest.mark.parametrize(
    "outputs, format, message",
    [
        ({}, "row", "Cannot convert empty tensor map to JSON"),
        ({"tensor": np.zeros(2, np.complex64)}, "row", "Failed to write JSON value for tensor type: complex64"),
        ({"tensor": np.array(1, np.int32)}, "row", "Tensor name: tensor has no shape information "),
        (
            {"int_tensor": np.zeros((2, 3), np.int32), "str_tensor": np.zeros((1, 3), object)},
            "row",
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 2",
        ),
        (
            {"int_tensor": np.zeros((0, 2), np.int32), "str_tensor": np.array([[b"foo", b"bar"]], object)},
            "row",
            "Tensor name: str_tensor has inconsistent batch size: 1 expecting: 0",
        ),
        ({"y": np.zeros(1)}, "", "Invalid request format"),
    ],
)
def test_response_errors(outputs, format, message):
    # json_tensor_test.cc FromJsonSingleTensorErrors / FromJsonMultipleNamedTensorsErrors /
    # FromJsonMultipleZeroBatchTensorsErrors.
    with pytest.raises(ServingError) as info:
        encode_predict_response(outputs, format)
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == message


def test_strings_are_written_raw_with_rapidjsons_escapes():
    s = np.array([b'a"b\\c\n\x01\x1f\x7f', "é".encode(), b"\xff\xfe", "plain str"], object)
    assert encode({"s": s}, "columnar") == (
        b'{\n    "outputs": [\n        "a\\"b\\\\c\\n\\u0001\\u001F\x7f",\n        "\xc3\xa9",\n'
        b'        "\xff\xfe",\n        "plain str"\n    ]\n}'
    )


def test_columnar_scalars_and_the_signature_dtype_of_object_arrays():
    assert encode({"y": np.float32(2.5)}, "columnar") == b'{\n    "outputs": 2.5\n}'
    assert encode({"a": np.array(True), "b": np.array(7, np.int64)}, "columnar") == (
        b'{\n    "outputs": {\n        "a": true,\n        "b": 7\n    }\n}'
    )
    variant = np.array([object()], object)
    with pytest.raises(ServingError) as info:
        encode({"v": variant}, "row", v=DT.DT_VARIANT)
    assert info.value.message == "Failed to write JSON value for tensor type: variant"


def test_half_and_bfloat16_outputs_are_written_as_floats():
    # TF Serving cannot write these; edgeserve writes them like floats.
    assert encode({"h": np.array([1.5, 0.1, 65504], np.float16)}) == b'{\n    "predictions": [1.5, 0.0999756, 65504.0\n    ]\n}'


# ---------------------------------------------------------------- a model of PrettyWriter
# rapidjson's PrettyWriter and MakeJsonFromTensors' event sequence, kept deliberately
# literal, to check the layout of responses for arbitrary shapes.


class PrettyWriter:
    def __init__(self) -> None:
        self.out: list[str] = []
        self.levels: list[list] = []  # [in_array, value_count]
        self.single_line = False

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1] > 0:
                self.out.append(",")
                if self.single_line:
                    self.out.append(" ")
            if not self.single_line:
                self.out.append("\n" + "    " * len(self.levels))
        else:
            if level[1] > 0:
                self.out.append(",\n" if level[1] % 2 == 0 else ": ")
            else:
                self.out.append("\n")
            if level[1] % 2 == 0:
                self.out.append("    " * len(self.levels))
        level[1] += 1

    def raw(self, text: str) -> None:
        self._prefix()
        self.out.append(text)

    def start(self, in_array: bool) -> None:
        self._prefix()
        self.levels.append([in_array, 0])
        self.out.append("[" if in_array else "{")

    def end(self) -> None:
        in_array, count = self.levels.pop()
        if count and (not in_array or not self.single_line):
            self.out.append("\n" + "    " * len(self.levels))
        self.out.append("]" if in_array else "}")


def write_decimal(value: float, float32: bool) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    text = "%g" % value
    back = struct.unpack("f", struct.pack("f", float(text)))[0] if float32 else float(text)
    if back != value:
        text = ("%.9g" if float32 else "%.17g") % value
    if "." not in text and "e" not in text:
        text += ".0"
    return text


def write_value(writer: PrettyWriter, name: str, value, dtype: np.dtype) -> None:
    if dtype == np.float32:
        writer.raw(write_decimal(float(value), True))
    elif dtype == np.float64:
        writer.raw(write_decimal(float(value), False))
    elif dtype == np.bool_:
        writer.raw("true" if value else "false")
    elif dtype.kind in "iu":
        writer.raw(str(int(value)))
    elif name.endswith("_bytes"):
        writer.start(False)
        writer.raw('"b64"')
        writer.raw('"' + base64.b64encode(value).decode() + '"')
        writer.end()
    else:
        writer.raw(json_string(value))


SHORT_ESCAPES = {0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r", 0x22: '\\"', 0x5C: "\\\\"}


def json_string(raw: bytes) -> str:
    # Writer::String: '"', '\\' and controls escaped (\\u00XX upper case), other bytes raw.
    return '"' + "".join(
        SHORT_ESCAPES.get(b) or ("\\u%04X" % b if b < 0x20 else chr(b)) for b in raw
    ) + '"'


def item(array: np.ndarray, i: int) -> np.ndarray:
    return array[i : i + 1].reshape(array.shape[1:])  # stays an ndarray, even for objects


def write_tensor(writer: PrettyWriter, name: str, array: np.ndarray) -> None:
    if array.ndim == 0:
        write_value(writer, name, array.item(), array.dtype)
        return
    writer.start(True)
    for i in range(array.shape[0]):
        write_tensor(writer, name, item(array, i))
    writer.end()


def reference_response(outputs: dict, format: str) -> str:
    writer = PrettyWriter()
    writer.start(False)
    names = sorted(outputs)
    several = len(names) > 1
    if format == "row":
        writer.raw('"predictions"')
        writer.start(True)
        for i in range(outputs[names[0]].shape[0]):
            if several:
                writer.start(False)
            writer.single_line = True
            for name in names:
                if several:
                    writer.raw(json.dumps(name))
                write_tensor(writer, name, item(outputs[name], i))
            writer.single_line = False
            if several:
                writer.end()
        writer.end()
    else:
        writer.raw('"outputs"')
        if several:
            writer.start(False)
        for name in names:
            if several:
                writer.raw(json.dumps(name))
            write_tensor(writer, name, outputs[name])
        if several:
            writer.end()
    writer.end()
    return "".join(writer.out)


OUTPUT_DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.int8, np.uint64, np.bool_, object]


@st.composite
def output_maps(draw, format: str):
    count = draw(st.integers(1, 3))
    batch = draw(st.integers(0, 3))
    outputs = {}
    for i in range(count):
        dims = draw(st.lists(st.integers(0, 3), max_size=2))
        shape = (batch, *dims) if format == "row" else tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
        dtype = np.dtype(draw(st.sampled_from(OUTPUT_DTYPES)))
        name = draw(st.sampled_from(["y", "scores", "z_bytes", "class_bytes", "b"])) + str(i)
        if dtype == object:
            values = draw(st.lists(st.binary(max_size=6), min_size=math.prod(shape), max_size=math.prod(shape)))
            array = np.empty(len(values), object)
            array[:] = values
            array = array.reshape(shape)
        else:
            array = draw(hnp.arrays(dtype, shape))
        outputs[name] = array
    return outputs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_response_layout_matches_the_prettywriter_model(data):
    format = data.draw(st.sampled_from(["row", "columnar"]))
    outputs = data.draw(output_maps(format))
    # The model keeps raw bytes as latin-1 characters; its bytes are the wire bytes.
    assert encode_predict_response(outputs, format) == reference_response(outputs, format).encode("latin-1")


# ---------------------------------------------------------------- properties

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5)
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(["b64", "x", "y", "a"]), children, max_size=3),
    max_leaves=20,
)
INPUT_DTYPES = [
    DT.DT_FLOAT, DT.DT_DOUBLE, DT.DT_INT32, DT.DT_UINT8, DT.DT_INT16, DT.DT_INT8, DT.DT_STRING,
    DT.DT_INT64, DT.DT_BOOL, DT.DT_UINT16, DT.DT_HALF, DT.DT_UINT32, DT.DT_UINT64, DT.DT_BFLOAT16,
]


def to_json(value) -> bytes:
    return json.dumps(value, allow_nan=True).encode()  # NaN/Infinity literals, as TF Serving allows


@settings(max_examples=500, deadline=None)
@given(
    value=json_values,
    key=st.sampled_from(["instances", "inputs"]),
    names=st.sampled_from([("x",), ("x", "y")]),
    dtypes=st.lists(st.sampled_from(INPUT_DTYPES), min_size=2, max_size=2),
)
def test_any_json_value_decodes_or_is_an_invalid_argument(value, key, names, dtypes):
    body = b'{"%s": %s}' % (key.encode(), to_json(value))
    sig = signature(dict(zip(names, dtypes)))
    try:
        result = decode_inputs(parse_predict_request(body), sig)
    except ServingError as exc:
        assert exc.code == StatusCode.INVALID_ARGUMENT
        assert exc.message
        orjson.dumps({"error": exc.message})
    else:
        assert set(result) <= set(names)
        for name, array in result.items():
            assert isinstance(array, np.ndarray)
            assert array.dtype == tensors._NUMPY_DTYPES[int(sig.inputs[name].dtype)]


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=60) | st.builds(lambda v, cut: to_json({"instances": v})[:cut], json_values, st.integers(0, 80)))
def test_any_bytes_parse_or_are_an_invalid_argument(body):
    try:
        request = parse_predict_request(body)
    except ServingError as exc:
        assert exc.code == StatusCode.INVALID_ARGUMENT
        orjson.dumps({"error": exc.message})
        return
    try:
        decode_inputs(request, signature({"x": DT.DT_STRING}))
    except ServingError as exc:
        assert exc.code == StatusCode.INVALID_ARGUMENT


def same_document(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same_document(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same_document(x, y) for x, y in zip(a, b))
    if type(a) is float:
        # rapidjson may read 16+ digit literals an ulp away from orjson's correct rounding.
        return (math.isnan(a) and math.isnan(b)) or a == b or math.isclose(a, b, rel_tol=1e-15)
    return a == b


@settings(max_examples=400, deadline=None)
@given(json_values)
def test_orjson_route_builds_the_document_rapidjson_builds(value):
    body = to_json(value)
    try:
        expected = tensors._parse_with_rapidjson(body)
    except ServingError:
        with pytest.raises(ServingError):
            tensors._loads(body)
        return
    assert same_document(tensors._loads(body)[0], expected)


ROUND_TRIP_DTYPES = [
    (DT.DT_FLOAT, np.float32), (DT.DT_DOUBLE, np.float64), (DT.DT_INT32, np.int32),
    (DT.DT_UINT8, np.uint8), (DT.DT_INT16, np.int16), (DT.DT_INT8, np.int8),
    (DT.DT_INT64, np.int64), (DT.DT_BOOL, np.bool_), (DT.DT_UINT16, np.uint16),
    (DT.DT_HALF, np.float16), (DT.DT_UINT32, np.uint32), (DT.DT_UINT64, np.uint64),
]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
@pytest.mark.parametrize("dtype, numpy_dtype", ROUND_TRIP_DTYPES, ids=[d.name for d, _ in ROUND_TRIP_DTYPES])
def test_numeric_round_trip(dtype, numpy_dtype, data):
    format = data.draw(st.sampled_from(["row", "columnar"]))
    shape = data.draw(hnp.array_shapes(min_dims=1 if format == "row" else 0, max_dims=3, min_side=1, max_side=3))
    array = data.draw(hnp.arrays(numpy_dtype, shape))
    key = "instances" if format == "row" else "inputs"
    answer = encode_predict_response({"x": array}, format)
    # A response is a request: "predictions"/"outputs" become "instances"/"inputs".
    body = b'{"%s": %s' % (key.encode(), answer.split(b":", 1)[1])
    back = decode_inputs(parse_predict_request(body), signature({"x": dtype}))["x"]
    assert back.dtype == array.dtype and back.shape == array.shape
    if dtype == DT.DT_DOUBLE:
        # TF Serving's reader (rapidjson's default strtod) can miss by an ulp or so.
        np.testing.assert_allclose(back, array, rtol=4e-16, atol=0)
    elif array.dtype.kind == "f":
        np.testing.assert_array_equal(back, array)
        numbers = ~np.isnan(array)
        assert (np.signbit(back[numbers]) == np.signbit(array[numbers])).all()
    else:
        assert back.tolist() == array.tolist()


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.binary(max_size=8), min_size=1, max_size=6),
    name=st.sampled_from(["x", "x_bytes"]),
    format=st.sampled_from(["row", "columnar"]),
)
def test_string_round_trip(values, name, format):
    # "_bytes" outputs come back as base64 objects; others as raw (possibly non-UTF-8) bytes.
    array = np.empty(len(values), object)
    array[:] = values
    answer = encode_predict_response({name: array}, format)
    key = b"instances" if format == "row" else b"inputs"
    body = b'{"%s": %s' % (key, answer.split(b":", 1)[1])
    back = decode_inputs(parse_predict_request(body), signature({name: DT.DT_STRING}))[name]
    assert back.tolist() == values


@settings(max_examples=300, deadline=None)
@given(
    value=st.recursive(
        st.integers(-(2**65), 2**65) | st.floats(width=64) | st.booleans(),
        lambda children: st.lists(children, max_size=3),
        max_leaves=12,
    ),
    dtype=st.sampled_from(INPUT_DTYPES),
)
def test_numpy_fast_path_agrees_with_the_exact_path(value, dtype):
    body = to_json(value)
    fast = tensors._fast_array(value, int(dtype), body)
    try:
        shape, flat = tensors._fill(value, int(dtype))
        exact = tensors._to_array(flat, int(dtype), shape, "x")
    except ServingError:
        assert fast is None
        return
    if fast is not None:
        assert fast.dtype == exact.dtype and fast.shape == exact.shape
        if dtype in (DT.DT_HALF, DT.DT_BFLOAT16):  # numpy's NaN checks skip ml_dtypes types
            fast, exact = fast.astype(np.float64), exact.astype(np.float64)
        np.testing.assert_array_equal(fast, exact)


def test_rapidjson_number_formatting_port():
    # Writer::Double (Grisu2 + Prettify), as quoted in messages.
    cases = [
        (0.0, "0.0"), (-0.0, "-0.0"), (1.0, "1.0"), (0.1, "0.1"), (1e21, "1e21"), (1e20, "100000000000000000000.0"),
        (1.5e-7, "1.5e-7"), (1e-6, "0.000001"), (123456789.12345681, "123456789.1234568"),
        (5e-324, "5e-324"), (1.7976931348623157e308, "1.7976931348623157e308"), (-2.5, "-2.5"),
    ]
    for value, text in cases:
        assert tensors._rapidjson_double(value) == text, value


def test_cached_powers_of_ten_are_rapidjsons_table():
    # A few entries of rapidjson's kCachedPowers_F / kCachedPowers_E (10^-348, 10^4, 10^340).
    table = tensors._CACHED_POWERS
    assert table[0] == (0xFA8FD5A0081C0288, -1220)
    assert table[44] == (0x9C40000000000000, -50)
    assert table[86] == (0xAF87023B9BF0EE6B, 1066)


def test_hot_path_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        request = parse_predict_request(b'{"instances": [[1.0],[2.0],[5.0]]}')
        x = decode_inputs(request, signature({"x": DT.DT_FLOAT}))["x"]
        encode_predict_response({"y": x * 0.5 + 2}, request.format)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
