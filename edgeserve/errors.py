"""The one error type every client-visible failure is raised as.

A `ServingError` carries a gRPC canonical status code and a message. gRPC sends
it as status + details; REST maps the code to TF Serving's HTTP status
(model_servers/http_server.cc, ToHTTPStatusCode) and a `{"error": ...}` body.
Nothing here knows about sockets or models.
"""
from __future__ import annotations

import enum

import orjson


class StatusCode(enum.IntEnum):
    """gRPC canonical codes, with the numbers and names of google.rpc.Code."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's mapping (http_server.cc). 499 is nginx's "client closed request".
_HTTP_STATUS = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
    StatusCode.UNAUTHENTICATED: 401,
}


def http_status(code: StatusCode) -> int:
    """The HTTP status TF Serving's REST API answers for a canonical code."""
    return _HTTP_STATUS.get(code, 500)


class ServingError(Exception):
    """A failure a client can cause or see: a canonical code and a message."""

    __slots__ = ("code", "message")

    def __init__(self, code: StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = StatusCode(code)
        self.message = message

    @property
    def http_status(self) -> int:
        return http_status(self.code)

    def json_body(self) -> bytes:
        """TF Serving's REST error body: {"error": "<message>"}."""
        return orjson.dumps({"error": self.message})

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def invalid_argument(message: str) -> ServingError:
    return ServingError(StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(StatusCode.FAILED_PRECONDITION, message)


def unavailable(message: str) -> ServingError:
    return ServingError(StatusCode.UNAVAILABLE, message)


def internal(message: str) -> ServingError:
    return ServingError(StatusCode.INTERNAL, message)
