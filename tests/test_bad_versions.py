"""Bad version folders: each gets a clear status of its own, and the version serving keeps serving.

One server serves one model per case (they share its start-up); every model starts
with a good version 123 (half_plus_two: 3.0 for x = 2). Then a bad version 124 is
published into each base path the way a careful deploy does it (built in a hidden
folder beside the versions, then renamed into place) while client threads keep
predicting every model over REST and gRPC. The server must report each bad version
as END with an error naming the folder and what is wrong with it, keep answering 3.0
from version 123 throughout, and log no traceback.

One case is not a failure:
- a symlink loop inside an otherwise complete version (124/assets/loop -> 124/assets)
  harms nothing: nothing walks into it, 124 loads and replaces 123, as in TF Serving.

A base path deleted while its model serves is logged (once) and changes nothing: as in
TF Serving, a base path that cannot be read never becomes an empty version list.

Damaged warmup files are covered end to end in test_warmup.py
(test_server_warms_up_before_serving_and_reports_warmup_failures), records that are
not PredictionLogs there too (test_record_that_is_not_a_prediction_log_fails); a
version bigger than the memory budget in test_transitions.py.

Permission denied: tests usually run as root, whom file modes do not stop, and a
server run as another user could not import TensorFlow from the Python install under
/root (mode 700). So root's server is started without CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH (dropped from its capability bounding set before exec): it still
reads everything root owns, but a file or folder with mode 000 is unreadable to it,
as to anyone else.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from conftest import ServerProcess
from edgeserve.sources import VersionPolicy, list_versions
from reload_load import Load, Target, config_text, model_entry

GOOD, BAD = 123, 124


# ---- a server for which file modes apply, even when started by root -----------------

_PR_CAPBSET_DROP = 24
_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH = 1, 2


def _file_modes_apply_after_exec() -> Callable[[], None] | None:
    """A preexec_fn dropping root's right to ignore file modes; None when not root."""
    if os.geteuid() != 0:
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, not after fork

    def drop() -> None:
        for cap in (_CAP_DAC_OVERRIDE, _CAP_DAC_READ_SEARCH):
            if prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def _ignores_file_modes(pid: int) -> bool:
    """Whether the process has CAP_DAC_OVERRIDE in effect."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << _CAP_DAC_OVERRIDE))
    return os.geteuid() == 0


# ---- the bad versions: each built at `staging` from the good version folder ----------

def _truncate_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncated_pb(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    _truncate_half(staging / "saved_model.pb")


def no_variables(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    shutil.rmtree(staging / "variables")


def truncated_variables(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    (data,) = (staging / "variables").glob("variables.data-*")
    _truncate_half(data)


def not_a_saved_model(staging: Path, good: Path) -> None:
    staging.mkdir()
    (staging / "README.txt").write_text("the model will be uploaded here\n")


def version_is_a_file(staging: Path, good: Path) -> None:
    staging.write_bytes((good / "saved_model.pb").read_bytes())


def loop_inside(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    (staging / "assets").mkdir(exist_ok=True)
    os.symlink(".", staging / "assets" / "loop")  # 124/assets/loop -> 124/assets


def symlink_to_itself(staging: Path, good: Path) -> None:
    os.symlink(str(BAD), staging)  # base/124 -> base/124 once renamed into place


def unreadable_pb(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    (staging / "saved_model.pb").chmod(0)


def unreadable_folder(staging: Path, good: Path) -> None:
    shutil.copytree(good, staging)
    staging.chmod(0)


@dataclass(frozen=True)
class Case:
    build: Callable[[Path, Path], None]
    fails: bool = True  # 124 ends in END with an error (else: loads, or is ignored)
    needs_file_modes: bool = False


CASES = {
    "truncated_pb": Case(truncated_pb),
    "no_variables": Case(no_variables),
    "truncated_variables": Case(truncated_variables),
    "not_a_saved_model": Case(not_a_saved_model),
    "version_is_a_file": Case(version_is_a_file, fails=False),
    "loop_inside": Case(loop_inside, fails=False),
    "symlink_to_itself": Case(symlink_to_itself),
    "unreadable_pb": Case(unreadable_pb, needs_file_modes=True),
    "unreadable_folder": Case(unreadable_folder, needs_file_modes=True),
}
BASE_GONE = "base_path_deleted"  # its whole base path is deleted while 123 serves


# ---- one server, every case published at once -----------------------------------------

Status = tuple[str, str, str]  # (state, error_code, error_message)


@dataclass
class Outcome:
    server: ServerProcess
    bases: dict[str, Path]
    cases: dict[str, Case]  # the cases published (file-mode cases only where modes apply)
    statuses: dict[str, dict[int, Status]]  # model -> version -> status, once settled
    load: Load
    log: str


def _statuses(client, name: str) -> dict[int, Status]:
    status, body = client.get(f"/v1/models/{name}")
    assert status == 200, (name, status, body)
    return {
        int(v["version"]): (v["state"], v["status"]["error_code"], v["status"]["error_message"])
        for v in body["model_version_status"]
    }


def _settled(now: dict[str, dict[int, Status]], cases: dict[str, Case]) -> bool:
    for name, case in cases.items():
        if case.fails and now[name].get(BAD, ("",))[0] != "END":
            return False
    return (now["loop_inside"].get(BAD, ("",))[0] == "AVAILABLE"
            and now["loop_inside"].get(GOOD, ("END",))[0] == "END")


@pytest.fixture(scope="module")
def outcome(model_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_versions")
    good = model_store / "half_plus_two" / "1"
    bases = {name: root / name for name in (*CASES, BASE_GONE)}
    for base in bases.values():
        shutil.copytree(good, base / str(GOOD))
    config = root / "models.config"
    config.write_text(config_text(*(model_entry(name, base) for name, base in bases.items())))
    server = ServerProcess(root, [
        f"--model_config_file={config}",
        "--file_system_poll_wait_seconds=1",
        "--max_num_load_retries=0",
    ], preexec=_file_modes_apply_after_exec())
    published: list[Path] = []
    try:
        server.wait_ready()
        client = server.client()
        modes_apply = not _ignores_file_modes(server.proc.pid)
        cases = {n: c for n, c in CASES.items() if modes_apply or not c.needs_file_modes}
        for name in bases:
            assert _statuses(client, name) == {GOOD: ("AVAILABLE", "OK", "")}, name
        targets = [Target(name) for name in bases]
        targets += [Target(name, version=GOOD) for name, case in cases.items() if case.fails]
        with Load(server, targets, rest_threads=2, grpc_threads=1) as load:
            for name, case in cases.items():
                staging = bases[name] / f".staging-{BAD}"
                case.build(staging, good)
                os.rename(staging, bases[name] / str(BAD))
                published.append(bases[name] / str(BAD))
            shutil.rmtree(bases[BASE_GONE])
            # Each test checks its own case: one that never settles fails only its test.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not _settled(
                    {name: _statuses(client, name) for name in bases}, cases):
                time.sleep(0.2)
            time.sleep(2.5)  # two more polls: nothing changes any more, 123 still serves
            statuses = {name: _statuses(client, name) for name in bases}
        yield Outcome(server, bases, cases, statuses, load, server.log())
    finally:
        server.cleanup()
        for path in published:  # so that pytest can delete them
            for p in (path, path / "saved_model.pb"):
                if not p.is_symlink() and p.exists():
                    p.chmod(0o755)


def _failed(outcome: Outcome, name: str) -> tuple[str, str]:
    """(error code, message) of the bad version, which failed beside a serving 123."""
    if name not in outcome.cases:
        pytest.skip("file modes do not apply to this server (root, and capabilities not droppable)")
    statuses = outcome.statuses[name]
    assert statuses[GOOD] == ("AVAILABLE", "OK", ""), statuses
    assert BAD in statuses, f"{name}: version {BAD} missing from the status: {statuses}"
    state, code, message = statuses[BAD]
    assert state == "END" and code != "OK", statuses
    assert str(outcome.bases[name] / str(BAD)) in message, message
    return code, message


# ---- the cases ----------------------------------------------------------------------

def test_truncated_saved_model_pb(outcome):
    code, message = _failed(outcome, "truncated_pb")
    # "Failed to load SavedModel from <base>/124: Cannot parse file b'<base>/124/saved_model.pb':
    #  Error parsing message with type 'tensorflow.SavedModel': Wire format was corrupt."
    assert code == "INTERNAL"
    assert "saved_model.pb" in message and "Wire format was corrupt" in message, message


def test_missing_variables(outcome):
    code, message = _failed(outcome, "no_variables")
    # "... The passed save_path is not a valid checkpoint: <base>/124/variables/variables"
    assert code == "INTERNAL"
    assert "not a valid checkpoint" in message and "124/variables/variables" in message, message


def test_variables_truncated_halfway(outcome):
    code, message = _failed(outcome, "truncated_variables")
    # TF's own message names the restore op, not the file; the status names the folder.
    assert code == "OUT_OF_RANGE"
    assert message == (f"Failed to load SavedModel from {outcome.bases['truncated_variables']}/124: "
                       f"restoring variables from {outcome.bases['truncated_variables']}/124/variables "
                       "failed: Read less bytes than requested"), message


def test_folder_that_is_not_a_saved_model(outcome):
    code, message = _failed(outcome, "not_a_saved_model")
    assert code == "NOT_FOUND"
    assert message == (f"SavedModel not found in export directory: {outcome.bases['not_a_saved_model']}/124 "
                       "(no saved_model.pb or saved_model.pbtxt)")


def test_version_that_is_a_file(outcome):
    # TF Serving does not check that a version is a folder: it is a version whose
    # load fails. edgeserve does the same, and the status says it is not a folder.
    assert (outcome.bases["version_is_a_file"] / str(BAD)).is_file()
    code, message = _failed(outcome, "version_is_a_file")
    assert code == "NOT_FOUND"
    assert message == (f"SavedModel not found in export directory: {outcome.bases['version_is_a_file']}/124 "
                       "(not a directory)")


def test_symlink_loop_inside_a_complete_version_loads(outcome):
    assert outcome.statuses["loop_inside"] == {BAD: ("AVAILABLE", "OK", ""), GOOD: ("END", "OK", "")}


def test_version_that_is_a_symlink_to_itself(outcome):
    # It used to fail every poll of its model ("[Errno 40] Too many levels of symbolic
    # links"), so no version of that model could come or go; now it is a version whose
    # load fails like any folder without a SavedModel.
    code, message = _failed(outcome, "symlink_to_itself")
    assert code == "NOT_FOUND"
    assert message == (f"SavedModel not found in export directory: {outcome.bases['symlink_to_itself']}/124 "
                       "(too many levels of symbolic links)")
    assert "Too many levels of symbolic links" not in outcome.log


def test_unreadable_saved_model_pb(outcome):
    code, message = _failed(outcome, "unreadable_pb")
    # "... <base>/124/saved_model.pb; Permission denied"
    assert code == "PERMISSION_DENIED"
    assert "124/saved_model.pb; Permission denied" in message, message


def test_unreadable_version_folder(outcome):
    code, message = _failed(outcome, "unreadable_folder")
    assert code == "PERMISSION_DENIED"
    assert message == (f"Could not read export directory {outcome.bases['unreadable_folder']}/124: "
                       "permission denied")


def test_base_path_deleted_while_serving_keeps_serving(outcome):
    assert not outcome.bases[BASE_GONE].exists()
    assert outcome.statuses[BASE_GONE] == {GOOD: ("AVAILABLE", "OK", "")}
    error = (f"FileSystemStoragePathSource encountered a filesystem access error: Could not find "
             f"base path {outcome.bases[BASE_GONE]} for servable {BASE_GONE}")
    assert outcome.log.count(error) == 1, outcome.log  # once, not on every poll


# ---- what every case shares ---------------------------------------------------------

def test_every_model_answered_3_throughout(outcome):
    outcome.load.assert_no_failures(minimum=50)
    answers = outcome.load.snapshot()
    assert {a.value for a in answers} == {2.0 * 0.5 + 2.0}
    asked = {str(a.target) for a in answers}
    assert asked == {str(t) for t in outcome.load.targets}, asked
    # Still so after the last poll (the load stopped before the statuses were read).
    client = outcome.server.client()
    for name in outcome.bases:
        assert client.post(f"/v1/models/{name}:predict", {"instances": [[2.0]]}) == (
            200, {"predictions": [[3.0]]})


def test_no_traceback_in_the_log(outcome):
    assert "Traceback (most recent call last)" not in outcome.log, outcome.log
    assert outcome.server.proc.poll() is None


# ---- the source alone ---------------------------------------------------------------

def test_listing_survives_a_version_that_is_a_symlink_to_itself(tmp_path):
    (tmp_path / "1").mkdir()
    os.symlink("2", tmp_path / "2")
    (tmp_path / "3").write_text("a file")
    aspired, copying = list_versions("m", str(tmp_path), VersionPolicy(kind="all"))
    # Every entry named like a version is one, as in TF Serving (its load says why not).
    assert [(a.version, a.fingerprint) for a in aspired] == [(1, (0, 0, 0)), (2, (0, 0, 0)), (3, (0, 0, 0))]
    assert copying == []
