"""A flag's text-proto file read into its message (TF Serving's ParseProtoTextFile),
with errors that name the flag, the file and, for a parse error, the line and column."""
from __future__ import annotations

from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

M = TypeVar("M", bound=Message)


def read_file(path: str, message: M, flag: str) -> M:
    """Parses the file at `path` into `message` and returns it; ValueError saying
    "--<flag> <file>[:line:column]: ..." when it cannot be read or parsed."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ValueError(f"--{flag} {path}: cannot read: {reason}") from None
    try:
        return text_format.Parse(text, message)
    except text_format.ParseError as exc:
        # ParseError's text starts with "line:column : "; the file goes in front instead.
        reason = str(exc).split(" : ", 1)[-1]
        where = f"{path}:{exc.GetLine()}:{exc.GetColumn()}" if exc.GetLine() else path
        name = message.DESCRIPTOR.name
        article = "an" if name[:1] in "AEIOU" else "a"
        raise ValueError(f"--{flag} {where}: not {article} {name} text proto: {reason}") from None
