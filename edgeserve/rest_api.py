"""TF Serving's REST API as raw HTTP/1.1 on the event loop (httptools parser, no framework).

`HttpProtocol` is one connection: its methods are the parser's callbacks, requests
are queued in arrival order (pipelining) and answered in that order, reading pauses
when too many are queued or the client stops reading answers. `RestApi` routes a
complete request to the `api` layer and renders TF Serving's JSON. Neither holds
model logic. Limits: body size (413), time to receive a request (408 and close),
idle keep-alive time (close).
"""
from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import time
import types
import zlib
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import unquote

import httptools
import orjson

from . import dtypes, metrics, tensors
from .admission import Pending
from .api import Api, ModelSpec
from .errors import ServingError, StatusCode, internal, invalid_argument
from .manager import VersionStatus
from .servable import SignatureSpec, TensorSpec
from .status_page import POLL_QUERY, StatusPage

log = logging.getLogger("edgeserve.rest")

# TF Serving's routes (http_rest_api_util.cc), case-insensitive as there.
_PREDICTION_PATH = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_PATH = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_CORS_ORIGIN = re.compile(r"https?://")
_CORS_HEADERS = (
    b"Access-Control-Allow-Origin: *\r\n"
    b"Access-Control-Allow-Methods: POST, GET\r\n"
    b"Access-Control-Allow-Headers: Content-Type\r\n"
)
_JSON = b"Content-Type: application/json\r\n"
_METRICS_TYPE = b"Content-Type: " + metrics.CONTENT_TYPE.encode() + b"\r\n"
_INFERENCE_KINDS = frozenset(("predict", "classify", "regress"))
_INT64_MAX = 2**63 - 1
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout", 409: "Conflict",
    413: "Payload Too Large", 415: "Unsupported Media Type", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 499: "Client Closed Request",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
    504: "Gateway Timeout",
}
# Bodies (and outputs) larger than this are translated on a worker thread: decoding a
# 3 MB image request takes ~55 ms, far too long to hold the event loop.
OFFLOAD_BYTES = 64 * 1024
_MAX_QUEUED = 32  # pipelined requests held per connection before reading pauses
_MAX_HEADERS = 100


def _status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode()


_STATUS_LINES = {code: _status_line(code) for code in _REASONS}


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int = 16 * 1024 * 1024
    max_header_bytes: int = 64 * 1024  # request line + headers
    request_timeout: float = 10.0  # first byte of a request -> complete
    idle_timeout: float = 60.0  # keep-alive connection with nothing to do
    max_connections: int = 1024  # open connections; one more gets 503 and is closed (0: none)


@dataclass(frozen=True)
class _Route:
    kind: str  # "predict" | "classify" | "regress" | "status" | "metadata" | "list"
    spec: ModelSpec
    method: bytes  # the one HTTP method it answers


class Request:
    __slots__ = ("method", "url", "body", "keep_alive", "content_encoding", "origin", "http10")

    def __init__(self, method: bytes, url: bytes, body: bytes, keep_alive: bool,
                 content_encoding: bytes | None, origin: bytes | None, http10: bool) -> None:
        self.method = method
        self.url = url
        self.body = body
        self.keep_alive = keep_alive
        self.content_encoding = content_encoding
        self.origin = origin
        self.http10 = http10  # an HTTP/1.0 keep-alive must be acknowledged


# ---- JSON renderings of status and metadata (TF Serving's proto JSON) ---------

def _not_allowed(method: bytes, path: bytes, answers: bytes, allow: bytes) -> tuple[int, bytes, bytes]:
    """405 with the reason in TF Serving's JSON error (TF Serving answers 400) and the
    Allow header line; the caller adds the Content-Type."""
    error = invalid_argument(
        f"Malformed request: {method.decode('latin-1')} {path.decode('latin-1')} "
        f"(this path answers {answers.decode()})")
    return 405, error.json_body(), b"Allow: " + allow + b"\r\n"


def _metrics_page() -> tuple[int, bytes, bytes]:
    return 200, metrics.page(), _METRICS_TYPE


def _dump_indented(obj: Any) -> bytes:
    # TF Serving prints these with protobuf's add_whitespace, which indents by one space.
    return json.dumps(obj, indent=1).encode()


def _version_status_json(status: VersionStatus) -> dict:
    error = status.error
    return {
        "version": str(status.version),
        "state": status.state.name,
        "status": {
            "error_code": error.code.name if error else "OK",
            "error_message": error.message if error else "",
        },
    }


def _tensor_info_json(spec: TensorSpec) -> dict:
    if spec.shape is None:
        shape = {"dim": [], "unknown_rank": True}
    else:
        shape = {"dim": [{"size": str(d), "name": ""} for d in spec.shape], "unknown_rank": False}
    return {"dtype": dtypes.name(spec.dtype), "tensor_shape": shape, "name": spec.name}


def signature_def_map_json(signatures: Mapping[str, SignatureSpec]) -> dict:
    return {
        "signature_def": {
            key: {
                "inputs": {a: _tensor_info_json(t) for a, t in sig.inputs.items()},
                "outputs": {a: _tensor_info_json(t) for a, t in sig.outputs.items()},
                "method_name": sig.method_name,
                "defaults": {},
            }
            for key, sig in signatures.items()
        }
    }


class RestApi:
    """Routes complete HTTP requests to the api layer; renders TF Serving's JSON."""

    def __init__(
        self, api: Api, *, limits: Limits, enable_cors: bool, run_timeout_ms: int = 0,
        metrics_path: str | None = None, pending: Pending | None = None,
        status_page: StatusPage | None = None, readiness: Callable[[], str | None] | None = None,
    ) -> None:
        self.api = api
        # --max_pending_requests, shared with gRPC.
        self.pending = pending if pending is not None else Pending()
        self.refused_connections = 0  # beyond --rest_api_max_connections
        self.limits = limits
        self.enable_cors = enable_cors
        self.run_timeout_ms = run_timeout_ms  # --rest_api_timeout_in_ms, for each model run
        # --monitoring_config_file's Prometheus page, when enabled.
        # GET /readyz: None when ready, else why not (GET /livez needs nothing).
        self.readiness = readiness
        # Paths that answer GET (and HEAD) only, outside TF Serving's /v1 API and its
        # request metrics: path -> (answer, the Allow header's methods). A later entry
        # wins a clash: the metrics page's path is the user's choice.
        self._pages: dict[bytes, tuple[Callable[[], tuple[int, bytes, bytes]], bytes]] = {
            b"/livez": (self._livez, b"GET"),
            b"/readyz": (self._readyz, b"GET"),
        }
        if status_page is not None:  # GET / (--enable_status_page)
            self._pages[b"/"] = (status_page.page, b"GET, HEAD")
        if metrics_path:  # --monitoring_config_file's Prometheus page, or the status page's
            self._pages[metrics_path.encode()] = (_metrics_page, b"GET")
        self._routes: dict[bytes, _Route | ServingError] = {}

    # ---- routing -----------------------------------------------------------

    def _route(self, path: bytes) -> _Route:
        """Parses a path once; repeated paths come from a small cache."""
        cached = self._routes.get(path)
        if cached is None:
            cached = self._parse_route(path.decode("latin-1"))
            if len(self._routes) >= 1024:
                self._routes.clear()
            self._routes[path] = cached
        if isinstance(cached, ServingError):
            raise cached
        return cached

    @staticmethod
    def _parse_route(path: str) -> _Route | ServingError:
        def spec(name: str | None, version: str | None, label: str | None) -> ModelSpec:
            number = None
            if version:
                number = int(version)
                if number > _INT64_MAX:
                    raise invalid_argument(f"Failed to convert version: {version} to numeric.")
            return ModelSpec(unquote(name) if name else "", number, unquote(label) if label else None)

        try:
            m = _PREDICTION_PATH.fullmatch(path)
            if m:
                return _Route(m.group(4).lower(), spec(m.group(1), m.group(2), m.group(3)), b"POST")
            m = _STATUS_PATH.fullmatch(path)
            if m:
                model_spec = spec(m.group(1), m.group(2), m.group(3))
                if m.group(4):
                    kind = "metadata"
                elif not model_spec.name and model_spec.version is None and model_spec.version_label is None:
                    kind = "list"
                else:
                    kind = "status"
                return _Route(kind, model_spec, b"GET")
        except ServingError as exc:
            return exc
        return ServingError(StatusCode.NOT_FOUND, f"Malformed request: {path}")

    # ---- handling ----------------------------------------------------------

    async def respond(self, req: Request) -> tuple[int, bytes, bytes]:
        """(HTTP status, body, header lines, Content-Type first) for one request;
        never raises. Counted in the metrics as TF Serving counts its REST requests,
        except the metrics page, the status page and the status page's own polls."""
        path, _, query = req.url.partition(b"?")
        page = self._pages.get(path)
        if page is not None:
            answer, allow = page
            if req.method not in (b"GET", b"HEAD"):
                status, body, extra = _not_allowed(req.method, path, b"GET", allow)
                return status, body, _JSON + extra
            return answer()  # HEAD gets GET's headers; the connection drops the body
        started = time.perf_counter()
        code = StatusCode.OK
        try:
            status, body, extra = await self._dispatch(req)
            if status != 200:  # answered without an exception: 405
                code = StatusCode.INVALID_ARGUMENT
        except ServingError as exc:
            code = exc.code
            status, body, extra = exc.http_status, exc.json_body(), b""
        except Exception as exc:  # a bug must cost one request, not the server
            log.exception("Internal error answering %s %s", req.method, req.url)
            error = internal(f"Internal error: {type(exc).__name__}: {exc}")
            code = error.code
            status, body, extra = error.http_status, error.json_body(), b""
        if metrics.enabled() and query != POLL_QUERY:
            route = self._routes.get(path)
            if isinstance(route, _Route):
                # TF Serving's API label is the URL's verb ("predict"); empty for GETs.
                api = route.kind if route.kind in _INFERENCE_KINDS else ""
                metrics.record_request(route.spec.name, api, "REST", code, time.perf_counter() - started)
            else:
                metrics.record_request("", "", "REST", code, time.perf_counter() - started)
        if self.enable_cors:
            extra += _CORS_HEADERS
        return status, body, _JSON + extra

    # An orchestrator's probes (edgeserve's own; TF Serving has none): /livez is answered
    # by the event loop, so an answer means it runs; /readyz is 200 once every configured
    # model has an AVAILABLE version and the server is not draining.

    @staticmethod
    def _livez() -> tuple[int, bytes, bytes]:
        return 200, b'{"status": "alive"}', _JSON

    def _readyz(self) -> tuple[int, bytes, bytes]:
        reason = self.readiness() if self.readiness is not None else None
        if reason is None:
            return 200, b'{"status": "ready"}', _JSON
        return 503, ServingError(StatusCode.UNAVAILABLE, reason).json_body(), _JSON

    async def _dispatch(self, req: Request) -> tuple[int, bytes, bytes]:
        path, _, _query = req.url.partition(b"?")
        method = req.method
        if method == b"OPTIONS" and path[:4].lower() == b"/v1/":
            # A CORS preflight, answered as TF Serving does whatever the flag says.
            if req.origin is not None and _CORS_ORIGIN.search(req.origin.decode("latin-1")):
                return 200, b"", b""
            raise ServingError(StatusCode.FAILED_PRECONDITION, "Origin header is missing in CORS preflight")
        try:
            route = self._route(path)
        except ServingError as exc:
            if exc.code == StatusCode.NOT_FOUND:
                raise ServingError(exc.code, f"Malformed request: {method.decode('latin-1')} {path.decode('latin-1')}")
            raise
        if method != route.method:
            return _not_allowed(method, path, route.method, route.method)
        kind = route.kind
        if kind == "predict":
            return 200, await self._predict(route.spec, self._body(req)), b""
        if kind == "status":
            statuses = self.api.model_status(route.spec, rest=True)
            return 200, _dump_indented({"model_version_status": [_version_status_json(s) for s in statuses]}), b""
        if kind == "metadata":
            spec, signatures = await self.api.model_metadata(route.spec)
            return 200, _dump_indented({
                "model_spec": {"name": spec.name, "signature_name": "", "version": str(spec.version)},
                "metadata": {"signature_def": signature_def_map_json(signatures)},
            }), b""
        if kind == "list":
            return 200, _dump_indented({
                "models": [
                    {
                        "name": name,
                        "model_version_status": [_version_status_json(s) for s in statuses],
                        "version_labels": {
                            label: str(version)
                            for label, version in sorted(self.api.version_labels(name).items())
                        },
                    }
                    for name, statuses in self.api.all_model_status().items()
                ]
            }), b""
        if kind in ("classify", "regress"):
            return 200, await self._classify_or_regress(route.spec, kind, self._body(req)), b""
        raise ServingError(StatusCode.NOT_FOUND, f"Malformed request: {req.method.decode('latin-1')} {path.decode('latin-1')}")

    async def _predict(self, spec: ModelSpec, body: bytes) -> bytes:
        large = len(body) > OFFLOAD_BYTES
        if large:
            parsed = await self.api.offload(tensors.parse_predict_request, body)
        else:
            parsed = tensors.parse_predict_request(body)
        if parsed.signature_name:
            spec = ModelSpec(spec.name, spec.version, spec.version_label, parsed.signature_name)
        result = await self.api.predict(
            spec, lambda sig: tensors.decode_inputs(parsed, sig), rest=True, offload=large,
            timeout_ms=self.run_timeout_ms,
        )
        if sum(a.nbytes for a in result.outputs.values()) > OFFLOAD_BYTES:
            return await self.api.offload(
                tensors.encode_predict_response, result.outputs, parsed.format, result.signature
            )
        return tensors.encode_predict_response(result.outputs, parsed.format, result.signature)

    async def _classify_or_regress(self, spec: ModelSpec, kind: str, body: bytes) -> bytes:
        # Imported on first use: the message classes import TensorFlow.
        from . import example_json, messages

        examples, signature_name = example_json.parse_classify_regress_request(body)
        if signature_name:
            spec = ModelSpec(spec.name, spec.version, spec.version_label, signature_name)
        if kind == "classify":
            classification = messages.ClassificationResult()
            await self.api.classify(spec, examples, classification, timeout_ms=self.run_timeout_ms)
            return example_json.classification_result_json(classification)
        regression = messages.RegressionResult()
        await self.api.regress(spec, examples, regression, timeout_ms=self.run_timeout_ms)
        return example_json.regression_result_json(regression)

    def _body(self, req: Request) -> bytes:
        encoding = req.content_encoding
        if encoding is None or encoding.lower() in (b"identity", b""):
            return req.body
        if encoding.lower() not in (b"gzip", b"x-gzip", b"deflate"):
            raise ServingError(
                StatusCode.INVALID_ARGUMENT,
                f"Unsupported Content-Encoding: {encoding.decode('latin-1')} (use gzip or none)",
            )
        limit = self.limits.max_request_bytes
        # wbits 32+: zlib detects gzip or zlib headers itself.
        inflater = zlib.decompressobj(32 + zlib.MAX_WBITS)
        try:
            body = inflater.decompress(req.body, limit + 1)
        except zlib.error as exc:
            raise invalid_argument(f"Failed to decompress {encoding.decode('latin-1')} request body: {exc}") from None
        if len(body) > limit or inflater.unconsumed_tail:
            raise _TooLarge(limit)
        if not inflater.eof:
            raise invalid_argument(f"Failed to decompress {encoding.decode('latin-1')} request body: truncated input")
        return body


class _TooLarge(ServingError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            StatusCode.RESOURCE_EXHAUSTED,
            f"Request body exceeds the limit of {limit} bytes (--rest_api_max_request_bytes)",
        )

    @property
    def http_status(self) -> int:
        return 413


# ---- driving a handler coroutine without a Task when it finishes at once -------

@types.coroutine
def _drive(pending: Any, coro: Any):
    """Finishes a coroutine that already ran up to its first suspension (`pending`)."""
    while True:
        try:
            value = yield pending
        except BaseException as exc:  # cancellation at shutdown, passed on
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(value)
            except StopIteration as stop:
                return stop.value


async def _finish(pending: Any, coro: Any):
    return await _drive(pending, coro)


class _Clock:
    """The Date header, formatted at most once a second."""

    value = b""
    second = -1

    @classmethod
    def date_header(cls) -> bytes:
        now = int(time.time())
        if now != cls.second:
            cls.second = now
            cls.value = b"Date: " + email.utils.formatdate(now, usegmt=True).encode() + b"\r\n"
        return cls.value


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection. Callbacks named as httptools calls them."""

    def __init__(self, app: RestApi, connections: set["HttpProtocol"]) -> None:
        self.app = app
        self.limits = app.limits
        self._pending = app.pending
        self._connections = connections
        self._loop = asyncio.get_event_loop()
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque = deque()
        self._busy = False
        self._closed = False
        self._reading_paused = False
        self._writing_paused = False
        self._draining = False
        self._discard = False  # a fatal error is queued; ignore further input
        # Per-request state, reset in on_message_begin.
        self._url = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._headers = 0
        self._head_bytes = 0
        self._content_encoding: bytes | None = None
        self._origin: bytes | None = None
        self._expect_continue = False
        self.request_started: float | None = None
        self.idle_since: float | None = time.monotonic()

    # ---- asyncio.Protocol --------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        limit = self.limits.max_connections
        if limit and len(self._connections) >= limit:
            # Beyond the limit a connection costs a file descriptor and buffers that
            # a small box may not have: it is told why and closed before it is read.
            self._discard = True
            self.app.refused_connections += 1
            body = orjson.dumps({"error": f"Too many connections: this server takes at most {limit} "
                                          "at once (--rest_api_max_connections)"})
            self._write(503, body, _JSON, keep_alive=False, http10=False, head=False)  # and closes
            return
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        # In-flight handlers finish and their answers are dropped: a client that
        # leaves changes nothing on the server.
        self._closed = True
        self._connections.discard(self)
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._discard:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fatal(400, "Protocol upgrades are not supported")
        except httptools.HttpParserError as exc:
            if not self._discard:
                self._fatal(400, f"Malformed HTTP request: {exc}")

    def eof_received(self) -> bool | None:
        # A client that shut its sending side after its requests still reads the
        # answers: finish those received, then close (returning None closes at once).
        if self._busy or self._queue:
            self._draining = True
            return True
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True  # the client is not reading its answers

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._process()

    # ---- parser callbacks --------------------------------------------------

    def on_message_begin(self) -> None:
        # Set here, not on every read: bare CRLFs between requests never begin a
        # message, so they cannot hold a connection open past the idle timeout.
        self.idle_since = None
        self.request_started = time.monotonic()
        self._head_bytes = 0
        self._url = b""
        self._body = []
        self._body_size = 0
        self._headers = 0
        self._content_encoding = None
        self._origin = None
        self._expect_continue = False

    def _count_head(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            self._fatal(431, f"Request line and headers exceed {self.limits.max_header_bytes} "
                             "bytes (--rest_api_max_header_bytes)")
            raise httptools.HttpParserError("headers too large")

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        self._headers += 1
        if self._headers > _MAX_HEADERS:
            self._fatal(431, f"Too many request headers (more than {_MAX_HEADERS})")
            raise httptools.HttpParserError("too many headers")
        lname = name.lower()
        if lname == b"content-encoding":
            self._content_encoding = value.strip()
        elif lname == b"origin":
            self._origin = value
        elif lname == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True
        elif lname == b"content-length":
            try:
                too_large = int(value) > self.limits.max_request_bytes
            except ValueError:
                too_large = False  # the parser rejects it itself
            if too_large:
                self._fatal(413, _TooLarge(self.limits.max_request_bytes).message)
                raise httptools.HttpParserError("body too large")

    def on_headers_complete(self) -> None:
        # RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue is ignored.
        if (self._expect_continue and not self._busy and not self._queue and self.transport
                and self._parser.get_http_version() != "1.0"):
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size > self.limits.max_request_bytes:
            self._fatal(413, _TooLarge(self.limits.max_request_bytes).message)
            raise httptools.HttpParserError("body too large")
        self._body.append(body)

    def on_message_complete(self) -> None:
        self.request_started = None
        parser = self._parser
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._queue.append(Request(
            parser.get_method(), self._url, body, parser.should_keep_alive(),
            self._content_encoding, self._origin, parser.get_http_version() == "1.0",
        ))
        if len(self._queue) >= _MAX_QUEUED and not self._reading_paused and self.transport:
            self._reading_paused = True
            self.transport.pause_reading()
        self._process()

    # ---- answering, in order -------------------------------------------------

    def _process(self) -> None:
        while self._queue and not self._busy and not self._closed and not self._writing_paused:
            req = self._queue.popleft()
            if isinstance(req, tuple):  # a fatal error: answer, then close
                self._write(req[0], req[1], _JSON, keep_alive=False, http10=False, head=False)
                return
            if req.method == b"POST" and (refusal := self._pending.refusal()) is not None:
                # Only inference is bounded: status, metadata and metrics stay reachable.
                self._write(503, orjson.dumps({"error": refusal.message}), _JSON,
                            req.keep_alive, req.http10, head=False)
                continue
            coro = self.app.respond(req)
            try:
                pending = coro.send(None)
            except StopIteration as done:  # finished without waiting: no Task needed
                status, body, extra = done.value
                self._write(status, body, extra, req.keep_alive, req.http10, req.method == b"HEAD")
                continue
            self._busy = True
            self._pending.count += 1
            task = self._loop.create_task(_finish(pending, coro))
            task.add_done_callback(lambda t, r=req: self._on_done(t, r))
            return
        if (self._reading_paused and len(self._queue) < _MAX_QUEUED // 4 and not self._closed
                and not self._draining and not self._discard):
            self._reading_paused = False
            self.transport.resume_reading()  # type: ignore[union-attr]
        if not self._queue and not self._busy:
            if self._draining:
                self._close()
            elif self.request_started is None:
                self.idle_since = time.monotonic()

    def _on_done(self, task: asyncio.Task, req: Request) -> None:
        self._busy = False
        self._pending.count -= 1
        if task.cancelled():
            self._close()
            return
        status, body, extra = task.result()
        self._write(status, body, extra, req.keep_alive, req.http10, req.method == b"HEAD")
        self._process()

    def _write(self, status: int, body: bytes, extra: bytes, keep_alive: bool,
               http10: bool, head: bool) -> None:
        if self._closed or self.transport is None:
            return
        # Draining: requests already queued are still answered; the last one closes.
        keep_alive = keep_alive and not (self._draining and not self._queue)
        if keep_alive:
            connection = b"Connection: keep-alive\r\n" if http10 else b""
        else:
            connection = b"Connection: close\r\n"
        header = b"".join((
            _STATUS_LINES.get(status) or _status_line(status),
            _Clock.date_header(),
            b"Content-Length: ", str(len(body)).encode(), b"\r\n",
            connection,
            extra,
            b"\r\n",
        ))
        if head:  # a HEAD answer has the headers a GET would, and no body
            body = b""
        self.transport.write(header + body if len(body) < 16384 else header)
        if len(body) >= 16384:
            self.transport.write(body)
        if not keep_alive:
            self._close()

    def _fatal(self, status: int, message: str) -> None:
        """Queues an error answer after those already owed, then closes."""
        self._discard = True
        self.request_started = None
        if self.transport is not None and not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()
        self._queue.append((status, orjson.dumps({"error": message})))
        self._process()

    def _close(self) -> None:
        if not self._closed:
            self._closed = True
            self._connections.discard(self)
            if self.transport is not None:
                self.transport.close()

    # ---- called by the server's periodic sweep and at shutdown ---------------

    def check_timeouts(self, now: float) -> None:
        if self.request_started is not None and now - self.request_started > self.limits.request_timeout:
            self._fatal(408, "Request not received in time (--rest_api_header_timeout_in_ms)")
        elif self.idle_since is not None and now - self.idle_since > self.limits.idle_timeout:
            self._close()

    def drain(self) -> None:
        """Stop taking requests: answer what was received, then close."""
        self._draining = True
        if not self._queue and not self._busy:
            self._close()
        elif self.transport is not None and not self._reading_paused:
            self._reading_paused = True  # what arrives from now on is not taken
            self.transport.pause_reading()

    @property
    def busy(self) -> bool:
        return self._busy or bool(self._queue)
