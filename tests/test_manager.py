"""The manager's state machine with stand-in loaders (no TensorFlow needed here;
the end-to-end tests run the same paths with real SavedModels)."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest

from edgeserve.errors import ServingError, StatusCode
from edgeserve.manager import Manager
from edgeserve.servable import ManagerState
from edgeserve.sources import AspiredVersion


class Servable:
    signatures: dict = {}

    def __init__(self, path):
        self.path = path
        self.closed = False

    def run(self, signature_name, inputs, output_filter=None, caller_thread=False, timeout_ms=0):
        return {}

    def close(self):
        self.closed = True


class Loader:
    def __init__(self, path, broken):
        self.path = path
        self.broken = broken

    def estimate_bytes(self):
        return 0

    def load(self):
        if self.path in self.broken:
            raise ServingError(StatusCode.INTERNAL, f"cannot read {self.path}")
        return Servable(self.path)


def aspired(version, fp=(1, 1, 1)):
    return AspiredVersion(version, f"/m/{version}", fp)


@pytest.fixture
def executor():
    with ThreadPoolExecutor(1) as ex:
        yield ex


def make_manager(executor, broken, **kw):
    return Manager(
        lambda name, a: Loader(a.path, broken),
        load_executor=executor,
        unload_executor=executor,
        **kw,
    )


async def settle(manager, rounds=50):
    for _ in range(rounds):
        await asyncio.sleep(0.01)
        if not manager._tasks:
            return


def states(manager, name="m"):
    return {s.version: s.state for s in manager.status(name)}


def test_latest_version_served_and_old_one_unloaded(executor):
    async def scenario():
        m = make_manager(executor, set())
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        v1 = m.acquire("m")
        assert v1.id.version == 1
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        # v1 is UNLOADING while a request holds it; v2 serves new requests.
        assert states(m) == {2: ManagerState.AVAILABLE, 1: ManagerState.UNLOADING}
        v2 = m.acquire("m")
        assert v2.id.version == 2
        m.release(v2)
        servable = v1.servable
        m.release(v1)
        await settle(m)
        assert states(m)[1] == ManagerState.END
        assert servable.closed
        await m.stop()

    asyncio.run(scenario())


def test_broken_new_version_keeps_old_serving_and_retries_when_files_change(executor):
    async def scenario():
        broken = {"/m/2"}
        m = make_manager(executor, broken, max_num_load_retries=1, load_retry_interval_seconds=0.01)
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        status = {s.version: s for s in m.status("m")}
        assert status[2].state == ManagerState.END
        assert status[2].error.message == "cannot read /m/2"
        assert status[1].state == ManagerState.AVAILABLE
        held = m.acquire("m")
        assert held.id.version == 1
        m.release(held)
        # Same files: no new attempt. Changed files (the copy finished): loads.
        m.set_aspired_versions("m", [aspired(2)])
        await settle(m)
        assert states(m)[2] == ManagerState.END
        broken.clear()
        m.set_aspired_versions("m", [aspired(2, fp=(2, 2, 2))])
        await settle(m)
        assert states(m) == {2: ManagerState.AVAILABLE, 1: ManagerState.END}
        await m.stop()

    asyncio.run(scenario())


def test_not_found_messages_are_tf_servings(executor):
    async def scenario():
        m = make_manager(executor, set())
        with pytest.raises(ServingError) as e:
            m.acquire("nope")
        assert (e.value.code, e.value.message) == (
            StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
        m.set_aspired_versions("m", [aspired(3)])
        await settle(m)
        with pytest.raises(ServingError) as e:
            m.acquire("m", 4)
        assert e.value.message == "Servable not found for request: Specific(m, 4)"
        with pytest.raises(ServingError) as e:
            m.acquire("m", None, "stable")
        assert (e.value.code, e.value.message) == (
            StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: stable")
        with pytest.raises(ServingError) as e:
            m.status("m", 4)
        assert e.value.message == "Could not find version 4 of model m"
        with pytest.raises(ServingError) as e:
            m.status("other")
        assert e.value.message == "Could not find any versions of model other"
        await m.stop()

    asyncio.run(scenario())


def test_empty_aspired_list_unloads_all(executor):
    async def scenario():
        m = make_manager(executor, set())
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        m.set_aspired_versions("m", [])
        await settle(m)
        assert states(m) == {1: ManagerState.END}
        with pytest.raises(ServingError):
            m.acquire("m")
        await m.stop()

    asyncio.run(scenario())


def test_stop_waits_for_in_flight_requests(executor):
    async def scenario():
        m = make_manager(executor, set())
        m.set_aspired_versions("m", [aspired(1)])
        await settle(m)
        held = m.acquire("m")
        stopping = asyncio.ensure_future(m.stop())
        await asyncio.sleep(0.05)
        assert not stopping.done()
        assert held.servable is not None and not held.servable.closed
        m.release(held)
        await asyncio.wait_for(stopping, 5)
        assert states(m) == {1: ManagerState.END}

    asyncio.run(scenario())
