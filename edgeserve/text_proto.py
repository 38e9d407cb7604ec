"""A flag's text-proto file read into its message (TF Serving's ParseProtoTextFile),
with errors that name the flag, the file and, for a parse error, the line and column."""
from __future__ import annotations

from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


# TF Serving's C++ TextFormat parser stops at 100 levels of nesting.
_MAX_DEPTH = 100


class _Parser(getattr(text_format, "_Parser", object)):  # type: ignore[misc]  # protobuf's private class
    """protobuf's text parser, with every refusal a ParseError that has a line and a
    column. As it comes, it lets three out without either: an open enum's number beyond
    int32 ("model_type: 99999999999", a ValueError once the field is set), an Any
    expansion naming an unknown type, and nesting past the depth limit; and without a
    limit, Any expansions nested in each other ("[type.googleapis.com/google.protobuf.Any]
    { ... }" in custom_model_config) end in a RecursionError."""

    def __init__(self) -> None:
        super().__init__(max_recursion_depth=_MAX_DEPTH)

    def _MergeField(self, tokenizer, message):  # noqa: N802 - protobuf's name
        try:
            super()._MergeField(tokenizer, message)
        except text_format.ParseError as exc:
            if exc.GetLine() is not None:
                raise
            raise tokenizer.ParseErrorPreviousToken(str(exc)) from None  # where it stopped

    def _MergeScalarField(self, tokenizer, message, field):  # noqa: N802 - protobuf's name
        try:
            super()._MergeScalarField(tokenizer, message, field)
        except text_format.ParseError:
            raise
        except ValueError as exc:
            raise tokenizer.ParseErrorPreviousToken(str(exc)) from None


def parse(text: str, message: M) -> M:
    """text_format.Parse(text, message), except that every refusal of the text is a
    text_format.ParseError with its line and column."""
    if not hasattr(text_format, "_Parser"):  # pragma: no cover - a protobuf without it
        return text_format.Parse(text, message, max_recursion_depth=_MAX_DEPTH)
    _Parser().ParseLines(text.split("\n"), message)
    return message


def read_file(path: str, message: M, flag: str) -> M:
    """Parses the file at `path` into `message` and returns it; ValueError saying
    "--<flag> <file>[:line:column]: ..." when it cannot be read or parsed."""
    try:
        # newline="": the bytes as TF Serving's C++ parser sees them ("# a\rb: 1" is
        # one comment there; universal newlines would make "b: 1" a field).
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"--{flag} {path}: cannot read: {reason}") from None
    try:
        return parse(text, message)
    except text_format.ParseError as exc:
        # ParseError's text starts with "line:column : "; the file goes in front instead.
        reason = str(exc).split(" : ", 1)[-1]
        where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else path
        name = message.DESCRIPTOR.name
        article = "an" if name[:1] in "AEIOU" else "a"
        raise ValueError(f"--{flag} {where}: not {article} {name} text proto: {reason}") from None
