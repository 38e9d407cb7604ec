"""The batching benchmark's models and the processes bench/batching.py runs next to edgeserve.

    python bench/batching_model.py export DIR           # DIR/mlp/1, DIR/half_plus_two/1
    python bench/batching_model.py ceiling DIR --json   # the models called in-process
    python bench/batching_model.py bare PORT MODEL_VERSION_DIR MODEL_NAME [fast]

export: two TF1-graph SavedModels (as edgeserve.example_model builds half_plus_two):
- mlp: x [N, 784] float32 -> y [N, 10]: dense 784->256 (relu) -> 256 (relu) -> 10,
  float32 weights drawn once from a fixed seed;
- half_plus_two: x [N, 1] -> y = 0.5 x + 2, TF Serving's test model.
Both carry the benchmark's side channel for the mean batch size: y depends (control
dependency) on two `AssignAdd`s on int64 resource variables, bench_batches += 1 and
bench_rows += tf.shape(x)[0], so every run of the model -- a batch, with batching on --
counts itself; a second signature "stats" (input probe [N] float32, unused; outputs the
two counters, scalars, so edgeserve never batches it) reads them. Mean batch size over
a load point = delta rows / delta batches, exact, whatever the server does. The
signature the load calls (serving_default: x -> y) is unchanged for every client; the
counters cost a few µs a run (the ceiling's "no counters" entry fetches the same model
without them), paid alike by edgeserve and the baselines.

ceiling: loads each model as edgeserve does (tf.compat.v1.Session, one intra-op and one
inter-op thread) and times edgeserve's call path (`Session._make_callable_from_options`
run on the calling thread) at batch sizes 1, 16, 64, 256 requests, plus `session.run` at
batch 1; JSON on stdout. bench/batching.py runs it pinned to the server core.

bare: bench/baseline_bare.py (the REST benchmark's bare uvloop + httptools loop, one
request per model call) serving MODEL_NAME's predict path; the model's tensors are
x:0 -> y:0 as in half_plus_two, so its loader is reused unchanged.

Not part of edgeserve; used only by bench/batching.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

MLP_NAME = "mlp"
HPT_NAME = "half_plus_two"
MLP_LAYERS = (784, 256, 256, 10)
BATCH_SIZES = (1, 16, 64, 256)  # requests per model call: the driver's client counts


def rows_per_request(model: str) -> int:
    """half_plus_two's request is the REST benchmark's three rows; an MLP request is one image."""
    return 3 if model == HPT_NAME else 1


def request_rows(model: str):
    """The rows of one request, as a list (JSON-able) of float lists."""
    if model == HPT_NAME:
        return [[1.0], [2.0], [5.0]]
    # An MNIST-like image in [0, 1), two decimals: a few-KB JSON body, like a real client's.
    values = [((i * 7919) % 101) / 100.0 for i in range(MLP_LAYERS[0])]
    return [values]


# --------------------------------------------------------------------------- export


def export(base: str) -> dict:
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    out = {}
    for model in (MLP_NAME, HPT_NAME):
        export_dir = os.path.join(base, model, "1")
        graph = tf.Graph()
        with graph.as_default():
            if model == MLP_NAME:
                x = v1.placeholder(tf.float32, shape=[None, MLP_LAYERS[0]], name="x")
                rng = np.random.default_rng(784)
                h = x
                for i, (n_in, n_out) in enumerate(zip(MLP_LAYERS, MLP_LAYERS[1:])):
                    w = v1.Variable(rng.normal(0, (2 / n_in) ** 0.5, (n_in, n_out)).astype(np.float32),
                                    name=f"w{i}")
                    b = v1.Variable(np.zeros(n_out, np.float32), name=f"b{i}")
                    h = tf.matmul(h, w) + b
                    if i < len(MLP_LAYERS) - 2:
                        h = tf.nn.relu(h)
                value = tf.identity(h, name="logits")
            else:
                x = v1.placeholder(tf.float32, shape=[None, 1], name="x")
                a = v1.Variable(0.5, name="a")
                b = v1.Variable(2.0, name="b")
                value = tf.add(tf.multiply(a, x), b, name="y_plain")
            batches = v1.Variable(np.int64(0), name="bench_batches", trainable=False, use_resource=True)
            rows = v1.Variable(np.int64(0), name="bench_rows", trainable=False, use_resource=True)
            count = [batches.assign_add(1, read_value=False),
                     rows.assign_add(tf.shape(x, out_type=tf.int64)[0], read_value=False)]
            with tf.control_dependencies(count):
                y = tf.identity(value, name="y")
            probe = v1.placeholder(tf.float32, shape=[None], name="probe")
            info = v1.saved_model.utils.build_tensor_info
            predict = v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"x": info(x)}, outputs={"y": info(y)},
                method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
            stats = v1.saved_model.signature_def_utils.build_signature_def(
                inputs={"probe": info(probe)},
                outputs={"batches": info(tf.identity(batches.read_value(), name="batches_read")),
                         "rows": info(tf.identity(rows.read_value(), name="rows_read"))},
                method_name=v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
            with v1.Session(graph=graph) as session:
                session.run(v1.global_variables_initializer())
                builder = v1.saved_model.Builder(export_dir)
                builder.add_meta_graph_and_variables(
                    session, [v1.saved_model.tag_constants.SERVING],
                    signature_def_map={"serving_default": predict, "stats": stats},
                    strip_default_attrs=True)
                builder.save()
        out[model] = os.path.join(base, model)
    out["tf_version"] = tf.__version__
    return out


# --------------------------------------------------------------------------- ceiling


def _time_call(call, seconds: float) -> dict:
    for _ in range(50):
        call()
    clock = time.perf_counter_ns
    samples = []
    start = now = clock()
    deadline = start + int(seconds * 1e9)
    while now < deadline:
        call()
        after = clock()
        samples.append(after - now)
        now = after
    samples.sort()
    n = len(samples)
    return {"calls": n, "calls_per_s": n / ((now - start) / 1e9),
            "p50_us": samples[n // 2] / 1e3, "p99_us": samples[min(n - 1, int(n * 0.99))] / 1e3}


def ceiling(base: str, seconds: float) -> dict:
    import numpy as np
    import tensorflow as tf
    from tensorflow.core.protobuf import config_pb2

    v1 = tf.compat.v1
    result: dict = {"tf_version": tf.__version__}
    for model in (MLP_NAME, HPT_NAME):
        config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
        session = v1.Session(graph=tf.Graph(), config=config)
        with session.graph.as_default():
            v1.saved_model.loader.load(session, ["serve"], os.path.join(base, model, "1"))
        one = np.asarray(request_rows(model), dtype=np.float32)
        plain = "logits:0" if model == MLP_NAME else "y_plain:0"

        def callable_for(fetch: str):
            options = config_pb2.CallableOptions(feed=["x:0"], fetch=[fetch])
            options.run_options.inter_op_thread_pool = -1  # the calling thread, as edgeserve inline
            return session._make_callable_from_options(options)

        call, call_plain = callable_for("y:0"), callable_for(plain)
        per_model = {}
        for requests in BATCH_SIZES:
            x = np.repeat(one, requests, axis=0)
            r = _time_call(lambda: call(x), seconds)
            r["requests_per_s"] = r["calls_per_s"] * requests
            per_model[str(requests)] = r
        per_model["no_counters_1"] = _time_call(lambda: call_plain(one), seconds)
        per_model["session_run_1"] = _time_call(lambda: session.run("y:0", {"x:0": one}), seconds)
        result[model] = per_model
        session.close()
    return result


# --------------------------------------------------------------------------- bare loop


def bare(port: int, version_dir: str, model: str, fast: bool) -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import uvloop

    import baseline_bare

    # make_protocol reads the module's PATH at each request.
    baseline_bare.PATH = f"/v1/models/{model}:predict".encode()
    uvloop.run(baseline_bare.serve(port, version_dir, fast=fast))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    e = sub.add_parser("export")
    e.add_argument("dir")
    c = sub.add_parser("ceiling")
    c.add_argument("dir")
    c.add_argument("--seconds", type=float, default=0.4, help="per batch size (default 0.4)")
    c.add_argument("--json", action="store_true")
    b = sub.add_parser("bare")
    b.add_argument("port", type=int)
    b.add_argument("version_dir")
    b.add_argument("model")
    b.add_argument("fast", nargs="?", choices=("fast",))
    args = p.parse_args(argv)
    if args.command == "export":
        print(json.dumps(export(args.dir)))
    elif args.command == "ceiling":
        result = ceiling(args.dir, args.seconds)
        if args.json:
            print(json.dumps(result))
        else:
            for model in (MLP_NAME, HPT_NAME):
                for key, r in result[model].items():
                    print(f"{model:14s} {key:14s} p50 {r['p50_us']:8.1f} µs  "
                          f"{r.get('requests_per_s', r['calls_per_s']):10.0f} requests/s")
    else:
        bare(args.port, args.version_dir, args.model, args.fast == "fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
