"""The model called in-process: the cost of one session.run, batch 1, no server.

`python bench/inprocess.py MODEL_VERSION_DIR [--duration S] [--json]` loads the
SavedModel the way edgeserve does (tf.compat.v1.Session, one intra-op and one inter-op
thread), then calls session.run("y:0", {"x:0": [[1.0]]}) in a loop for S seconds and
reports calls/s and p50/p99 latency in µs; also the same for a `make_callable`
callable, for reference. bench/run.py runs it pinned to core 0 (`taskset -c 0`).
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def _measure(call, duration: float) -> dict:
    for _ in range(1000):  # warm-up: first runs allocate and cache
        call()
    clock = time.perf_counter_ns
    samples = []
    append = samples.append
    start = clock()
    deadline = start + int(duration * 1e9)
    now = start
    while now < deadline:
        call()
        after = clock()
        append(after - now)
        now = after
    elapsed = now - start
    samples.sort()
    n = len(samples)
    return {
        "calls": n,
        "calls_per_s": n / (elapsed / 1e9),
        "p50_us": samples[n // 2] / 1e3,
        "p99_us": samples[min(n - 1, int(n * 0.99))] / 1e3,
    }


def measure(model_dir: str, duration: float) -> dict:
    import numpy as np
    import tensorflow as tf

    v1 = tf.compat.v1
    config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = v1.Session(graph=tf.Graph(), config=config)
    with session.graph.as_default():
        v1.saved_model.loader.load(session, ["serve"], model_dir)
    x = np.asarray([[1.0]], dtype=np.float32)
    feed = {"x:0": x}
    y = session.run("y:0", feed_dict=feed)
    assert float(y[0][0]) == 2.5, y
    run = _measure(lambda: session.run("y:0", feed_dict=feed), duration)
    callable_ = session.make_callable("y:0", feed_list=["x:0"])
    made = _measure(lambda: callable_(x), duration)
    session.close()
    return {"tf_version": tf.__version__, "session_run": run, "make_callable": made}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="the SavedModel version directory (…/half_plus_two/1)")
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per measurement")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    result = measure(args.model_dir, args.duration)
    if args.json:
        print(json.dumps(result))
    else:
        for name in ("session_run", "make_callable"):
            r = result[name]
            print(f"{name:14s} {r['calls_per_s']:10.0f} calls/s  "
                  f"p50 {r['p50_us']:7.1f} µs  p99 {r['p99_us']:7.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
