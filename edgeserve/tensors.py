"""Tensor codecs: TF Serving's REST predict JSON ⇄ numpy (TensorProto ⇄ numpy joins later).

This module owns what `tensorflow_serving/util/json_tensor.cc` does for the predict API:
parsing a request body (row format `"instances"`, columnar format `"inputs"`, `{"b64": ...}`
strings), typing it per a signature's input dtypes, and writing `"predictions"` /
`"outputs"` exactly as TF Serving writes them — rapidjson's PrettyWriter layout, its float
formatting, its error messages. It knows nothing of models, versions or sockets, and must
never import TensorFlow.

How the bytes are matched (TF Serving 2.x pins rapidjson 1.1.0):

* Parsing uses orjson. When orjson refuses a body, a small re-implementation of rapidjson's
  iterative parser (with TF Serving's flags: NaN/Infinity allowed, anything after the root
  value ignored, no UTF-8 validation) either accepts it or produces rapidjson's message and
  offset. Bodies nested deeper than orjson can safely recurse go straight to that parser.
* Error messages embed values the way TF Serving does: re-serialized by rapidjson's
  PrettyWriter (single-line arrays, 256-byte cap), numbers through a port of its Grisu2.
* Floats are written like TF Serving's WriteDecimal: printf "%g" when that round-trips,
  else 9 (float) or 17 (double) significant digits, ".0" added to whole numbers, and
  NaN / Infinity / -Infinity bare.

Known, deliberate differences: duplicate JSON keys keep the last value (rapidjson keeps the
first for lookups); decimal → double is correctly rounded (rapidjson's default parse may be
off by an ulp beyond ~15 digits); objects keyed by alias are walked in sorted alias order
(TF Serving walks a protobuf map in hash order). Beyond TF Serving, DT_HALF, DT_BFLOAT16 and
DT_UINT16 are decoded and encoded (TF Serving answers "Conversion ... to type: half" /
"Failed to write JSON value"); complex types still get TF Serving's errors.
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


def _type_name(dtype: int) -> str:
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
    vf, ve = f << shift, e - shift

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
    _FINISH: "invalid",  # unreachable with kParseStopWhenDoneFlag
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


class _RapidJsonParser:
    __slots__ = ("buf", "n")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.n = len(buf)

    def peek(self, i: int) -> int:
        # MemoryStream: '\0' past the end; an embedded NUL reads the same.
        return self.buf[i] if i < self.n else 0

    def skip_ws(self, i: int) -> int:
        buf, n = self.buf, self.n
        while i < n and buf[i] in b" \n\r\t":
            i += 1
        return i

    def parse(self) -> Any:
        buf = self.buf
        i = 0
        for bom in (0xEF, 0xBB, 0xBF):  # EncodedInputStream skips each BOM byte it sees
            if self.peek(i) == bom:
                i += 1
        i = self.skip_ws(i)
        state = _START
        root: Any = None
        # Each frame: [container, state to return to, pending member key].
        stack: list[list[Any]] = []
        while self.peek(i) != 0:
            token = _TOKENS[buf[i]]
            dst = _PREDICT[state][token] if state in _PREDICT else _ERROR
            if dst == _ERROR:
                raise _ParseError(_ERROR_FOR_STATE[state], i)
            if dst == _OBJ_INIT or dst == _ARR_INIT:
                container: Any = {} if dst == _OBJ_INIT else []
                if state == _ARR_INIT or state == _ELEM_DELIM:
                    back = _ELEMENT
                    stack[-1][0].append(container)
                elif state == _KV_DELIM:
                    back = _MEMBER_VALUE
                    frame = stack[-1]
                    frame[0][frame[2]] = container
                else:
                    back = state
                    root = container
                stack.append([container, back, None])
                i += 1
                state = dst
            elif dst == _MEMBER_KEY:
                key, i = self.parse_string(i)
                stack[-1][2] = key
                state = dst
            elif dst == _KV_DELIM or dst == _MEMBER_DELIM or dst == _ELEM_DELIM:
                i += 1
                state = dst
            elif dst == _MEMBER_VALUE or dst == _ELEMENT or dst == _VALUE:
                value, i = self.parse_value(i)
                if dst == _VALUE:
                    root = value
                    state = _FINISH
                else:
                    frame = stack[-1]
                    if dst == _ELEMENT:
                        frame[0].append(value)
                    else:
                        frame[0][frame[2]] = value
                    state = dst
            else:  # _OBJ_FINISH / _ARR_FINISH
                if state == _MEMBER_DELIM:
                    raise _ParseError("miss_name", i)
                if state == _ELEM_DELIM:
                    raise _ParseError("invalid", i)
                frame = stack.pop()
                state = _FINISH if frame[1] == _START else frame[1]
                i += 1
            if state == _FINISH:  # kParseStopWhenDoneFlag: ignore whatever follows
                return root
            i = self.skip_ws(i)
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
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)


def _too_deep_for_orjson(body: bytes) -> bool:
    # orjson recurses per nesting level (and crashes somewhere past ~10^5 levels). The
    # count of brackets bounds the depth; only when it is large is the depth computed,
    # with strings blanked so their brackets do not count.
    if body.count(b"[") + body.count(b"{") <= _ORJSON_MAX_DEPTH:
        return False
    stripped = _JSON_STRING.sub(b'""', body)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    steps = ((codes == 0x5B) | (codes == 0x7B)).astype(np.int32)
    steps -= (codes == 0x5D) | (codes == 0x7D)
    return int(np.cumsum(steps).max(initial=0)) > _ORJSON_MAX_DEPTH


def _loads(body: bytes) -> tuple[Any, bool]:
    """The parsed document, and whether the rapidjson re-implementation produced it."""
    if not _too_deep_for_orjson(body):
        try:
            return orjson.loads(body), False
        except orjson.JSONDecodeError:
            pass
    return _parse_with_rapidjson(body), True


# --------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class JsonPredictRequest:
    """A parsed predict body, not yet typed: what `decode_inputs` needs, plus the format.

    `signature_name` is "" when the body names none (the caller then uses
    serving_default). `format` is "row" for "instances", "columnar" for "inputs", and ""
    when the body names neither. Like TF Serving, a body with a bad "instances"/"inputs"
    part (both keys, neither, not a list, an empty list) is only refused by
    `decode_inputs`, i.e. after the model and signature were resolved — TF Serving reports
    an unknown model or signature before those.
    """

    signature_name: str
    format: str
    # (payload, document, body, parsed_by_rapidjson_port, structural_error)
    _state: tuple = ()

    def __repr__(self) -> str:
        return f"JsonPredictRequest(signature_name={self.signature_name!r}, format={self.format!r})"


_BOTH_KEYS = (
    "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "
)
_NOT_A_LIST = "Expecting 'instances' to be an list/array"
_EMPTY_LIST = "No values in 'instances' array"
_NEITHER_KEY = "Missing 'inputs' or 'instances' key"


def parse_predict_request(body: bytes) -> JsonPredictRequest:
    """Parses a REST predict body; raises ServingError(INVALID_ARGUMENT) as TF Serving does.

    Raised here: an empty or malformed body, a top level that is not an object, a
    "signature_name" that is not a string. Everything about "instances"/"inputs" is left
    to `decode_inputs` (see JsonPredictRequest).
    """
    if not isinstance(body, (bytes, bytearray)):
        body = bytes(body)
    if not body:
        raise errors.invalid_argument("JSON Parse error: The document is empty")
    doc, by_port = _loads(body)
    if type(doc) is not dict:
        raise _invalid(f"JSON Value: {_debug(_rapidjson_doc(body, doc, by_port))} Is not object")

    signature_name = doc.get("signature_name", "")
    if type(signature_name) is not str:
        raise _invalid(
            f"JSON Value: {_debug(_rapidjson_doc(body, doc, by_port))} not formatted correctly. "
            "'signature_name' key must be a string value."
        )
    if by_port:
        # A name with bytes that are not UTF-8 names no signature; keep it printable.
        signature_name = signature_name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")

    instances = doc.get("instances", _MISSING)
    if instances is not _MISSING:
        error = None
        if "inputs" in doc:
            error = _BOTH_KEYS
        elif type(instances) is not list:
            error = _NOT_A_LIST
        elif not instances:
            error = _EMPTY_LIST
        return JsonPredictRequest(signature_name, ROW, (instances, doc, body, by_port, error))
    inputs = doc.get("inputs", _MISSING)
    if inputs is not _MISSING:
        return JsonPredictRequest(signature_name, COLUMNAR, (inputs, doc, body, by_port, None))
    return JsonPredictRequest(signature_name, "", (None, doc, body, by_port, _NEITHER_KEY))


_MISSING = object()


def decode_inputs(request: JsonPredictRequest, signature: SignatureSpec) -> dict[str, np.ndarray]:
    """Types the request's tensors per the signature's input dtypes, as TF Serving does.

    Returns alias -> ndarray (DT_STRING as an object array of bytes); row format stacks the
    instances on a new first axis. Raises ServingError (INVALID_ARGUMENT, or UNIMPLEMENTED
    where TF Serving does) with TF Serving's messages. The names are checked as
    json_tensor.cc checks them — row objects must carry exactly the signature's inputs,
    a columnar object must carry each of them (extra columnar keys are ignored) — but
    shapes are not checked against the signature.
    """
    payload, doc, body, by_port, error = request._state
    infos = signature.inputs
    if not infos:
        raise _invalid(f"Failed to get input map for signature: {request.signature_name or 'DEFAULT'}")
    if error is not None:
        if error is _NEITHER_KEY:
            raise errors.invalid_argument(error)
        raise _invalid(f"JSON Value: {_debug(_rapidjson_doc(body, doc, by_port))} {error}")
    if (
        not by_port
        and any(spec.dtype == DataType.DT_DOUBLE for spec in infos.values())
        and _LONG_LITERAL.search(body) is not None
    ):
        # Doubles from long literals may differ in the last bit from rapidjson's.
        payload, by_port = _payload(_rapidjson_doc(body, doc, False), request.format), True
    decode = _decode_instances if request.format == ROW else _decode_inputs_value
    try:
        return decode(payload, infos, _Context(body, by_port))
    except ServingError:
        if by_port:
            raise
    # Messages quote values as rapidjson parsed them: decode again from its reading.
    payload = _payload(_rapidjson_doc(body, doc, False), request.format)
    return decode(payload, infos, _Context(body, True))


# A number literal whose double rapidjson may round differently from orjson: 16 or more
# digits, or an exponent (StrtodNormalPrecision is exact only for short literals).
_LONG_LITERAL = re.compile(rb"[0-9][0-9.]{15}|[0-9][eE]")


def _rapidjson_doc(body: bytes, doc: Any, by_port: bool) -> Any:
    return doc if by_port else _parse_with_rapidjson(body)


def _payload(doc: dict, format: str) -> Any:
    return doc.get("instances") if format == ROW else doc.get("inputs")


class _Context:
    """Per-request facts the fast paths need, computed at most once."""

    __slots__ = ("body", "by_port", "_has_bool_literal")

    def __init__(self, body: bytes, by_port: bool) -> None:
        self.body = body
        self.by_port = by_port
        self._has_bool_literal: bool | None = None

    def may_hold_bools(self) -> bool:
        # numpy reads True as 1.0; when the body has no true/false token, no leaf is a bool.
        if self._has_bool_literal is None:
            self._has_bool_literal = b"true" in self.body or b"false" in self.body
        return self._has_bool_literal


def _is_b64_object(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get("b64")) is str


def _is_element_object(value: Any) -> bool:
    return type(value) is dict and not _is_b64_object(value)


def _decode_instances(instances: list, infos: Mapping[str, Any], context: _Context) -> dict[str, np.ndarray]:
    names = sorted(infos)
    first = instances[0]
    if type(first) is not dict and len(names) > 1:
        raise errors.invalid_argument(
            "instances is a plain list, but expecting list of objects as multiple input "
            "tensors required as per tensorinfo_map"
        )
    if not _is_element_object(first):
        name = names[0]
        array = _fast_array(instances, infos[name].dtype, context)
        if array is not None:
            return {name: array}
    elif all(_is_element_object(item) and item.keys() == infos.keys() for item in instances):
        result = {}
        for name in names:
            column = [item[name] for item in instances]
            array = _fast_array(column, infos[name].dtype, context)
            if array is None:
                break
            result[name] = array
        else:
            return result
    return _decode_instances_exactly(instances, infos, names)


def _decode_instances_exactly(instances: list, infos: Mapping[str, Any], names: list[str]) -> dict[str, np.ndarray]:
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
            values[name] = []
        elif sizes[name] != len(flat):
            raise _invalid(f"Expecting tensor size: {sizes[name]} but got: {len(flat)}")
        elif shapes[name] != shape:
            raise _invalid(
                f"Expecting shape {_shape_string(shapes[name])} but got: {_shape_string(shape)}"
            )
        values[name].extend(flat)

    for index, element in enumerate(instances):
        if objects:
            if not _is_element_object(element):
                raise _invalid(f"Expecting object but got list at item {index} of input list")
            keys = set()
            for key, item in element.items():
                name = key.partition("\0")[0]  # std::string built from a C string
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
        name: _to_array(flat, infos[name].dtype, (count, *shapes[name]))
        for name, flat in values.items()
    }


def _decode_inputs_value(value: Any, infos: Mapping[str, Any], context: _Context) -> dict[str, np.ndarray]:
    if type(value) is not dict or _is_b64_object(value):
        if len(infos) > 1:
            raise errors.invalid_argument(
                "inputs is a plain value/list, but expecting an object as multiple input "
                "tensors required as per tensorinfo_map"
            )
        (name,) = infos
        return {name: _decode_tensor(value, infos[name].dtype, context)}
    result = {}
    for name in sorted(infos):
        if name not in value:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        result[name] = _decode_tensor(value[name], infos[name].dtype, context)
    return result


def _decode_tensor(value: Any, dtype: DataType, context: _Context) -> np.ndarray:
    array = _fast_array(value, dtype, context)
    if array is not None:
        return array
    shape, flat = _fill(value, dtype)
    return _to_array(flat, dtype, shape)


# --------------------------------------------------------------------------- typing leaves

_FLOAT_TYPES = frozenset({DataType.DT_FLOAT, DataType.DT_DOUBLE, DataType.DT_HALF, DataType.DT_BFLOAT16})
# Types TF Serving reads with IsInt() and stores in int_val, which narrows by wrapping
# (TensorProto -> Tensor is a C++ cast): 300 for uint8 arrives as 44. DT_UINT16 is ours.
_INT32_TYPES = frozenset({DataType.DT_INT32, DataType.DT_INT16, DataType.DT_INT8, DataType.DT_UINT8, DataType.DT_UINT16})
_INT_RANGES = {
    DataType.DT_INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.DT_UINT32: (0, (1 << 32) - 1),
    DataType.DT_UINT64: (0, (1 << 64) - 1),
}
for _dt in _INT32_TYPES:
    _INT_RANGES[_dt] = (-(1 << 31), (1 << 31) - 1)
# Where a float leaves the range of the narrower float type (the cast would warn).
_FLOAT_LIMITS = {
    DataType.DT_FLOAT: 3.4028234663852886e38,
    DataType.DT_HALF: 65504.0,
    DataType.DT_BFLOAT16: 3.3895313892515355e38,
}


def _type_error(value: Any, dtype: DataType) -> ServingError:
    return _invalid(
        f"JSON Value: {_debug(value)} Type: {_json_type(value)} is not of expected type: "
        f"{_type_name(dtype)}"
    )


_BASE64_TEXT = re.compile(rb"([A-Za-z0-9+/]*)([=.]*)")
_BASE64_PADDING = {0: 0, 2: 2, 3: 1}


def _absl_base64_decode(text: str) -> bytes | None:
    """absl::Base64Unescape: whitespace anywhere is ignored; padding ('=' or '.') is
    optional, but when present it must be exactly right; leftover bits are dropped."""
    raw = text.encode("utf-8", "surrogateescape").translate(None, b" \t\n\v\f\r")
    match = _BASE64_TEXT.fullmatch(raw)
    if match is None:
        return None
    data, padding = match.groups()
    expected = _BASE64_PADDING.get(len(data) % 4)
    if expected is None or (padding and len(padding) != expected):
        return None
    return binascii.a2b_base64(data + b"=" * expected)


def _leaf_converter(dtype: DataType):
    """A function checking one JSON leaf for `dtype` and returning its Python value."""
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
    if dtype == DataType.DT_BOOL:
        def leaf(value: Any) -> Any:
            if type(value) is bool:
                return value
            raise _type_error(value, dtype)
        return leaf
    if dtype == DataType.DT_STRING:
        def leaf(value: Any) -> Any:
            if type(value) is str:
                return value.encode("utf-8", "surrogateescape")
            if type(value) is dict:
                if not _is_b64_object(value):
                    raise _invalid(
                        f"JSON Value: {_debug(value)} not formatted correctly for base64 data"
                    )
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


def _fill(value: Any, dtype: DataType) -> tuple[tuple[int, ...], list]:
    """GetDenseTensorShape + FillTensorProto: the shape from first elements, then every
    leaf checked at the level and list size that shape demands. Iterative: a body may
    nest lists far deeper than Python's recursion limit."""
    shape = []
    probe = value
    while type(probe) is list:
        shape.append(len(probe))
        if not probe:
            break
        probe = probe[0]
    rank = len(shape)
    leaf = _leaf_converter(dtype)
    if type(value) is not list:
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


def _to_array(flat: list, dtype: DataType, shape: tuple[int, ...]) -> np.ndarray:
    """Typed leaves (already checked) -> ndarray of `shape`."""
    if dtype == DataType.DT_STRING:
        array = np.empty(len(flat), dtype=object)
        array[:] = flat
        return array.reshape(shape)
    target = to_numpy(dtype)
    if dtype in _FLOAT_TYPES:
        doubles = np.array(flat, dtype=np.float64)
        if dtype == DataType.DT_DOUBLE:
            return doubles.reshape(shape)
        with np.errstate(over="ignore"):  # like GetFloat(): out of range becomes ±inf
            return doubles.astype(target).reshape(shape)
    if dtype in _INT32_TYPES:
        return np.array(flat, dtype=np.int64).astype(target).reshape(shape)
    return np.array(flat, dtype=target).reshape(shape)


def _fast_array(value: Any, dtype: DataType, context: _Context) -> np.ndarray | None:
    """numpy's own list conversion when it provably gives TF Serving's result, else None.

    np.asarray proves the nesting regular and the leaves numbers (or all bools); what it
    cannot see — a true/false among numbers, an int out of range, a float literal where
    an int is required — sends the value to the exact path instead.
    """
    if dtype == DataType.DT_STRING or type(value) is not list:
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError):
        return None
    kind = array.dtype.kind
    if dtype in _FLOAT_TYPES:
        if kind not in "fiu" or context.may_hold_bools():
            return None
        if kind != "f":
            array = array.astype(np.float64)  # int -> double -> float, as GetFloat() does
        if dtype == DataType.DT_DOUBLE:
            return array
        limit = _FLOAT_LIMITS.get(dtype)
        if context.by_port or dtype != DataType.DT_FLOAT or array.size > 64:
            with np.errstate(over="ignore"):
                return array.astype(to_numpy(dtype))
        if array.size:
            flat = array.ravel().tolist()
            if max(flat) > limit or min(flat) < -limit:
                with np.errstate(over="ignore"):
                    return array.astype(np.float32)
        return array.astype(np.float32)
    if dtype == DataType.DT_BOOL:
        return array if kind == "b" else None
    low_high = _INT_RANGES.get(dtype)
    if low_high is None or kind not in "iu" or not array.size or context.may_hold_bools():
        return None
    low, high = low_high
    if array.size <= 32:
        flat = array.ravel().tolist()
        smallest, largest = min(flat), max(flat)
    else:
        smallest, largest = int(array.min()), int(array.max())
    if smallest < low or largest > high:
        return None
    target = to_numpy(dtype)
    if dtype in _INT32_TYPES and array.dtype != np.int64:
        array = array.astype(np.int64)
    return array.astype(target, copy=False)


# --------------------------------------------------------------------------- responses
# Layout of rapidjson's PrettyWriter (4-space indent) as MakeJsonFromTensors drives it:
# row format writes each instance with single-line arrays ("[1, 2]") but objects always
# break lines; columnar format breaks every array element onto its own line.

_F32 = struct.Struct("f")


def _format_floats(values: list[float], digits: int) -> list[str]:
    """WriteDecimal for each value: "%g" if it round-trips, else `digits` significant
    digits (9 for float, 17 for double); ".0" for whole numbers; NaN/Infinity bare."""
    out = []
    append = out.append
    round_trip = _F32.unpack
    pack = _F32.pack
    for v in values:
        if v - v != 0.0:
            append("NaN" if v != v else ("Infinity" if v > 0 else "-Infinity"))
            continue
        s = "%g" % v
        if digits == 9:
            if round_trip(pack(float(s)))[0] != v:
                s = "%.9g" % v
        elif digits == 17:
            if float(s) != v:
                s = "%.17g" % v
        if "." not in s and "e" not in s:
            s += ".0"
        append(s)
    return out


def _string_leaf(raw: Any) -> str:
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "surrogateescape")
    elif isinstance(raw, str):
        text = raw
    else:
        text = bytes(raw).decode("utf-8", "surrogateescape")
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _STR_ESCAPES[m.group()], text) + '"'


def _as_bytes(raw: Any) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    return bytes(raw)


def _output_dtype(alias: str, array: np.ndarray, signature: SignatureSpec | None) -> DataType:
    dtype = from_numpy(array.dtype)
    if signature is not None and (dtype == DataType.DT_INVALID or array.dtype == object):
        spec = signature.outputs.get(alias)
        if spec is not None:
            return spec.dtype
    return dtype


def _leaf_strings(alias: str, array: np.ndarray, dtype: DataType, depth: int) -> list[str]:
    """Every element of `array` (C order) as TF Serving writes it; `depth` is rapidjson's
    nesting level at the element, which only matters for {"b64": ...} objects."""
    flat = array.ravel()
    if dtype == DataType.DT_FLOAT:
        return _format_floats(flat.tolist(), 9)
    if dtype == DataType.DT_DOUBLE:
        return _format_floats(flat.tolist(), 17)
    if dtype == DataType.DT_HALF or dtype == DataType.DT_BFLOAT16:
        # Not written by TF Serving; "%g" always round-trips these 11- and 8-bit types.
        return _format_floats(flat.astype(np.float32).tolist(), 6)
    if dtype == DataType.DT_BOOL:
        return ["true" if v else "false" for v in flat.tolist()]
    if dtype in _INT_RANGES:
        return list(map(str, flat.tolist()))
    if dtype == DataType.DT_STRING:
        if alias.endswith("_bytes"):
            head = "{\n" + " " * (4 * depth) + '"b64": "'
            tail = '"\n' + " " * (4 * (depth - 1)) + "}"
            return [head + base64.b64encode(_as_bytes(v)).decode("ascii") + tail for v in flat.tolist()]
        return [_string_leaf(v) for v in flat.tolist()]
    raise errors.invalid_argument(f"Failed to write JSON value for tensor type: {_type_name(dtype)}")


def _nest(leaves: list[str], shape: tuple[int, ...], level: int, pretty: bool) -> list[str]:
    """Groups C-ordered leaves into the arrays of `shape`'s trailing dimensions and returns
    the shape[0] items. Arrays of dimension j sit at rapidjson nesting level `level` + j."""
    dims = shape[1:]
    if 0 in dims:
        zero = dims.index(0)
        count = math.prod(shape[: zero + 1])
        items = ["[]"] * count
        dims = dims[:zero]
    else:
        items = leaves
    for j in range(len(dims), 0, -1):
        size = dims[j - 1]
        if pretty:
            indent = "\n" + " " * (4 * (level + j))
            opening, separator = "[" + indent, "," + indent
            closing = "\n" + " " * (4 * (level + j - 1)) + "]"
        else:
            opening, separator, closing = "[", ", ", "]"
        if size == 1:
            items = [opening + item + closing for item in items]
        else:
            items = [
                opening + separator.join(items[i : i + size]) + closing
                for i in range(0, len(items), size)
            ]
    return items


def _columnar_value(alias: str, array: np.ndarray, dtype: DataType, level: int) -> str:
    """One tensor in columnar format, its outermost array at nesting level `level`."""
    if array.ndim == 0:
        return _leaf_strings(alias, array, dtype, level)[0]
    if array.size == 0 and array.shape[0] == 0:
        return "[]"
    leaves = _leaf_strings(alias, array, dtype, level + array.ndim) if array.size else []
    items = _nest(leaves, array.shape, level, pretty=True)
    indent = "\n" + " " * (4 * level)
    return "[" + indent + ("," + indent).join(items) + "\n" + " " * (4 * (level - 1)) + "]"


def _key(alias: str) -> str:
    return _string_leaf(alias.partition("\0")[0])  # Key(name.c_str())


def encode_predict_response(
    outputs: Mapping[str, np.ndarray],
    format: str,
    signature: SignatureSpec | None = None,
) -> bytes:
    """TF Serving's predict response body for `outputs` (alias -> ndarray).

    `format` is the request's ("row" -> "predictions", "columnar" -> "outputs").
    DT_STRING outputs whose alias ends in "_bytes" are written as {"b64": ...}, other
    strings raw (bytes that are not UTF-8 are written as they are, like TF Serving).
    `signature` supplies the dtype of object arrays when given. Several outputs are
    written in sorted alias order.
    """
    if not outputs:
        raise errors.invalid_argument("Cannot convert empty tensor map to JSON")
    if format == ROW:
        return _encode_row(outputs, signature)
    if format == COLUMNAR:
        return _encode_columnar(outputs, signature)
    raise errors.invalid_argument("Invalid request format")


def _encode_row(outputs: Mapping[str, np.ndarray], signature: SignatureSpec | None) -> bytes:
    names = sorted(outputs) if len(outputs) > 1 else list(outputs)
    arrays = {}
    batch = -1
    for name in names:
        array = outputs[name]
        if type(array) is not np.ndarray:
            array = np.asarray(array)
        if array.ndim == 0:
            raise _invalid(f"Tensor name: {name} has no shape information ")
        size = array.shape[0]
        if batch >= 0 and batch != size:
            raise _invalid(f"Tensor name: {name} has inconsistent batch size: {size} expecting: {batch}")
        batch = size
        arrays[name] = array
    if len(names) == 1:
        (name,) = names
        array = arrays[name]
        if batch == 0:
            return b'{\n    "predictions": []\n}'
        dtype = _output_dtype(name, array, signature)
        items = _row_items(name, array, dtype, 2)
        text = '{\n    "predictions": [' + ", ".join(items) + "\n    ]\n}"
        return text.encode("utf-8", "surrogateescape")
    if batch == 0:
        return b'{\n    "predictions": []\n}'
    columns = []
    for name in names:
        array = arrays[name]
        dtype = _output_dtype(name, array, signature)
        columns.append((_key(name) + ": ", _row_items(name, array, dtype, 3)))
    member = ",\n            "
    rows = [
        "{\n            " + member.join(key + items[i] for key, items in columns) + "\n        }"
        for i in range(batch)
    ]
    text = '{\n    "predictions": [\n        ' + ",\n        ".join(rows) + "\n    ]\n}"
    return text.encode("utf-8", "surrogateescape")


def _row_items(alias: str, array: np.ndarray, dtype: DataType, level: int) -> list[str]:
    """The single-line rendering of each instance (first-axis slice) of `array`; the
    instance sits in a container at nesting level `level`."""
    if array.size == 0:
        return _nest([], array.shape, level + 1, pretty=False)
    leaves = _leaf_strings(alias, array, dtype, level + array.ndim)
    if array.ndim == 1:
        return leaves
    return _nest(leaves, array.shape, level + 1, pretty=False)


def _encode_columnar(outputs: Mapping[str, np.ndarray], signature: SignatureSpec | None) -> bytes:
    if len(outputs) == 1:
        ((name, array),) = outputs.items()
        array = np.asarray(array)
        value = _columnar_value(name, array, _output_dtype(name, array, signature), 2)
        text = '{\n    "outputs": ' + value + "\n}"
        return text.encode("utf-8", "surrogateescape")
    members = []
    for name in sorted(outputs):
        array = np.asarray(outputs[name])
        value = _columnar_value(name, array, _output_dtype(name, array, signature), 3)
        members.append(_key(name) + ": " + value)
    text = '{\n    "outputs": {\n        ' + ",\n        ".join(members) + "\n    }\n}"
    return text.encode("utf-8", "surrogateescape")
