"""Example codecs: TF Serving's REST JSON for :classify and :regress ⇄ TF Serving's messages.

This module owns what `tensorflow_serving/util/json_tensor.cc` does for the classify and
regress methods (FillClassificationRequestFromJson, FillRegressionRequestFromJson,
MakeJsonFromClassificationResult, MakeJsonFromRegressionResult):

* a request body {"signature_name": ..., "context": {...}, "examples": [{...}, ...]} becomes
  an `Input` of `Example`s (`messages`; `example_list`, or
  `example_list_with_context` when a "context" key is present), with TF Serving's checks
  in TF Serving's order and its messages;
* a `ClassificationResult` / `RegressionResult` becomes the bytes TF Serving answers:
  rapidjson's PrettyWriter layout driven as json_tensor.cc drives it, scores and values
  written as WriteDecimal<float> writes them.

How a feature value is typed (AddValueToFeature): a JSON number written with a fraction
or an exponent ("1.0", "1e2"), NaN/Infinity, or an integer beyond the 64-bit range is a
double → float_list (narrowed to float); any other integer → int64_list (one above int64
but within uint64 is refused); true/false → int64_list as 1/0; a string or {"b64": ...}
→ bytes_list. A list takes the kind of its first element, and every later element must
match it; an empty list gives a feature with no kind set. null, nested lists and other
objects are refused.

JSON parsing, debug strings and base64 come from `tensors` (rapidjson's messages, its
number spellings, absl's base64). Deliberate differences are those of `tensors`
(duplicate keys keep the last value; doubles are correctly rounded, which after the
narrowing to float differs from rapidjson's reading only in rare double-rounding cases),
and a feature name that is not UTF-8 is stored with U+FFFD (a protobuf map key must be
UTF-8 in Python).

The message classes come from `messages` (which never imports TensorFlow), on first
use, so importing this module stays cheap. Nothing here knows about models or sockets.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import errors
from .tensors import (
    _absl_base64_decode,
    _debug,
    _format_float32,
    _invalid,
    _json_type,
    load_request_object,
    _rapidjson_doc,
    _string_leaf,
)

if TYPE_CHECKING:
    from .messages import ClassificationResult, Input, RegressionResult

__all__ = [
    "parse_classify_regress_request",
    "classification_result_json",
    "regression_result_json",
]

_INT64_MAX = (1 << 63) - 1
_MISSING = object()
_input_class: Any = None


def _new_input() -> Input:
    global _input_class
    if _input_class is None:
        from .messages import Input

        _input_class = Input
    return _input_class()


# --------------------------------------------------------------------------- requests


def parse_classify_regress_request(body: bytes) -> tuple[Input, str]:
    """Parses a REST :classify or :regress body as TF Serving does.

    Returns the Input and the "signature_name" ("" when the body has none). Raises
    ServingError(INVALID_ARGUMENT) with TF Serving's message for a malformed body, in
    TF Serving's order: JSON syntax, top level not an object, "signature_name" not a
    string, a bad "context", a missing / non-list / empty "examples", then each example.
    """
    body, doc, exact, signature_name = load_request_object(body)

    request_input = _new_input()
    context = doc.get("context", _MISSING)
    if context is not _MISSING:
        example_list = request_input.example_list_with_context
        holder = example_list.context
        holder.SetInParent()  # present even when the context object is empty
        _fill_example(context, holder)
    else:
        example_list = request_input.example_list

    examples = doc.get("examples", _MISSING)
    if examples is _MISSING:
        problem = "When method is classify, key 'examples' is expected and was not found"
    elif type(examples) is not list:
        problem = "Expecting 'examples' value to be an list/array"
    elif not examples:
        problem = "'examples' value is an empty array"
    else:
        problem = None
    if problem is not None:
        raise _invalid(f"JSON Value: {_debug(_rapidjson_doc(body, doc, exact))} {problem}")

    add = example_list.examples.add
    for value in examples:
        _fill_example(value, add())
    return request_input, signature_name


def _fill_example(value: Any, example: Any) -> None:
    """MakeExampleFromJsonObject: each member becomes a feature, in document order."""
    if type(value) is not dict:
        raise _invalid(f"Example must be JSON object but got JSON {_json_type(value)}")
    if not value:
        return  # TF Serving never touches `features` then
    features = example.features.feature
    for key, content in value.items():
        # TF Serving builds the name from the key's C string: it ends at a NUL.
        name = key.partition("\0")[0] if "\0" in key else key
        kind, values = _feature_values(content if type(content) is list else (content,), name)
        try:
            feature = features[name]
        except UnicodeEncodeError:  # bytes that are not UTF-8 (read by the Python parser)
            name = name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            feature = features[name]
        feature.Clear()  # a repeated name: the last one wins, as in TF Serving
        if kind == "int64":
            feature.int64_list.value.extend(values)
        elif kind == "float":
            feature.float_list.value.extend(values)
        elif kind == "bytes":
            feature.bytes_list.value.extend(values)


def _feature_values(items: Any, name: str) -> tuple[str | None, list]:
    """AddValueToFeature over `items`: the feature's kind and its values, or TF Serving's
    error for the first element that does not fit."""
    first = type(items[0]) if items else None
    # Fast paths: a list of one Python type, as most are.
    if first is float:
        if all(type(v) is float for v in items):
            return "float", list(items)
    elif first is int:
        if all(type(v) is int for v in items) and max(items) <= _INT64_MAX:
            return "int64", list(items)
    elif first is str:
        if all(type(v) is str for v in items):
            return "bytes", [v.encode("utf-8", "surrogateescape") for v in items]

    kind: str | None = None
    values: list = []
    append = values.append
    for v in items:
        t = type(v)
        if t is str:
            if kind != "bytes":
                if kind is not None:
                    raise _incompatible(name, kind)
                kind = "bytes"
            append(v.encode("utf-8", "surrogateescape"))
        elif t is float:
            if kind != "float":
                if kind is not None:
                    raise _incompatible(name, kind)
                kind = "float"
            append(v)
        elif t is int or t is bool:
            if kind != "int64":
                if kind is not None:
                    raise _incompatible(name, kind)
                kind = "int64"
            if v > _INT64_MAX:  # parsers give a double beyond uint64, so this is uint64
                raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
            append(int(v))
        elif t is dict and len(v) == 1 and type(v.get("b64")) is str:
            if kind != "bytes":
                if kind is not None:
                    raise _incompatible(name, kind)
                kind = "bytes"
            decoded = _absl_base64_decode(v["b64"])
            if decoded is None:
                raise errors.invalid_argument("Unable to base64 decode")
            append(decoded)
        else:  # null, a list, an object that is not {"b64": "..."}
            raise _invalid(f"Feature: {name} has element with unexpected JSON type: {_json_type(v)}")
    return kind, values


def _incompatible(name: str, kind: str) -> errors.ServingError:
    return _invalid(f"Unexpected element type in feature: {name} expecting type: {kind}")


# --------------------------------------------------------------------------- results


def classification_result_json(result: ClassificationResult) -> bytes:
    """TF Serving's :classify response body: {"results": [[[label, score], ...], ...]}.

    One list per example, one [label, score] pair per class in the result's order; a
    class without a label is written with "" (a proto3 string's default). Raises
    ServingError(INVALID_ARGUMENT) for a result without classifications, as TF Serving.
    """
    classifications = result.classifications
    if not classifications:
        raise errors.invalid_argument("Cannot convert empty ClassificationResults to JSON")
    # PrettyWriter with each example's list in single-line format: every example follows
    # on the "results" line; only the closing bracket of "results" breaks the line.
    rows = []
    for classification in classifications:
        classes = classification.classes
        scores = _format_float32([c.score for c in classes])
        rows.append(
            "[" + ", ".join(f"[{_string_leaf(c.label)}, {s}]" for c, s in zip(classes, scores)) + "]"
        )
    text = '{\n    "results": [' + ", ".join(rows) + "\n    ]\n}"
    return text.encode("utf-8", "surrogateescape")


def regression_result_json(result: RegressionResult) -> bytes:
    """TF Serving's :regress response body: {"results": [value, ...]}, one value per
    example, on one line. Raises ServingError(INVALID_ARGUMENT) for a result without
    regressions, as TF Serving."""
    regressions = result.regressions
    if not regressions:
        raise errors.invalid_argument("Cannot convert empty RegressionResults to JSON")
    values = _format_float32([r.value for r in regressions])
    return ('{\n    "results": [' + ", ".join(values) + "]\n}").encode()
