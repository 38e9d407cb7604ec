"""The fuzz targets of tests/fuzz: each seed corpus replayed in-process, a bounded
coverage-guided run of each target (atheris/libFuzzer, a subprocess), and a regression
test for every defect the fuzzers found.

EDGESERVE_FUZZ_SECONDS sets the length of each bounded run (default 20; 0 skips them).
bench/fuzz.py runs the same targets for minutes each and records the figures.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

FUZZ_DIR = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ_DIR))
import fuzz_common  # noqa: E402

SECONDS = int(os.environ.get("EDGESERVE_FUZZ_SECONDS", "20"))
target = fuzz_common.load


@pytest.fixture(scope="module", autouse=True)
def _stop_the_http_server():
    yield
    if "http_request" in fuzz_common._loaded:
        fuzz_common._loaded["http_request"].stop_server()


# ---- the seed corpora --------------------------------------------------------------


@pytest.mark.parametrize("name", fuzz_common.TARGETS)
def test_seed_corpus_replays_clean(name):
    files = fuzz_common.corpus_files(name)
    assert len(files) >= 5
    assert sum(p.stat().st_size for p in files) <= 8 * 1024  # seeds stay small
    check = target(name).check
    for path in files:
        try:
            check(path.read_bytes())
        except BaseException as exc:
            raise AssertionError(f"{name} seed {path.name}: {exc!r}") from exc


# ---- bounded coverage-guided runs ---------------------------------------------------


@pytest.mark.skipif(SECONDS <= 0, reason="EDGESERVE_FUZZ_SECONDS=0")
@pytest.mark.timeout(SECONDS + 180)
@pytest.mark.parametrize("name", fuzz_common.TARGETS)
def test_bounded_fuzz_run_finds_nothing(name, tmp_path):
    pytest.importorskip("atheris")
    result = fuzz_common.run_libfuzzer(name, tmp_path, SECONDS, grace_seconds=150)
    print(f"{name}: {result.executions} executions in {result.fuzz_seconds} s "
          f"({result.execs_per_second or 0:.0f}/s), cov {result.coverage}, ft {result.features}, "
          f"corpus {result.corpus_size}, wall {result.seconds:.1f} s")
    found = {p.name: p.read_bytes()[:300] for p in result.artifacts}
    assert result.returncode == 0 and not found, f"{found}\n{result.tail()}"
    assert result.executions and result.executions > len(fuzz_common.corpus_files(name)), result.tail()


# ---- the harnesses themselves --------------------------------------------------------


def test_http_harness_rejects_malformed_answers():
    parse = target("http_request").parse_responses
    ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert [r[0] for r in parse(ok + ok, head_possible=False, truncated_ok=False)] == [200, 200]
    assert parse(b"HTTP/1.1 100 Continue\r\n\r\n" + ok, head_possible=False, truncated_ok=False)[0][0] == 200
    # A HEAD answer announces a body it does not send.
    assert parse(ok[:-2] + ok, head_possible=True, truncated_ok=False)[0][2] == b""
    bad = [
        ok[:-1],  # body shorter than Content-Length
        b"HTTP/1.1 200 OK\r\n\r\n{}",  # no Content-Length
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nBad header\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" + ok,  # past close
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n",  # head never ends
    ]
    for data in bad:
        with pytest.raises(AssertionError):
            parse(data, head_possible=False, truncated_ok=False)
    check = target("http_request").check_response
    with pytest.raises(AssertionError):  # an error answer must be {"error": "..."}
        check(400, {"date": ["x"], "access-control-allow-origin": ["*"], "content-type": ["application/json"]},
              b'{"message": "x"}', last=True)
    with pytest.raises(AssertionError):
        check(500, {"date": ["x"], "access-control-allow-origin": ["*"]}, b'{"error": "x"}', last=True)


# ---- regressions: what the fuzzers found --------------------------------------------


def test_regression_model_config_enum_number_beyond_int32_is_a_located_parse_error():
    # Found by tests/fuzz/model_config.py: protobuf's text parser let a ValueError out
    # ("Value out of range"), which is not a ConfigError: a start-up traceback, a poll or
    # reload failing outside the config checks.
    from edgeserve.config import ConfigError, parse_config_text

    text = 'model_config_list {\n  config { name: "a" base_path: "/a"\n    model_type: 77777777777777777777 } }'
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "models.config")
    assert info.value.message == (
        "models.config:3:17: Error parsing text-format tensorflow.serving.ModelServerConfig: "
        "Value out of range: 77777777777777777777")
    for number in ("-0x80000001", "2147483648"):
        with pytest.raises(ConfigError, match=r"^models.config:1:\d+: Error parsing"):
            parse_config_text(f'model_config_list {{ config {{ name: "a" model_type: {number} }} }}', "models.config")
    # In range but unknown: the config check's own message, as before.
    with pytest.raises(ConfigError, match="model_type choice 2147483647 not supported"):
        parse_config_text('model_config_list { config { name: "a" base_path: "/a" model_type: 2147483647 } }')
    target("model_config").check(text.encode())


def test_regression_nested_any_expansions_are_a_located_parse_error():
    # Found while writing tests/fuzz/model_config.py (the fuzzer seldom spells a type
    # URL): custom_model_config is a google.protobuf.Any, and protobuf's text parser
    # expands Anys inside Anys without a depth limit (a RecursionError escaped), and
    # refused an unknown type or too deep a nesting without a line and column.
    from edgeserve.config import ConfigError, parse_config_text

    deep = "custom_model_config {" + " [type.googleapis.com/google.protobuf.Any] {" * 600 + " }" * 601
    with pytest.raises(ConfigError, match=r"^models.config:1:\d+: Error parsing text-format "
                                          r"tensorflow.serving.ModelServerConfig: Message too deep. "
                                          r"Max recursion depth is 100$"):
        parse_config_text(deep, "models.config")
    # (A type no pool holds: TF Serving's own types are in the default pool once
    # tensorflow-serving-api has been imported, as it is in a test session.)
    with pytest.raises(ConfigError, match=r"^models.config:2:\d+: .*Type edgeserve.test.NoSuchType "
                                          r"not found in descriptor pool$"):
        parse_config_text('custom_model_config {\n [type.googleapis.com/edgeserve.test.NoSuchType] { } }',
                          "models.config")
    # One level is fine (and refused, as TF Serving refuses any custom config).
    with pytest.raises(ConfigError, match="^ModelServer does not yet support custom model config.$"):
        parse_config_text('custom_model_config { [type.googleapis.com/google.protobuf.Any] { type_url: "x" } }')
    target("model_config").check(deep.encode())


def test_regression_config_error_quoting_a_line_break_stays_one_line():
    # Found by tests/fuzz/model_config.py: a platform, name or path holding "\n" made a
    # refusal of two lines, which would end up in the log and in systemd's STATUS= line.
    from edgeserve.config import ConfigError, parse_config_text

    with pytest.raises(ConfigError) as info:
        parse_config_text('model_config_list { config { name: "a\\rb" base_path: "/a" model_platform: "t\\nf" } }')
    assert info.value.message == "Model a\\rb requests unsupported platform t\\nf"
    assert ConfigError("x\ny").message == "x\\ny"
    target("model_config").check(b'model_config_list { config { name: "a" base_path: "/a" model_platform: "t\\nf" } }')


def test_regression_text_proto_files_keep_lone_carriage_returns(tmp_path):
    # Found by tests/fuzz/monitoring_config.py: files were read with universal newlines,
    # so "\r" ended a comment that TF Serving's parser (which sees the bytes) continues:
    # "# x\r<field>" was a field here and a comment there.
    from edgeserve import batch_options, metrics

    path = tmp_path / "monitoring.config"
    path.write_bytes(b'# off for now\rprometheus_config { enable: true }\n')
    assert metrics.read_config(str(path)) is None  # all of it is a comment, as in TF Serving
    path.write_bytes(b'prometheus_config {\r\n  enable: true\r\n  path: "/m"\r\n}\r\n')
    assert metrics.read_config(str(path)) == "/m"  # Windows line ends still work
    path.write_bytes(b"\r\r#\r_#####g")  # the input that found it: one comment
    assert metrics.read_config(str(path)) is None
    target("monitoring_config").check(b"\r\r#\r_#####g")

    batching = tmp_path / "batching.txt"
    batching.write_bytes(b"# max_batch_size { value: 8 }\rnum_batch_threads { value: 0 }\r\n")
    assert batch_options.read_file(str(batching)).num_batch_threads >= 1  # a comment, not a 0
    target("batching_config").check(b"# x\rnum_batch_threads { value: 0 }")


def test_regression_bool_tensor_content_byte_other_than_0_or_1_is_refused():
    # Found by tests/fuzz/tensor_proto.py against tf.io.parse_tensor: TF's
    # Tensor::FromProto refuses such a byte ("tensor parsing error" in TF Serving);
    # edgeserve took it as true.
    from edgeserve.errors import ServingError, StatusCode
    from edgeserve.messages import TensorProto
    from edgeserve.tensor_proto import to_ndarray

    data = b"\x08\x0a\x12\x04\x12\x02\x08\x03\x22\x03\x01\x00\x11"  # DT_BOOL [3], content 01 00 11
    with pytest.raises(ServingError) as info:
        to_ndarray(TensorProto.FromString(data), "x")
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == "tensor parsing error: x"
    target("tensor_proto").check(data)
