"""TF Serving's gRPC API on grpclib: PredictionService and ModelService.

Each method reads TF Serving's request message, translates it into the same `api`
calls REST uses and writes TF Serving's response message. Services are plain classes
whose `__mapping__` names each method path with its message classes (grpclib needs no
generated stubs). Failures leave as the ServingError's code and message, truncated as
TF Serving truncates them (grpc_status_util.cc). No model logic lives here.
"""
from __future__ import annotations

import asyncio
import logging
import struct
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from google.protobuf.message import DecodeError
from grpclib.const import Cardinality, Handler, Status
from grpclib.exceptions import GRPCError
from grpclib.protocol import H2Protocol as _H2Protocol
from grpclib.server import Handler as _GrpclibHandler
from grpclib.server import Server as _GrpclibServer

from . import messages as pb
from . import metrics, tensor_proto
from .admission import Connections, Pending
from .api import Api, ModelSpec
from .checks import check_input_names
from .errors import ServingError, StatusCode
from .servable import SignatureSpec

log = logging.getLogger("edgeserve.grpc")

# TF Serving raises gRPC's default limits to the largest int32 (server.cc).
DEFAULT_MAX_MESSAGE_BYTES = 2**31 - 1
_ERROR_MESSAGE_LIMIT = 1024  # TF Serving's ToGRPCStatus truncates longer messages
_COUNTED_METHODS = frozenset(("Predict", "Classify", "Regress"))
# The calls --max_pending_requests bounds: inference, not status or metadata.
_INFERENCE_METHODS = _COUNTED_METHODS | {"MultiInference"}
_SIGNATURE_DEF_MAP_TYPE_URL = "type.googleapis.com/tensorflow.serving.SignatureDefMap"


@dataclass(frozen=True)
class MessageLimits:
    """How messages are sized and written: gRPC's grpc.max_receive_message_length /
    grpc.max_send_message_length (-1: none), and TF Serving's tensor_content option."""

    max_receive_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    max_send_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    # --enable_serialization_as_tensor_content: Predict outputs in tensor_content bytes.
    tensor_content: bool = False


_CHANNEL_ARGUMENTS = {
    "grpc.max_receive_message_length": "max_receive_bytes",
    "grpc.max_send_message_length": "max_send_bytes",
}


def parse_channel_arguments(text: str, *, tensor_content: bool = False) -> MessageLimits:
    """TF Serving's --grpc_channel_arguments ("key=value,key=value"). The message size
    limits are honoured; other keys tune grpc core's C++ server, which edgeserve does
    not have, so they are logged and ignored. Raises ValueError for malformed text."""
    values: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--grpc_channel_arguments: {item!r} is not key=value")
        field = _CHANNEL_ARGUMENTS.get(key.strip())
        if field is None:
            log.warning("gRPC channel argument %s is not used by edgeserve; ignored", key.strip())
            continue
        try:
            values[field] = int(value)
        except ValueError:
            raise ValueError(f"--grpc_channel_arguments: {key.strip()} needs an integer, got {value!r}") from None
    return MessageLimits(**values, tensor_content=tensor_content)


class Calls:
    """The gRPC calls in flight, for draining: once `draining`, new calls are refused;
    and the pending inference requests shared with REST (--max_pending_requests)."""

    __slots__ = ("active", "draining", "pending")

    def __init__(self, pending: Pending | None = None) -> None:
        self.active = 0
        self.draining = False
        self.pending = pending if pending is not None else Pending()


def run_timeout_ms(stream: Any) -> int:
    """The call's deadline as a model run timeout, 0 for none (TF Serving's
    DeadlineToTimeoutMillis). Rounded up to a power of two milliseconds: each distinct
    timeout is a separately prepared session call, so they must be few; a run is cut
    at most twice as late as the deadline the client gets its answer at."""
    deadline = stream.deadline
    if deadline is None:
        return 0
    remaining_ms = max(1, int(deadline.time_remaining() * 1000))
    return 1 << (remaining_ms - 1).bit_length()


def _grpc_error(exc: ServingError) -> GRPCError:
    message = exc.message
    if len(message) > _ERROR_MESSAGE_LIMIT:
        message = message[:_ERROR_MESSAGE_LIMIT] + "...TRUNCATED"
    return GRPCError(Status(exc.code.value), message)


async def _receive(stream: Any, message_type: type, limit: int) -> Any:
    """Reads the one request message of a unary call, refusing oversized ones by their
    length prefix, before their bytes are buffered. grpclib's own recv_message has no
    size limit, so this reads the grpclib protocol stream underneath it."""
    raw = stream._stream
    prefix = await raw.recv_data(5)
    if len(prefix) < 5:
        raise ServingError(StatusCode.INVALID_ARGUMENT, "The request carries no message")
    compressed, length = struct.unpack(">?I", prefix)
    if compressed:
        raise ServingError(
            StatusCode.UNIMPLEMENTED, "Compressed messages are not supported; send them uncompressed"
        )
    if 0 <= limit < length:
        raise ServingError(
            StatusCode.RESOURCE_EXHAUSTED, f"Received message larger than max ({length} vs. {limit})"
        )
    data = await raw.recv_data(length) if length else b""
    try:
        return message_type.FromString(data)
    except DecodeError as exc:
        # grpc's C++ server (TF Serving) answers an unparsable request with INTERNAL;
        # the same code here, with a message that says what did not parse.
        raise ServingError(
            StatusCode.INTERNAL,
            f"Failed to parse the request as {message_type.DESCRIPTOR.full_name}: {exc}",
        ) from None


def model_spec(request: Any) -> ModelSpec | None:
    """A request's ModelSpec message as the api's ModelSpec; None when absent."""
    if not request.HasField("model_spec"):
        return None
    return spec_of(request.model_spec)


def spec_of(proto: Any) -> ModelSpec:
    choice = proto.WhichOneof("version_choice")
    return ModelSpec(
        proto.name,
        proto.version.value if choice == "version" else None,
        proto.version_label if choice == "version_label" else None,
        proto.signature_name,
    )


def _fill_spec(out: Any, spec: ModelSpec) -> None:
    out.name = spec.name
    if spec.signature_name:
        out.signature_name = spec.signature_name
    if spec.version is not None:
        out.version.value = spec.version


class _Service:
    """A grpclib servable whose unary methods take a request and return a response."""

    service_name = ""

    def __init__(self, api: Api, limits: MessageLimits, calls: Calls) -> None:
        self.api = api
        self.limits = limits
        self.calls = calls

    def _unary(
        self, name: str, method: Callable[[Any, int], Awaitable[Any]], request_type: type, response_type: type
    ) -> Handler:
        receive_limit = self.limits.max_receive_bytes
        send_limit = self.limits.max_send_bytes
        check_send = 0 <= send_limit < DEFAULT_MAX_MESSAGE_BYTES
        calls = self.calls
        # TF Serving counts and times Predict, Classify and Regress calls only.
        counted = name in _COUNTED_METHODS
        pending = calls.pending if name in _INFERENCE_METHODS else Pending()  # unbounded

        async def handle(stream: Any) -> None:
            if calls.draining:
                raise GRPCError(Status.UNAVAILABLE, "The server is shutting down")
            refusal = pending.refusal()
            if refusal is not None:  # before reading the request: refusing costs nothing
                raise _grpc_error(refusal)
            calls.active += 1
            pending.count += 1
            request = None
            code = StatusCode.OK
            started = elapsed = 0.0
            try:
                request = await _receive(stream, request_type, receive_limit)
                started = time.perf_counter()
                response = await method(request, run_timeout_ms(stream))
                if check_send and response.ByteSize() > send_limit:
                    raise ServingError(
                        StatusCode.RESOURCE_EXHAUSTED,
                        f"Sent message larger than max ({response.ByteSize()} vs. {send_limit})",
                    )
            except ServingError as exc:
                code = exc.code
                raise _grpc_error(exc) from None
            except GRPCError as exc:
                code = StatusCode(exc.status.value)
                raise
            except Exception as exc:  # a bug must cost one call, not the server
                code = StatusCode.INTERNAL
                log.exception("Internal error in %s", method.__name__)
                raise GRPCError(Status.INTERNAL, f"Internal error: {type(exc).__name__}: {exc}") from None
            else:
                elapsed = time.perf_counter() - started  # as TF Serving: the call, not the send
                await stream.send_message(response)
            finally:
                calls.active -= 1
                pending.count -= 1
                if counted and request is not None:
                    metrics.record_request(request.model_spec.name, name, "GRPC", code, elapsed)

        return Handler(handle, Cardinality.UNARY_UNARY, request_type, response_type)

    def _methods(self) -> dict[str, tuple]:
        raise NotImplementedError

    def __mapping__(self) -> dict[str, Handler]:
        return {
            f"/{self.service_name}/{name}": self._unary(name, method, request_type, response_type)
            for name, (method, request_type, response_type) in self._methods().items()
        }


def _decode_predict_inputs(request: Any) -> Callable[[SignatureSpec], dict]:
    def decode(signature: SignatureSpec) -> dict:
        inputs = request.inputs
        check_input_names(signature, inputs)
        to_ndarray = tensor_proto.to_ndarray
        return {alias: to_ndarray(proto, alias) for alias, proto in inputs.items()}

    return decode


class PredictionService(_Service):
    """tensorflow.serving.PredictionService (prediction_service.proto)."""

    service_name = "tensorflow.serving.PredictionService"

    def _methods(self) -> dict[str, tuple]:
        return {
            "Predict": (self.predict, pb.PredictRequest, pb.PredictResponse),
            "Classify": (self.classify, pb.ClassificationRequest, pb.ClassificationResponse),
            "Regress": (self.regress, pb.RegressionRequest, pb.RegressionResponse),
            "MultiInference": (self.multi_inference, pb.MultiInferenceRequest, pb.MultiInferenceResponse),
            "GetModelMetadata": (self.get_model_metadata, pb.GetModelMetadataRequest, pb.GetModelMetadataResponse),
        }

    async def predict(self, request: Any, timeout_ms: int) -> Any:
        result = await self.api.predict(
            model_spec(request), _decode_predict_inputs(request), request.output_filter,
            timeout_ms=timeout_ms,
        )
        response = pb.PredictResponse()
        spec = result.model_spec
        out_spec = response.model_spec
        out_spec.name = spec.name
        out_spec.version.value = spec.version
        out_spec.signature_name = spec.signature_name
        outputs = response.outputs
        signature_outputs = result.signature.outputs
        from_ndarray = tensor_proto.from_ndarray
        as_content = self.limits.tensor_content
        for alias, array in result.outputs.items():
            from_ndarray(array, signature_outputs[alias].dtype, outputs[alias], as_content)
        return response

    async def classify(self, request: Any, timeout_ms: int) -> Any:
        response = pb.ClassificationResponse()
        spec = await self.api.classify(model_spec(request), request.input, response.result, timeout_ms=timeout_ms)
        _fill_spec(response.model_spec, spec)
        return response

    async def regress(self, request: Any, timeout_ms: int) -> Any:
        response = pb.RegressionResponse()
        spec = await self.api.regress(model_spec(request), request.input, response.result, timeout_ms=timeout_ms)
        _fill_spec(response.model_spec, spec)
        return response

    async def multi_inference(self, request: Any, timeout_ms: int) -> Any:
        response = pb.MultiInferenceResponse()
        tasks = [(spec_of(task.model_spec), task.method_name) for task in request.tasks]
        await self.api.multi_inference(tasks, request.input, response, timeout_ms=timeout_ms)
        return response

    async def get_model_metadata(self, request: Any, _timeout_ms: int) -> Any:
        spec, signature_def_map = await self.api.signature_def_map(model_spec(request), list(request.metadata_field))
        response = pb.GetModelMetadataResponse()
        _fill_spec(response.model_spec, spec)
        metadata = response.metadata["signature_def"]
        # The serialized SignatureDefMap goes in as it is: what Any.Pack would produce.
        metadata.type_url = _SIGNATURE_DEF_MAP_TYPE_URL
        metadata.value = signature_def_map
        return response


class ModelService(_Service):
    """tensorflow.serving.ModelService (model_service.proto)."""

    service_name = "tensorflow.serving.ModelService"

    def _methods(self) -> dict[str, tuple]:
        return {
            "GetModelStatus": (self.get_model_status, pb.GetModelStatusRequest, pb.GetModelStatusResponse),
            "HandleReloadConfigRequest": (
                self.handle_reload_config_request, pb.ReloadConfigRequest, pb.ReloadConfigResponse,
            ),
        }

    async def get_model_status(self, request: Any, _timeout_ms: int) -> Any:
        response = pb.GetModelStatusResponse()
        for status in self.api.model_status(model_spec(request)):
            entry = response.model_version_status.add()
            entry.version = status.version
            entry.state = int(status.state)
            entry.status.SetInParent()  # present even when OK, as TF Serving sends it
            if status.error is not None:
                entry.status.error_code = int(status.error.code)
                entry.status.error_message = status.error.message
        return response

    async def handle_reload_config_request(self, request: Any, _timeout_ms: int) -> Any:
        await self.api.reload_config(request.config)
        response = pb.ReloadConfigResponse()
        response.status.SetInParent()  # OK, present as TF Serving sends it
        return response


# ---- transport: one socket write per loop iteration --------------------------------

class _WriteCoalescer:
    """The transport grpclib writes to, gathering each loop iteration's writes into one.

    grpclib writes every HTTP/2 frame batch as soon as it is made: a unary call costs a
    WINDOW_UPDATE, the response headers, the message and the trailers, four send()
    calls. Joined per loop iteration (and across the calls answered in it) they cost one.
    """

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(data)

    def _flush(self) -> None:
        pending = self._pending
        if pending:
            self._pending = []
            if not self._transport.is_closing():
                self._transport.write(b"".join(pending))

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingProtocol(asyncio.Protocol):
    """grpclib's H2Protocol, handed a `_WriteCoalescer` instead of the bare transport;
    counted in the open connections while it lives."""

    __slots__ = ("_inner", "_open")

    def __init__(self, inner: asyncio.Protocol, open_connections: Connections) -> None:
        self._inner = inner
        self._open = open_connections

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._open.count += 1
        self._inner.connection_made(_WriteCoalescer(transport))  # type: ignore[arg-type]
        _forget_closed_streams_sooner(self._inner)

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._open.count -= 1
        self._inner.connection_lost(exc)


# h2 remembers each connection's last 65,536 closed streams (to ignore frames that
# arrive late for them), ~115 B of RSS each: a long-lived gRPC connection grew by 7.5 MB
# (bench/soak.py found it; 1,024 connections would pin 7.7 GB). A late frame for a stream
# forgotten is answered with RST_STREAM instead of being ignored, which clients accept.
_CLOSED_STREAMS_REMEMBERED = 1024


def _forget_closed_streams_sooner(protocol: Any) -> None:
    """Caps the closed-stream memory of a connection's h2 state (private attributes of
    grpclib and h2: left as it is if either changes)."""
    h2_connection = getattr(getattr(protocol, "connection", None), "_connection", None)
    closed = getattr(h2_connection, "_closed_streams", None)
    if closed is not None and hasattr(closed, "_size_limit"):
        closed._size_limit = _CLOSED_STREAMS_REMEMBERED


class _Refused(_CoalescingProtocol):
    """A connection beyond --grpc_max_connections: served by handlers that answer every
    call UNAVAILABLE with the reason, then closed after a moment so that the client's
    next call connects anew (and is taken once there is room). Not counted as open.

    Why not HTTP/2's GOAWAY at once: grpc clients take a GOAWAY on a new connection
    as a reason to reconnect and keep the call waiting until its deadline, and
    without the server preface they report only a broken handshake."""

    __slots__ = ()
    _LINGER_SECONDS = 1.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(_WriteCoalescer(transport))  # type: ignore[arg-type]
        asyncio.get_running_loop().call_later(self._LINGER_SECONDS, transport.close)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._inner.connection_lost(exc)


def _refusing(mapping: dict[str, Handler], message: str) -> dict[str, Handler]:
    async def refuse(stream: Any) -> None:
        raise GRPCError(Status.UNAVAILABLE, message)

    return {path: Handler(refuse, h.cardinality, h.request_type, h.reply_type) for path, h in mapping.items()}


class GrpcServer(_GrpclibServer):
    """grpclib's Server, its connections writing through `_WriteCoalescer`, at most
    `open_connections.limit` of them (shared by the servers given the same object)."""

    def __init__(self, handlers: Any, open_connections: Connections | None = None) -> None:
        super().__init__(handlers)
        self._open = open_connections if open_connections is not None else Connections()
        self._refusals = _refusing(self._mapping, self._open.message())

    def _protocol_factory(self) -> Any:
        if not self._open.full():
            return _CoalescingProtocol(super()._protocol_factory(), self._open)
        self._open.refused += 1
        handler = _GrpclibHandler(self._refusals, self._codec, self._status_details_codec, self.__dispatch__)
        self._handlers.add(handler)  # so that closing the server closes it too
        return _Refused(_H2Protocol(handler, self._config, self._h2_config), self._open)
