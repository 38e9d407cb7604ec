"""Baseline: the predict endpoint a user would write with FastAPI + uvicorn.

`python bench/baseline_fastapi.py PORT MODEL_VERSION_DIR` serves
POST /v1/models/half_plus_two:predict on 127.0.0.1:PORT with TF Serving's row-format
JSON. The model is loaded the way edgeserve loads it (a tf.compat.v1.Session, one
intra-op and one inter-op thread) and run inline in an `async def` endpoint, as most
such services are written. uvicorn runs on uvloop + httptools, access log off.
Not part of edgeserve; used only by bench/run.py.
"""
# No `from __future__ import annotations`: FastAPI must see the real `Request` class
# in the endpoint signature, and it is imported inside build_app, not at module level.
import sys


def build_app(model_dir: str):
    import numpy as np
    import tensorflow as tf
    from fastapi import FastAPI, Request

    v1 = tf.compat.v1
    config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = v1.Session(graph=tf.Graph(), config=config)
    with session.graph.as_default():
        v1.saved_model.loader.load(session, ["serve"], model_dir)

    app = FastAPI()

    @app.post("/v1/models/half_plus_two:predict")
    async def predict(request: Request):
        body = await request.json()
        x = np.asarray(body["instances"], dtype=np.float32)
        y = session.run("y:0", feed_dict={"x:0": x})
        return {"predictions": y.tolist()}

    return app


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: baseline_fastapi.py PORT MODEL_VERSION_DIR", file=sys.stderr)
        return 2
    import uvicorn

    port, model_dir = int(argv[0]), argv[1]
    uvicorn.run(
        build_app(model_dir),
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
