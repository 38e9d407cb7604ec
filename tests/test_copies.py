"""Version folders still being copied are not loaded until they stop changing."""
from __future__ import annotations

import asyncio
import shutil
import time

from edgeserve.sources import FileSystemSource, VersionPolicy, list_versions


def _version(base, number: int, files: int = 1):
    folder = base / str(number)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        (folder / f"f{i}").write_bytes(b"x" * (i + 1))
    return folder


def test_a_copying_version_is_left_out_and_the_policy_chooses_among_the_rest(tmp_path):
    for n in (1, 2, 3):
        _version(tmp_path, n)
    aspired, copying = list_versions("m", str(tmp_path), VersionPolicy(), lambda v, fp: v == 3)
    assert [a.version for a in aspired] == [2] and [c.version for c in copying] == [3]
    aspired, copying = list_versions("m", str(tmp_path), VersionPolicy(), lambda v, fp: v >= 2)
    assert [a.version for a in aspired] == [1] and [c.version for c in copying] == [2, 3]
    aspired, copying = list_versions("m", str(tmp_path), VersionPolicy(kind="all"), None)
    assert [a.version for a in aspired] == [1, 2, 3] and copying == []


def test_source_holds_a_new_folder_until_a_poll_finds_it_unchanged(tmp_path):
    calls: list[tuple[list[int], list[int]]] = []

    def callback(name, aspired, copying):
        calls.append(([a.version for a in aspired], [c.version for c in copying]))

    async def scenario():
        source = FileSystemSource("m", str(tmp_path), callback)
        _version(tmp_path, 1)
        await source.poll_once()                 # first poll: what is there is complete
        _version(tmp_path, 2)
        await source.poll_once()                 # new: still being copied
        _version(tmp_path, 2, files=3)
        await source.poll_once()                 # changed since: still being copied
        await source.poll_once()                 # unchanged for a poll: complete
        (tmp_path / "2" / "f0").write_bytes(b"changed after it was taken")
        await source.poll_once()                 # once aspired, never held back again

    asyncio.run(scenario())
    assert calls == [([1], []), ([1], [2]), ([1], [2]), ([2], []), ([2], [])]


def test_a_new_base_path_is_taken_as_complete(tmp_path):
    calls: list[list[int]] = []
    old, new = tmp_path / "old", tmp_path / "new"
    _version(old, 1)
    _version(new, 7)

    async def scenario():
        source = FileSystemSource("m", str(old), lambda n, a, c: calls.append([x.version for x in a]))
        await source.poll_once()
        source.retarget(str(new), VersionPolicy())
        await source.poll_once()

    asyncio.run(scenario())
    assert calls == [[1], [7]]


def test_a_slow_copy_is_loaded_once_complete_and_never_fails(start_server, model_store, copy_model):
    base = copy_model("half_plus_two", "model")
    server = start_server(["--model_name=model", f"--model_base_path={base}",
                           "--file_system_poll_wait_seconds=1"])
    client = server.client()
    source = model_store / "half_plus_two_v2" / "2"
    target = base / "2"
    target.mkdir()
    shutil.copy(source / "saved_model.pb", target / "saved_model.pb")
    time.sleep(0.2)  # the rest of the copy comes a moment later
    shutil.copytree(source / "variables", target / "variables")

    def copying_reported():
        status, body = client.get("/v1/models/model/versions/2")
        return status == 200 and body["model_version_status"][0]["status"]["error_message"].startswith(
            "waiting for the copy to finish")

    server.wait_for(copying_reported, timeout=10, interval=0.05)
    # Meanwhile version 1 serves.
    assert client.post("/v1/models/model:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})
    server.wait_for(
        lambda: client.post("/v1/models/model:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[3.5]]}),
        timeout=30)
    assert "Loading servable version {name: model version: 2} failed" not in server.log()
