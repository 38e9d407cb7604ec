"""Version swaps end to end: --version_transition_policy and --total_model_memory_limit_bytes.

The real server swaps a model from version 123 (half_plus_two) to 124 (half plus three)
while client threads predict over REST and gRPC (reload_load.Load); no request may fail.
Every prediction asks for x = 2: version 123 answers 3.0, version 124 answers 4.0.

What each mode must do, seen from outside:
- availability: 124 loads beside 123, then 123 is unloaded; 123 answers while 124 loads.
- resource: 123 is unloaded first, then 124 loads; requests that arrive in the gap are
  held and answered by 124.
- auto: availability without a limit or when the budget holds both versions, resource
  when only one fits.
- a version that would not fit even alone is refused (END, RESOURCE_EXHAUSTED, the
  figures in its message) and 123 keeps serving; a new version that fails to load in a
  resource swap brings 123 back, and the requests held in the gap are answered by it.

Versions are published as a careful deploy does: copied to a hidden folder inside the
base path, then renamed into place. The server still takes a new folder as "being
copied" until a poll finds it unchanged, so with --file_system_poll_wait_seconds=1 (an
int32 flag: 1 s is the shortest period that keeps polling) a swap starts 1-2 s after the
rename.

The incoming version carries a warmup file (one predict record) replayed
--num_request_iterations_for_warmup times, so its load lasts a while (a few tenths of a
second): long enough to see who answers during it. The server log's timestamps say when
each load started and ended; the clients' answers are put on the same clock.
"""
from __future__ import annotations

import datetime
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

import grpc_client
from reload_load import Load, Target, rest_predict

pytestmark = pytest.mark.timeout(60)

NAME = "m"
OLD, NEW = 123, 124
PLUS2, PLUS3 = 3.0, 4.0  # what 123 and 124 answer for x = 2
MODEL = Target(NAME)
WARMUP_ITERATIONS = 1500  # replays of the warmup record: a load of ~0.1-0.5 s
ESTIMATE_FACTOR = 1.2  # TF Serving's kResourceEstimateRAMMultiplier, as the flag's help says
REFUSAL_LIMIT = 2**20  # 1 MiB: holds 123's estimate (~20 KB), not a 3 MiB version
SLACK = 0.005  # log timestamps are truncated to the millisecond


# ---- version folders ----------------------------------------------------------------

def folder_bytes(path: Path) -> int:
    """Bytes of all files under a version folder (what the cost estimate is made from)."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def estimate(path: Path) -> int:
    return int(folder_bytes(path) * ESTIMATE_FACTOR)


def write_warmup(version_dir: Path) -> None:
    """assets.extra/tf_serving_warmup_requests with one predict record (x = 2)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    record = prediction_log_pb2.PredictionLog()
    record.predict_log.request.model_spec.name = NAME
    record.predict_log.request.inputs["x"].CopyFrom(tf.make_tensor_proto([[2.0]], dtype=tf.float32))
    extra = version_dir / "assets.extra"
    extra.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / "tf_serving_warmup_requests")) as writer:
        writer.write(record.SerializeToString())


def stage(base: Path, source: Path, *, warmup=False, junk_bytes=0, broken=False) -> Path:
    """A complete copy of `source` in a hidden folder of `base` (not a version number,
    so the server ignores it), ready to be renamed into place."""
    staged = base / f".incoming-{NEW}"
    shutil.copytree(source, staged)
    if warmup:
        write_warmup(staged)
    if junk_bytes:
        extra = staged / "assets.extra"
        extra.mkdir(exist_ok=True)
        (extra / "lookup_table.bin").write_bytes(os.urandom(junk_bytes))
    if broken:
        (staged / "saved_model.pb").write_bytes(b"this is not a SavedModel protocol buffer\n" * 40)
    return staged


# ---- the servers ------------------------------------------------------------------

@dataclass
class Scenario:
    server: object  # conftest.ServerProcess
    base: Path
    staged: Path  # version 124, waiting to be published
    limit: int = 0

    def publish(self) -> float:
        os.rename(self.staged, self.base / str(NEW))
        return time.monotonic()


def prepare(key: str, model_store: Path, root: Path) -> tuple[Path, Path, list[str], int]:
    """(base path with version 123, the staged 124, the server's flags, the limit) for `key`."""
    base = root / "model"
    base.mkdir(parents=True)
    shutil.copytree(model_store / "half_plus_two" / "1", base / str(OLD))
    v2 = model_store / "half_plus_two_v2" / "2"
    args = [f"--model_name={NAME}", f"--model_base_path={base}", "--file_system_poll_wait_seconds=1",
            f"--num_request_iterations_for_warmup={WARMUP_ITERATIONS}"]
    limit = 0
    if key == "refused":  # default policy (auto)
        staged = stage(base, v2, junk_bytes=3 * 2**20)
        limit = REFUSAL_LIMIT
    elif key == "broken":
        # 123 carries the warmup file too, so its reload (the fallback) lasts a while.
        write_warmup(base / str(OLD))
        staged = stage(base, v2, broken=True)
        args.append("--version_transition_policy=resource")
    else:
        staged = stage(base, v2, warmup=True)
        policy, _, budget = key.partition(":")
        args.append(f"--version_transition_policy={policy}")
        if budget == "one fits":
            # A budget that holds one version and never two, whatever RSS a load measures:
            # - 123 must fit at start-up: limit >= estimate(123) = 1.2 x its file bytes;
            # - 124 must fit once 123 is unloaded (or it is refused): limit >= estimate(124);
            # - 124 must not fit beside 123. Once loaded, 123 costs the RSS its load
            #   added, floored at its file bytes, so it leaves at most limit - files(123)
            #   free: estimate(124) > limit - files(123) is enough.
            # The larger estimate plus half of 123's file bytes sits inside that window. The
            # measured RSS is far above the file size here (~7.4 MiB for 17 KB of files, as
            # a refusal's "free" figure shows under availability), which only makes "two do
            # not fit" more certain, never "one fits" less: unloading 123 frees all it holds.
            limit = max(estimate(base / str(OLD)), estimate(staged)) + folder_bytes(base / str(OLD)) // 2
        elif budget == "two fit":
            limit = 2**30  # 1 GiB: far above 123's measured RSS (MiBs) plus 124's estimate (KBs)
    if limit:
        args.append(f"--total_model_memory_limit_bytes={limit}")
    return base, staged, args, limit


@pytest.fixture
def scenario(key, model_store, tmp_path, start_server) -> Scenario:
    """The base path, the staged 124 and the running server for `key`."""
    base, staged, args, limit = prepare(key, model_store, tmp_path)
    return Scenario(start_server(args), base, staged, limit)


# ---- what the server says ---------------------------------------------------------

_EVENT = re.compile(
    r"^(\S+ \S+) \w (?:\S+)\] (Loading|Successfully loaded|Unloaded) servable version "
    r"\{name: (\S+) version: (\d+)\} (from|in|failed after|failed \(attempt|again)"
)
_KIND = {("Loading", "from"): "loading", ("Successfully loaded", "in"): "loaded",
         ("Unloaded", "in"): "unloaded", ("Loading", "failed after"): "failed",
         ("Loading", "failed (attempt"): "retrying", ("Loading", "again"): "again"}


@dataclass(frozen=True)
class Event:
    kind: str
    version: int
    at: float  # time.monotonic() of this process


# Taken once, so every event of a test is on the same clock (each call used to take
# its own, microseconds apart, which could order two events of one millisecond wrongly).
_WALL_MINUS_MONOTONIC = time.time() - time.monotonic()


def events(log: str) -> list[Event]:
    """The manager's load/unload lines for model m, in order, on this process's clock."""
    wall_minus_monotonic = _WALL_MINUS_MONOTONIC
    found = []
    for line in log.splitlines():
        match = _EVENT.search(line)
        if match and match.group(3) == NAME:
            wall = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S.%f").timestamp()
            kind = _KIND[match.group(2), match.group(5)]
            found.append(Event(kind, int(match.group(4)), wall - wall_minus_monotonic))
    return found


def order(log: str) -> list[tuple[str, int]]:
    return [(e.kind, e.version) for e in events(log)]


def find(log: str, kind: str, version: int, nth: int = 0) -> Event:
    return [e for e in events(log) if (e.kind, e.version) == (kind, version)][nth]


def rest_status(client) -> dict[int, dict]:
    status, body = client.get(f"/v1/models/{NAME}")
    assert status == 200, body
    return {int(row["version"]): row for row in body["model_version_status"]}


def rest_states(client) -> dict[int, str]:
    return {v: row["state"] for v, row in rest_status(client).items()}


def grpc_status(server) -> dict[int, object]:
    from tensorflow_serving.apis import get_model_status_pb2

    chan = grpc_client.channel(server.grpc_port)
    try:
        _, model = grpc_client.stubs(chan)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = NAME
        response = model.GetModelStatus(request, timeout=grpc_client.TIMEOUT)
    finally:
        chan.close()
    return {row.version: row for row in response.model_version_status}


def grpc_state(name: str) -> int:
    from tensorflow_serving.apis import get_model_status_pb2

    return get_model_status_pb2.ModelVersionStatus.State.Value(name)


# ---- what the clients got ---------------------------------------------------------

def spanning(answers, start: Event, end: Event):
    """Answers to requests asked before `start` was logged and answered after `end`:
    requests that waited through all of what happened in between."""
    return [a for a in answers if a.asked < start.at and a.answered > end.at - SLACK]


def within(answers, start: Event, end: Event):
    """Answers to requests asked and answered while `start`..`end` was under way."""
    return [a for a in answers if a.asked > start.at + SLACK and a.answered < end.at]


def protocols(answers) -> set[str]:
    return {a.protocol for a in answers}


def slowest(answers, n: int = 5):
    """For failure messages: the answers that took longest."""
    return sorted(answers, key=lambda a: a.asked - a.answered)[:n]


# ---- 1. a swap in each mode ---------------------------------------------------------

AVAILABILITY_ORDER = [("loading", OLD), ("loaded", OLD), ("loading", NEW), ("loaded", NEW), ("unloaded", OLD)]
RESOURCE_ORDER = [("loading", OLD), ("loaded", OLD), ("unloaded", OLD), ("loading", NEW), ("loaded", NEW)]


@pytest.mark.parametrize("key, expected", [
    ("availability", AVAILABILITY_ORDER),
    ("resource", RESOURCE_ORDER),
    ("auto", AVAILABILITY_ORDER),  # no limit: both versions fit
    ("auto:one fits", RESOURCE_ORDER),
    ("auto:two fit", AVAILABILITY_ORDER),
])
def test_swap_under_load(scenario, key, expected):
    server = scenario.server
    client = server.client()
    assert rest_predict(client, NAME) == (200, PLUS2)

    with Load(server, [MODEL]) as load:
        time.sleep(0.3)  # answers from 123 alone first
        started = scenario.publish()
        server.wait_for(lambda: rest_states(client) == {NEW: "AVAILABLE", OLD: "END"},
                        timeout=20, interval=0.02)
        done = time.monotonic()
        time.sleep(0.3)  # and from 124 alone after
    load.assert_no_failures(minimum=50)
    answers = load.of(MODEL)
    # Before the swap only 3.0, after it only 4.0, in between either, and never 3.0
    # again once a 4.0 was answered.
    load.check_switch(MODEL, PLUS2, PLUS3, started, done)
    assert {a.value for a in answers} == {PLUS2, PLUS3}
    assert len([a for a in answers if a.asked > done]) >= 10

    log = server.log()
    assert order(log) == expected, log
    assert "Traceback" not in log, log
    assert rest_status(client)[NEW]["status"] == {"error_code": "OK", "error_message": ""}
    assert rest_predict(client, NAME) == (200, PLUS3)

    loading, loaded = find(log, "loading", NEW), find(log, "loaded", NEW)
    unloaded = find(log, "unloaded", OLD)
    if expected == RESOURCE_ORDER:
        # Requests that came while no version served were held through all of 124's
        # load, over both protocols, and answered by 124; nothing was answered by 124
        # before it was loaded, nor by 123 once it was gone.
        held = spanning(answers, loading, loaded)
        assert protocols(held) == {"rest", "grpc"}, (loading, loaded, slowest(answers))
        assert {a.value for a in held} == {PLUS3}
        assert not [a for a in answers if a.value == PLUS3 and a.answered < loaded.at - SLACK]
        assert not [a for a in answers if a.value == PLUS2 and a.answered > loaded.at + SLACK]
        assert unloaded.at <= loading.at + SLACK  # both from millisecond log stamps
    else:
        # 123 answered, over both protocols, while 124 loaded beside it.
        meanwhile = within(answers, loading, loaded)
        assert protocols(meanwhile) == {"rest", "grpc"}, (loading, loaded)
        assert {a.value for a in meanwhile} == {PLUS2}


# ---- 2. a version too big for the budget --------------------------------------------

@pytest.mark.parametrize("key", ["refused"])
def test_version_that_does_not_fit_the_budget_is_refused_and_the_old_one_keeps_serving(scenario, key):
    server, limit = scenario.server, scenario.limit
    need = estimate(scenario.staged)
    assert need > limit
    client = server.client()
    assert rest_predict(client, NAME) == (200, PLUS2)

    # auto: 124 would load once 123 is unloaded, which frees all 123 holds, so the free
    # figure is the whole limit.
    message = (
        f"Insufficient resources to load servable {{name: {NAME} version: {NEW}}}: would exceed "
        f"memory limit: needs {need} bytes ({need / 2**20:.1f} MiB), "
        f"free {limit} bytes ({limit / 2**20:.1f} MiB) "
        f"(--total_model_memory_limit_bytes={limit})"
    )
    assert message.startswith(
        "Insufficient resources to load servable {name: m version: 124}: would exceed memory limit: needs ")
    assert message.endswith(f"(--total_model_memory_limit_bytes={REFUSAL_LIMIT})")
    with Load(server, [MODEL]) as load:
        scenario.publish()
        server.wait_for(lambda: rest_states(client).get(NEW) == "END", timeout=20, interval=0.02)
        rest = rest_status(client)
        assert rest[NEW] == {"version": str(NEW), "state": "END",
                             "status": {"error_code": "RESOURCE_EXHAUSTED", "error_message": message}}
        assert rest[OLD] == {"version": str(OLD), "state": "AVAILABLE",
                             "status": {"error_code": "OK", "error_message": ""}}
        grpc = grpc_status(server)
        assert (grpc[NEW].state, grpc[NEW].status.error_code, grpc[NEW].status.error_message) == (
            grpc_state("END"), 8, message)
        assert (grpc[OLD].state, grpc[OLD].status.error_code, grpc[OLD].status.error_message) == (
            grpc_state("AVAILABLE"), 0, "")
        assert rest_predict(client, NAME, version=NEW) == (
            404, {"error": f"Servable not found for request: Specific({NAME}, {NEW})"})
        time.sleep(1.5)  # at least one more poll: the refusal stands, 123 keeps serving
        assert rest_predict(client, NAME) == (200, PLUS2)
    load.assert_no_failures(minimum=50)
    assert {a.value for a in load.of(MODEL)} == {PLUS2}

    log = server.log()
    # 123 was never unloaded for a version that cannot fit, and 124 never tried.
    assert order(log) == [("loading", OLD), ("loaded", OLD)], log
    assert log.count(message) == 1, log  # logged once, not on every poll
    assert "Traceback" not in log, log
    assert rest_states(client) == {NEW: "END", OLD: "AVAILABLE"}


# ---- 3. resource swap to a broken version -------------------------------------------

@pytest.mark.parametrize("key", ["broken"])
def test_broken_version_in_a_resource_swap_brings_the_old_one_back(scenario, key):
    server = scenario.server
    client = server.client()
    assert rest_predict(client, NAME) == (200, PLUS2)

    def fell_back():
        return (rest_states(client) == {NEW: "END", OLD: "AVAILABLE"}
                and order(server.log()).count(("loaded", OLD)) == 2)

    with Load(server, [MODEL]) as load:
        time.sleep(0.3)
        scenario.publish()
        server.wait_for(fell_back, timeout=20, interval=0.02)
        time.sleep(1.5)  # at least one more poll: 124 is not tried again until its files change
        assert rest_predict(client, NAME) == (200, PLUS2)
    load.assert_no_failures(minimum=50)
    answers = load.of(MODEL)
    assert {a.value for a in answers} == {PLUS2}

    log = server.log()
    assert order(log) == [
        ("loading", OLD), ("loaded", OLD),
        ("unloaded", OLD), ("loading", NEW), ("failed", NEW),
        ("again", OLD), ("loading", OLD), ("loaded", OLD),
    ], log
    assert f"Loading servable version {{name: {NAME} version: {NEW}}} failed after 1 attempt(s)" in log
    assert "Traceback" not in log, log

    # Requests that came in the gap were held through the failed load and all of 123's
    # reload, then answered by 123.
    held = spanning(answers, find(log, "loading", NEW), find(log, "loaded", OLD, nth=1))
    assert protocols(held) == {"rest", "grpc"}, slowest(answers)

    rest = rest_status(client)
    assert rest[OLD]["status"] == {"error_code": "OK", "error_message": ""}
    error = rest[NEW]["status"]
    # Whatever TensorFlow says of the garbage, the message names the folder and the file.
    assert error["error_code"] not in ("OK", "RESOURCE_EXHAUSTED"), error
    assert str(scenario.base / str(NEW)) in error["error_message"], error
    assert "saved_model.pb" in error["error_message"], error
    grpc = grpc_status(server)
    assert grpc[NEW].state == grpc_state("END")
    assert grpc[NEW].status.error_message == error["error_message"]
    assert grpc[NEW].status.error_code != 0
    assert (grpc[OLD].state, grpc[OLD].status.error_code) == (grpc_state("AVAILABLE"), 0)
