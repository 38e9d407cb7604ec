"""Version transitions and the memory budget in the manager, with stand-in loaders
whose load can be held open (the end-to-end swap tests run real SavedModels).

What a user sees: which versions are in RAM at once, what a request gets during a
swap, what GetModelStatus says when a version does not fit."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgeserve.errors import ServingError, StatusCode
from edgeserve.manager import Manager
from edgeserve.resources import ResourceTracker
from edgeserve.servable import ManagerState as S
from edgeserve.sources import AspiredVersion

MB = 2**20


class Servable:
    signatures: dict = {}

    def __init__(self, path, memory_bytes):
        self.path = path
        self.memory_bytes = memory_bytes
        self.closed = False

    def close(self):
        self.closed = True


class Loaders:
    """Makes loaders; records which versions were in RAM together."""

    def __init__(self, measured=None):
        self.broken: set[str] = set()
        self.gates: dict[str, threading.Event] = {}  # path -> load waits for it
        self.measured = measured or {}  # path -> memory_bytes the load reports
        self.loaded: set[str] = set()
        self.peak = 0
        self.order: list[str] = []
        self._lock = threading.Lock()

    def __call__(self, name, aspired):
        loaders = self

        class Loader:
            def load(self):
                gate = loaders.gates.get(aspired.path)
                if gate is not None:
                    gate.wait(10)
                if aspired.path in loaders.broken:
                    raise ServingError(StatusCode.INTERNAL, f"cannot read {aspired.path}")
                with loaders._lock:
                    loaders.loaded.add(aspired.path)
                    loaders.peak = max(loaders.peak, len(loaders.loaded))
                    loaders.order.append("load " + aspired.path)
                servable = Servable(aspired.path, loaders.measured.get(aspired.path))
                original_close = servable.close

                def close():
                    with loaders._lock:
                        loaders.loaded.discard(aspired.path)
                        loaders.order.append("unload " + aspired.path)
                    original_close()

                servable.close = close
                return servable

        return Loader()


def aspired(version, size=10 * MB, name="m"):
    return AspiredVersion(version, f"/{name}/{version}", (1, size, version))


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as ex:
        yield ex


def manager(executor, loaders, policy="auto", limit=0, **kw):
    return Manager(
        loaders,
        load_executor=executor,
        unload_executor=executor,
        transition_policy=policy,
        resources=ResourceTracker(limit),
        max_num_load_retries=kw.pop("retries", 0),
        load_retry_interval_seconds=0.01,
        **kw,
    )


async def settle(m, rounds=200):
    for _ in range(rounds):
        await asyncio.sleep(0.005)
        if not m._tasks:
            return
    raise AssertionError("manager did not settle")


def states(m, name="m"):
    return {s.version: s.state for s in m.status(name)}


def run(scenario):
    asyncio.run(asyncio.wait_for(scenario(), 30))


@pytest.mark.parametrize("policy, limit, peak", [
    ("availability", 0, 2),
    ("resource", 0, 1),
    ("auto", 0, 2),  # no limit: both fit
    ("auto", 30 * MB, 2),  # 2 x 12 MB estimate fits in 30 MB
    ("auto", 20 * MB, 1),  # only one fits: resource-preserving
])
def test_versions_in_ram_at_once_per_policy(executor, policy, limit, peak):
    async def scenario():
        loaders = Loaders()
        m = manager(executor, loaders, policy, limit)
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        assert states(m) == {2: S.AVAILABLE, 1: S.END}
        assert loaders.peak == peak
        expected = ["load /m/1", "load /m/2", "unload /m/1"] if peak == 2 else \
            ["load /m/1", "unload /m/1", "load /m/2"]
        assert loaders.order == expected
        await m.stop()

    run(scenario)


def test_requests_in_a_resource_swap_gap_wait_for_the_new_version(executor):
    async def scenario():
        loaders = Loaders()
        m = manager(executor, loaders, "resource")
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        gate = loaders.gates["/m/2"] = threading.Event()
        m.set_aspired_versions("m", [aspired(2)])
        for _ in range(100):  # until version 1 is gone and 2 is loading
            await asyncio.sleep(0.005)
            if states(m).get(1) == S.END:
                break
        assert states(m) == {2: S.LOADING, 1: S.END}
        with pytest.raises(ServingError) as exc:  # plain acquire: TF Serving's NOT_FOUND
            m.acquire("m")
        assert exc.value.code == StatusCode.NOT_FOUND
        latest = asyncio.ensure_future(m.acquire_or_wait("m"))
        specific = asyncio.ensure_future(m.acquire_or_wait("m", 2))
        with pytest.raises(ServingError) as exc:  # the outgoing version will not come back
            await m.acquire_or_wait("m", 1)
        assert exc.value.message == "Servable not found for request: Specific(m, 1)"
        with pytest.raises(ServingError) as exc:
            await m.acquire_or_wait("m", timeout_ms=50)
        assert exc.value.code == StatusCode.DEADLINE_EXCEEDED
        assert exc.value.message == "Timed out waiting for a version of model m to finish loading"
        await asyncio.sleep(0.05)
        assert not latest.done() and not specific.done()
        gate.set()
        got = [await latest, await specific]
        assert [v.id.version for v in got] == [2, 2]
        for v in got:
            m.release(v)
        await m.stop()

    run(scenario)


def test_failed_new_version_in_a_resource_swap_brings_the_old_one_back(executor):
    async def scenario():
        loaders = Loaders()
        loaders.broken.add("/m/2")
        m = manager(executor, loaders, "resource", retries=3)
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        gate = loaders.gates["/m/2"] = threading.Event()
        m.set_aspired_versions("m", [aspired(2)])
        await asyncio.sleep(0.05)
        held = asyncio.ensure_future(m.acquire_or_wait("m"))
        gate.set()
        await settle(m)
        status = {s.version: s for s in m.status("m")}
        assert status[2].state == S.END
        assert status[2].error.message == "cannot read /m/2"
        assert status[1].state == S.AVAILABLE
        ver = await held  # the held request is served by the version that came back
        assert ver.id.version == 1
        m.release(ver)
        # One attempt only in a swap; the source's next poll changes nothing ...
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        assert states(m) == {2: S.END, 1: S.AVAILABLE}
        assert loaders.order.count("load /m/1") == 2
        # ... until the folder is fixed: then the swap happens again.
        loaders.broken.clear()
        m.set_aspired_versions("m", [AspiredVersion(2, "/m/2", (2, 10 * MB, 3))])
        await settle(m)
        assert states(m) == {2: S.AVAILABLE, 1: S.END}
        assert loaders.loaded == {"/m/2"}
        await m.stop()

    run(scenario)


def test_version_bigger_than_the_budget_is_refused_and_old_keeps_serving(executor):
    async def scenario():
        loaders = Loaders()
        m = manager(executor, loaders, "auto", limit=20 * MB)
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        m.set_aspired_versions("m", [aspired(2, size=50 * MB)])
        await settle(m)
        status = {s.version: s for s in m.status("m")}
        assert status[1].state == S.AVAILABLE  # never unloaded for a version that cannot fit
        assert status[2].state == S.END
        assert status[2].error.code == StatusCode.RESOURCE_EXHAUSTED
        assert status[2].error.message == (
            "Insufficient resources to load servable {name: m version: 2}: would exceed memory "
            "limit: needs 62914560 bytes (60.0 MiB), free 20971520 bytes (20.0 MiB) "
            "(--total_model_memory_limit_bytes=20971520)"
        )
        assert "load /m/2" not in loaders.order
        # The source's next poll, same files: refused again, no load attempt ...
        m.set_aspired_versions("m", [aspired(2, size=50 * MB)])
        await settle(m)
        assert states(m) == {2: S.END, 1: S.AVAILABLE}
        # ... a smaller export in its place: it fits now.
        m.set_aspired_versions("m", [AspiredVersion(2, "/m/2", (1, 10 * MB, 99))])
        await settle(m)
        assert states(m) == {2: S.AVAILABLE, 1: S.END}
        await m.stop()

    run(scenario)


def test_refused_version_loads_once_another_model_frees_memory(executor):
    async def scenario():
        loaders = Loaders()
        m = manager(executor, loaders, "auto", limit=30 * MB)
        m.set_aspired_versions("a", [aspired(1, name="a")])
        m.set_aspired_versions("b", [aspired(1, name="b")])
        await settle(m)
        m.set_aspired_versions("c", [aspired(1, name="c")])
        await settle(m)
        [c] = m.status("c")
        assert (c.state, c.error.code) == (S.END, StatusCode.RESOURCE_EXHAUSTED)
        m.set_aspired_versions("a", [])  # model a leaves the config
        await settle(m)
        [c] = m.status("c")
        assert (c.state, c.error) == (S.AVAILABLE, None)
        assert loaders.loaded == {"/b/1", "/c/1"}
        await m.stop()

    run(scenario)


def test_measured_cost_replaces_the_estimate(executor):
    async def scenario():
        loaders = Loaders(measured={"/m/1": 25 * MB, "/m/2": 1})
        m = manager(executor, loaders, limit=100 * MB)
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        assert m.resources.used() == 25 * MB  # what the load added, not 12 MB
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        # Less than its files is not believed: the weights are in RAM.
        assert m.resources.used() == 10 * MB
        m.set_aspired_versions("m", [])
        await settle(m)
        assert m.resources.used() == 0
        await m.stop()

    run(scenario)


def test_a_version_measured_over_the_budget_leaves_no_negative_free(executor):
    async def scenario():
        loaders = Loaders(measured={"/m/1": 25 * MB})
        m = manager(executor, loaders, "availability", limit=20 * MB)
        m.set_aspired_versions("m", [aspired(1)])  # its 12 MB estimate fits; it takes 25
        await settle(m)
        assert m.resources.used() == 25 * MB
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        status = {s.version: s for s in m.status("m")}
        assert status[1].state == S.AVAILABLE
        assert "needs 12582912 bytes (12.0 MiB), free 0 bytes (0.0 MiB)" in status[2].error.message
        await m.stop()

    run(scenario)


def test_load_waits_while_another_unload_may_free_memory(executor):
    async def scenario():
        loaders = Loaders()
        m = manager(executor, loaders, "auto", limit=15 * MB)
        m.set_aspired_versions("a", [aspired(1, name="a")])
        await settle(m)
        a1 = m.acquire("a")  # a request keeps a's unload from finishing
        m.set_aspired_versions("a", [])
        m.set_aspired_versions("b", [aspired(1, name="b")])
        await asyncio.sleep(0.05)
        [b] = m.status("b")
        assert (b.state, b.error) == (S.START, None)  # waiting, not refused
        m.release(a1)
        await settle(m)
        [b] = m.status("b")
        assert b.state == S.AVAILABLE
        await m.stop()

    run(scenario)


def test_unload_beside_a_serving_version_is_no_swap(executor):
    # Two versions served (a "latest 2" policy); a third replaces the oldest. Version 2
    # serves throughout, so there is no gap to hold requests in and nothing to fall back to.
    async def scenario():
        loaders = Loaders()
        loaders.broken.add("/m/3")
        m = manager(executor, loaders, "resource")
        m.set_aspired_versions("m", [aspired(1), aspired(2)])
        await settle(m)
        m.set_aspired_versions("m", [aspired(2), aspired(3)])
        await asyncio.sleep(0)
        assert m._models["m"].gap is None
        await settle(m)
        assert states(m) == {3: S.END, 2: S.AVAILABLE, 1: S.END}
        assert loaders.order == ["load /m/2", "load /m/1", "unload /m/1"]
        await m.stop()

    run(scenario)
