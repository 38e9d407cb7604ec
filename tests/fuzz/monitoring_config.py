"""Fuzz target: --monitoring_config_file (MonitoringConfig text proto) -> the metrics page path.

The bytes are written to a real file and read by `metrics.read_config` (through
`text_proto.read_file`), as the server reads the flag's file: the outcome must be None
(Prometheus off), the page's path (starting with "/", what the text says), or a
ValueError "--monitoring_config_file <file>...", with "<file>:<line>:<column>: not a
MonitoringConfig text proto: ..." for a syntax error and "cannot read" for bytes that
are not UTF-8.

    python -m tests.fuzz.monitoring_config [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/monitoring_config
"""
from __future__ import annotations

import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fuzz_common  # noqa: E402

# protobuf's text parser (pure Python) is instrumented too: it is most of the code here.
with fuzz_common.instrumented(__name__, "google.protobuf.text_format"):
    from google.protobuf import text_format
    from edgeserve import metrics
    from edgeserve.protos.monitoring_config_pb2 import MonitoringConfig

_SCRATCH = fuzz_common.ScratchFile("fuzz-monitoring")
PATH = _SCRATCH.path
_PREFIX = f"--monitoring_config_file {PATH}"
_SYNTAX = re.compile(re.escape(_PREFIX) + r":\d+:\d+: not a MonitoringConfig text proto: \S")


def check(data: bytes) -> None:
    _SCRATCH.write(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    reference = None
    if text is not None:
        reference = MonitoringConfig()
        try:
            # C++ TextFormat's depth limit; ValueError: an enum number beyond int32.
            text_format.Parse(text, reference, max_recursion_depth=100)
        except (text_format.ParseError, ValueError, RecursionError):
            reference = None
    try:
        page = metrics.read_config(PATH)
    except ValueError as exc:
        message = str(exc)
        assert message.startswith(_PREFIX) and "\n" not in message, repr(message)
        if text is None:
            assert message.startswith(_PREFIX + ": cannot read: "), message
        elif reference is None:
            assert _SYNTAX.match(message), f"syntax error without line and column: {message!r}"
        else:
            assert reference.prometheus_config.enable
            assert "prometheus_config.path must start with '/'" in message, message
        return
    assert reference is not None, "a file protobuf refuses was taken"
    prometheus = reference.prometheus_config
    if not prometheus.enable:
        assert page is None, page
    else:
        assert page == (prometheus.path or metrics.DEFAULT_PATH) and page.startswith("/"), page


def main() -> None:
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
