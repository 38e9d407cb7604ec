"""Baseline: the floor for a Python HTTP model server.

`python bench/baseline_bare.py PORT MODEL_VERSION_DIR` serves
POST /v1/models/half_plus_two:predict on 127.0.0.1:PORT: a bare uvloop
`asyncio.Protocol` feeding an `httptools.HttpRequestParser`; on a complete message
it does orjson.loads -> np.asarray(float32) -> a `session.make_callable` callable run
inline -> orjson.dumps -> one transport.write behind a pre-built header. No TF Serving
semantics (no versions, no validation, no error mapping), one path only: whatever a
real server does on top of this costs time that this baseline does not pay.
Not part of edgeserve; used only by bench/run.py.
"""
from __future__ import annotations

import asyncio
import sys

PATH = b"/v1/models/half_plus_two:predict"
HEADER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
    b"Content-Length: 22\r\n\r\n{\"error\": \"not found\"}"
)
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
    b"Content-Length: 24\r\n\r\n{\"error\": \"bad request\"}"
)


def load_predict(model_dir: str, fast: bool = False):
    import tensorflow as tf

    v1 = tf.compat.v1
    config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = v1.Session(graph=tf.Graph(), config=config)
    with session.graph.as_default():
        v1.saved_model.loader.load(session, ["serve"], model_dir)
    if fast:
        # The call path edgeserve uses (see DESIGN.md): numpy straight to the C session.
        from tensorflow.core.protobuf import config_pb2

        call = session._make_callable_from_options(
            config_pb2.CallableOptions(feed=["x:0"], fetch=["y:0"]))
        return session, lambda x: call(x)[0]
    return session, session.make_callable("y:0", feed_list=["x:0"])


def make_protocol(predict):
    import httptools
    import numpy as np
    import orjson

    dumps_numpy = orjson.OPT_SERIALIZE_NUMPY

    class PredictProtocol(asyncio.Protocol):
        __slots__ = ("transport", "parser", "url", "body")

        def __init__(self) -> None:
            self.transport = None
            self.parser = httptools.HttpRequestParser(self)
            self.url = b""
            self.body = []

        def connection_made(self, transport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(BAD_REQUEST)
                self.transport.close()

        # httptools callbacks
        def on_message_begin(self) -> None:
            self.url = b""
            self.body = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_body(self, body: bytes) -> None:
            self.body.append(body)

        def on_message_complete(self) -> None:
            transport = self.transport
            if self.url != PATH:
                transport.write(NOT_FOUND)
            else:
                try:
                    x = np.asarray(orjson.loads(b"".join(self.body))["instances"], dtype=np.float32)
                    payload = orjson.dumps({"predictions": predict(x)}, option=dumps_numpy)
                except Exception:
                    transport.write(BAD_REQUEST)
                else:
                    transport.write(b"%s%d\r\n\r\n%s" % (HEADER, len(payload), payload))
            if not self.parser.should_keep_alive():
                transport.close()

    return PredictProtocol


async def serve(port: int, model_dir: str, fast: bool = False) -> None:
    session, predict = load_predict(model_dir, fast)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(make_protocol(predict), "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "fast"):
        print("usage: baseline_bare.py PORT MODEL_VERSION_DIR [fast]", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(serve(int(argv[0]), argv[1], fast=len(argv) == 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
