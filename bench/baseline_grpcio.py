"""Baseline: TF Serving's PredictionService a Python user would write with grpcio.aio.

`python bench/baseline_grpcio.py PORT MODEL_VERSION_DIR [fast]` serves
/tensorflow.serving.PredictionService/Predict on 127.0.0.1:PORT (h2c): a
`grpc.aio.server()` with the official servicer from tensorflow-serving-api
(`add_PredictionServiceServicer_to_server`), an `async def Predict` that runs the model
inline (bench/grpc_model.py: tf.make_ndarray in, `session.run` — or with `fast`
edgeserve's session callable — tf.make_tensor_proto out, model_spec filled). Plain
asyncio loop, as grpc.aio documents (it does not support uvloop). Errors become
INVALID_ARGUMENT. Not part of edgeserve; used only by bench/grpc_bench.py.
"""
from __future__ import annotations

import asyncio
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


async def serve(port: int, model_dir: str, fast: bool) -> None:
    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    from grpc_model import load_predict

    session, predict = load_predict(model_dir, fast)

    class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
        async def Predict(self, request, context):
            try:
                return predict(request)
            except Exception as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    server = grpc.aio.server()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionService(), server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "fast"):
        print("usage: baseline_grpcio.py PORT MODEL_VERSION_DIR [fast]", file=sys.stderr)
        return 2
    asyncio.run(serve(int(argv[0]), argv[1], fast=len(argv) == 3))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
