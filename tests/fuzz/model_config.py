"""Fuzz target: --model_config_file's text (ModelServerConfig text proto) -> ServerConfig.

`config.parse_config_text` must give a whole ServerConfig (every model of the text's
model_config_list, as written) or a ConfigError: INVALID_ARGUMENT / FAILED_PRECONDITION,
one line, and for a text-format syntax error "<file>:<line>:<column>: Error parsing
text-format tensorflow.serving.ModelServerConfig: ...". It is pure: the same text gives
the same outcome, with or without a config in force (`previous`, the reload checks).

    python -m tests.fuzz.model_config [libFuzzer args] NEW_CORPUS_DIR tests/fuzz/corpus/model_config
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
    from edgeserve import config as config_module
    from edgeserve import messages
    from edgeserve.config import ConfigError, ServerConfig, parse_config_text
    from edgeserve.errors import StatusCode

SOURCE = "fuzz.config"
_SYNTAX = re.compile(
    re.escape(SOURCE) + r":\d+:\d+: Error parsing text-format tensorflow\.serving\.ModelServerConfig: \S")
# Configs a reload could find in force.
PREVIOUS = (
    ServerConfig(models=(), not_set=True),
    parse_config_text('model_config_list { config { name: "a" base_path: "/m/a" model_platform: "tensorflow" } '
                      'config { name: "b" base_path: "/m/b" model_platform: "tflite" } }'),
)


def decode(data: bytes) -> str:
    """The file's text as the server reads it (UTF-8); other bytes as Latin-1, which any
    byte string is, so the parser still sees them."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _reference(text: str):
    """protobuf's own reading of the text, or None when it is not a ModelServerConfig."""
    message = messages.ModelServerConfig()
    try:
        # C++ TextFormat's depth limit; ValueError: an enum number beyond int32.
        text_format.Parse(text, message, max_recursion_depth=100)
    except (text_format.ParseError, ValueError, RecursionError):
        return None
    return message


def _check_error(exc: ConfigError, reference) -> None:
    assert isinstance(exc, ValueError)
    assert exc.code in (StatusCode.INVALID_ARGUMENT, StatusCode.FAILED_PRECONDITION), exc
    assert exc.message and "\n" not in exc.message and "\r" not in exc.message, repr(exc.message)
    if reference is None:
        assert _SYNTAX.match(exc.message), f"syntax error without line and column: {exc.message!r}"
    else:
        assert "Error parsing text-format" not in exc.message, exc.message


def _check_whole(config: ServerConfig, reference) -> None:
    assert reference is not None, "a config from text protobuf refuses"
    case = reference.WhichOneof("config")
    assert config.not_set == (case is None)
    entries = list(reference.model_config_list.config)
    assert [m.name for m in config.models] == [e.name for e in entries]
    for model, entry in zip(config.models, entries):
        assert model.base_path == entry.base_path
        assert model.platform == (entry.model_platform or config_module.TENSORFLOW_PLATFORM)
        assert model.version_labels == tuple(sorted(entry.version_labels.items()))


def _outcome(text: str, previous=None):
    try:
        return parse_config_text(text, SOURCE, previous=previous)
    except ConfigError as exc:
        return exc
    # Anything else (including a ServingError that is not a ConfigError) leaves: a defect.


def check(data: bytes) -> None:
    text = decode(data)
    reference = _reference(text)
    first = _outcome(text)
    if isinstance(first, ConfigError):
        _check_error(first, reference)
    else:
        assert isinstance(first, ServerConfig), first
        _check_whole(first, reference)
    again = _outcome(text)
    assert type(again) is type(first) and (
        again.message == first.message if isinstance(first, ConfigError) else again == first)
    for previous in PREVIOUS:
        outcome = _outcome(text, previous)
        if isinstance(outcome, ConfigError):
            _check_error(outcome, reference)
        else:
            assert outcome == first, (outcome, first)  # the same whole config, or nothing


def main() -> None:
    fuzz_common.fuzz_main(check)


if __name__ == "__main__":
    main()
