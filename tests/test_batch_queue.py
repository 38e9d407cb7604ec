"""Batching in process: `BatchQueue` driven on an asyncio loop over real SavedModels.

Every queue here sits in front of a real `SignatureRunner` over a SavedModel loaded
with `SavedModelLoader`. The models are exported by this module and tell the batch
they ran in:

- reveal (TF2): serving_default x float32 [-1,1] -> y = 0.5x + 2, batch = the rows of
  the batch run (one value per row), total = the sum of x over that batch (so padding
  rows, copies of the first row, are visible); slow: x [-1,1], spin int64 [-1] -> the
  same, after max(spin) matmuls (a run time the request sets).
- ragged (TF2): x float32 [-1,-1] -> y = row sums, length = the batch's second
  dimension, batch = its rows (pad_variable_length_inputs).
- examples (TF1): serialized tf.Examples (feature x) -> classify: classes
  ["x", "batch"], scores [x, rows of the batch]; regress: outputs = 1000*rows + x.

A batch is "held" by giving the runner a one-thread executor whose thread waits on an
event: the batch counts as running, so what arrives meanwhile waits in the queue.

Also here: the batching parameters (edgeserve.batch_options): defaults, checks and
their texts, TF Serving's testdata batching_config.txt, per-model files.
"""
from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models import save_tf1
from conftest import tfserving_testdata
from edgeserve import batch_options
from edgeserve.batch_options import BatchOptions
from edgeserve.batching import BatchQueue, SignatureRunner, batchable
from edgeserve.errors import ServingError, StatusCode

# ---- models that tell the batch they ran in ------------------------------------------------


def export_reveal(base_path, version: int = 1) -> str:
    import tensorflow as tf

    class Reveal(tf.Module):
        @staticmethod
        def _answer(x):
            n = tf.shape(x)[0]
            return {
                "y": x * 0.5 + 2.0,
                "batch": tf.fill([n, 1], tf.cast(n, tf.float32)),
                "total": tf.fill([n, 1], tf.reduce_sum(x)),
            }

        @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name="x")])
        def serve(self, x):
            return self._answer(x)

        @tf.function(input_signature=[
            tf.TensorSpec([None, 1], tf.float32, name="x"),
            tf.TensorSpec([None], tf.int64, name="spin"),
        ])
        def slow(self, x, spin):
            m = tf.fill([64, 64], 0.01)
            _, acc = tf.while_loop(
                lambda i, a: i < tf.reduce_max(spin),
                lambda i, a: (i + 1, tf.matmul(a, m)),
                [tf.constant(0, tf.int64), m],
            )
            answer = self._answer(x)
            answer["y"] = answer["y"] + 0.0 * tf.reduce_sum(acc)
            return answer

    module = Reveal()
    path = os.path.join(str(base_path), str(version))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve, "slow": module.slow})
    return path


def export_ragged(base_path, version: int = 1) -> str:
    import tensorflow as tf

    class Ragged(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.float32, name="x")])
        def serve(self, x):
            n = tf.shape(x)[0]
            return {
                "y": tf.reduce_sum(x, axis=1, keepdims=True),
                "length": tf.fill([n, 1], tf.cast(tf.shape(x)[1], tf.float32)),
                "batch": tf.fill([n, 1], tf.cast(n, tf.float32)),
            }

    module = Ragged()
    path = os.path.join(str(base_path), str(version))
    tf.saved_model.save(module, path, signatures={"serving_default": module.serve})
    return path


def export_examples(base_path, version: int = 1) -> str:
    """TF1: classify (classes ["x", "batch"], scores [x, rows]) and regress (1000*rows + x)
    on serialized tf.Examples with a float feature x."""
    import tensorflow as tf

    v1 = tf.compat.v1
    sm = v1.saved_model
    path = os.path.join(str(base_path), str(version))
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        x = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})["x"]
        n = tf.shape(serialized)[0]
        rows = tf.fill([n, 1], tf.cast(n, tf.float32))
        scores = tf.concat([x, rows], axis=1, name="scores")
        classes = tf.tile(tf.constant([["x", "batch"]]), tf.stack([n, 1]), name="classes")
        regression = tf.reshape(1000.0 * rows + x, [-1], name="regression")
        signatures = {
            "classify": sm.classification_signature_def(serialized, classes, scores),
            "regress": sm.regression_signature_def(serialized, regression),
        }
        with v1.Session(graph=graph) as session:
            save_tf1(session, path, signatures)
    return path


# ---- fixtures and helpers ------------------------------------------------------------------


class Models:
    def __init__(self, root: Path) -> None:
        from edgeserve.runtimes.savedmodel import SavedModelLoader

        self.reveal = SavedModelLoader(export_reveal(root / "reveal")).load()
        self.ragged = SavedModelLoader(export_ragged(root / "ragged")).load()
        self.executor = ThreadPoolExecutor(4, thread_name_prefix="run")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    m = Models(tmp_path_factory.mktemp("batch_queue"))
    yield m
    m.executor.shutdown()
    m.reveal.close()
    m.ragged.close()


class Gate:
    """A one-thread executor whose thread is held until release(): a batch run on it
    stays "running" (its queue's batch thread busy) until then."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="gate")
        self.pool.submit(self.event.wait, 30)

    def release(self) -> None:
        self.event.set()

    def close(self) -> None:
        self.event.set()
        self.pool.shutdown()


def make_queue(servable, executor, signature: str = "serving_default", threshold: float = 0.0,
               **options) -> BatchQueue:
    """A BatchQueue over a real SignatureRunner (threshold 0: every run on `executor`)."""
    return BatchQueue(SignatureRunner(servable, signature, executor, threshold), BatchOptions(**options))


def column(values) -> np.ndarray:
    return np.asarray(values, np.float32).reshape(-1, 1)


def half_plus_two(x: np.ndarray) -> np.ndarray:
    return x * np.float32(0.5) + np.float32(2)


def check_reveal(x: np.ndarray, out: dict, batch: int | None = None) -> None:
    """The answer is the request's own: y for its own rows, one batch per answer."""
    assert set(out) == {"y", "batch", "total"}
    assert out["y"].shape == x.shape
    np.testing.assert_array_equal(out["y"], half_plus_two(x))
    assert len(set(out["batch"].ravel().tolist())) == 1
    assert len(set(out["total"].ravel().tolist())) == 1
    if batch is not None:
        assert int(out["batch"][0, 0]) == batch


def error_of(coro_fn) -> ServingError:
    try:
        asyncio.run(coro_fn())
    except ServingError as exc:
        return exc
    raise AssertionError("expected a ServingError")


# ---- correctness under concurrency -----------------------------------------------------------


def test_200_concurrent_requests_of_mixed_rows_each_get_their_own_answer(models):
    """Three queues (reveal, TF Serving's half_plus_two and matrix_half_plus_two when
    present) take 200 concurrent requests of 1-9 rows with distinct values; each answer
    is its own request's, and requests were batched (fewer batches than requests)."""
    from edgeserve.runtimes.savedmodel import SavedModelLoader

    rng = random.Random(7)
    testdata = []
    for name in ("saved_model_half_plus_two_cpu/00000123", "matrix_half_plus_two/1"):
        try:
            testdata.append(SavedModelLoader(str(tfserving_testdata(name))).load())
        except pytest.skip.Exception:
            pass
    queues = [make_queue(models.reveal, models.executor, threshold=0.001,
                         max_batch_size=32, num_batch_threads=2, max_enqueued_batches=100)]
    queues += [make_queue(s, models.executor, threshold=0.001, max_batch_size=32, num_batch_threads=2,
                          max_enqueued_batches=100)
               for s in testdata]
    requests = []
    next_value = 0
    for i in range(200):
        q = queues[i % len(queues)]
        rows = rng.randint(1, 9)
        shape = (rows, *q.runner.servable.signatures["serving_default"].inputs["x"].shape[1:])
        size = int(np.prod(shape))
        x = np.arange(next_value, next_value + size, dtype=np.float32).reshape(shape)
        next_value += size
        requests.append((q, x))

    async def scenario():
        return await asyncio.gather(*(q.run({"x": x}) for q, x in requests))

    answers = asyncio.run(scenario())
    for (q, x), out in zip(requests, answers):
        np.testing.assert_array_equal(out["y"], half_plus_two(x))
        if q is queues[0]:
            check_reveal(x, out)
            assert int(out["batch"][0, 0]) >= len(x)
    reveal_answers = [(x, out) for (q, x), out in zip(requests, answers) if q is queues[0]]
    assert any(int(out["batch"][0, 0]) > len(x) for x, out in reveal_answers), "nothing was batched"
    # Requests that share a batch agree on its size and on its total; the batches'
    # sizes add up to the rows asked for (no padding here).
    batches = {}
    for x, out in reveal_answers:
        batches.setdefault(float(out["total"][0, 0]), []).append((x, int(out["batch"][0, 0])))
    for total, members in batches.items():
        assert {b for _, b in members} == {sum(len(x) for x, _ in members)}
        assert total == sum(float(x.sum()) for x, _ in members)
    for q in queues:
        assert q.batches < 200 // len(queues) + 1
        assert q.batched_rows == sum(len(x) for qq, x in requests if qq is q)
    for s in testdata:
        s.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.integers(1, 12), min_size=1, max_size=24),  # 0 rows: see below
    limit=st.integers(1, 12),
    extra=st.integers(0, 20),
    sizes=st.sets(st.integers(1, 11), max_size=3),
    splitting=st.booleans(),
    threads=st.integers(1, 3),
    inline=st.booleans(),
)
def test_batched_answers_equal_unbatched_runs(models, rows, limit, extra, sizes, splitting, threads, inline):
    """Any mix of request sizes, limits, allowed sizes, splitting: each answer equals
    the model run on that request alone; a request over max_batch_size is refused."""
    max_batch = limit + extra if splitting else limit
    allowed = tuple(sorted(s for s in sizes if s < limit)) + (limit,) if sizes else ()
    options = dict(max_batch_size=max_batch, num_batch_threads=threads, allowed_batch_sizes=allowed,
                   enable_large_batch_splitting=splitting, max_execution_batch_size=limit)
    q = make_queue(models.reveal, models.executor, threshold=0.001 if inline else 0.0,
                   max_enqueued_batches=1000, **options)
    xs = []
    start = 0.0
    for n in rows:
        xs.append(np.arange(start, start + n, dtype=np.float32).reshape(-1, 1))
        start += n

    async def one(x):
        try:
            return await q.run({"x": x})
        except ServingError as exc:
            return exc

    async def scenario():
        return await asyncio.gather(*(one(x) for x in xs))

    for x, out in zip(xs, asyncio.run(scenario())):
        if len(x) > max_batch:
            assert isinstance(out, ServingError)
            assert out.code == StatusCode.INVALID_ARGUMENT
            assert out.message == f"Task size {len(x)} is larger than maximum input batch size {max_batch}"
            continue
        assert not isinstance(out, ServingError), out
        alone = models.reveal.run("serving_default", {"x": x})
        np.testing.assert_array_equal(out["y"], alone["y"])
        assert out["y"].shape == (len(x), 1)
        # Every row ran in a batch no larger than the limit, padded to an allowed size.
        for b in out["batch"].ravel().tolist():
            assert b <= limit
            if allowed:
                assert int(b) in allowed


# ---- padding, splitting, limits -------------------------------------------------------------


@pytest.mark.parametrize("rows, padded", [(1, 2), (2, 2), (3, 4), (5, 8), (8, 8)])
def test_lone_request_is_padded_to_the_next_allowed_size_with_copies_of_its_first_row(models, rows, padded):
    q = make_queue(models.reveal, models.executor, max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    x = column(range(10, 10 + rows))
    out = asyncio.run(q.run({"x": x}))
    check_reveal(x, out, batch=padded)
    # The padding rows repeat the first row; the client gets its own rows only.
    assert float(out["total"][0, 0]) == float(x.sum()) + (padded - rows) * 10.0
    assert q.batched_rows == rows


def test_request_over_max_batch_size_is_refused(models):
    q = make_queue(models.reveal, models.executor, max_batch_size=8)
    exc = error_of(lambda: q.run({"x": column(range(9))}))
    assert exc.code == StatusCode.INVALID_ARGUMENT
    assert exc.message == "Task size 9 is larger than maximum input batch size 8"
    assert q.batches == 0
    check_reveal(column(range(8)), asyncio.run(q.run({"x": column(range(8))})), batch=8)


def test_large_request_is_split_into_batches_of_at_most_max_execution_batch_size(models):
    """enable_large_batch_splitting: 21 rows, max_execution_batch_size 8, allowed sizes
    4 and 8: pieces of 8, 8 and 5 (padded to 8), answered in order as one."""
    q = make_queue(models.reveal, models.executor, max_batch_size=32, enable_large_batch_splitting=True,
                   max_execution_batch_size=8, allowed_batch_sizes=(4, 8))
    x = column(range(21))
    out = asyncio.run(q.run({"x": x}))
    np.testing.assert_array_equal(out["y"], half_plus_two(x))
    assert out["batch"].ravel().tolist() == [8.0] * 21
    # Each piece's total: its own rows, the last one padded with its first row (16).
    assert out["total"].ravel().tolist() == [28.0] * 8 + [92.0] * 8 + [16.0 + 17 + 18 + 19 + 20 + 3 * 16] * 5
    assert q.batches == 3 and q.batched_rows == 21
    # Over max_batch_size still refused, splitting or not.
    exc = error_of(lambda: q.run({"x": column(range(33))}))
    assert exc.message == "Task size 33 is larger than maximum input batch size 32"


def test_split_pieces_share_batches_with_other_requests(models):
    q = make_queue(models.reveal, models.executor, max_batch_size=20, enable_large_batch_splitting=True,
                   max_execution_batch_size=6)
    big, small = column(range(100, 114)), column([1, 2])

    async def scenario():
        return await asyncio.gather(q.run({"x": big}), q.run({"x": small}))

    out_big, out_small = asyncio.run(scenario())
    np.testing.assert_array_equal(out_big["y"], half_plus_two(big))
    np.testing.assert_array_equal(out_small["y"], half_plus_two(small))
    # 14 rows in pieces of 6, 6, 2; the last piece and the 2-row request fill one batch of 4.
    assert out_big["batch"].ravel().tolist() == [6.0] * 12 + [4.0] * 2
    check_reveal(small, out_small, batch=4)


def test_padding_repeats_the_first_row_of_the_batchs_last_request(models):
    """batching_session.cc: the padding rows copy the last task's first row."""
    q = make_queue(models.reveal, models.executor, max_batch_size=8, allowed_batch_sizes=(4, 8))
    a, b = column([1, 2]), column([5])

    async def scenario():
        return await asyncio.gather(q.run({"x": a}), q.run({"x": b}))

    out_a, out_b = asyncio.run(scenario())
    check_reveal(a, out_a, batch=4)
    check_reveal(b, out_b, batch=4)
    assert float(out_a["total"][0, 0]) == float(out_b["total"][0, 0]) == 1 + 2 + 5 + 5


def test_zero_row_request_is_answered_with_zero_rows(models):
    """A request of no rows gets no rows back, as without batching — also when the
    queue pads batches to allowed sizes, and without failing the requests it shares a
    batch with."""
    empty = np.zeros((0, 1), np.float32)
    for allowed in ((), (2, 4)):
        q = make_queue(models.reveal, models.executor, max_batch_size=4, allowed_batch_sizes=allowed)
        out = asyncio.run(q.run({"x": empty}))
        assert out["y"].shape == (0, 1), allowed

        async def shared():
            return await asyncio.gather(q.run({"x": column([7])}), q.run({"x": empty}),
                                        return_exceptions=True)

        seven, nothing = asyncio.run(shared())
        assert not isinstance(seven, Exception), (allowed, seven)
        assert not isinstance(nothing, Exception), (allowed, nothing)
        np.testing.assert_array_equal(seven["y"], half_plus_two(column([7])))
        assert nothing["y"].shape == (0, 1)


def test_inputs_of_different_rows_or_no_batch_dimension_are_refused(models):
    q = make_queue(models.reveal, models.executor, signature="slow", max_batch_size=8)
    exc = error_of(lambda: q.run({"x": column([1, 2]), "spin": np.array([1, 1, 1])}))
    assert exc.code == StatusCode.INVALID_ARGUMENT
    assert exc.message == "Batching Run() input tensors must have equal 0th-dimension size"
    exc = error_of(lambda: q.run({"x": column([1]), "spin": np.array(1)}))
    assert exc.message == "Batching Run() input tensors must have at least one dimension"
    out = asyncio.run(q.run({"x": column([1, 2]), "spin": np.array([3, 1])}))
    check_reveal(column([1, 2]), out, batch=2)


def test_batchable_means_every_input_and_output_has_a_batch_dimension(models):
    from edgeserve.dtypes import DataType
    from edgeserve.servable import SignatureSpec, TensorSpec

    assert batchable(models.reveal.signatures["serving_default"])
    assert batchable(models.reveal.signatures["slow"])
    assert batchable(models.ragged.signatures["serving_default"])

    def signature(inputs, outputs):
        spec = lambda shape: TensorSpec("t:0", DataType.DT_FLOAT, shape)  # noqa: E731
        return SignatureSpec("tensorflow/serving/predict",
                             {f"i{n}": spec(s) for n, s in enumerate(inputs)},
                             {f"o{n}": spec(s) for n, s in enumerate(outputs)})

    assert batchable(signature([(-1, 3), (-1,)], [(-1, -1)]))
    assert not batchable(signature([(-1, 3)], [()]))  # a scalar output
    assert not batchable(signature([()], [(-1,)]))  # a scalar input (the counter's delta)
    assert not batchable(signature([(4, 3)], [(4,)]))  # a fixed first dimension
    assert not batchable(signature([None], [(-1,)]))  # unknown rank (half_plus_two's classify)
    assert not batchable(signature([], []))


# ---- what shares a batch ------------------------------------------------------------------------


def test_requests_with_different_inner_shapes_or_output_filters_run_in_different_batches(models):
    q = make_queue(models.ragged, models.executor, max_batch_size=64)
    threes = [np.full((r, 3), r, np.float32) for r in (1, 2, 3)]
    fives = [np.full((r, 5), r, np.float32) for r in (4, 5)]

    async def scenario():
        return await asyncio.gather(*(q.run({"x": x}) for x in threes + fives))

    answers = asyncio.run(scenario())
    for x, out in zip(threes + fives, answers):
        np.testing.assert_array_equal(out["y"], x.sum(axis=1, keepdims=True))
        assert out["length"].ravel().tolist() == [x.shape[1]] * len(x)
        assert out["batch"].ravel().tolist() == [6.0 if x.shape[1] == 3 else 9.0] * len(x)
    assert q.batches == 2

    q = make_queue(models.reveal, models.executor, max_batch_size=64)
    filtered = [column([r] * r) for r in (1, 2, 3)]
    unfiltered = [column([r] * r) for r in (4, 5)]

    async def filters():
        return await asyncio.gather(
            *(q.run({"x": x}, ["batch", "y"]) for x in filtered),
            *(q.run({"x": x}) for x in unfiltered),
        )

    answers = asyncio.run(filters())
    for x, out in zip(filtered, answers[:3]):
        assert set(out) == {"batch", "y"}
        np.testing.assert_array_equal(out["y"], half_plus_two(x))
        assert out["batch"].ravel().tolist() == [6.0] * len(x)
    for x, out in zip(unfiltered, answers[3:]):
        check_reveal(x, out, batch=9)


def test_pad_variable_length_inputs_pads_with_each_tensors_first_element(models):
    q = make_queue(models.ragged, models.executor, max_batch_size=64, pad_variable_length_inputs=True)
    xs = [
        np.array([[1, 2]], np.float32),
        np.array([[3, 4, 5], [6, 7, 8]], np.float32),
        np.array([[9, 10, 11, 12, 13]], np.float32),
    ]

    async def scenario():
        return await asyncio.gather(*(q.run({"x": x}) for x in xs))

    answers = asyncio.run(scenario())
    assert q.batches == 1
    for x, out in zip(xs, answers):
        assert out["length"].ravel().tolist() == [5.0] * len(x)
        assert out["batch"].ravel().tolist() == [4.0] * len(x)
        # The row sums over the padded rows: each missing cell is the tensor's first element.
        expected = x.sum(axis=1) + (5 - x.shape[1]) * x.flat[0]
        assert out["y"].ravel().tolist() == expected.tolist()


# ---- queue full, deadlines ------------------------------------------------------------------


def test_full_queue_refuses_at_once_with_tf_servings_message(models):
    gate = Gate()
    q = make_queue(models.reveal, gate.pool, max_batch_size=4, max_enqueued_batches=2, num_batch_threads=1)

    async def scenario():
        first = asyncio.ensure_future(q.run({"x": column([1, 2, 3, 4])}))
        await asyncio.sleep(0.02)  # its batch is running (held)
        waiting = [asyncio.ensure_future(q.run({"x": column([v] * 4)})) for v in (5, 6)]
        await asyncio.sleep(0.02)
        refused = []
        for x in (column([7]), column([8, 9, 10, 11])):
            started = time.monotonic()
            try:
                await q.run({"x": x})
            except ServingError as exc:
                refused.append((exc, time.monotonic() - started))
        gate.release()
        return await first, await asyncio.gather(*waiting), refused

    try:
        first, waiting, refused = asyncio.run(scenario())
    finally:
        gate.close()
    assert len(refused) == 2
    for exc, seconds in refused:
        assert exc.code == StatusCode.UNAVAILABLE
        assert exc.http_status == 503
        assert exc.message == (
            "The batch scheduling queue to which this task was submitted is full; "
            "currently 2 batches enqueued and max_enqueued_batches is 2"
        )
        assert seconds < 0.01  # refused at once, not after the held batch
    check_reveal(column([1, 2, 3, 4]), first, batch=4)
    for v, out in zip((5, 6), waiting):
        check_reveal(column([v] * 4), out, batch=4)


def test_request_whose_deadline_passes_in_the_queue_never_runs(models):
    gate = Gate()
    q = make_queue(models.reveal, gate.pool, max_batch_size=4, num_batch_threads=1)

    async def scenario():
        first = asyncio.ensure_future(q.run({"x": column([1])}))
        await asyncio.sleep(0.02)
        late = asyncio.ensure_future(q.run({"x": column([2])}, None, 30))
        patient = asyncio.ensure_future(q.run({"x": column([3])}, None, 20000))
        await asyncio.sleep(0.1)  # late's 30 ms pass while the first batch is held
        gate.release()
        results = await asyncio.gather(first, late, patient, return_exceptions=True)
        return results

    try:
        first, late, patient = asyncio.run(scenario())
    finally:
        gate.close()
    check_reveal(column([1]), first, batch=1)
    assert isinstance(late, ServingError), late
    assert late.code == StatusCode.DEADLINE_EXCEEDED and "queue" in late.message
    assert late.http_status == 504
    check_reveal(column([3]), patient, batch=1)  # it ran alone: the late one never did
    assert q.batched_rows == 2


def test_deadlines_do_not_prepare_a_new_session_call_for_every_batch(models):
    """A batch's run timeout comes from its requests' deadlines. Each distinct timeout
    is a separately prepared session callable (SavedModelServable._callables), which is
    why gRPC rounds its timeouts to powers of two (grpc_api.run_timeout_ms). Requests
    that all came with gRPC's 16384 ms, queued for different times behind each other,
    must not add a callable per batch."""
    q = make_queue(models.reveal, models.executor, signature="slow", max_batch_size=1,
                   max_enqueued_batches=100)
    before = len(models.reveal._callables)

    async def scenario():
        # One row a batch, each run ~2 ms: the k-th request waits ~2k ms.
        return await asyncio.gather(*(
            q.run({"x": column([v]), "spin": np.array([250])}, None, 16384) for v in range(12)))

    for v, out in enumerate(asyncio.run(scenario())):
        check_reveal(column([v]), out, batch=1)
    added = len(models.reveal._callables) - before
    assert added <= 2, f"{added} session callables prepared for 12 batches of one deadline"


# ---- when a batch starts ---------------------------------------------------------------------


def test_lone_request_is_not_delayed_by_batch_timeout_but_fixed_rule_waits(models):
    """Adaptive (edgeserve's rule): a lone request runs at once though batch_timeout_micros
    is 150 ms. Fixed (TF Serving's): it waits the 150 ms, and a request that arrives
    meanwhile joins its batch."""
    timeout = 0.15
    adaptive = make_queue(models.reveal, models.executor, max_batch_size=8,
                          batch_timeout_micros=int(timeout * 1e6))
    fixed = make_queue(models.reveal, models.executor, max_batch_size=8,
                       batch_timeout_micros=int(timeout * 1e6), adaptive=False)

    async def lone(q, v):
        started = time.monotonic()
        out = await q.run({"x": column([v])})
        return out, time.monotonic() - started

    async def scenario():
        await adaptive.run({"x": column([0])})  # first run of the signature: warm up
        quick = [await lone(adaptive, v) for v in range(5)]
        slow, seconds = await lone(fixed, 1)
        first = asyncio.ensure_future(lone(fixed, 2))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(lone(fixed, 3))
        return quick, (slow, seconds), await first, await second

    quick, (slow, seconds), (first, first_s), (second, second_s) = asyncio.run(scenario())
    for v, (out, s) in enumerate(quick):
        check_reveal(column([v]), out, batch=1)
    assert sorted(s for _, s in quick)[2] < timeout / 5, [s for _, s in quick]
    check_reveal(column([1]), slow, batch=1)
    assert seconds >= timeout * 0.95
    check_reveal(column([2]), first, batch=2)
    check_reveal(column([3]), second, batch=2)
    assert first_s >= timeout * 0.95 and second_s < first_s


def test_fixed_rule_starts_a_full_batch_without_waiting(models):
    """TF Serving's rule: only a batch short of max_batch_size waits for the timeout; one
    that the next request fills starts at once."""
    q = make_queue(models.reveal, models.executor, max_batch_size=4, batch_timeout_micros=300000,
                   adaptive=False)

    async def scenario():
        await q.run({"x": column([0, 0, 0, 0])})  # warm up (full: no wait)
        started = time.monotonic()
        first = asyncio.ensure_future(q.run({"x": column([1])}))
        await asyncio.sleep(0.02)
        second = asyncio.ensure_future(q.run({"x": column([2, 3, 4])}))  # fills the batch
        out = await asyncio.gather(first, second)
        return out, time.monotonic() - started

    (first, second), seconds = asyncio.run(scenario())
    check_reveal(column([1]), first, batch=4)
    check_reveal(column([2, 3, 4]), second, batch=4)
    assert seconds < 0.15, f"a full batch waited {seconds:.3f}s for batch_timeout_micros (0.3s)"


# ---- batching parameters ------------------------------------------------------------------------


def test_defaults_are_tf_servings_scheduler_defaults():
    options = batch_options.parse("", "nothing")
    assert options.max_batch_size == 1000
    assert options.max_enqueued_batches == 10
    assert options.batch_timeout_micros == 0
    assert options.num_batch_threads == len(os.sched_getaffinity(0))
    assert options.allowed_batch_sizes == ()
    assert not options.pad_variable_length_inputs
    assert not options.enable_large_batch_splitting
    assert options.batch_limit == 1000
    assert options.adaptive


def test_tf_serving_testdata_batching_config_parses():
    path = tfserving_testdata("batching_config.txt")
    options = batch_options.read_file(str(path))
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches,
            options.num_batch_threads) == (128, 0, 1000000, 8)


def test_every_field_is_read():
    options = batch_options.parse(
        """
        max_batch_size { value: 64 }
        batch_timeout_micros { value: 5000 }
        max_enqueued_batches { value: 3 }
        num_batch_threads { value: 2 }
        thread_pool_name { value: "pool" }
        allowed_batch_sizes: 8
        allowed_batch_sizes: 16
        pad_variable_length_inputs: true
        enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 16 }
        """, "f")
    assert options == BatchOptions(
        max_batch_size=64, batch_timeout_micros=5000, max_enqueued_batches=3, num_batch_threads=2,
        allowed_batch_sizes=(8, 16), pad_variable_length_inputs=True, enable_large_batch_splitting=True,
        max_execution_batch_size=16)
    assert options.batch_limit == 16
    assert [options.padded_size(n) for n in (1, 8, 9, 16)] == [8, 8, 16, 16]
    # Splitting without max_execution_batch_size cuts at max_batch_size.
    options = batch_options.parse("max_batch_size { value: 50 } enable_large_batch_splitting { value: true }", "f")
    assert options.max_execution_batch_size == 50 and options.batch_limit == 50


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"),
    ("allowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 1000"),
    ("max_batch_size { value: 32 } enable_large_batch_splitting { value: true } "
     "max_execution_batch_size { value: 16 } allowed_batch_sizes: 8 allowed_batch_sizes: 32",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 32; expected 16"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 allowed_batch_sizes: 8",
     "allowed_batch_sizes entries must be positive and increasing, got 4, 2, 8"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 4 allowed_batch_sizes: 8",
     "allowed_batch_sizes entries must be positive and increasing, got 4, 4, 8"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: -2 allowed_batch_sizes: 8",
     "allowed_batch_sizes entries must be positive and increasing, got -2, 8"),
    ("max_batch_size { value: -1 }", "max_batch_size must be positive, got -1"),
    ("max_batch_size { value: 0 }", "max_batch_size must be positive, got 0"),
    ("max_enqueued_batches { value: -3 }", "max_enqueued_batches must be positive, got -3"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be positive, got 0"),
    ("batch_timeout_micros { value: -5 }", "batch_timeout_micros must not be negative, got -5"),
    ("max_batch_size { value: 8 } enable_large_batch_splitting { value: true } "
     "max_execution_batch_size { value: 16 }",
     "max_execution_batch_size (16) must not exceed max_batch_size (8)"),
])
def test_bad_parameters_are_refused_with_the_reason(text, message):
    with pytest.raises(ServingError) as info:
        batch_options.parse(text, "/etc/batching.txt")
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message == f"Invalid batching parameters in /etc/batching.txt: {message}"


@pytest.mark.parametrize("text, where", [
    ("max_batch_size { value: 8 }\nbatch_timeout_micros { valu: 3 }\n", "2:24"),
    ("max_batch_size { value: 8 }\n\n  no_such_field: 1\n", "3:3"),
    ("max_batch_size { value: eight }", "1:25"),
    ("max_batch_size { value: 8 ", "1:25"),
])
def test_text_format_errors_name_line_and_column(text, where):
    with pytest.raises(ServingError) as info:
        batch_options.parse(text, "params.txt")
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message.startswith(f"Invalid batching parameters in params.txt: {where} ")


def test_unreadable_file_is_refused_naming_it(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(ServingError) as info:
        batch_options.read_file(str(missing))
    assert info.value.code == StatusCode.INVALID_ARGUMENT
    assert info.value.message.startswith(f"Could not read batching parameters file {missing}: ")


def test_per_model_file_overrides_the_server_wide_parameters_only_when_enabled(tmp_path):
    server_wide = BatchOptions(max_batch_size=16, num_batch_threads=2, adaptive=False)
    version = tmp_path / "1"
    version.mkdir()
    assert batch_options.for_version(server_wide, str(version), True) is server_wide  # no file
    (version / batch_options.PER_MODEL_FILENAME).write_text("max_batch_size { value: 4 }\n")
    assert batch_options.for_version(server_wide, str(version), False) is server_wide
    own = batch_options.for_version(server_wide, str(version), True)
    # The file's values, its unset fields the scheduler's defaults (not the server's
    # file's), and the server's rule.
    assert own.max_batch_size == 4
    assert own.num_batch_threads == len(os.sched_getaffinity(0))
    assert own.adaptive is False
    (version / batch_options.PER_MODEL_FILENAME).write_text("max_batch_size { value: 4 } allowed_batch_sizes: 3\n")
    with pytest.raises(ServingError) as info:
        batch_options.for_version(server_wide, str(version), True)
    assert info.value.message == (
        f"Invalid batching parameters in {version / 'batching_params.pbtxt'}: "
        "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 3; expected 4"
    )


def test_loader_gives_the_servable_its_parameters_and_a_bad_file_fails_the_load(tmp_path):
    from edgeserve.runtimes.savedmodel import SavedModelLoader

    path = Path(export_reveal(tmp_path / "m"))
    server_wide = BatchOptions(max_batch_size=16)
    servable = SavedModelLoader(str(path), batching=server_wide, per_model_batching=True).load()
    assert servable.batch_options is server_wide
    servable.close()
    servable = SavedModelLoader(str(path)).load()
    assert servable.batch_options is None
    servable.close()
    (path / "batching_params.pbtxt").write_text("max_batch_size { value: 2 }")
    servable = SavedModelLoader(str(path), batching=server_wide, per_model_batching=True).load()
    assert servable.batch_options.max_batch_size == 2
    servable.close()
    (path / "batching_params.pbtxt").write_text("max_batch_size { value: 2 ")
    with pytest.raises(ServingError) as info:
        SavedModelLoader(str(path), batching=server_wide, per_model_batching=True).load()
    assert info.value.message.startswith(f"Invalid batching parameters in {path / 'batching_params.pbtxt'}: 1:")


def test_lone_request_to_an_idle_inline_queue_is_answered_without_a_loop_iteration(models):
    """Light load: the request runs inline the moment it is queued, so its coroutine
    finishes without ever suspending; a burst in the same iteration still batches."""
    q = make_queue(models.reveal, models.executor, threshold=1.0, max_batch_size=64)

    async def scenario():
        for i in range(64):  # enough timed runs for the runner to go inline
            await q.run({"x": column([i])})
        assert q.runner.inline
        coro = q.run({"x": column([7])})
        with pytest.raises(StopIteration) as done:
            coro.send(None)  # no suspension: the answer is there at once
        check_reveal(column([7]), done.value.value, batch=1)
        await asyncio.sleep(0)  # the next loop iteration
        answers = await asyncio.gather(*(q.run({"x": column([i])}) for i in range(5)))
        # The first of the burst starts at once; the other four share a batch.
        assert [int(a["batch"][0, 0]) for a in answers] == [1, 4, 4, 4, 4]

    asyncio.run(scenario())
