"""Writes the seed corpora in tests/fuzz/corpus/<target>/ (small files, checked in).

    python tests/fuzz/make_corpus.py            # rewrites every target's seeds
    python tests/fuzz/make_corpus.py rest_json  # one target

Seeds are valid inputs of every kind the target takes (TF Serving's documented formats
and its own test files' contents, written out here, not copied), plus a few near-misses
the parsers must refuse. Each file is named after what it is. Needs no TensorFlow:
TensorProtos are built with edgeserve's message classes.
"""
from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

CORPUS = Path(__file__).resolve().parent / "corpus"

# ------------------------------------------------------------------ model config

MODEL_CONFIG = {
    # The style of TF Serving's docs: colons before braces, commas between fields.
    "colons_and_commas": """model_config_list: {
  config: {
    name: "resnet",
    base_path: "/srv/models/resnet",
    model_platform: "tensorflow"
  },
  config: {
    name: "detector",
    base_path: "/srv/models/detector",
    model_platform: "tflite"
  }
}
""",
    "not_a_proto": "this is not a model server config\n",
    "every_field": """# every field edgeserve reads
model_config_list {
  config {
    name: "m"
    base_path: "s3://bucket/m"
    model_platform: "tflite"
    model_version_policy { specific { versions: 1 versions: 42 } }
    version_labels { key: "stable" value: 1 }
    version_labels { key: "canary" value: 42 }
    logging_config { sampling_config { sampling_rate: 0.5 } }
  }
  config { name: "n" base_path: "/n" model_type: TENSORFLOW model_version_policy { all {} } }
  config { name: "o" base_path: "/o" model_platform: "tensorflow" model_version_policy { latest { num_versions: 2 } } }
}
""",
    "empty_list": "model_config_list {}\n",
    "empty": "",
    "comments_only": "# nothing here\n",
    "custom": 'custom_model_config { type_url: "x" value: "y" }\n',
    "duplicate_names": 'model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
                       'config { name: "a" base_path: "/b" model_platform: "tensorflow" } }\n',
    "relative_path": 'model_config_list { config { name: "a" base_path: "a/b" model_platform: "tensorflow" } }\n',
    "both_types": 'model_config_list { config { name: "a" base_path: "/a" model_type: TENSORFLOW '
                  'model_platform: "tensorflow" } }\n',
    "angle_brackets": 'model_config_list < config < name: "a" base_path: "/a" model_platform: "tensorflow" > >\n',
    "unterminated": 'model_config_list { config { name: "a\n',
    "any_expansion": 'custom_model_config { [type.googleapis.com/google.protobuf.Any] { type_url: "x" } }\n',
    "any_unknown_type": 'custom_model_config {\n  [type.googleapis.com/tensorflow.serving.ModelConfig] { name: "a" }\n}\n',
    # Found by fuzzing or while writing the targets (tests/test_fuzz.py has their
    # regression tests).
    "nested_any": "custom_model_config{" + "[x/google.protobuf.Any]{" * 5 + "}" * 5 + "}",
    "regression_enum_beyond_int32": 'model_config_list { config { name: "a" base_path: "/a" '
                                    'model_type: 77777777777777777777 } }\n',
    "regression_line_break_in_platform": 'model_config_list { config { name: "a" base_path: "/a" '
                                         'model_platform: "t\\nsorflow" } }\n',
}

# ------------------------------------------------------------------ batching

BATCHING = {
    "large_queue": "max_batch_size { value: 256 }\nbatch_timeout_micros { value: 100 }\n"
                   "max_enqueued_batches { value: 500000 }\nnum_batch_threads { value: 4 }\n",
    "every_field": """max_batch_size { value: 64 }
batch_timeout_micros { value: 5000 }
max_enqueued_batches { value: 3 }
num_batch_threads { value: 2 }
thread_pool_name { value: "pool" }
allowed_batch_sizes: 8
allowed_batch_sizes: 16
pad_variable_length_inputs: true
enable_large_batch_splitting { value: true }
max_execution_batch_size { value: 16 }
""",
    "readme": "max_batch_size { value: 64 }\nbatch_timeout_micros { value: 2000 }\nnum_batch_threads { value: 2 }\n",
    "empty": "",
    "bad_last_size": "max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4\n",
    "negative": "max_batch_size { value: -1 }\n",
    "typo": "max_batch_size { value: 8 }\nbatch_timeout_micros { valu: 3 }\n",
    "carriage_returns": "# a comment\rmax_batch_size { value: 0 }\r\nnum_batch_threads { value: 1 }\r\n",
}

# ------------------------------------------------------------------ monitoring

MONITORING = {
    "colons_and_commas": 'prometheus_config: {\n  enable: true,\n  path: "/metrics/edge"\n}\n',
    "default_path": "prometheus_config { enable: true }\n",
    "disabled": 'prometheus_config { enable: false path: "/m" }\n',
    "empty": "",
    "relative_path": 'prometheus_config { enable: true path: "metrics" }\n',
    "typo": "prometheus_config {\n  enabled: true\n}\n",
    "yes": "prometheus_config { enable: yes }\n",
    "regression_lone_carriage_return": "\r\r#\r_#####g",
    "windows_lines": 'prometheus_config {\r\n  enable: true\r\n  path: "/m"\r\n}\r\n',
}


# ------------------------------------------------------------------ REST bodies

REST_JSON = {
    # TF Serving's REST API documentation (api_rest.md) and json_tensor_test.cc's shapes.
    "row_half_plus_two": '{"instances": [[1.0], [2.0], [5.0]]}',
    "row_signature": '{"signature_name": "serving_default", "instances": [1.0, 2.0, 5.0]}',
    "row_objects": '{"instances": [{"tag": "foo", "signal": [1, 2, 3, 4, 5], "sensor": [[1, 2], [3, 4]]},'
                   ' {"tag": "bar", "signal": [3, 4, 1, 2, 5], "sensor": [[4, 5], [6, 8]]}]}',
    "row_multi": '{"instances": [{"a": 1.5, "b": 7, "s_bytes": {"b64": "aGVsbG8="}, "f": true},'
                 ' {"a": -2e-3, "b": -9223372036854775808, "s_bytes": {"b64": "AP8="}, "f": false}]}',
    "row_b64": '{"instances": [{"b64": "aGVsbG8gd29ybGQ="}, {"b64": "Zm9v"}, {"b64": ""}]}',
    "row_strings": '{"instances": ["a", "\\u00e9\\ud83d\\ude00", ""]}',
    "row_3d": '{"instances": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]}',
    "row_empty_inner": '{"instances": [[], []]}',
    "row_special_numbers": '{"instances": [NaN, Infinity, -Infinity, -0.0, 1e38, 3.4028235e38, 1e-45]}',
    "row_long_doubles": '{"instances": [0.1000000000000000055511151231257827, 1.7976931348623157e308, '
                        '4.9e-324, 123456789012345678901234567890]}',
    "row_ints": '{"instances": [0, 255, 256, -1, 2147483647, -2147483648, 4294967295, 18446744073709551615]}',
    "row_bools": '{"instances": [true, false, true]}',
    "columnar_one": '{"inputs": [[1.0, 2.0], [3.0, 4.0]]}',
    "columnar_named": '{"signature_name": "", "inputs": {"x": [[1.0], [2.0]]}}',
    "columnar_multi": '{"inputs": {"a": [1.0, 2.0], "b": [[1, 2, 3]], "s_bytes": {"b64": "eA=="}, "f": true}}',
    "columnar_scalar": '{"inputs": 3.5}',
    "columnar_b64_scalar": '{"inputs": {"b64": "YWJj"}}',
    "columnar_empty_object": '{"inputs": {}}',
    "classify": '{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": [2.0, 3.0]}]}',
    "classify_kinds": '{"examples": [{"f": 1.5, "i": [1, 2, 3], "s": "text", "b": {"b64": "AAE="}, '
                      '"t": true, "e": []}]}',
    "regress_context": '{"signature_name": "regress_x_to_y", "context": {"c": [1, 2], "d": "x"}, '
                       '"examples": [{"x": 5.0}, {}]}',
    "examples_uint64": '{"examples": [{"x": 18446744073709551615}]}',
    "both_keys": '{"instances": [1], "inputs": [1]}',
    "neither_key": '{"signature_name": "x"}',
    "empty_instances": '{"instances": []}',
    "not_object": '[1, 2, 3]',
    "bad_signature_name": '{"signature_name": 1, "instances": [1]}',
    "ragged": '{"instances": [[1, 2], [3]]}',
    "mixed_types": '{"instances": [1, "a", true, null]}',
    "truncated": '{"instances": [[1.0], [2.0',
    "trailing_garbage": '{"instances": [1]} trailing',
    "bom": '\ufeff{"instances": [1]}',
    "bad_escape": '{"instances": ["\\x"]}',
    "bad_b64": '{"instances": [{"b64": "!!"}]}',
    "deep": '{"instances": ' + "[" * 40 + "1" + "]" * 40 + "}",
}


# ------------------------------------------------------------------ HTTP requests


def _post(path: str, body: bytes, *headers: str, version: str = "1.1") -> bytes:
    head = [f"POST {path} HTTP/{version}", "Host: localhost:8501", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def _get(path: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    return ("\r\n".join([f"{method} {path} HTTP/{version}", "Host: localhost:8501", *headers])
            + "\r\n\r\n").encode()


def http_requests() -> dict[str, bytes]:
    predict = "/v1/models/half_plus_two:predict"
    row = b'{"instances": [[1.0], [2.0], [5.0]]}'
    chunked = b"POST " + predict.encode() + b" HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"10\r\n" + row[:16] + b"\r\n" + f"{len(row) - 16:x}".encode() + b"\r\n" + row[16:] + b"\r\n0\r\n\r\n"
    return {
        "status.http": _get("/v1/models/half_plus_two"),
        "status_version.http": _get("/v1/models/half_plus_two/versions/1"),
        "status_label.http": _get("/v1/models/half_plus_two/labels/stable"),
        "metadata.http": _get("/v1/models/half_plus_two/versions/1/metadata"),
        "list.http": _get("/v1/models"),
        "predict_row.http": _post(predict, row),
        "predict_columnar.http": _post("/v1/models/half_plus_two/versions/1:predict",
                                       b'{"signature_name": "serving_default", "inputs": {"x": [[3.0]]}}'),
        "predict_bad_shape.http": _post(predict, b'{"instances": [1.0, 2.0]}'),
        "classify.http": _post("/v1/models/half_plus_two:classify",
                               b'{"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}, {"x": 2.0}]}'),
        "regress.http": _post("/v1/models/half_plus_two:regress",
                              b'{"signature_name": "regress_x_to_y", "context": {}, "examples": [{"x": [3.0]}]}'),
        "head.http": _get("/v1/models/half_plus_two", method="HEAD"),
        "options_preflight.http": _get("/v1/models/half_plus_two:predict", "Origin: http://example.com",
                                       "Access-Control-Request-Method: POST", method="OPTIONS"),
        "options_no_origin.http": _get("/v1/models/half_plus_two:predict", method="OPTIONS"),
        "chunked.http": chunked,
        "gzip.http": _post(predict, gzip.compress(row, mtime=0), "Content-Encoding: gzip"),
        "deflate_bad.http": _post(predict, b"not deflate", "Content-Encoding: deflate"),
        "brotli.http": _post(predict, row, "Content-Encoding: br"),
        "expect_continue.http": _post(predict, row, "Expect: 100-continue"),
        "http10_keepalive.http": _get("/v1/models/half_plus_two", "Connection: keep-alive", version="1.0")
                                 + _get("/v1/models/half_plus_two", version="1.0"),
        "pipelined.http": _get("/v1/models/half_plus_two") + _post(predict, row) + _get("/nope")
                          + _post(predict, b"{"),
        "connection_close.http": _get("/v1/models/half_plus_two", "Connection: close") + _get("/v1/models"),
        "wrong_method.http": _get(predict) + _post("/v1/models/half_plus_two", b"{}"),
        "not_found.http": _get("/"),
        "unknown_model.http": _post("/v1/models/nope:predict", row),
        "huge_version.http": _get("/v1/models/half_plus_two/versions/99999999999999999999"),
        "escaped_name.http": _get("/v1/models/half%5Fplus%5Ftwo/metadata?x=1"),
        "too_large.http": _post(predict, b"", "Content-Length: 99999999")[:-0 or None],
        "upgrade.http": _get("/", "Connection: Upgrade", "Upgrade: websocket"),
        "tls_hello.http": b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03garbage\r\n\r\n",
        "bare_crlf.http": b"\r\n\r\n" + _get("/v1/models"),
        "truncated.http": _post(predict, row)[:-5],
    }


# ------------------------------------------------------------------ TensorProtos


def tensor_protos() -> dict[str, bytes]:
    import numpy as np

    from edgeserve.dtypes import DataType as DT
    from edgeserve.messages import TensorProto
    from edgeserve.tensor_proto import from_ndarray

    def proto(dtype, dims, **fields) -> bytes:
        message = TensorProto(dtype=int(dtype), **fields)
        message.tensor_shape.SetInParent()
        for size in dims:
            message.tensor_shape.dim.add(size=size)
        return message.SerializeToString()

    def written(array, dtype, as_content=False) -> bytes:
        message = TensorProto()
        from_ndarray(array, dtype, message, as_content=as_content)
        return message.SerializeToString()

    samples = {
        DT.DT_FLOAT: np.array([[1.0, -2.5], [np.nan, np.inf]], np.float32),
        DT.DT_DOUBLE: np.array([0.1, -0.0, 1e308], np.float64),
        DT.DT_INT32: np.array([0, -1, 2**31 - 1], np.int32),
        DT.DT_UINT8: np.array([[0, 255]], np.uint8),
        DT.DT_INT16: np.array([-32768, 32767], np.int16),
        DT.DT_INT8: np.array([-128, 127, 5], np.int8),
        DT.DT_UINT16: np.array([65535, 1], np.uint16),
        DT.DT_INT64: np.array([-(2**63), 2**63 - 1], np.int64),
        DT.DT_UINT32: np.array([2**32 - 1], np.uint32),
        DT.DT_UINT64: np.array([2**64 - 1, 0], np.uint64),
        DT.DT_BOOL: np.array([True, False, True]),
        DT.DT_STRING: np.array([b"a", b"", b"\x00\xff", "é".encode()], dtype=object),
        DT.DT_COMPLEX64: np.array([1 + 2j, -3j], np.complex64),
        DT.DT_COMPLEX128: np.array([1e300 - 1j], np.complex128),
        DT.DT_HALF: np.array([1.0, 65504.0, -0.0], np.float16),
    }
    files = {}
    for dtype, array in samples.items():
        name = dtype.name.lower()
        files[f"{name}.pb"] = written(array, dtype)
        files[f"{name}_content.pb"] = written(array, dtype, as_content=True)
        files[f"{name}_scalar.pb"] = written(array.ravel()[:1].reshape(()), dtype)
    # bfloat16 as TF writes it: 16-bit patterns in half_val.
    files["dt_bfloat16.pb"] = proto(DT.DT_BFLOAT16, [2], half_val=[0x3F80, 0xFF80])
    files["dt_bfloat16_content.pb"] = proto(DT.DT_BFLOAT16, [2], tensor_content=b"\x80\x3f\x80\xff")
    # Fewer values than elements (the last one repeats), none (zeros), more (ignored).
    files["float_fill.pb"] = proto(DT.DT_FLOAT, [2, 3], float_val=[1.5])
    files["int_zeros.pb"] = proto(DT.DT_INT32, [4])
    files["string_fill.pb"] = proto(DT.DT_STRING, [3], string_val=[b"x", b"y"])
    files["extra_values.pb"] = proto(DT.DT_INT64, [1], int64_val=[1, 2, 3])
    files["other_field_ignored.pb"] = proto(DT.DT_FLOAT, [2], double_val=[1.0, 2.0])
    files["odd_complex.pb"] = proto(DT.DT_COMPLEX64, [2], scomplex_val=[1.0, 2.0, 3.0])
    # Shapes: empty, huge-but-empty, huge with one value, negative, too many dims.
    files["empty.pb"] = proto(DT.DT_FLOAT, [0, 5])
    files["huge_empty.pb"] = proto(DT.DT_FLOAT, [2**40, 0, 2**20])
    files["huge_one_value.pb"] = proto(DT.DT_FLOAT, [2**40], float_val=[1.0])
    files["huge_strings.pb"] = proto(DT.DT_STRING, [2**37], string_val=[b"a"])
    files["overflow.pb"] = proto(DT.DT_FLOAT, [2**40, 2**40], float_val=[1.0])
    files["negative_dim.pb"] = proto(DT.DT_FLOAT, [2, -1], float_val=[1.0])
    files["dims_65.pb"] = proto(DT.DT_FLOAT, [1] * 65, float_val=[1.0])
    files["content_short.pb"] = proto(DT.DT_FLOAT, [2], tensor_content=b"\x00" * 7)
    files["string_content_bad_varint.pb"] = proto(DT.DT_STRING, [1], tensor_content=b"\xff\xff")
    files["string_content.pb"] = proto(DT.DT_STRING, [2], tensor_content=b"\x02\x01abc")
    files["unknown_rank.pb"] = TensorProto(dtype=1, tensor_shape={"unknown_rank": True},
                                           float_val=[3.0]).SerializeToString()
    files["invalid_dtype.pb"] = proto(DT.DT_INVALID, [1], float_val=[1.0])
    files["ref_dtype.pb"] = proto(DT.DT_FLOAT_REF, [1], float_val=[1.0])
    files["quantized.pb"] = proto(DT.DT_QINT8, [2], int_val=[1, 2])
    files["unknown_dtype.pb"] = proto(99, [0])
    # Found by fuzzing: a DT_BOOL tensor_content byte that is neither 0 nor 1.
    files["regression_bool_content_byte.pb"] = b"\x08\x0a\x12\x04\x12\x02\x08\x03\x22\x03\x01\x00\x11"
    # Seeds for the FuzzedDataProvider path (a leading 0xFF).
    files["provider_a.bin"] = b"\xff" + bytes(range(0, 256, 7))
    files["provider_b.bin"] = b"\xff\x01\x02\x03\x04\x80\x90\xa0\xff\xfe\x10\x20\x30\x40\x50"
    return files


def text_files(values: dict[str, str]) -> dict[str, bytes]:
    return {name + ".txt": text.encode() for name, text in values.items()}


TARGETS = {
    "http_request": http_requests,
    "tensor_proto": tensor_protos,
    "rest_json": lambda: {name + ".json": text.encode() for name, text in REST_JSON.items()},
    "model_config": lambda: text_files(MODEL_CONFIG),
    "batching_config": lambda: text_files(BATCHING),
    "monitoring_config": lambda: text_files(MONITORING),
}


def write(target: str) -> None:
    files = TARGETS[target]()
    folder = CORPUS / target
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    print(f"{target}: {len(files)} files, {sum(map(len, files.values()))} bytes")


def main(argv: list[str]) -> int:
    for target in argv or list(TARGETS):
        write(target)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
