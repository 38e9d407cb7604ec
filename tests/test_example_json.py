"""edgeserve.example_json against json_tensor.cc's classify/regress behaviour and messages
(cases from tensorflow_serving/util/json_tensor_test.cc included)."""
from __future__ import annotations

import base64
import json
import math
import struct

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeserve import messages
from edgeserve.errors import ServingError, StatusCode
from edgeserve.example_json import (
    classification_result_json,
    parse_classify_regress_request,
    regression_result_json,
)
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2


def parse(body):
    if not isinstance(body, (bytes, bytearray)):
        body = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
    return parse_classify_regress_request(body)


def error_of(body) -> str:
    with pytest.raises(ServingError) as info:
        parse(body)
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.http_status == 400
    return info.value.message


def features(example: example_pb2.Example) -> dict:
    """name -> (kind, values) of an Example."""
    out = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        out[name] = (kind, list(getattr(feature, kind).value) if kind else [])
    return out


def f32(x: float) -> float:
    return struct.unpack("f", struct.pack("f", x))[0]


def the_example(body) -> dict:
    request_input, _ = parse(body)
    assert request_input.WhichOneof("kind") == "example_list"
    (example,) = request_input.example_list.examples
    return features(example)


# --------------------------------------------------------------------------- requests


def test_request_no_context_from_tf_serving_test():
    request_input, signature_name = parse(b"""
    {
      "examples": [
        {
          "names": [ "foo", "bar" ],
          "ratings": [ 8.0, 9.0 ],
          "age": 20
        },
        {
          "names": [ "baz" ],
          "ratings": 6.0
        }
      ]
    }""")
    expected = text_format.Parse("""
      example_list {
        examples { features {
          feature { key: "names" value { bytes_list { value: "foo" value: "bar" } } }
          feature { key: "ratings" value { float_list { value: 8.0 value: 9.0 } } }
          feature { key: "age" value { int64_list { value: 20 } } }
        } }
        examples { features {
          feature { key: "names" value { bytes_list { value: "baz" } } }
          feature { key: "ratings" value { float_list { value: 6.0 } } }
        } }
      }""", input_pb2.Input())
    # edgeserve's classes come from its own descriptor pool: compared on the wire.
    assert request_input.SerializeToString(deterministic=True) == expected.SerializeToString(deterministic=True)
    assert signature_name == ""
    assert isinstance(request_input, messages.Input)
    assert isinstance(request_input.example_list.examples[0], messages.Example)


def test_request_with_context_and_signature_from_tf_serving_test():
    request_input, signature_name = parse(b"""
    {
      "signature_name": "custom_signture",
      "context": {
        "query": "pizza",
        "location": [ "sfo" ]
      },
      "examples": [
        {
          "names": [ "foo", "bar" ],
          "ratings": [ 8.0, 9.0, NaN, Infinity ],
          "age": 20
        },
        {
          "names": [ "baz", { "b64": "aGVsbG8=" } ],
          "ratings": 6.0,
          "intboolmix": [ 1, true, false ]
        },
        {
          "names": "bar",
          "ratings": -Infinity
        }
      ]
    }""")
    assert signature_name == "custom_signture"
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    listed = request_input.example_list_with_context
    assert features(listed.context) == {
        "query": ("bytes_list", [b"pizza"]),
        "location": ("bytes_list", [b"sfo"]),
    }
    first, second, third = (features(e) for e in listed.examples)
    assert first["names"] == ("bytes_list", [b"foo", b"bar"])
    kind, ratings = first["ratings"]
    assert kind == "float_list" and ratings[:2] == [8.0, 9.0]
    assert math.isnan(ratings[2]) and ratings[3] == math.inf
    assert first["age"] == ("int64_list", [20])
    assert second == {
        "names": ("bytes_list", [b"baz", b"hello"]),
        "ratings": ("float_list", [6.0]),
        "intboolmix": ("int64_list", [1, 1, 0]),
    }
    assert third == {"names": ("bytes_list", [b"bar"]), "ratings": ("float_list", [-math.inf])}


@pytest.mark.parametrize("literal, kind, value", [
    ("1", "int64_list", 1),
    ("-1", "int64_list", -1),
    ("0", "int64_list", 0),
    ("-0", "int64_list", 0),  # rapidjson reads -0 as an integer
    ("1.0", "float_list", 1.0),
    ("-0.0", "float_list", -0.0),
    ("1e2", "float_list", 100.0),
    ("1E0", "float_list", 1.0),
    ("0.1", "float_list", f32(0.1)),
    ("true", "int64_list", 1),
    ("false", "int64_list", 0),
    ("9223372036854775807", "int64_list", (1 << 63) - 1),
    ("-9223372036854775808", "int64_list", -(1 << 63)),
    # Beyond the 64-bit range rapidjson (and orjson) read a double.
    ("18446744073709551616", "float_list", f32(2.0 ** 64)),
    ("-9223372036854775809", "float_list", -(2.0 ** 63)),
    ("1e300", "float_list", math.inf),  # narrowed to float
    ('"x"', "bytes_list", b"x"),
    ('""', "bytes_list", b""),
    ('"h\\u00e9\\n"', "bytes_list", "hé\n".encode()),
    ('{"b64": "aGVsbG8="}', "bytes_list", b"hello"),
    ('{"b64": ""}', "bytes_list", b""),
    ('{"b64": "aGVsbG8"}', "bytes_list", b"hello"),  # absl: padding may be left out
])
def test_scalars_and_one_element_lists_are_typed_like_tf_serving(literal, kind, value):
    for text in (literal, f"[{literal}]"):
        got_kind, values = the_example(f'{{"examples": [{{"f": {text}}}]}}')["f"]
        assert got_kind == kind
        assert values == [value]
        if isinstance(value, float):
            assert math.copysign(1, values[0]) == math.copysign(1, value)


def test_lists_of_each_kind():
    example = the_example(
        b'{"examples": [{"i": [1, -2, 3], "f": [1.5, 2.0, -3.25], "s": ["a", "b"],'
        b' "b": [{"b64": "AAE="}, "x"], "ib": [true, 2]}]}'
    )
    assert example == {
        "i": ("int64_list", [1, -2, 3]),
        "f": ("float_list", [1.5, 2.0, -3.25]),
        "s": ("bytes_list", [b"a", b"b"]),
        "b": ("bytes_list", [b"\x00\x01", b"x"]),
        "ib": ("int64_list", [1, 2]),
    }


def test_float_values_are_narrowed_to_float32():
    (kind, values) = the_example(b'{"examples": [{"f": [0.1, 3.14159265358979, 1e-50]}]}')["f"]
    assert kind == "float_list"
    assert values == [f32(0.1), f32(3.14159265358979), 0.0]


def test_empty_list_gives_a_feature_without_kind():
    request_input, _ = parse(b'{"examples": [{"e": [], "x": 1}]}')
    feature = request_input.example_list.examples[0].features.feature["e"]
    assert feature.WhichOneof("kind") is None
    assert set(request_input.example_list.examples[0].features.feature) == {"e", "x"}


def test_empty_example_object_leaves_features_unset():
    request_input, _ = parse(b'{"examples": [{}, {"a": 1}]}')
    empty, full = request_input.example_list.examples
    assert not empty.HasField("features")
    assert empty.SerializeToString() == b""
    assert full.HasField("features")


def test_empty_context_is_still_a_context():
    request_input, _ = parse(b'{"context": {}, "examples": [{"a": 1}]}')
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    assert request_input.example_list_with_context.HasField("context")
    assert len(request_input.example_list_with_context.examples) == 1


def test_signature_name_is_returned_and_defaults_to_empty():
    assert parse(b'{"signature_name": "s1", "examples": [{}]}')[1] == "s1"
    assert parse(b'{"signature_name": "", "examples": [{}]}')[1] == ""
    assert parse(b'{"examples": [{}]}')[1] == ""


def test_unicode_strings_and_names():
    example = the_example('{"examples": [{"名前": "東京", "e": "\\ud83d\\ude00"}]}')
    assert example == {"名前": ("bytes_list", ["東京".encode()]), "e": ("bytes_list", ["😀".encode()])}


def test_feature_name_ends_at_a_nul_like_tf_servings_c_string():
    example = the_example(b'{"examples": [{"ab\\u0000cd": 1, "x": "\\u0000y"}]}')
    assert example == {"ab": ("int64_list", [1]), "x": ("bytes_list", [b"\x00y"])}


def test_repeated_feature_name_keeps_the_last():
    example = the_example(b'{"examples": [{"a\\u0000x": [1, 2], "a\\u0000y": ["s"]}]}')
    assert example == {"a": ("bytes_list", [b"s"])}


def test_body_accepts_bytearray_memoryview_and_str():
    for body in (bytearray(b'{"examples": [{"a": 1}]}'), memoryview(b'{"examples": [{"a": 1}]}'),
                 '{"examples": [{"a": 1}]}'):
        request_input, _ = parse_classify_regress_request(body)
        assert features(request_input.example_list.examples[0]) == {"a": ("int64_list", [1])}


def test_text_after_the_document_is_ignored_like_tf_serving():
    request_input, _ = parse(b'{"examples": [{"a": 1}]} trailing')
    assert features(request_input.example_list.examples[0]) == {"a": ("int64_list", [1])}


def test_invalid_utf8_in_strings_is_kept_as_bytes():
    request_input, _ = parse(b'{"examples": [{"s": "a\xffb"}]}')
    assert features(request_input.example_list.examples[0]) == {"s": ("bytes_list", [b"a\xffb"])}


def test_many_examples():
    body = orjson.dumps({"examples": [{"x": i, "y": float(i) + 0.5, "z": str(i)} for i in range(100)]})
    request_input, _ = parse(body)
    assert len(request_input.example_list.examples) == 100
    assert features(request_input.example_list.examples[42]) == {
        "x": ("int64_list", [42]), "y": ("float_list", [42.5]), "z": ("bytes_list", [b"42"])}


# --------------------------------------------------------------------------- request errors

_DOC = '{\n    "examples": {\n        "names": ["foo", "bar"]\n    }\n}'


@pytest.mark.parametrize("body, message", [
    # json_tensor_test.cc JsonErrors, with the full messages.
    (b'{"signature_name": ["hello"], "examples": [{"names": ["foo", "bar"]}]}',
     'JSON Value: {\n    "signature_name": ["hello"],\n    "examples": [{\n'
     '            "names": ["foo", "bar"]\n        }]\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    (b'{"context": [{"names": ["foo", "bar"]}]}', "Example must be JSON object but got JSON Array"),
    (b'{"examples": {"names": ["foo", "bar"]}}',
     f"JSON Value: {_DOC} Expecting 'examples' value to be an list/array"),
    (b'{"examples": [[{"names": ["foo", "bar"]}]]}', "Example must be JSON object but got JSON Array"),
    (b'{"examples": [{"names": [10, null]}]}', "Feature: names has element with unexpected JSON type: Null"),
    (b'{"examples": [{"names": [10, 10.0]}]}', "Unexpected element type in feature: names expecting type: int64"),
    (b'{"examples": [{"names": [10, {"test": 10}]}]}',
     "Feature: names has element with unexpected JSON type: Object"),
    (b'{"examples": [{"names": [[10], 20]}]}', "Feature: names has element with unexpected JSON type: Array"),
    (b'{"examples": [{"names": [20, 18446744073709551603]}]}',
     "Feature: names has uint64_t element. Only int64_t is supported."),
    # The top level.
    (b"", "JSON Parse error: The document is empty"),
    (b"   ", "JSON Parse error: The document is empty. at offset: 3"),
    (b"{", "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b'{"examples": [}', "JSON Parse error: Invalid value. at offset: 14"),
    (b'{"examples": [{"a": 1e400}]}', "JSON Parse error: Number too big to be stored in double. at offset: 20"),
    (b"[1, 2]", "JSON Value: [1, 2] Is not object"),
    (b'"examples"', 'JSON Value: "examples" Is not object'),
    (b"null", "JSON Value: null Is not object"),
    (b"3.5", "JSON Value: 3.5 Is not object"),
    (b'{"signature_name": 7, "examples": [{}]}',
     'JSON Value: {\n    "signature_name": 7,\n    "examples": [{}]\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    (b'{"signature_name": null}',
     'JSON Value: {\n    "signature_name": null\n} not formatted correctly. '
     "'signature_name' key must be a string value."),
    # "examples" (the message says classify for regress too, as TF Serving's does).
    (b"{}", "JSON Value: {} When method is classify, key 'examples' is expected and was not found"),
    (b'{"instances": [1]}',
     'JSON Value: {\n    "instances": [1]\n} When method is classify, key \'examples\' is expected '
     "and was not found"),
    (b'{"examples": []}', 'JSON Value: {\n    "examples": []\n} \'examples\' value is an empty array'),
    (b'{"examples": null}', "JSON Value: {\n    \"examples\": null\n} Expecting 'examples' value to be an list/array"),
    (b'{"examples": "x"}', "JSON Value: {\n    \"examples\": \"x\"\n} Expecting 'examples' value to be an list/array"),
    # Examples and context that are not objects.
    (b'{"examples": [1]}', "Example must be JSON object but got JSON Number"),
    (b'{"examples": [{}, "x"]}', "Example must be JSON object but got JSON String"),
    (b'{"examples": [null]}', "Example must be JSON object but got JSON Null"),
    (b'{"examples": [true]}', "Example must be JSON object but got JSON True"),
    (b'{"examples": [false]}', "Example must be JSON object but got JSON False"),
    (b'{"context": null, "examples": [{}]}', "Example must be JSON object but got JSON Null"),
    (b'{"context": 1.5, "examples": [{}]}', "Example must be JSON object but got JSON Number"),
    # Feature values.
    (b'{"examples": [{"f": null}]}', "Feature: f has element with unexpected JSON type: Null"),
    (b'{"examples": [{"f": {"x": 1}}]}', "Feature: f has element with unexpected JSON type: Object"),
    (b'{"examples": [{"f": {"b64": 1}}]}', "Feature: f has element with unexpected JSON type: Object"),
    (b'{"examples": [{"f": {"b64": "aGk=", "x": 1}}]}', "Feature: f has element with unexpected JSON type: Object"),
    (b'{"examples": [{"f": {}}]}', "Feature: f has element with unexpected JSON type: Object"),
    (b'{"examples": [{"f": [[]]}]}', "Feature: f has element with unexpected JSON type: Array"),
    (b'{"examples": [{"f": [1, [2]]}]}', "Feature: f has element with unexpected JSON type: Array"),
    (b'{"examples": [{"f": [1.5, 2]}]}', "Unexpected element type in feature: f expecting type: float"),
    (b'{"examples": [{"f": [1.5, true]}]}', "Unexpected element type in feature: f expecting type: float"),
    (b'{"examples": [{"f": [1.5, "x"]}]}', "Unexpected element type in feature: f expecting type: float"),
    (b'{"examples": [{"f": [1, "x"]}]}', "Unexpected element type in feature: f expecting type: int64"),
    (b'{"examples": [{"f": [true, 1.0]}]}', "Unexpected element type in feature: f expecting type: int64"),
    (b'{"examples": [{"f": ["x", 1]}]}', "Unexpected element type in feature: f expecting type: bytes"),
    (b'{"examples": [{"f": ["x", 1.0]}]}', "Unexpected element type in feature: f expecting type: bytes"),
    (b'{"examples": [{"f": ["x", false]}]}', "Unexpected element type in feature: f expecting type: bytes"),
    (b'{"examples": [{"f": [{"b64": "aGk="}, 2]}]}', "Unexpected element type in feature: f expecting type: bytes"),
    # The kind is checked before the value: a b64 object in a float list is a kind error.
    (b'{"examples": [{"f": [1.5, {"b64": "!!"}]}]}', "Unexpected element type in feature: f expecting type: float"),
    (b'{"examples": [{"f": [1.5, 18446744073709551615]}]}',
     "Unexpected element type in feature: f expecting type: float"),
    (b'{"examples": [{"f": [1.5, null]}]}', "Feature: f has element with unexpected JSON type: Null"),
    (b'{"examples": [{"f": 9223372036854775808}]}', "Feature: f has uint64_t element. Only int64_t is supported."),
    (b'{"examples": [{"f": [1, 2, 9223372036854775808]}]}',
     "Feature: f has uint64_t element. Only int64_t is supported."),
    (b'{"examples": [{"f": {"b64": "!!!!"}}]}', "Unable to base64 decode"),
    (b'{"examples": [{"f": {"b64": "aGVsbG8=="}}]}', "Unable to base64 decode"),
    (b'{"examples": [{"f": {"b64": "a"}}]}', "Unable to base64 decode"),
    (b'{"examples": [{"f": ["x", {"b64": "a"}]}]}', "Unable to base64 decode"),
    # The name in messages is the NUL-terminated one.
    (b'{"examples": [{"ab\\u0000c": null}]}', "Feature: ab has element with unexpected JSON type: Null"),
])
def test_malformed_bodies_get_tf_servings_messages(body, message):
    assert error_of(body) == message


def test_errors_come_in_tf_servings_order():
    # signature_name before context, context before examples, examples one by one.
    assert "'signature_name' key must be" in error_of(b'{"signature_name": 1, "context": 1}')
    assert error_of(b'{"context": 1}') == "Example must be JSON object but got JSON Number"
    assert error_of(b'{"examples": [{"a": null}, 1]}') == "Feature: a has element with unexpected JSON type: Null"
    assert error_of(b'{"examples": [1, {"a": null}]}') == "Example must be JSON object but got JSON Number"
    assert error_of(b'{"examples": [{"a": null, "b": [1, 1.0]}]}') == (
        "Feature: a has element with unexpected JSON type: Null")
    assert error_of(b'{"examples": [{"b": [1, 1.0], "a": null}]}') == (
        "Unexpected element type in feature: b expecting type: int64")


def test_quoted_document_is_cut_after_256_bytes():
    body = orjson.dumps({"examples": {"x": "y" * 1000}})
    message = error_of(body)
    assert message.startswith('JSON Value: {\n    "examples": {\n        "x": "yyyy')
    assert message.endswith("\" Expecting 'examples' value to be an list/array")
    assert len(message) < 1100  # the string is written whole, then the writer stops
    body = orjson.dumps({"a": list(range(200)), "examples": 1})
    message = error_of(body)
    quoted = message[len("JSON Value: "):-len(" Expecting 'examples' value to be an list/array")]
    assert 256 <= len(quoted) < 262
    assert quoted.startswith('{\n    "a": [0, 1, 2,')


def test_quoted_document_spells_numbers_as_rapidjson():
    assert error_of(b'{"examples": [], "x": 1e-7, "y": 100000000000000000000}') == (
        'JSON Value: {\n    "examples": [],\n    "x": 1e-7,\n    "y": 100000000000000000000.0\n} '
        "'examples' value is an empty array")


def test_errors_are_invalid_argument_serving_errors():
    with pytest.raises(ServingError) as info:
        parse_classify_regress_request(b"{}")
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert orjson.loads(info.value.json_body()) == {
        "error": "JSON Value: {} When method is classify, key 'examples' is expected and was not found"}


# --------------------------------------------------------------------------- property

_feature_names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=8)
_int64s = st.integers(min_value=-(1 << 63), max_value=(1 << 63) - 1)
_floats = st.floats(width=32, allow_nan=False, allow_infinity=False)  # orjson writes inf as null
_strings = st.text(max_size=10)
_feature_values = st.one_of(
    _int64s, _floats, _strings,
    st.lists(_int64s, min_size=1, max_size=5),
    st.lists(_floats, min_size=1, max_size=5),
    st.lists(_strings, min_size=1, max_size=5),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_feature_names, _feature_values, max_size=6), st.booleans())
def test_feature_dicts_round_trip_into_examples(feature_dict, as_python_json):
    body = (json.dumps if as_python_json else lambda d: orjson.dumps(d).decode())(
        {"examples": [feature_dict]}).encode()
    got = the_example(body)
    assert set(got) == set(feature_dict)
    for name, value in feature_dict.items():
        values = value if isinstance(value, list) else [value]
        kind, stored = got[name]
        if isinstance(values[0], int):
            assert kind == "int64_list" and stored == values
        elif isinstance(values[0], float):
            assert kind == "float_list" and stored == values  # float32 values survive exactly
        else:
            assert kind == "bytes_list" and stored == [v.encode() for v in values]


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=40))
def test_b64_bytes_round_trip(raw):
    body = orjson.dumps({"examples": [{"b": {"b64": base64.b64encode(raw).decode()}}]})
    assert the_example(body) == {"b": ("bytes_list", [raw])}


# --------------------------------------------------------------------------- results


def classification_result(text: str) -> classification_pb2.ClassificationResult:
    return text_format.Parse(text, classification_pb2.ClassificationResult())


def regression_result(values) -> regression_pb2.RegressionResult:
    result = regression_pb2.RegressionResult()
    for v in values:
        result.regressions.add(value=v)
    return result


def test_classification_result_from_tf_serving_test():
    result = classification_result("""
        classifications {
          classes { label: "car" score: 0.2 }
          classes { label: "bike" score: 0.7 }
          classes { label: "bus" score: 0.1 }
        }
        classifications {
          classes { label: "car" score: 0.7 }
          classes { label: "bike" score: 0.1 }
          classes { label: "bus" score: 0.2 }
        }""")
    body = classification_result_json(result)
    # rapidjson's PrettyWriter as MakeJsonFromClassificationResult drives it.
    assert body == (
        b'{\n    "results": [[["car", 0.2], ["bike", 0.7], ["bus", 0.1]], '
        b'[["car", 0.7], ["bike", 0.1], ["bus", 0.2]]\n    ]\n}'
    )
    assert orjson.loads(body) == {"results": [
        [["car", 0.2], ["bike", 0.7], ["bus", 0.1]],
        [["car", 0.7], ["bike", 0.1], ["bus", 0.2]],
    ]}


def test_classification_result_one_example():
    body = classification_result_json(classification_result(
        'classifications { classes { label: "a" score: 1 } }'))
    assert body == b'{\n    "results": [[["a", 1.0]]\n    ]\n}'


def test_classification_without_labels_writes_empty_strings():
    body = classification_result_json(classification_result(
        "classifications { classes { score: 0.25 } classes { score: 0.75 } }"))
    assert body == b'{\n    "results": [[["", 0.25], ["", 0.75]]\n    ]\n}'


def test_classification_with_no_classes_writes_an_empty_list():
    result = classification_pb2.ClassificationResult()
    result.classifications.add()
    result.classifications.add().classes.add(label="x", score=0.5)
    assert classification_result_json(result) == b'{\n    "results": [[], [["x", 0.5]]\n    ]\n}'


def test_classification_labels_are_escaped_as_rapidjson_escapes():
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label='q"b\\n\n\t\x01/é', score=0)
    assert classification_result_json(result) == (
        '{\n    "results": [[["q\\"b\\\\n\\n\\t\\u0001/é", 0.0]]\n    ]\n}'.encode())


@pytest.mark.parametrize("score, text", [
    (0.0, "0.0"),
    (-0.0, "-0.0"),
    (1.0, "1.0"),
    (0.5, "0.5"),
    (f32(0.1), "0.1"),
    (f32(1 / 3), "0.333333343"),  # "%g" does not read back: 9 digits
    (1e6, "1e+06"),
    (9000000.0, "9e+06"),
    (123456.0, "123456.0"),
    (1234567.0, "1234567.0"),
    (f32(3e-5), "3e-05"),
    (f32(1e30), "1e+30"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
])
def test_scores_are_written_as_write_decimal_float(score, text):
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="l", score=score)
    assert classification_result_json(result) == (
        '{\n    "results": [[["l", %s]]\n    ]\n}' % text).encode()


def test_nan_score_is_written_bare():
    result = classification_pb2.ClassificationResult()
    result.classifications.add().classes.add(label="l", score=math.nan)
    assert classification_result_json(result) == b'{\n    "results": [[["l", NaN]]\n    ]\n}'


def test_regression_result_from_tf_serving_test():
    body = regression_result_json(regression_result([0.2, 0.9, 1.0]))
    assert body == b'{\n    "results": [0.2, 0.9, 1.0]\n}'
    assert orjson.loads(body) == {"results": [0.2, 0.9, 1.0]}


def test_regression_result_with_non_finite_from_tf_serving_test():
    body = regression_result_json(regression_result([0.2, math.inf, 1.0, -math.inf, math.nan]))
    assert body == b'{\n    "results": [0.2, Infinity, 1.0, -Infinity, NaN]\n}'
    parsed = json.loads(body)["results"]
    assert parsed[:4] == [0.2, math.inf, 1.0, -math.inf] and math.isnan(parsed[4])


def test_regression_values_formatting():
    body = regression_result_json(regression_result([f32(2 / 3), 42.0, -1e-10, 16777216.0]))
    assert body == b'{\n    "results": [0.666666687, 42.0, -1e-10, 16777216.0]\n}'


def test_empty_results_are_refused_like_tf_serving():
    with pytest.raises(ServingError) as info:
        classification_result_json(classification_pb2.ClassificationResult())
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Cannot convert empty ClassificationResults to JSON"
    with pytest.raises(ServingError) as info:
        regression_result_json(regression_pb2.RegressionResult())
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == "Cannot convert empty RegressionResults to JSON"


def test_importing_the_module_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys, edgeserve.example_json; "
            "print('tensorflow' in sys.modules, 'tensorflow_serving' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
