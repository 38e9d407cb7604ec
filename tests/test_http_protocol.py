"""HttpProtocol fed raw bytes, no sockets: ordering of pipelined answers and draining.

The model here is a stand-in servable whose run blocks on a worker thread until the
test lets it go, so answers are genuinely pending while more requests arrive.
"""
from __future__ import annotations

import asyncio
import re
import threading
from concurrent.futures import ThreadPoolExecutor


from edgeserve.api import Api
from edgeserve.dtypes import DataType
from edgeserve.manager import Manager
from edgeserve.rest_api import HttpProtocol, Limits, RestApi
from edgeserve.servable import SignatureSpec, TensorSpec
from edgeserve.sources import AspiredVersion

SIGNATURE = SignatureSpec(
    "tensorflow/serving/predict",
    {"x": TensorSpec("x:0", DataType.DT_FLOAT, (-1, 1))},
    {"y": TensorSpec("y:0", DataType.DT_FLOAT, (-1, 1))},
)


class GatedServable:
    signatures = {"serving_default": SIGNATURE}

    def __init__(self) -> None:
        self.gate = threading.Event()

    def run(self, signature_name, inputs, output_filter=None, caller_thread=False, timeout_ms=0):
        assert self.gate.wait(10)
        return {"y": inputs["x"] * 2}

    def close(self):
        pass


class Loader:
    def __init__(self, servable):
        self.servable = servable

    def estimate_bytes(self):
        return 0

    def load(self):
        return self.servable


class Transport:
    def __init__(self) -> None:
        self.data = b""
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.data += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def predict(x: float, extra: bytes = b"") -> bytes:
    body = b'{"instances": [[%s]]}' % str(x).encode()
    return (b"POST /v1/models/m:predict HTTP/1.1\r\nContent-Length: %d\r\n%s\r\n" % (len(body), extra)) + body


def statuses(data: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", data)]


async def setup():
    servable = GatedServable()
    executor = ThreadPoolExecutor(2)
    manager = Manager(lambda n, a: Loader(servable), load_executor=executor, unload_executor=executor)
    manager.set_aspired_versions("m", [AspiredVersion(1, "/m/1", (1, 1, 1))])
    await manager.wait_until_settled()
    api = Api(manager, executor, inline_threshold_seconds=0.001)
    rest = RestApi(api, limits=Limits(), enable_cors=False)
    protocol = HttpProtocol(rest, set())
    transport = Transport()
    protocol.connection_made(transport)
    return servable, protocol, transport, executor


async def until(predicate, timeout=5.0):
    for _ in range(int(timeout / 0.005)):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError("condition not met")


def test_pipelined_requests_are_answered_in_order_while_one_is_pending():
    async def scenario():
        servable, protocol, transport, executor = await setup()
        # predict (pending on the gate), then a 404 that could be answered at once.
        protocol.data_received(predict(1.0) + b"GET /nope HTTP/1.1\r\n\r\n" + predict(2.0))
        await asyncio.sleep(0.05)
        assert transport.data == b""  # the 404 waits for the predict before it
        servable.gate.set()
        await until(lambda: len(statuses(transport.data)) == 3)
        assert statuses(transport.data) == [200, 404, 200]
        first = transport.data.index(b"[[2.0]")
        assert first < transport.data.index(b"Malformed request") < transport.data.index(b"[[4.0]")
        assert not transport.closed
        executor.shutdown()

    asyncio.run(scenario())


def test_drain_answers_every_received_request_then_closes():
    async def scenario():
        servable, protocol, transport, executor = await setup()
        protocol.data_received(predict(1.0) + predict(2.0) + predict(3.0))
        await asyncio.sleep(0.05)
        protocol.drain()
        assert not transport.reading  # nothing more is taken
        assert not transport.closed
        servable.gate.set()
        await until(lambda: transport.closed)
        assert statuses(transport.data) == [200, 200, 200]
        # Only the last answer says the connection closes.
        assert transport.data.count(b"Connection: close") == 1
        assert b"[[6.0]" in transport.data.split(b"Connection: close")[1]  # the last one
        executor.shutdown()

    asyncio.run(scenario())


def test_idle_connection_closes_at_once_on_drain():
    async def scenario():
        servable, protocol, transport, executor = await setup()
        protocol.drain()
        assert transport.closed
        executor.shutdown()

    asyncio.run(scenario())


def test_fatal_error_is_answered_after_the_pending_answers():
    async def scenario():
        servable, protocol, transport, executor = await setup()
        protocol.data_received(predict(1.0) + b"\x16\x03\x01garbage\r\n\r\n")
        await asyncio.sleep(0.05)
        assert transport.data == b""
        servable.gate.set()
        await until(lambda: transport.closed)
        assert statuses(transport.data) == [200, 400]
        executor.shutdown()

    asyncio.run(scenario())


