"""Baseline: TF Serving's PredictionService a Python user would write with grpclib.

`python bench/baseline_grpclib.py PORT MODEL_VERSION_DIR [fast|floor]` serves
/tensorflow.serving.PredictionService/Predict on 127.0.0.1:PORT (h2c): a class whose
`__mapping__` returns one `grpclib.const.Handler` (unary-unary, PredictRequest ->
PredictResponse from tensorflow-serving-api; no generated grpclib stubs needed), served
by `grpclib.server.Server` on uvloop. The handler runs the model inline
(bench/grpc_model.py: tf.make_ndarray in, `session.run` — or with `fast` edgeserve's
session callable — tf.make_tensor_proto out, model_spec filled). Errors become
INVALID_ARGUMENT. `floor` loads no model and answers every call with one prebuilt
PredictResponse (y = [2.5, 3.0, 4.5]): what grpclib + h2 + protobuf cost with no work at
all, the floor under any grpclib server. Not part of edgeserve; used only by
bench/grpc_bench.py.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class PredictionService:
    def __init__(self, predict) -> None:
        self._predict = predict

    async def Predict(self, stream) -> None:
        from grpclib import GRPCError
        from grpclib.const import Status

        request = await stream.recv_message()
        try:
            response = self._predict(request)
        except Exception as exc:
            raise GRPCError(Status.INVALID_ARGUMENT, str(exc)) from None
        await stream.send_message(response)

    def __mapping__(self):
        from grpclib.const import Cardinality, Handler
        from tensorflow_serving.apis import predict_pb2

        return {
            "/tensorflow.serving.PredictionService/Predict": Handler(
                self.Predict, Cardinality.UNARY_UNARY,
                predict_pb2.PredictRequest, predict_pb2.PredictResponse,
            ),
        }


def prebuilt_response():
    from tensorflow_serving.apis import predict_pb2

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "half_plus_two"
    response.model_spec.version.value = 1
    response.model_spec.signature_name = "serving_default"
    y = response.outputs["y"]
    y.dtype = 1  # DT_FLOAT
    y.tensor_shape.dim.add().size = 3
    y.tensor_shape.dim.add().size = 1
    y.tensor_content = b"\x00\x00\x20\x40\x00\x00\x40\x40\x00\x00\x90\x40"  # 2.5, 3.0, 4.5
    return lambda request: response


async def serve(port: int, model_dir: str, mode: str) -> None:
    from grpclib.server import Server

    from grpc_model import load_predict

    if mode == "floor":
        predict = prebuilt_response()
    else:
        session, predict = load_predict(model_dir, fast=mode == "fast")
    server = Server([PredictionService(predict)])
    await server.start("127.0.0.1", port)
    await server.wait_closed()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] not in ("fast", "floor")):
        print("usage: baseline_grpclib.py PORT MODEL_VERSION_DIR [fast|floor]", file=sys.stderr)
        return 2
    import uvloop

    uvloop.run(serve(int(argv[0]), argv[1], argv[2] if len(argv) == 3 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
