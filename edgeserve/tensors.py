"""Tensor codecs: TF Serving's REST predict JSON ⇄ numpy (TensorProto ⇄ numpy joins later).

This module owns what `tensorflow_serving/util/json_tensor.cc` does for predict: parsing
a request body (row format "instances", columnar format "inputs", {"b64": ...} strings),
typing it per a signature's input dtypes, and writing "predictions" / "outputs" exactly
as TF Serving writes them — rapidjson's PrettyWriter layout, its float formatting, its
error messages and their order. It knows nothing of models, versions or sockets, checks no
shapes against signatures, and must never import TensorFlow.

How the bytes are matched (TF Serving pins rapidjson 1.1.0):

* Bodies are parsed by orjson; NaN/Infinity (which TF Serving accepts) by orjson with
  stand-ins. Anything else orjson refuses goes to a re-implementation of rapidjson's
  iterative parser with TF Serving's flags (NaN/Infinity, anything after the root value
  ignored, no UTF-8 validation), which accepts it or gives rapidjson's message and offset.
  It also takes bodies nested too deep for orjson, and re-reads a body (up to 256 KB) when
  a message quotes its numbers or a DT_DOUBLE input has long literals: rapidjson's
  doubles are not always correctly rounded, and TF Serving's are rapidjson's.
* Values in messages are re-serialized as JsonValueToDebugString does: PrettyWriter with
  single-line arrays, cut after 256 bytes, doubles through a port of rapidjson's Grisu2.
* Floats are written as WriteDecimal writes them: "%g" when it reads back as the same
  value, else 9 (float) or 17 (double) significant digits; ".0" appended to whole
  numbers; NaN, Infinity and -Infinity bare.
* numpy's list conversion types the common case (numeric lists); an element-by-element
  walk in json_tensor.cc's order takes over whenever numpy cannot prove the result equal,
  and raises TF Serving's first error.

Deliberate differences: duplicate JSON keys keep the last value (rapidjson finds the
first); a DT_FLOAT input, and numbers from bodies over 256 KB, come from correctly rounded
doubles, which differ from rapidjson's in the last bit for some 16+ digit or exponent
literals; several aliases are walked in sorted order (TF Serving walks a protobuf map in
hash order); non-UTF-8 bytes quoted in a message become U+FFFD; nesting deeper than
10^6 levels is refused. Additions: DT_HALF, DT_BFLOAT16 and DT_UINT16 are read and written
like their neighbours (TF Serving refuses them; complex and other types keep its errors);
a signature without inputs can be called with {"inputs": {}} (TF Serving cannot call one).
"""
from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import orjson

from . import errors
from .dtypes import DataType, from_numpy, to_numpy
from .errors import ServingError, StatusCode
from .servable import SignatureSpec

ROW = "row"
COLUMNAR = "columnar"

__all__ = [
    "ROW",
    "COLUMNAR",
    "JsonPredictRequest",
    "parse_predict_request",
    "decode_inputs",
    "encode_predict_response",
]


# --------------------------------------------------------------------------- names

# tensorflow::DataTypeString, as TF Serving's messages print dtypes ("int32", "half").
_TF_TYPE_NAMES = {
    DataType.DT_INVALID: "INVALID",
    DataType.DT_FLOAT: "float",
    DataType.DT_DOUBLE: "double",
    DataType.DT_INT32: "int32",
    DataType.DT_UINT8: "uint8",
    DataType.DT_INT16: "int16",
    DataType.DT_INT8: "int8",
    DataType.DT_STRING: "string",
    DataType.DT_COMPLEX64: "complex64",
    DataType.DT_INT64: "int64",
    DataType.DT_BOOL: "bool",
    DataType.DT_QINT8: "qint8",
    DataType.DT_QUINT8: "quint8",
    DataType.DT_QINT32: "qint32",
    DataType.DT_BFLOAT16: "bfloat16",
    DataType.DT_QINT16: "qint16",
    DataType.DT_QUINT16: "quint16",
    DataType.DT_UINT16: "uint16",
    DataType.DT_COMPLEX128: "complex128",
    DataType.DT_HALF: "half",
    DataType.DT_RESOURCE: "resource",
    DataType.DT_VARIANT: "variant",
    DataType.DT_UINT32: "uint32",
    DataType.DT_UINT64: "uint64",
}


_REF_OFFSET = 100


def _type_name(dtype: int) -> str:
    if dtype > _REF_OFFSET:
        base = _TF_TYPE_NAMES.get(dtype - _REF_OFFSET)  # type: ignore[call-overload]
        if base is not None:
            return base + "_ref"
    name = _TF_TYPE_NAMES.get(dtype)  # type: ignore[call-overload]
    return name if name is not None else f"unknown dtype enum ({int(dtype)})"


def _invalid(message: str) -> ServingError:
    # Messages may quote client bytes that are not UTF-8 (rapidjson does not validate);
    # the error body must stay valid JSON, so such bytes become U+FFFD.
    try:
        message.encode("utf-8")
    except UnicodeEncodeError:
        message = message.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return errors.invalid_argument(message)


def _wrapped(error: ServingError) -> str:
    # absl::Status::ToString(): "INVALID_ARGUMENT: <message>".
    return f"{error.code.name}: {error.message}"


# --------------------------------------------------------------------------- rapidjson dtoa
# A port of rapidjson 1.1.0's Grisu2 + Prettify (Writer::Double), used only to quote numbers
# in error messages the way TF Serving's JsonValueToDebugString does.

_M64 = (1 << 64) - 1


def _cached_powers() -> list[tuple[int, int]]:
    # 10^k for k = -348, -340, ..., 340 as 64-bit significands with the top bit set,
    # rounded to nearest, and binary exponents: rapidjson's kCachedPowers_F / _E.
    table = []
    for k in range(-348, 341, 8):
        num, den = (10**k, 1) if k >= 0 else (1, 10**-k)
        e = num.bit_length() - den.bit_length() - 64
        # Pick e with 2^63 <= num / (den * 2^e) < 2^64.
        while (num << max(-e, 0)) >= ((den << max(e, 0)) << 64):
            e += 1
        while (num << max(-e, 0)) < ((den << max(e, 0)) << 63):
            e -= 1
        q, r = divmod(num << max(-e, 0), den << max(e, 0))
        if 2 * r >= den << max(e, 0):
            q += 1
        table.append((q, e))
    return table


_CACHED_POWERS = _cached_powers()
_POW10_32 = [10**i for i in range(10)]


def _grisu_round(digits: list[int], delta: int, rest: int, ten_kappa: int, wp_w: int) -> None:
    while (
        rest < wp_w
        and delta - rest >= ten_kappa
        and (rest + ten_kappa < wp_w or wp_w - rest > rest + ten_kappa - wp_w)
    ):
        digits[-1] -= 1
        rest += ten_kappa


def _grisu2(value: float) -> tuple[list[int], int]:
    bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    biased = (bits >> 52) & 0x7FF
    significand = bits & ((1 << 52) - 1)
    if biased:
        f, e = significand + (1 << 52), biased - 1075
    else:
        f, e = significand, -1074
    # Boundaries m+ and m-, normalized to the exponent of m+.
    pf, pe = (f << 1) + 1, e - 1
    while not pf & (1 << 53):
        pf <<= 1
        pe -= 1
    pf <<= 10
    pe -= 10
    if f == 1 << 52:
        mf, me = (f << 2) - 1, e - 2
    else:
        mf, me = (f << 1) - 1, e - 1
    mf <<= me - pe
    shift = 64 - f.bit_length()
    vf = f << shift

    dk = (-61 - pe) * 0.30102999566398114 + 347
    k = int(dk)
    if dk - k > 0.0:
        k += 1
    index = (k >> 3) + 1
    big_k = -(-348 + (index << 3))
    cf, ce = _CACHED_POWERS[index]

    def times(af: int) -> int:
        p = af * cf
        return ((p >> 64) + ((p >> 63) & 1)) & _M64

    w = times(vf)
    wp = times(pf) - 1
    wm = times(mf) + 1
    one_e = -(pe + ce + 64)  # -one.e: the cached product's exponent, negated
    delta = wp - wm
    one_f = 1 << one_e
    wp_w = wp - w
    p1 = wp >> one_e
    p2 = wp & (one_f - 1)
    kappa = len(str(p1)) if p1 < 100_000_000 else 9
    digits: list[int] = []
    while kappa > 0:
        div = _POW10_32[kappa - 1]
        d, p1 = divmod(p1, div)
        if d or digits:
            digits.append(d)
        kappa -= 1
        tmp = (p1 << one_e) + p2
        if tmp <= delta:
            big_k += kappa
            _grisu_round(digits, delta, tmp, _POW10_32[kappa] << one_e, wp_w)
            return digits, big_k
    while True:
        p2 = (p2 * 10) & _M64
        delta = (delta * 10) & _M64
        d = p2 >> one_e
        if d or digits:
            digits.append(d)
        p2 &= one_f - 1
        kappa -= 1
        if p2 < delta:
            big_k += kappa
            scale = _POW10_32[-kappa] if -kappa < 9 else 0
            _grisu_round(digits, delta, p2, one_f, (wp_w * scale) & _M64)
            return digits, big_k


def _rapidjson_double(value: float) -> str:
    """rapidjson Writer::Double for a finite value ("1.0", "1e30", "1.5e-7", "0.001")."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = ""
    if value < 0:
        sign, value = "-", -value
    digit_list, k = _grisu2(value)
    digits = "".join(map(str, digit_list))
    length = len(digits)
    kk = length + k
    if 0 <= k and kk <= 21:
        text = digits + "0" * k + ".0"
    elif 0 < kk <= 21:
        text = digits[:kk] + "." + digits[kk:]
    elif -6 < kk <= 0:
        text = "0." + "0" * -kk + digits
    elif length == 1:
        text = digits + "e" + str(kk - 1)
    else:
        text = digits[0] + "." + digits[1:] + "e" + str(kk - 1)
    return sign + text


# --------------------------------------------------------------------------- debug strings
# JsonValueToDebugString: PrettyWriter with single-line arrays, stopped once 256 bytes are
# written (checked before each event, so the last token may run past the cap).

_DEBUG_LIMIT = 256
_ESCAPES = {c: ("\\u%04X" % c) for c in range(0x20)}
_ESCAPES.update({0x08: "\\b", 0x09: "\\t", 0x0A: "\\n", 0x0C: "\\f", 0x0D: "\\r"})
_ESCAPES.update({0x22: '\\"', 0x5C: "\\\\"})
_STR_ESCAPES = {chr(c): text for c, text in _ESCAPES.items()}
_BYTE_ESCAPES = {c: text.encode() for c, text in _ESCAPES.items()}
_NEEDS_ESCAPE = re.compile(r'[\x00-\x1f"\\]')
_NEEDS_ESCAPE_BYTES = re.compile(rb'[\x00-\x1f"\\]')


def _escape_bytes(raw: bytes) -> bytes:
    if _NEEDS_ESCAPE_BYTES.search(raw) is None:
        return b'"' + raw + b'"'
    return b'"' + _NEEDS_ESCAPE_BYTES.sub(lambda m: _BYTE_ESCAPES[m.group()[0]], raw) + b'"'


class _DebugWriter:
    __slots__ = ("out", "levels")

    def __init__(self) -> None:
        self.out = bytearray()
        self.levels: list[list[Any]] = []  # [in_array, value_count]

    def _prefix(self) -> None:
        if not self.levels:
            return
        level = self.levels[-1]
        if level[0]:
            if level[1]:
                self.out += b", "
        else:
            if level[1]:
                self.out += b",\n" if level[1] % 2 == 0 else b": "
            else:
                self.out += b"\n"
            if level[1] % 2 == 0:
                self.out += b" " * (4 * len(self.levels))
        level[1] += 1

    def _scalar(self, text: bytes) -> bool:
        if len(self.out) >= _DEBUG_LIMIT:
            return False
        self._prefix()
        self.out += text
        return True

    def accept(self, value: Any) -> bool:
        kind = type(value)
        if kind is dict or kind is list:
            if len(self.out) >= _DEBUG_LIMIT:
                return False
            self._prefix()
            self.out += b"{" if kind is dict else b"["
            self.levels.append([kind is list, 0])
            if kind is dict:
                for key, item in value.items():
                    if not self._scalar(_escape_bytes(key.encode("utf-8", "surrogateescape"))):
                        return False
                    if not self.accept(item):
                        return False
            else:
                for item in value:
                    if not self.accept(item):
                        return False
            if len(self.out) >= _DEBUG_LIMIT:
                return False
            level = self.levels.pop()
            if kind is dict:
                if level[1]:
                    self.out += b"\n" + b" " * (4 * len(self.levels))
                self.out += b"}"
            else:
                self.out += b"]"
            return True
        if kind is str:
            return self._scalar(_escape_bytes(value.encode("utf-8", "surrogateescape")))
        if value is None:
            return self._scalar(b"null")
        if kind is bool:
            return self._scalar(b"true" if value else b"false")
        if kind is int and -(1 << 63) <= value < (1 << 64):
            return self._scalar(str(value).encode())
        value = float(value)  # a double, or an integer literal rapidjson stored as one
        if len(self.out) >= _DEBUG_LIMIT:
            return False
        self._prefix()
        if value - value != 0:  # NaN and ±Infinity: Writer::Double refuses them
            return False
        self.out += _rapidjson_double(value).encode()
        return True


def _debug(value: Any) -> str:
    writer = _DebugWriter()
    writer.accept(value)
    return writer.out.decode("utf-8", "surrogateescape")


def _json_type(value: Any) -> str:
    if value is None:
        return "Null"
    if value is True:
        return "True"
    if value is False:
        return "False"
    kind = type(value)
    if kind is dict:
        return "Object"
    if kind is list:
        return "Array"
    if kind is str:
        return "String"
    return "Number"


# --------------------------------------------------------------------------- rapidjson parser
# rapidjson 1.1.0's iterative parser with kParseIterativeFlag | kParseNanAndInfFlag |
# kParseStopWhenDoneFlag over EncodedInputStream<UTF8, MemoryStream>: used when orjson
# refuses a body (or it is nested too deep for orjson), to accept what TF Serving accepts
# and to report what it reports. Strings are not UTF-8 validated; invalid bytes are kept
# through surrogateescape.

_PARSE_MESSAGES = {
    "empty": "The document is empty.",
    "invalid": "Invalid value.",
    "miss_name": "Missing a name for object member.",
    "miss_colon": "Missing a colon after a name of object member.",
    "miss_comma_curly": "Missing a comma or '}' after an object member.",
    "miss_comma_square": "Missing a comma or ']' after an array element.",
    "bad_hex": "Incorrect hex digit after \\u escape in string.",
    "bad_surrogate": "The surrogate pair in string is invalid.",
    "bad_escape": "Invalid escape character in string.",
    "miss_quote": "Missing a closing quotation mark in string.",
    "too_big": "Number too big to be stored in double.",
    "miss_fraction": "Miss fraction part in number.",
    "miss_exponent": "Miss exponent in number.",
    "too_deep": "Nesting deeper than 1000000 levels (an edgeserve limit).",
}


class _ParseError(Exception):
    def __init__(self, kind: str, offset: int) -> None:
        super().__init__(kind, offset)
        self.kind = kind
        self.offset = offset


# Parser states (rapidjson's IterativeParsingState) and the tokens it predicts on.
(_START, _FINISH, _ERROR, _OBJ_INIT, _MEMBER_KEY, _KV_DELIM, _MEMBER_VALUE, _MEMBER_DELIM,
 _OBJ_FINISH, _ARR_INIT, _ELEMENT, _ELEM_DELIM, _ARR_FINISH, _VALUE) = range(14)
(_T_LBRACKET, _T_RBRACKET, _T_LCURLY, _T_RCURLY, _T_COMMA, _T_COLON, _T_STRING, _T_FALSE,
 _T_TRUE, _T_NULL, _T_NUMBER) = range(11)
_TOKENS = [_T_NUMBER] * 256
for _char, _token in zip(b'[]{},:"ftn', range(10)):
    _TOKENS[_char] = _token
_E = _ERROR
_PREDICT = {
    _START: [_ARR_INIT, _E, _OBJ_INIT, _E, _E, _E, _VALUE, _VALUE, _VALUE, _VALUE, _VALUE],
    _OBJ_INIT: [_E, _E, _E, _OBJ_FINISH, _E, _E, _MEMBER_KEY, _E, _E, _E, _E],
    _MEMBER_KEY: [_E, _E, _E, _E, _E, _KV_DELIM, _E, _E, _E, _E, _E],
    _KV_DELIM: [_ARR_INIT, _E, _OBJ_INIT, _E, _E, _E] + [_MEMBER_VALUE] * 5,
    _MEMBER_VALUE: [_E, _E, _E, _OBJ_FINISH, _MEMBER_DELIM, _E, _E, _E, _E, _E, _E],
    _MEMBER_DELIM: [_E, _E, _E, _OBJ_FINISH, _E, _E, _MEMBER_KEY, _E, _E, _E, _E],
    _ARR_INIT: [_ARR_INIT, _ARR_FINISH, _OBJ_INIT, _E, _E, _E] + [_ELEMENT] * 5,
    _ELEMENT: [_E, _ARR_FINISH, _E, _E, _ELEM_DELIM, _E, _E, _E, _E, _E, _E],
    _ELEM_DELIM: [_ARR_INIT, _ARR_FINISH, _OBJ_INIT, _E, _E, _E] + [_ELEMENT] * 5,
}
_ERROR_FOR_STATE = {
    _START: "empty",
    _OBJ_INIT: "miss_name",
    _MEMBER_DELIM: "miss_name",
    _MEMBER_KEY: "miss_colon",
    _MEMBER_VALUE: "miss_comma_curly",
    _KV_DELIM: "invalid",
    _ARR_INIT: "invalid",
    _ELEM_DELIM: "invalid",
    _ELEMENT: "miss_comma_square",
}
_SIMPLE_ESCAPES = {
    ord('"'): b'"', ord("\\"): b"\\", ord("/"): b"/", ord("b"): b"\b",
    ord("f"): b"\f", ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t",
}
_STRING_SPECIAL = re.compile(rb'[\x00-\x1f"\\]')
_DIGITS = frozenset(b"0123456789")
_HEX = {c: int(chr(c), 16) for c in b"0123456789abcdefABCDEF"}


_WHITESPACE = re.compile(rb"[ \t\n\r]*")
# A plain number: an int of up to 18 digits, or a decimal without exponent (_run_values
# counts its digits), ending where a number must end. rapidjson reads an int exactly, and
# a decimal of up to 15 digits as a <2^53 significand over an exact power of ten.
_NUMBER = rb"-?(?:0|[1-9][0-9]{0,17})(?:\.[0-9]+)?"
_PLAIN_NUMBER = _NUMBER + rb"(?=[ \t\n\r,\]])"
_COMMA = rb"[ \t\n\r]*,[ \t\n\r]*"
_NUMBER_RUN = re.compile(_PLAIN_NUMBER + rb"(?:" + _COMMA + _PLAIN_NUMBER + rb")*")
_NUMBER_TOKEN = re.compile(rb"-?[0-9.]+")
# A run of arrays that hold only plain numbers ("[1, 2], [3]"), and the inside of each.
_NUMBER_ARRAY = rb"\[[ \t\n\r]*(?:" + _NUMBER + rb"(?:" + _COMMA + _NUMBER + rb")*)?[ \t\n\r]*\]"
_ARRAY_RUN = re.compile(_NUMBER_ARRAY + rb"(?:" + _COMMA + _NUMBER_ARRAY + rb")*")
_ARRAY_BODY = re.compile(rb"\[([^\]]*)\]")
# Deeper nesting is refused (TF Serving has no limit): 10^6 levels already cost ~100 MB.
_MAX_DEPTH = 1_000_000


def _run_values(run: bytes) -> list:
    values = []
    append = values.append
    for literal in _NUMBER_TOKEN.findall(run):
        if b"." not in literal:
            append(int(literal))
        elif len(literal) - (literal[0] == 0x2D) <= 16:  # at most 15 digits and the point
            append(float(literal))
        else:
            append(_long_decimal(literal))
    return values


_MAX_EXACT = (1 << 53) - 1


def _long_decimal(literal: bytes) -> float:
    """ParseNumber's double for a plain decimal ("-?I.F", I at most 18 digits), computed
    the way its digit loops would: the significand takes fraction digits while it is at
    most 2^53 - 1, later digits are added in double arithmetic until 17 count, the rest
    are dropped, and StrtodNormalPrecision scales the result."""
    minus = literal[0] == 0x2D
    whole, _, fraction = literal[minus:].partition(b".")
    digits = whole + fraction
    significant = len(whole) - 1 if whole != b"0" else 0
    leading = len(digits) - len(digits.lstrip(b"0"))
    # Fraction digits taken into the 64-bit significand: up to the one that lifts it
    # past 2^53 - 1 (which needs 16 or 17 significant digits).
    taken = leading + 16 - len(whole)
    if taken < 0:
        taken = 0
    elif len(whole) + taken <= len(digits) and int(digits[: len(whole) + taken]) <= _MAX_EXACT:
        taken += 1
    if taken > len(fraction):
        taken = len(fraction)
    if whole != b"0":
        significant += taken
    else:
        significant += max(0, taken - (len(fraction) - len(fraction.lstrip(b"0"))))
    d = float(int(digits[: len(whole) + taken]))
    exp_frac = -taken
    for ch in fraction[taken:]:
        if significant >= 17:
            break
        d = d * 10.0 + (ch - 48)
        exp_frac -= 1
        if d > 0.0:
            significant += 1
    d = _strtod_normal_precision(d, exp_frac)
    return -d if minus else d


class _RapidJsonParser:
    __slots__ = ("buf", "n")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.n = len(buf)

    def peek(self, i: int) -> int:
        # MemoryStream: '\0' past the end; an embedded NUL reads the same.
        return self.buf[i] if i < self.n else 0

    def skip_ws(self, i: int) -> int:
        if i < self.n and self.buf[i] in b" \n\r\t":
            return _WHITESPACE.match(self.buf, i).end()  # type: ignore[union-attr]
        return i

    def parse(self) -> Any:
        buf, n = self.buf, self.n
        i = 0
        for bom in (0xEF, 0xBB, 0xBF):  # EncodedInputStream skips each BOM byte it sees
            if i < n and buf[i] == bom:
                i += 1
        i = self.skip_ws(i)
        state = _START
        root: Any = None
        # The open containers, the state each returns to, and pending member keys.
        containers: list[Any] = []
        returns: list[int] = []
        keys: list[Any] = []
        while i < n and buf[i]:
            c = buf[i]
            dst = _PREDICT[state][_TOKENS[c]]
            if dst == _ERROR:
                raise _ParseError(_ERROR_FOR_STATE[state], i)
            if dst == _ELEMENT:
                run = _NUMBER_RUN.match(buf, i)
                if run is not None:  # fast path: a run of plain numbers, read at once
                    containers[-1].extend(_run_values(run.group()))
                    i = run.end()
                else:
                    value, i = self.parse_value(i)
                    containers[-1].append(value)
                state = _ELEMENT
            elif dst == _OBJ_INIT or dst == _ARR_INIT:
                if c == 0x5B and (state == _ARR_INIT or state == _ELEM_DELIM):
                    run = _ARRAY_RUN.match(buf, i)
                    if run is not None:  # fast path: "[1, 2], [3, 4]", read at once
                        containers[-1].extend(
                            [_run_values(inner) for inner in _ARRAY_BODY.findall(run.group())]
                        )
                        i = run.end()
                        state = _ELEMENT
                        i = self.skip_ws(i)
                        continue
                container: Any = {} if dst == _OBJ_INIT else []
                if state == _ARR_INIT or state == _ELEM_DELIM:
                    back = _ELEMENT
                    containers[-1].append(container)
                elif state == _KV_DELIM:
                    back = _MEMBER_VALUE
                    containers[-1][keys[-1]] = container
                else:
                    back = state
                    root = container
                if len(containers) >= _MAX_DEPTH:
                    raise _ParseError("too_deep", i)
                containers.append(container)
                returns.append(back)
                keys.append(None)
                i += 1
                state = dst
            elif dst == _MEMBER_KEY:
                keys[-1], i = self.parse_string(i)
                state = dst
            elif dst == _KV_DELIM or dst == _MEMBER_DELIM or dst == _ELEM_DELIM:
                i += 1
                state = dst
            elif dst == _MEMBER_VALUE:
                value, i = self.parse_value(i)
                containers[-1][keys[-1]] = value
                state = dst
            elif dst == _VALUE:
                value, i = self.parse_value(i)
                return value  # kParseStopWhenDoneFlag: ignore whatever follows
            else:  # _OBJ_FINISH / _ARR_FINISH
                if state == _MEMBER_DELIM:
                    raise _ParseError("miss_name", i)
                if state == _ELEM_DELIM:
                    raise _ParseError("invalid", i)
                containers.pop()
                keys.pop()
                state = returns.pop()
                if state == _START:
                    return root  # kParseStopWhenDoneFlag: ignore whatever follows
                i += 1
            if i < n and buf[i] in b" \n\r\t":
                i = _WHITESPACE.match(buf, i).end()  # type: ignore[union-attr]
        raise _ParseError(_ERROR_FOR_STATE[state], i)

    def parse_value(self, i: int) -> tuple[Any, int]:
        c = self.buf[i]
        if c == 0x22:
            return self.parse_string(i)
        for word, value in ((b"null", None), (b"true", True), (b"false", False)):
            if c == word[0]:
                for expected in word[1:]:
                    i += 1
                    if self.peek(i) != expected:
                        raise _ParseError("invalid", i)
                return value, i + 1
        return self.parse_number(i)

    def parse_string(self, i: int) -> tuple[str, int]:
        buf = self.buf
        i += 1  # the opening quote
        out = bytearray()
        while True:
            match = _STRING_SPECIAL.search(buf, i)
            end = match.start() if match is not None else self.n
            out += buf[i:end]
            i = end
            c = self.peek(i)
            if c == 0x22:
                return out.decode("utf-8", "surrogateescape"), i + 1
            if c == 0x5C:
                escape_at = i
                i += 1
                e = self.peek(i)
                simple = _SIMPLE_ESCAPES.get(e)
                if simple is not None:
                    out += simple
                    i += 1
                    continue
                if e != 0x75:  # 'u'
                    raise _ParseError("bad_escape", escape_at)
                code, i = self.parse_hex4(i + 1, escape_at)
                if 0xD800 <= code <= 0xDBFF:
                    if self.peek(i) != 0x5C:
                        raise _ParseError("bad_surrogate", escape_at)
                    i += 1
                    if self.peek(i) != 0x75:
                        raise _ParseError("bad_surrogate", escape_at)
                    low, i = self.parse_hex4(i + 1, escape_at)
                    if not 0xDC00 <= low <= 0xDFFF:
                        raise _ParseError("bad_surrogate", escape_at)
                    code = ((code - 0xD800) << 10 | (low - 0xDC00)) + 0x10000
                # A lone low surrogate is written as its 3-byte form, like rapidjson.
                out += chr(code).encode("utf-8", "surrogatepass")
                continue
            # A control character, or NUL / end of input.
            raise _ParseError("miss_quote" if c == 0 else "bad_escape", i)

    def parse_hex4(self, i: int, escape_at: int) -> tuple[int, int]:
        code = 0
        for _ in range(4):
            digit = _HEX.get(self.peek(i))
            if digit is None:
                raise _ParseError("bad_hex", escape_at)
            code = code * 16 + digit
            i += 1
        return code, i

    def parse_number(self, i: int) -> tuple[Any, int]:
        # GenericReader::ParseNumber step by step: where it stops, which error it raises,
        # whether it yields an integer or a double, and that double's exact value
        # (kParseDefaultFlags: StrtodNormalPrecision, not always correctly rounded).
        peek = self.peek
        start = i
        minus = peek(i) == 0x2D
        if minus:
            i += 1
        small = wide = 0  # rapidjson's `i` (32-bit) and `i64`
        use_64bit = use_double = False
        significand_digits = 0
        special: float | None = None
        d = 0.0
        c = peek(i)
        if c == 0x30:
            i += 1
        elif 0x31 <= c <= 0x39:
            small = c - 48
            i += 1
            edge, last = (214748364, 0x38) if minus else (429496729, 0x35)
            while peek(i) in _DIGITS:
                if small >= edge and (small != edge or peek(i) > last):
                    wide, use_64bit = small, True
                    break
                small = small * 10 + peek(i) - 48
                i += 1
                significand_digits += 1
        elif c == 0x4E or c == 0x49:
            if c == 0x4E:
                for expected in b"NaN":
                    if peek(i) != expected:
                        raise _ParseError("invalid", i)
                    i += 1
                special = math.nan
            else:
                for expected in b"Inf":
                    if peek(i) != expected:
                        raise _ParseError("invalid", i)
                    i += 1
                if peek(i) == 0x69:
                    for expected in b"inity":
                        if peek(i) != expected:
                            raise _ParseError("invalid", i)
                        i += 1
                special = -math.inf if minus else math.inf
        else:
            raise _ParseError("invalid", i)

        if use_64bit:
            edge, last = (0x0CCCCCCCCCCCCCCC, 0x38) if minus else (0x1999999999999999, 0x35)
            while peek(i) in _DIGITS:
                if wide >= edge and (wide != edge or peek(i) > last):
                    d = float(wide)
                    use_double = True
                    break
                wide = wide * 10 + peek(i) - 48
                i += 1
                significand_digits += 1
            if use_double:
                while peek(i) in _DIGITS:
                    if d >= 1.7976931348623157e307:
                        raise _ParseError("too_big", start)
                    d = d * 10 + (peek(i) - 48)
                    i += 1

        exp_frac = 0
        if peek(i) == 0x2E:
            i += 1
            if peek(i) not in _DIGITS:
                raise _ParseError("miss_fraction", i)
            if not use_double:
                significand = wide if use_64bit else small
                while peek(i) in _DIGITS and significand <= 0x1FFFFFFFFFFFFF:
                    significand = significand * 10 + peek(i) - 48
                    i += 1
                    exp_frac -= 1
                    if significand:
                        significand_digits += 1
                d = float(significand)
                use_double = True
            while peek(i) in _DIGITS:
                if significand_digits < 17:
                    d = d * 10.0 + (peek(i) - 48)
                    exp_frac -= 1
                    if d > 0.0:
                        significand_digits += 1
                i += 1

        exponent = 0
        if peek(i) == 0x65 or peek(i) == 0x45:
            i += 1
            if not use_double:
                d = float(wide if use_64bit else small)
                use_double = True
            exp_minus = False
            if peek(i) == 0x2B:
                i += 1
            elif peek(i) == 0x2D:
                exp_minus = True
                i += 1
            if peek(i) not in _DIGITS:
                raise _ParseError("miss_exponent", i)
            exponent = peek(i) - 48
            i += 1
            max_exp = 308 - exp_frac
            while peek(i) in _DIGITS:
                exponent = exponent * 10 + peek(i) - 48
                i += 1
                if exp_minus:
                    if exponent >= 214748364:
                        while peek(i) in _DIGITS:
                            i += 1
                elif exponent > max_exp:
                    raise _ParseError("too_big", start)
            if exp_minus:
                exponent = -exponent

        if use_double:
            d = _strtod_normal_precision(d, exponent + exp_frac)
            return (-d if minus else d), i
        if special is not None:
            return special, i
        magnitude = wide if use_64bit else small
        return (-magnitude if minus else magnitude), i


_POW10 = [float(f"1e{n}") for n in range(309)]


def _fast_path_pow10(significand: float, exp: int) -> float:
    if exp < -308:
        return 0.0
    if exp >= 0:
        return significand * _POW10[exp]
    return significand / _POW10[-exp]


def _strtod_normal_precision(d: float, p: int) -> float:
    if p < -308:
        d = _fast_path_pow10(d, -308)
        return _fast_path_pow10(d, p + 308)
    return _fast_path_pow10(d, p)


def _parse_with_rapidjson(body: bytes) -> Any:
    try:
        return _RapidJsonParser(body).parse()
    except _ParseError as exc:
        raise _invalid(
            f"JSON Parse error: {_PARSE_MESSAGES[exc.kind]} at offset: {exc.offset}"
        ) from None


_ORJSON_MAX_DEPTH = 1024
# Deleting all but brackets, quotes and the characters that follow a backslash keeps the
# strings of a body lexable (so brackets inside them can be dropped) at a fraction of the size.
_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"\\/bfnrtu')
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def _too_deep_for_orjson(body: bytes) -> bool:
    # orjson recurses once per nesting level (and crashes somewhere past 10^5 levels).
    # The number of brackets bounds the depth; only when it is large is the depth
    # computed, with strings dropped so that brackets inside them do not count.
    if len(body) <= _ORJSON_MAX_DEPTH or body.count(b"[") + body.count(b"{") <= _ORJSON_MAX_DEPTH:
        return False
    codes = np.frombuffer(_JSON_STRING.sub(b"", body.translate(None, _NOT_STRUCTURE)), dtype=np.uint8)
    steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int8)
    steps -= (codes == 0x5D) | (codes == 0x7D)
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0)) > _ORJSON_MAX_DEPTH


# The Python parser (for TF Serving's exact messages and number spellings) runs at
# 100-550 ns a byte; past this size a bad body gets orjson's message instead, so no
# body can hold a thread for seconds.
_EXACT_PARSE_LIMIT = 1 << 20


def _loads(body: bytes) -> tuple[Any, bool]:
    """The parsed document, and whether its doubles are rapidjson's (the Python parser
    built it) rather than orjson's."""
    too_deep = _too_deep_for_orjson(body)
    if not too_deep:
        try:
            return orjson.loads(body), False
        except orjson.JSONDecodeError as exc:
            error = exc
        doc = _loads_with_special_numbers(body)
        if doc is not _MISSING:
            return doc, False
    if len(body) > _EXACT_PARSE_LIMIT:
        if too_deep:
            raise _invalid(f"JSON Parse error: nesting deeper than {_ORJSON_MAX_DEPTH} levels")
        raise _invalid(f"JSON Parse error: {error}")
    return _parse_with_rapidjson(body), True


# NaN / Infinity tokens outside strings (rapidjson's spellings, not followed by the
# fraction or exponent rapidjson would go on to read), and the strings that stand in for
# them while orjson parses. Bodies with a "\u0000" escape keep the Python parser.
_SPECIAL_NUMBER = re.compile(rb'"(?:[^"\\]|\\.)*"|(-?)(NaN|Inf(?:inity)?)(?![.eE])', re.S)
_STAND_INS = {b"NaN": b'"\\u0000NaN"', b"Inf": b'"\\u0000Inf"', b"-Inf": b'"\\u0000-Inf"'}
_SPECIAL_VALUES = {"\0NaN": math.nan, "\0Inf": math.inf, "\0-Inf": -math.inf}


def _stand_in(match: re.Match) -> bytes:
    if match.group(2) is None:
        return match.group()  # a string
    if match.group(2) == b"NaN":
        return _STAND_INS[b"NaN"]  # rapidjson drops the sign of NaN
    return _STAND_INS[b"-Inf" if match.group(1) else b"Inf"]


def _loads_with_special_numbers(body: bytes) -> Any:
    # Python clients' json.dumps writes NaN and Infinity, which TF Serving accepts and
    # orjson refuses; parsing those bodies in Python would be slow. If orjson accepts the
    # body with stand-ins, rapidjson accepts the original with those numbers in place.
    if (b"NaN" not in body and b"Inf" not in body) or b"\\u0000" in body:
        return _MISSING
    try:
        doc = orjson.loads(_SPECIAL_NUMBER.sub(_stand_in, body))
    except orjson.JSONDecodeError:
        return _MISSING
    if type(doc) is str:
        return _SPECIAL_VALUES.get(doc, doc)
    pending = [doc] if type(doc) is dict or type(doc) is list else []
    specials = _SPECIAL_VALUES
    while pending:
        container = pending.pop()
        items = enumerate(container) if type(container) is list else container.items()
        for key, value in items:
            kind = type(value)
            if kind is str:
                if value in specials:
                    container[key] = specials[value]
            elif kind is list or kind is dict:
                pending.append(value)
    return doc


# --------------------------------------------------------------------------- dtypes
# Plain ints: comparing against DataType members costs an enum attribute lookup each.
_FLOAT = int(DataType.DT_FLOAT)
_DOUBLE = int(DataType.DT_DOUBLE)
_HALF = int(DataType.DT_HALF)
_BFLOAT16 = int(DataType.DT_BFLOAT16)
_STRING = int(DataType.DT_STRING)
_BOOL = int(DataType.DT_BOOL)
_INVALID = int(DataType.DT_INVALID)
_FLOAT_TYPES = frozenset({_FLOAT, _DOUBLE, _HALF, _BFLOAT16})
# TF Serving reads these with IsInt() into int_val, and TensorProto -> Tensor narrows by
# a C++ cast, so out-of-range values wrap (300 arrives in a uint8 input as 44).
# DT_UINT16 is edgeserve's addition, read the same way.
_INT32_TYPES = frozenset(
    int(t) for t in (DataType.DT_INT32, DataType.DT_INT16, DataType.DT_INT8, DataType.DT_UINT8, DataType.DT_UINT16)
)
_INT_RANGES = {t: (-(1 << 31), (1 << 31) - 1) for t in _INT32_TYPES}
_INT_RANGES[int(DataType.DT_INT64)] = (-(1 << 63), (1 << 63) - 1)
_INT_RANGES[int(DataType.DT_UINT32)] = (0, (1 << 32) - 1)
_INT_RANGES[int(DataType.DT_UINT64)] = (0, (1 << 64) - 1)

_NUMPY_DTYPES: dict[int, np.dtype] = {}
for _dt in DataType:
    if _dt < _REF_OFFSET and to_numpy(_dt) is not None:  # value types only, not *_REF
        _NUMPY_DTYPES[int(_dt)] = to_numpy(_dt)
_DTYPES_BY_NUMPY: dict[np.dtype, int] = {v: k for k, v in _NUMPY_DTYPES.items()}


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class JsonPredictRequest:
    """A parsed predict body, not yet typed: the signature name, the format, and (private)
    what `decode_inputs` needs.

    `signature_name` is "" when the body names none (the caller then uses
    serving_default). `format` is "row" for "instances", "columnar" for "inputs", and ""
    when the body names neither. As in TF Serving, a body whose "instances"/"inputs" part
    is unusable (both keys, neither, not a list, an empty list) is refused by
    `decode_inputs`, i.e. after the model and signature were resolved: TF Serving reports
    an unknown model or signature first.
    """

    signature_name: str
    format: str
    # (payload, document, body, doubles_are_rapidjsons, deferred_error)
    _state: tuple = ()

    def __repr__(self) -> str:
        return f"JsonPredictRequest(signature_name={self.signature_name!r}, format={self.format!r})"


_BOTH_KEYS = "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
_NOT_A_LIST = "Expecting 'instances' to be an list/array"
_EMPTY_LIST = "No values in 'instances' array"
_NEITHER_KEY = "Missing 'inputs' or 'instances' key"
_MISSING = object()


def load_request_object(body: bytes) -> tuple[bytes, dict, bool, str]:
    """The JSON object of a REST predict/classify/regress body and its "signature_name",
    checked as TF Serving checks both: (body as bytes, object, parsed exactly by the
    rapidjson port, signature name or "")."""
    if type(body) is not bytes and not isinstance(body, bytearray):
        body = body.encode() if isinstance(body, str) else bytes(body)
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    doc, exact = _loads(body)
    if type(doc) is not dict:
        raise _invalid(f"JSON Value: {_debug(_rapidjson_doc(body, doc, exact))} Is not object")
    signature_name = doc.get("signature_name", "")
    if type(signature_name) is not str:
        raise _invalid(
            f"JSON Value: {_debug(_rapidjson_doc(body, doc, exact))} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    if exact:
        # A name with bytes that are not UTF-8 matches no signature; keep it printable.
        signature_name = signature_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return body, doc, exact, signature_name


def parse_predict_request(body: bytes) -> JsonPredictRequest:
    """Parses a REST predict body; raises ServingError(INVALID_ARGUMENT) as TF Serving does.

    Raised here: an empty or malformed body ("JSON Parse error: ..."), a top level that is
    not an object, a "signature_name" that is not a string. What is wrong with
    "instances"/"inputs" is raised by `decode_inputs` (see JsonPredictRequest).
    """
    body, doc, exact, signature_name = load_request_object(body)
    instances = doc.get("instances", _MISSING)
    if instances is not _MISSING:
        error = None
        if "inputs" in doc:
            error = _BOTH_KEYS
        elif type(instances) is not list:
            error = _NOT_A_LIST
        elif not instances:
            error = _EMPTY_LIST
        return JsonPredictRequest(signature_name, ROW, (instances, doc, body, exact, error))
    inputs = doc.get("inputs", _MISSING)
    if inputs is not _MISSING:
        return JsonPredictRequest(signature_name, COLUMNAR, (inputs, doc, body, exact, None))
    return JsonPredictRequest(signature_name, "", (None, doc, body, exact, _NEITHER_KEY))


def decode_inputs(request: JsonPredictRequest, signature: SignatureSpec) -> dict[str, np.ndarray]:
    """Types the request's tensors per the signature's input dtypes, as TF Serving does.

    Returns alias -> ndarray (DT_STRING: an object array of bytes); row format stacks the
    instances on a new first axis. Raises ServingError with TF Serving's code (mostly
    INVALID_ARGUMENT; UNIMPLEMENTED for a dtype JSON cannot express, as TF Serving) and
    message. Names are checked where json_tensor.cc checks them — every row object must
    carry exactly the signature's inputs, a columnar object each of them (other columnar
    keys are ignored) — but shapes are not checked against the signature. A signature
    without inputs takes {"inputs": {}} and gets {} (TF Serving refuses any body).
    """
    payload, doc, body, exact, error = request._state
    infos = signature.inputs
    if not infos:
        if request.format == COLUMNAR and payload == {} and type(payload) is dict:
            return {}  # edgeserve's way to call a signature without inputs
        raise _invalid(f"Failed to get input map for signature: {request.signature_name or 'DEFAULT'}")
    if error is not None:
        if error is _NEITHER_KEY:
            raise errors.invalid_argument(error)
        raise _invalid(f"JSON Value: {_debug(_rapidjson_doc(body, doc, exact))} {error}")
    if not exact:
        for spec in infos.values():
            if spec.dtype == _DOUBLE:
                reread = _rapidjson_doc(body, doc, exact)
                if reread is not doc:  # doubles as TF Serving reads them
                    payload, doc, exact = _payload(reread, request.format), reread, True
                break
    decode = _decode_instances if request.format == ROW else _decode_inputs_value
    try:
        return decode(payload, infos, body)
    except ServingError:
        reread = _rapidjson_doc(body, doc, exact)
        if reread is doc:
            raise
    # The message may quote numbers: decode again from rapidjson's reading of them.
    return decode(_payload(reread, request.format), infos, body)


# The body seen through bytes.translate: digits and '.' become "0", e/E "e", the other
# letters of true/false stay, all else becomes " ". A literal whose double rapidjson may
# round differently from a correct parse shows 16+ "0"s or a "0e" (StrtodNormalPrecision
# is exact below that); one beyond float range shows 39+ "0"s or a "0e"; a bool shows
# "true" or "false". Keys such as "instances" or "signature_name" show none of these.
_MARKS = bytes(
    0x30 if c in b"0123456789." else 0x65 if c in b"eE" else c if c in b"trufals" else 0x20
    for c in range(256)
)
# Re-reading a body with the Python parser costs ~0.1-0.5 µs a byte; above this size the
# doubles orjson read (correctly rounded) stand in for rapidjson's.
_REREAD_LIMIT = 256 * 1024


def _has_long_literal(body: bytes) -> bool:
    marks = body.translate(_MARKS)
    return b"0e" in marks or b"0000000000000000" in marks


def _numpy_unsafe(body: bytes) -> bool:
    """Whether numpy's reading could differ from TF Serving's for a numeric target: a
    true/false it would take as 1/0, or a number beyond float range (which numpy casts
    with a warning)."""
    marks = body.translate(_MARKS)
    return b"0e" in marks or b"true" in marks or b"false" in marks or b"0" * 39 in marks


def _rapidjson_doc(body: bytes, doc: Any, exact: bool) -> Any:
    """The document with rapidjson's doubles: `doc` itself when its numbers are already
    those (no literal rapidjson would round differently), else the body read again."""
    if exact or len(body) > _REREAD_LIMIT or not _has_long_literal(body):
        return doc
    return _parse_with_rapidjson(body)


def _payload(doc: dict, format: str) -> Any:
    return doc.get("instances") if format == ROW else doc.get("inputs")


def _is_b64_object(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _is_element_object(value: Any) -> bool:
    return type(value) is dict and not (len(value) == 1 and type(value.get("b64")) is str)


def _decode_instances(instances: list, infos: Mapping[str, Any], body: bytes) -> dict[str, np.ndarray]:
    first = instances[0]
    if len(infos) == 1:
        if not _is_element_object(first):
            for name in infos:
                array = _fast_array(instances, infos[name].dtype, body)
                if array is not None:
                    return {name: array}
                return _decode_instances_exactly(instances, infos, [name])
    elif type(first) is not dict:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    names = sorted(infos)
    if _is_element_object(first):
        keys = set(names)
        if all(type(item) is dict and item.keys() == keys for item in instances):
            result = {}
            for name in names:
                array = _fast_array([item[name] for item in instances], infos[name].dtype, body)
                if array is None:
                    break
                result[name] = array
            else:
                return result
    return _decode_instances_exactly(instances, infos, names)


def _decode_instances_exactly(instances: list, infos: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray]:
    """FillTensorMapFromInstancesList, element by element, for TF Serving's first error."""
    objects = _is_element_object(instances[0])
    values: dict[str, list] = {}
    shapes: dict[str, tuple[int, ...]] = {}
    sizes: dict[str, int] = {}

    def add_item(item: Any, name: str) -> None:
        if name not in infos:
            raise _invalid(f"JSON object: does not have named input: {name}")
        shape, flat = _fill(item, infos[name].dtype)
        if name not in sizes:
            sizes[name] = len(flat)
            shapes[name] = shape
            values[name] = flat
            return
        if sizes[name] != len(flat):
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        if shapes[name] != shape:
            raise _invalid(f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(shape)}")
        values[name].extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            keys = set()
            for key, item in element.items():
                name = key.partition("\0")[0]  # a std::string made from a C string
                keys.add(name)
                try:
                    add_item(item, name)
                except ServingError as exc:
                    raise _invalid(
                        f"Failed to process element: {index} key: {name} of 'instances' list. "
                        f"Error: {_wrapped(exc)}"
                    ) from None
            if keys != set(names):
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. JSON object: "
                    f"{_debug(element)} keys must be equal to: {','.join(names)}"
                )
        else:
            if _is_element_object(element):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
            try:
                add_item(element, names[0])
            except ServingError as exc:
                raise _invalid(
                    f"Failed to process element: {index} of 'instances' list. Error: {_wrapped(exc)}"
                ) from None
    count = len(instances)
    return {
        name: _to_array(flat, infos[name].dtype, (count, *shapes[name]), name)
        for name, flat in values.items()
    }


def _decode_inputs_value(value: Any, infos: Mapping[str, Any], body: bytes) -> dict[str, np.ndarray]:
    """FillTensorMapFromInputsMap."""
    if type(value) is not dict or _is_b64_object(value):
        if len(infos) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        for name in infos:
            return {name: _decode_tensor(value, name, infos[name].dtype, body)}
    result = {}
    for name in sorted(infos):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _decode_tensor(value[name], name, infos[name].dtype, body)
    return result


def _decode_tensor(value: Any, name: str, dtype: int, body: bytes) -> np.ndarray:
    array = _fast_array(value, dtype, body)
    if array is not None:
        return array
    shape, flat = _fill(value, dtype)
    return _to_array(flat, dtype, shape, name)


# --------------------------------------------------------------------------- typing leaves


def _type_error(value: Any, dtype: int) -> ServingError:
    return _invalid(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_type_name(dtype)}"
    )


_BASE64_TEXT = re.compile(rb"([A-Za-z0-9+/]*)([=.]*)")
_BASE64_PADDING = {0: 0, 2: 2, 3: 1}


def _absl_base64_decode(text: str) -> bytes | None:
    """absl::Base64Unescape: whitespace anywhere is skipped; padding ('=' or '.') may be
    left out, but when present must be exactly right; leftover bits are dropped."""
    raw = text.encode("utf-8", "surrogateescape").translate(None, b" \t\n\v\f\r")
    match = _BASE64_TEXT.fullmatch(raw)
    if match is None:
        return None
    data, padding = match.groups()
    expected = _BASE64_PADDING.get(len(data) % 4)
    if expected is None or (padding and len(padding) != expected):
        return None
    return binascii.a2b_base64(data + b"=" * expected)


def _leaf_converter(dtype: int):
    """A function that checks one JSON leaf for `dtype` (AddValueToTensor) and returns
    the Python value to store."""
    if dtype in _FLOAT_TYPES:
        def leaf(value: Any) -> Any:
            kind = type(value)
            if kind is float or kind is int:
                return value
            raise _type_error(value, dtype)
        return leaf
    low_high = _INT_RANGES.get(dtype)
    if low_high is not None:
        low, high = low_high

        def leaf(value: Any) -> Any:
            if type(value) is int and low <= value <= high:
                return value
            raise _type_error(value, dtype)
        return leaf
    if dtype == _BOOL:
        def leaf(value: Any) -> Any:
            if type(value) is bool:
                return value
            raise _type_error(value, dtype)
        return leaf
    if dtype == _STRING:
        def leaf(value: Any) -> Any:
            if type(value) is str:
                return value.encode("utf-8", "surrogateescape")
            if type(value) is dict:
                if not _is_b64_object(value):
                    raise _invalid(f"JSON Value: {_debug(value)} not formatted correctly for base64 data")
                decoded = _absl_base64_decode(value["b64"])
                if decoded is None:
                    raise errors.invalid_argument("Unable to base64 decode")
                return decoded
            raise _type_error(value, dtype)
        return leaf

    def leaf(value: Any) -> Any:
        if type(value) is dict:
            raise _type_error(value, dtype)
        message = f"Conversion of JSON Value: {_debug(value)} to type: {_type_name(dtype)}"
        raise ServingError(StatusCode.UNIMPLEMENTED, _invalid(message).message)
    return leaf


def _shape_string(shape: tuple[int, ...]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _fill(value: Any, dtype: int) -> tuple[tuple[int, ...], list]:
    """GetDenseTensorShape + FillTensorProto: the shape read off the first elements, then
    every leaf checked at the level and list size that shape demands, in document order.
    Iterative: a body may nest lists far deeper than Python's recursion limit."""
    shape = []
    probe = value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    rank = len(shape)
    leaf = _leaf_converter(dtype)
    if not rank:
        return (), [leaf(value)]
    flat: list = []
    append = flat.append
    stack = [iter(value)]
    while stack:
        level = len(stack)
        for item in stack[-1]:
            if type(item) is list:
                if level >= rank:
                    raise _invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
                if len(item) != shape[level]:
                    raise _invalid(
                        f"Encountered list at unexpected size: {len(item)} at level: {level} "
                        f"expected size: {shape[level]}"
                    )
                stack.append(iter(item))
                break
            if level != rank:
                raise _invalid(
                    f"JSON Value: {_debug(item)} found at incorrect level: {level + 1} "
                    f"in the JSON DOM. Expected at level: {rank}"
                )
            append(leaf(item))
        else:
            stack.pop()
    return tuple(shape), flat


_MAX_RANK = 64  # numpy's limit (TF's is 254; either way Tensor::FromProto would fail)


def _to_array(flat: list, dtype: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Checked leaves -> an ndarray of `shape` (C order)."""
    if len(shape) > _MAX_RANK:
        raise errors.invalid_argument(f"tensor parsing error: {name}")
    if dtype == _STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    target = _NUMPY_DTYPES.get(dtype)
    if target is None:  # no leaves were given for a type numpy cannot hold
        return np.empty(shape, dtype=object)
    if dtype in _FLOAT_TYPES:
        doubles = np.array(flat, dtype=np.float64)
        if dtype == _DOUBLE:
            return doubles.reshape(shape)
        with np.errstate(over="ignore"):  # GetFloat(): beyond float range becomes ±inf
            return doubles.astype(target).reshape(shape)
    if dtype in _INT32_TYPES:
        return np.array(flat, dtype=np.int64).astype(target).reshape(shape)
    return np.array(flat, dtype=target).reshape(shape)


def _fast_array(value: Any, dtype: int, body: bytes) -> np.ndarray | None:
    """numpy's own list conversion, when it provably gives TF Serving's result; else None.

    np.asarray proves the nesting regular and the leaves all numbers (or all bools). What
    it cannot see — a true/false among numbers, an int out of range, a float where an int
    is required — sends the value to the exact path instead.
    """
    if type(value) is not list or dtype == _STRING:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype in _FLOAT_TYPES:
        if kind not in "fiu":
            return None
        if array.size <= 64:
            unsafe = _numpy_unsafe(body)
            if unsafe and (b"true" in body or b"false" in body):
                return None
        else:
            if b"true" in body or b"false" in body:
                return None
            unsafe = True
        if kind != "f":
            array = array.astype(np.float64)  # int -> double -> float, as GetFloat() does
        if dtype == _DOUBLE:
            return array
        if not unsafe and dtype == _FLOAT:
            return array.astype(np.float32)  # no overflow possible: skip np.errstate
        with np.errstate(over="ignore"):
            return array.astype(_NUMPY_DTYPES[dtype])
    if dtype == _BOOL:
        return array if kind == "b" else None
    low_high = _INT_RANGES.get(dtype)
    if low_high is None or kind not in "iu" or not array.size or b"true" in body or b"false" in body:
        return None
    if array.size <= 32:
        flat = array.ravel().tolist()
        smallest, largest = min(flat), max(flat)
    else:
        smallest, largest = int(array.min()), int(array.max())
    if smallest < low_high[0] or largest > low_high[1]:
        return None
    if dtype in _INT32_TYPES and array.dtype != np.int64:
        array = array.astype(np.int64)
    return array.astype(_NUMPY_DTYPES[dtype], copy=False)


# --------------------------------------------------------------------------- responses
# rapidjson's PrettyWriter (4-space indent) as MakeJsonFromTensors drives it: row format
# writes each instance with single-line arrays ("[1, 2]"), yet objects always break lines;
# columnar format puts every array element on its own line.

_F32_PACK = struct.Struct("f").pack
_F32_UNPACK = struct.Struct("f").unpack
_NON_FINITE = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}


def _format_float32(values: list[float]) -> list[str]:
    """WriteDecimal<float>: "%g" if it reads back as the same float, else "%.9g"; ".0"
    added to whole numbers; NaN, Infinity, -Infinity bare."""
    out = []
    append = out.append
    for v in values:
        s = "%g" % v
        f = float(s)
        if f != v and _F32_UNPACK(_F32_PACK(f))[0] != v:
            s = "%.9g" % v
        if "." not in s and "e" not in s:
            s = _NON_FINITE.get(s) or s + ".0"
        append(s)
    return out


def _format_float64(values: list[float]) -> list[str]:
    """WriteDecimal<double>: "%g" if it reads back as the same double, else "%.17g"."""
    out = []
    append = out.append
    for v in values:
        s = "%g" % v
        if float(s) != v:
            s = "%.17g" % v
        if "." not in s and "e" not in s:
            s = _NON_FINITE.get(s) or s + ".0"
        append(s)
    return out


def _format_float_short(values: list[float]) -> list[str]:
    # half / bfloat16 (not written by TF Serving): "%g" always reads back for 11 or 8 bits.
    out = ["%g" % v for v in values]
    return [s if "." in s or "e" in s else (_NON_FINITE.get(s) or s + ".0") for s in out]


def _string_leaf(raw: Any) -> str:
    """Writer::String: only '"', '\\' and control characters are escaped; other bytes,
    valid UTF-8 or not, are written as they are (carried here by surrogateescape)."""
    if type(raw) is bytes:
        text = raw.decode("utf-8", "surrogateescape")
    elif isinstance(raw, str):
        text = raw
    else:
        text = bytes(raw).decode("utf-8", "surrogateescape")
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _STR_ESCAPES[m.group()], text) + '"'


def _as_bytes(raw: Any) -> bytes:
    if type(raw) is bytes:
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return bytes(raw)


def _output_dtype(alias: str, array: np.ndarray, signature: SignatureSpec | None) -> int:
    dtype = _DTYPES_BY_NUMPY.get(array.dtype)
    if dtype is None:
        dtype = int(from_numpy(array.dtype))
    if signature is not None and (dtype == _STRING or dtype == _INVALID):
        # An object array holds whatever the signature says (strings, or e.g. variants).
        spec = signature.outputs.get(alias)
        if spec is not None:
            return int(spec.dtype)
    return dtype


def _leaf_strings(alias: str, array: np.ndarray, dtype: int, depth: int) -> list[str]:
    """Every element of `array`, in C order, as TF Serving writes it. `depth` is the
    writer's nesting level of the element, which matters for {"b64": ...} objects only."""
    if dtype == _FLOAT:
        return _format_float32(array.ravel().tolist())
    if dtype == _DOUBLE:
        return _format_float64(array.ravel().tolist())
    if dtype in _INT_RANGES:
        return list(map(str, array.ravel().tolist()))
    if dtype == _BOOL:
        return ["true" if v else "false" for v in array.ravel().tolist()]
    if dtype == _STRING:
        values = array.ravel().tolist()
        if alias.endswith("_bytes"):
            head = "{\n" + " " * (4 * depth) + '"b64": "'
            tail = '"\n' + " " * (4 * (depth - 1)) + "}"
            return [head + base64.b64encode(_as_bytes(v)).decode("ascii") + tail for v in values]
        return [_string_leaf(v) for v in values]
    if dtype == _HALF or dtype == _BFLOAT16:
        return _format_float_short(array.astype(np.float32).ravel().tolist())
    raise errors.invalid_argument(f"Failed to write JSON value for tensor type: {_type_name(dtype)}")


def _nest(leaves: list[str], shape: tuple[int, ...], level: int, pretty: bool) -> list[str]:
    """Groups C-ordered leaves into the arrays of shape[1:] and returns the shape[0]
    items. The arrays of dimension j (j >= 1) sit at the writer's nesting level
    `level` + j - 1; `pretty` puts their elements on lines of their own."""
    dims = shape[1:]
    if 0 in dims:
        zero = dims.index(0)
        items = ["[]"] * math.prod(shape[: zero + 1])
        dims = dims[:zero]
    else:
        items = leaves
    for j in range(len(dims), 0, -1):
        size = dims[j - 1]
        if pretty:
            indent = "\n" + " " * (4 * (level + j - 1))
            opening, separator = "[" + indent, "," + indent
            closing = "\n" + " " * (4 * (level + j - 2)) + "]"
        else:
            opening, separator, closing = "[", ", ", "]"
        if size == 1:
            items = [opening + item + closing for item in items]
        else:
            items = [opening + separator.join(items[i : i + size]) + closing for i in range(0, len(items), size)]
    return items


_NUMERIC_JSON = orjson.OPT_SERIALIZE_NUMPY


def _orjson_numbers(array: np.ndarray, dtype: int, pretty: bool) -> bytes | None:
    # Integers and bools print the same in orjson and rapidjson; only the whitespace
    # differs, and there are no strings to get in the way of a plain replace.
    if dtype not in _INT_RANGES and dtype != _BOOL:
        return None
    try:
        return orjson.dumps(array, option=_NUMERIC_JSON | orjson.OPT_INDENT_2 if pretty else _NUMERIC_JSON)
    except orjson.JSONEncodeError:
        return None


def _key(alias: str) -> str:
    return _string_leaf(alias.partition("\0")[0])  # Key(name.c_str())


def encode_predict_response(
    outputs: Mapping[str, np.ndarray],
    format: str,
    signature: SignatureSpec | None = None,
) -> bytes:
    """TF Serving's predict response body (MakeJsonFromTensors) for alias -> ndarray.

    `format` is the request's: "row" writes {"predictions": [...]}, one entry per
    instance (the first axis, which all outputs must share), a bare value for a single
    output and an object per instance for several; "columnar" writes {"outputs": value}
    or {"outputs": {alias: value}}. DT_STRING outputs whose alias ends in "_bytes" are
    written as {"b64": ...}, other strings as they are (bytes that are not UTF-8
    included, like TF Serving). `signature` gives the dtype of object arrays. Several
    outputs are written in sorted alias order.
    """
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    if format == ROW:
        return _encode_row(outputs, signature)
    if format == COLUMNAR:
        return _encode_columnar(outputs, signature)
    raise errors.invalid_argument("Invalid request format")


_EMPTY_PREDICTIONS = b'{\n    "predictions": []\n}'


def _encode_row(outputs: Mapping[str, np.ndarray], signature: SignatureSpec | None) -> bytes:
    if len(outputs) == 1:
        for name, array in outputs.items():
            if type(array) is not np.ndarray:
                array = np.asarray(array)
            shape = array.shape
            if not shape:
                raise _invalid(f"Tensor name: {name} has no shape information ")
            if not shape[0]:
                return _EMPTY_PREDICTIONS
            dtype = _output_dtype(name, array, signature)
            if dtype != _FLOAT:
                data = _orjson_numbers(array, dtype, pretty=False)
                if data is not None:
                    return b'{\n    "predictions": ' + data[:-1].replace(b",", b", ") + b'\n    ]\n}'
            if len(shape) <= 2 and array.size and (len(shape) == 1 or shape[1] == 1):
                leaves = _leaf_strings(name, array, dtype, 2 + len(shape))
                inner = ", ".join(leaves) if len(shape) == 1 else "[" + "], [".join(leaves) + "]"
            else:
                inner = ", ".join(_row_items(name, array, dtype, 2))
            return ('{\n    "predictions": [' + inner + "\n    ]\n}").encode("utf-8", "surrogateescape")
    names = sorted(outputs)
    arrays = []
    batch = -1
    for name in names:
        array = outputs[name]
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if not array.ndim:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        size = array.shape[0]
        if batch >= 0 and batch != size:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
        batch = size
        arrays.append(array)
    if not batch:
        return _EMPTY_PREDICTIONS
    columns = [
        (_key(name) + ": ", _row_items(name, array, _output_dtype(name, array, signature), 3))
        for name, array in zip(names, arrays)
    ]
    member = ",\n            "
    rows = [
        "{\n            " + member.join([key + items[i] for key, items in columns]) + "\n        }"
        for i in range(batch)
    ]
    text = '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"
    return text.encode("utf-8", "surrogateescape")


def _row_items(alias: str, array: np.ndarray, dtype: int, level: int) -> list[str]:
    """Each instance (slice on the first axis) of `array` written on one line; the
    instance is a value inside a container at the writer's nesting level `level`."""
    shape = array.shape
    if not array.size:
        return _nest([], shape, level + 1, pretty=False)
    leaves = _leaf_strings(alias, array, dtype, level + len(shape))
    if len(shape) == 1:
        return leaves
    if len(shape) == 2:
        width = shape[1]
        if width == 1:
            return ["[" + leaf + "]" for leaf in leaves]
        return ["[" + ", ".join(leaves[i : i + width]) + "]" for i in range(0, len(leaves), width)]
    return _nest(leaves, shape, level + 1, pretty=False)


def _columnar_value(alias: str, array: np.ndarray, dtype: int, level: int) -> str:
    """One tensor in columnar format, as the value of a member at nesting level
    `level` - 1 (its outermost array, if any, is at `level`)."""
    if not array.ndim:
        return _leaf_strings(alias, array, dtype, level)[0]
    if not array.shape[0]:
        return "[]"
    if array.size:
        data = _orjson_numbers(array, dtype, pretty=True)
        if data is not None:
            # orjson indents by 2 from column 0; rapidjson by 4 from this level.
            data = data.replace(b"  ", b"    ").replace(b"\n", b"\n" + b" " * (4 * (level - 1)))
            return data.decode("ascii")
    leaves = _leaf_strings(alias, array, dtype, level + array.ndim) if array.size else []
    items = _nest(leaves, array.shape, level + 1, pretty=True)
    indent = "\n" + " " * (4 * level)
    return "[" + indent + ("," + indent).join(items) + "\n" + " " * (4 * (level - 1)) + "]"


def _encode_columnar(outputs: Mapping[str, np.ndarray], signature: SignatureSpec | None) -> bytes:
    if len(outputs) == 1:
        for name, array in outputs.items():
            array = np.asarray(array)
            value = _columnar_value(name, array, _output_dtype(name, array, signature), 2)
            return ('{\n    "outputs": ' + value + "\n}").encode("utf-8", "surrogateescape")
    members = []
    for name in sorted(outputs):
        array = np.asarray(outputs[name])
        value = _columnar_value(name, array, _output_dtype(name, array, signature), 3)
        members.append(_key(name) + ": " + value)
    text = '{\n    "outputs": {\n        ' + ",\n        ".join(members) + "\n    }\n}"
    return text.encode("utf-8", "surrogateescape")
