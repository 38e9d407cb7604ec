"""TF Serving's model config file: start-up, labels, and hot reload (poll, SIGHUP, gRPC).

Mirrors tensorflow_model_server_test.py's config tests (testGoodModelConfig,
testBadModelConfig, testModelConfigReload, testModelConfigReloadWithZeroPollPeriod)
and server_core.cc's validation texts, against the real server and real clients.
Every reload happens while client threads predict over REST and gRPC, and no request
may fail.

Values: every prediction asks for x = 2, so a half_plus_two version answers 3.0 and a
"half plus three" version (half_plus_two_v2) 4.0.
"""
from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time

import grpc
import numpy as np
import pytest

import grpc_client
from conftest import tfserving_testdata
from reload_load import (
    Load, Target, config_proto, config_text, grpc_predict, model_entry, rest_predict,
    write_config,
)

PLUS2, PLUS3 = 3.0, 4.0
PARSE_ERROR = "Error parsing text-format tensorflow.serving.ModelServerConfig"
NOT_A_LIST = ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
              "Only ModelConfigList is currently supported")


# ---- fixtures and small helpers ---------------------------------------------------

@pytest.fixture
def two_versions(model_store, tmp_path):
    """A base path with version 123 (half_plus_two) and 124 (half plus three)."""
    base = tmp_path / "two_versions"
    base.mkdir()
    shutil.copytree(model_store / "half_plus_two" / "1", base / "123")
    shutil.copytree(model_store / "half_plus_two_v2" / "2", base / "124")
    return base


def labelled_two(base, stable=123, canary=124, versions=(123, 124)):
    return model_entry("two", base, versions=list(versions),
                       labels={"stable": stable, "canary": canary})


def rest_version_states(client, name):
    status, body = client.get(f"/v1/models/{name}")
    if status != 200:
        return {}
    return {int(v["version"]): v["state"] for v in body["model_version_status"]}


def listed_models(client):
    status, body = client.get("/v1/models")
    assert status == 200, body
    return {m["name"]: {int(v["version"]): v["state"] for v in m["model_version_status"]}
            for m in body["models"]}


def not_found(client, name):
    return rest_predict(client, name) == (
        404, {"error": f"Servable not found for request: Latest({name})"})


class Grpc:
    """Official stubs on one channel; closed by the fixture."""

    def __init__(self, server) -> None:
        self.channel = grpc_client.channel(server.grpc_port)
        self.prediction, self.model = grpc_client.stubs(self.channel)

    def reload(self, text_or_proto, timeout=60.0):
        from tensorflow_serving.apis import model_management_pb2

        config = config_proto(text_or_proto) if isinstance(text_or_proto, str) else text_or_proto
        return self.model.HandleReloadConfigRequest(
            model_management_pb2.ReloadConfigRequest(config=config), timeout=timeout)

    def reload_error(self, text_or_proto) -> grpc.RpcError:
        try:
            response = self.reload(text_or_proto)
        except grpc.RpcError as error:
            return error
        raise AssertionError(f"reload was accepted: {response}")

    def status(self, name):
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        response = self.model.GetModelStatus(request, timeout=grpc_client.TIMEOUT)
        return {s.version: s.state for s in response.model_version_status}

    def metadata(self, name, label=None, version=None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = grpc_client.model_spec(
            get_model_metadata_pb2.GetModelMetadataRequest(), name, version=version,
            version_label=label)
        request.metadata_field.append("signature_def")
        return self.prediction.GetModelMetadata(request, timeout=grpc_client.TIMEOUT)

    def predict(self, name, label=None, version=None):
        return grpc_predict(self.prediction, name, label, version)

    def predict_error(self, name, label=None, version=None) -> grpc.RpcError:
        try:
            result = self.predict(name, label, version)
        except grpc.RpcError as error:
            return error
        raise AssertionError(f"expected an error, got {result}")


@pytest.fixture
def grpc_to():
    opened: list[Grpc] = []

    def open_(server) -> Grpc:
        g = Grpc(server)
        opened.append(g)
        return g

    yield open_
    for g in opened:
        g.channel.close()


def wait_exit(server, timeout=90) -> int:
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"server still running after {timeout}s:\n{server.log()}")


def assert_serving(client, rpc, expected: dict) -> None:
    """expected: {Target: value} — each answered over REST and gRPC."""
    for target, value in expected.items():
        assert rest_predict(client, target.name, target.label, target.version) == (200, value), target
        assert rpc.predict(target.name, target.label, target.version)[0] == value, target


# ---- start-up: TF Serving's own config files ---------------------------------------

def test_good_model_config_serves_both_models(start_server, tmp_path, grpc_to):
    """testGoodModelConfig: good_model_config.txt with the shared models substituted."""
    template = tfserving_testdata("good_model_config.txt").read_text()
    config = tmp_path / "good_model_config.txt"
    two = tfserving_testdata("saved_model_half_plus_two_cpu")
    three = tfserving_testdata("saved_model_half_plus_three")
    config.write_text(template.replace("${TEST_HALF_PLUS_TWO_DIR}", str(two))
                      .replace("${TEST_HALF_PLUS_THREE_DIR}", str(three)))
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)
    for name, value in (("half_plus_two", 3.0), ("half_plus_three", 4.0)):
        assert rest_predict(client, name) == (200, value)
        assert rpc.predict(name) == (value, 123)
        assert rest_predict(client, name, version=123) == (200, value)
        assert rpc.status(name) == {123: 30}  # AVAILABLE
    assert listed_models(client) == {
        "half_plus_two": {123: "AVAILABLE"}, "half_plus_three": {123: "AVAILABLE"}}
    assert "Traceback" not in server.log()


def test_bad_model_config_fails_the_start_with_the_parse_error(start_server):
    """testBadModelConfig: bad_model_config.txt stops the start; stderr names the parse error."""
    config = tfserving_testdata("bad_model_config.txt")
    server = start_server([f"--model_config_file={config}"], ready=False)
    assert wait_exit(server) != 0
    assert PARSE_ERROR in server.log()


@pytest.mark.parametrize("case", ["duplicate", "relative", "missing_file", "unknown_field"])
def test_invalid_config_at_start_up_exits_non_zero_with_reason(start_server, model_store, tmp_path, case):
    config = tmp_path / "models.config"
    plus2 = model_store / "half_plus_two"
    if case == "duplicate":
        config.write_text(config_text(model_entry("a", plus2), model_entry("a", plus2)))
        reason = "Illegal to list model a multiple times in config list"
    elif case == "relative":
        config.write_text(config_text(model_entry("a", "models/a")))
        reason = "Expected model a to have an absolute path or URI; got base_path()=models/a"
    elif case == "missing_file":
        config = tmp_path / "nowhere.config"
        reason = str(config)
    else:  # a field name that does not exist: a parse error, as in TF Serving
        config.write_text('model_config_list { config { nom: "a" } }\n')
        reason = PARSE_ERROR
    server = start_server([f"--model_config_file={config}"], ready=False)
    assert wait_exit(server) != 0
    assert reason in server.log()
    assert "Traceback" not in server.log()


def test_config_file_and_model_base_path_are_exclusive(start_server, model_store, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("a", model_store / "half_plus_two")))
    server = start_server([f"--model_config_file={config}", "--model_name=b",
                           f"--model_base_path={model_store / 'half_plus_two'}"], ready=False)
    assert wait_exit(server, 60) != 0
    log = server.log()
    assert ("model_config_file" in log or "model_base_path" in log), log
    assert "Traceback" not in log


def test_start_up_label_on_a_version_that_never_loads_fails_the_start(
        start_server, two_versions, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(config_text(labelled_two(two_versions, stable=999)))
    server = start_server([f"--model_config_file={config}"], ready=False)
    assert wait_exit(server) != 0
    assert ("Request to assign label to version 999 of model two, which is not currently "
            "available for inference") in server.log()


# ---- start-up: specific versions, labels, every route -------------------------------

def test_specific_versions_and_labels_route_every_way(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    config = tmp_path / "models.config"
    config.write_text(config_text(
        labelled_two(two_versions),
        model_entry("three", model_store / "half_plus_two_v2"),
    ))
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)

    # Latest, version, label: REST and gRPC.
    assert_serving(client, rpc, {
        Target("two"): PLUS3,
        Target("two", version=123): PLUS2,
        Target("two", version=124): PLUS3,
        Target("two", label="stable"): PLUS2,
        Target("two", label="canary"): PLUS3,
        Target("three"): PLUS3,
    })
    assert rpc.predict("two", label="stable") == (PLUS2, 123)
    assert rpc.predict("two", label="canary") == (PLUS3, 124)
    # Classify/regress go through labels too (half_plus_two's regress_x_to_y).
    status, body = client.post("/v1/models/two/labels/stable:regress", {
        "signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]})
    assert (status, body) == (200, {"results": [PLUS2]})

    # Metadata by label names the version it resolved to.
    for label, version in (("stable", 123), ("canary", 124)):
        status, body = client.get(f"/v1/models/two/labels/{label}/metadata")
        assert status == 200, body
        assert body["model_spec"] == {"name": "two", "signature_name": "", "version": str(version)}
        assert "serving_default" in body["metadata"]["signature_def"]["signature_def"]
        assert rpc.metadata("two", label=label).model_spec.version.value == version

    # Unknown label: INVALID_ARGUMENT / 400, TF Serving's text.
    assert rest_predict(client, "two", label="nope") == (
        400, {"error": "Unrecognized servable version label: nope"})
    status, body = client.get("/v1/models/two/labels/nope/metadata")
    assert (status, body) == (400, {"error": "Unrecognized servable version label: nope"})
    error = rpc.predict_error("two", label="nope")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == "Unrecognized servable version label: nope"
    # A label of another model is not this model's label.
    error = rpc.predict_error("three", label="stable")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # A version outside the policy is not served.
    assert rest_predict(client, "three", version=1) == (
        404, {"error": "Servable not found for request: Specific(three, 1)"})

    # Status reports every aspired version; /v1/models lists every model.
    assert rest_version_states(client, "two") == {123: "AVAILABLE", 124: "AVAILABLE"}
    assert rpc.status("two") == {123: 30, 124: 30}
    assert listed_models(client) == {
        "two": {123: "AVAILABLE", 124: "AVAILABLE"}, "three": {2: "AVAILABLE"}}


# ---- reload by polling ---------------------------------------------------------------

def test_polled_config_edit_adds_removes_and_moves_a_label_under_load(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    """testModelConfigReload, with the label move and bad intermediate files."""
    config = tmp_path / "models.config"
    config.write_text(config_text(
        model_entry("steady", model_store / "half_plus_two"),
        labelled_two(two_versions),
        model_entry("three", model_store / "half_plus_two_v2"),
    ))
    server = start_server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    client = server.client()
    rpc = grpc_to(server)
    assert not_found(client, "added")
    targets = [Target("steady"), Target("two", label="stable"), Target("two", label="canary"),
               Target("two", version=124)]
    with Load(server, targets) as load:
        # An empty, a truncated and an unparsable file are rejected, never applied as
        # "no models": after several polls everything still serves.
        bad_started = time.monotonic()
        for bad in ("", 'model_config_list {\n  config {\n    name: "steady"\n    base_pa',
                    "improperly formatted file"):
            config.write_text(bad)
            time.sleep(2.5)
            assert rest_predict(client, "three") == (200, PLUS3), server.log()
            assert rest_predict(client, "two", label="stable") == (200, PLUS2)
            assert server.proc.poll() is None
        assert PARSE_ERROR in server.log()

        started = time.monotonic()
        write_config(config, config_text(
            model_entry("steady", model_store / "half_plus_two"),
            labelled_two(two_versions, stable=124, canary=123),
            model_entry("added", model_store / "half_plus_two"),
        ))
        server.wait_for(lambda: rest_predict(client, "added") == (200, PLUS2), timeout=30)
        server.wait_for(lambda: rest_predict(client, "two", label="stable") == (200, PLUS3), timeout=30)
        server.wait_for(lambda: not_found(client, "three"), timeout=30)
        done = time.monotonic()
        time.sleep(1.0)  # answers after the change, too
    load.assert_no_failures()
    for target in (Target("steady"), Target("two", version=124)):
        value = PLUS2 if target.name == "steady" else PLUS3
        load.check_switch(target, value, value, bad_started, done)
    load.check_switch(Target("two", label="stable"), PLUS2, PLUS3, started, done)
    load.check_switch(Target("two", label="canary"), PLUS3, PLUS2, started, done)
    # The removed model is gone over gRPC too; the unchanged one was not reloaded.
    error = rpc.predict_error("three")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(three)"
    assert rpc.predict("added") == (PLUS2, 1)
    assert set(listed_models(client)) >= {"steady", "two", "added"}
    assert "Unloaded servable version {name: steady" not in server.log()
    assert "Unloaded servable version {name: three version: 2}" in server.log()
    assert "Traceback" not in server.log()


# ---- reload by SIGHUP ----------------------------------------------------------------

def test_zero_poll_period_never_rereads_but_sighup_does_under_load(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    """testModelConfigReloadWithZeroPollPeriod, then SIGHUP applies the edit at once."""
    config = tmp_path / "models.config"
    config.write_text(config_text(
        model_entry("steady", model_store / "half_plus_two"),
        labelled_two(two_versions),
        model_entry("three", model_store / "half_plus_two_v2"),
    ))
    server = start_server([f"--model_config_file={config}"])  # poll period 0 (the default)
    client = server.client()
    rpc = grpc_to(server)
    write_config(config, config_text(
        model_entry("steady", model_store / "half_plus_two"),
        labelled_two(two_versions, stable=124, canary=123),
        model_entry("added", model_store / "half_plus_two"),
    ))
    time.sleep(2.0)
    assert rest_predict(client, "three") == (200, PLUS3)
    assert not_found(client, "added")
    assert rest_predict(client, "two", label="stable") == (200, PLUS2)

    targets = [Target("steady"), Target("two", label="stable"), Target("two", label="canary"),
               Target("two")]
    with Load(server, targets) as load:
        time.sleep(0.5)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGHUP)
        server.wait_for(lambda: rest_predict(client, "added") == (200, PLUS2), timeout=30)
        server.wait_for(lambda: rest_predict(client, "two", label="stable") == (200, PLUS3), timeout=30)
        server.wait_for(lambda: not_found(client, "three"), timeout=30)
        done = time.monotonic()
        time.sleep(0.5)

        # A bad file on SIGHUP changes nothing and the server stays up.
        config.write_text("improperly formatted file")
        server.proc.send_signal(signal.SIGHUP)
        time.sleep(1.5)
        assert server.proc.poll() is None
        assert rest_predict(client, "added") == (200, PLUS2)
        assert rest_predict(client, "two", label="canary") == (200, PLUS2)
    load.assert_no_failures()
    load.check_switch(Target("steady"), PLUS2, PLUS2, started, done)
    load.check_switch(Target("two"), PLUS3, PLUS3, started, done)
    load.check_switch(Target("two", label="stable"), PLUS2, PLUS3, started, done)
    load.check_switch(Target("two", label="canary"), PLUS3, PLUS2, started, done)
    assert rpc.predict_error("three").code() == grpc.StatusCode.NOT_FOUND
    assert PARSE_ERROR in server.log()
    assert "Traceback" not in server.log()


# ---- reload by gRPC HandleReloadConfigRequest -----------------------------------------

def test_grpc_reload_rejects_bad_configs_and_keeps_the_old_one(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    config = tmp_path / "models.config"
    plus2 = model_store / "half_plus_two"
    original = config_text(
        model_entry("steady", plus2),
        labelled_two(two_versions),
        model_entry("three", model_store / "half_plus_two_v2"),
    )
    config.write_text(original)
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)
    from tensorflow_serving.config import model_server_config_pb2

    custom = model_server_config_pb2.ModelServerConfig()
    custom.custom_model_config.type_url = "type.googleapis.com/some.Config"
    bad = [
        # (config, code, message or None) — every one also adds "added" and drops "three",
        # so a partial application would show.
        (config_text(model_entry("steady", plus2), model_entry("added", plus2),
                     model_entry("added", plus2), labelled_two(two_versions)),
         grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model added multiple times in config list"),
        (config_text(model_entry("steady", plus2), model_entry("added", "relative/added"),
                     labelled_two(two_versions)),
         grpc.StatusCode.INVALID_ARGUMENT,
         "Expected model added to have an absolute path or URI; got base_path()=relative/added"),
        (config_text(model_entry("steady", plus2), model_entry("added", plus2),
                     labelled_two(two_versions, stable=999)),
         grpc.StatusCode.FAILED_PRECONDITION,
         "Request to assign label to version 999 of model two, which is not currently "
         "available for inference"),
        # model_service_impl.cc: anything but a ModelConfigList (nothing set, or a
        # custom config) is refused before ServerCore sees it.
        (model_server_config_pb2.ModelServerConfig(), grpc.StatusCode.INVALID_ARGUMENT, NOT_A_LIST),
        (custom, grpc.StatusCode.INVALID_ARGUMENT, NOT_A_LIST),
    ]
    targets = [Target("steady"), Target("two", label="stable"), Target("three")]
    with Load(server, targets) as load:
        mismatches = []
        for index, (proto, code, message) in enumerate(bad):
            error = rpc.reload_error(proto)
            if error.code() != code or (message is not None and error.details() != message):
                mismatches.append((index, error.code(), error.details()))
            # The old config still serves, whole.
            assert not_found(client, "added")
            assert rest_predict(client, "three") == (200, PLUS3)
            assert rest_predict(client, "two", label="stable") == (200, PLUS2)
            assert rest_predict(client, "two", label="canary") == (200, PLUS3)
        time.sleep(0.5)
    assert not mismatches, mismatches
    load.assert_no_failures()
    for target, value in ((Target("steady"), PLUS2), (Target("two", label="stable"), PLUS2),
                          (Target("three"), PLUS3)):
        assert {a.value for a in load.of(target)} == {value}
    # Nothing of the rejected configs was loaded.
    assert "added" not in listed_models(client)

    # A valid config whose new model fails to load: as TF Serving, the config is in
    # force, and the call says which model did not become available (UNKNOWN).
    broken = tmp_path / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "saved_model.pb").write_bytes(b"not a saved model")
    error = rpc.reload_error(config_text(
        model_entry("steady", plus2), labelled_two(two_versions), model_entry("broken", broken)))
    assert error.code() == grpc.StatusCode.UNKNOWN, (error.code(), error.details())
    assert error.details().startswith(
        "1 model(s) did not become available: {{name: broken version: 1} due to error: "), error.details()
    assert rest_predict(client, "steady") == (200, PLUS2)
    assert rest_predict(client, "two", label="stable") == (200, PLUS2)
    server.wait_for(lambda: not_found(client, "three"), timeout=30)
    assert "Traceback" not in server.log()


def test_grpc_reload_adds_removes_moves_labels_and_base_paths_without_a_failed_request(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    config = tmp_path / "models.config"
    plus2, plus3 = model_store / "half_plus_two", model_store / "half_plus_two_v2"
    config.write_text(config_text(
        model_entry("steady", plus2),
        labelled_two(two_versions),
        model_entry("three", plus3),
        model_entry("spin", model_store / "spin"),
    ))
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)

    # A long request on "spin" is in flight when spin is removed: it is answered.
    spin_result: list = []

    def spin():
        request = grpc_client.predict_request("spin", {"n": grpc_client.tensor(1_000_000, np.int64)})
        try:
            response = rpc.prediction.Predict(request, timeout=60)
            spin_result.append(int(response.outputs["count"].int64_val[0]))
        except grpc.RpcError as error:
            spin_result.append(f"{error.code()} {error.details()}")

    targets = [Target("steady"), Target("two", label="stable"), Target("two", label="canary"),
               Target("two")]
    with Load(server, targets) as load:
        spinner = threading.Thread(target=spin)
        spinner.start()
        time.sleep(0.5)
        started = time.monotonic()
        response = rpc.reload(config_text(
            model_entry("steady", plus2),
            labelled_two(two_versions, stable=124, canary=123),
            model_entry("added", plus2),
        ))
        done = time.monotonic()
        assert response.status.error_code == 0, response
        assert response.status.error_message == ""
        # As TF Serving (server_core.cc, WaitUntilModelsAvailable(new_models)): the call
        # returns once the new models are available, and the labels have moved.
        added_at_return = rest_predict(client, "added")
        server.wait_for(lambda: rest_predict(client, "added") == (200, PLUS2), timeout=30)
        assert rpc.predict("added") == (PLUS2, 1)
        assert rest_predict(client, "two", label="stable") == (200, PLUS3)
        assert rpc.predict("two", label="canary") == (PLUS2, 123)
        spinner.join(60)
        assert spin_result == [1_000_000], server.log()
        server.wait_for(lambda: not_found(client, "three"), timeout=30)
        server.wait_for(lambda: not_found(client, "spin"), timeout=30)
        time.sleep(0.5)

        # Second reload: "steady" moves to another base path (0.5x+2 -> 0.5x+3) and
        # "two" to a policy of 124 alone with both labels on it, without a gap.
        moved = time.monotonic()
        response = rpc.reload(config_text(
            model_entry("steady", plus3),
            labelled_two(two_versions, stable=124, canary=124, versions=(124,)),
            model_entry("added", plus2),
        ))
        assert response.status.error_code == 0, response
        server.wait_for(lambda: rest_predict(client, "steady") == (200, PLUS3), timeout=30)
        server.wait_for(lambda: rest_version_states(client, "two").get(123) in (None, "END"), timeout=30)
        settled = time.monotonic()
        time.sleep(0.5)
    # First reload: labels swap; "steady" and latest "two" untouched.
    load.check_switch(Target("two", label="stable"), PLUS2, PLUS3, started, done, until=moved)
    load.check_switch(Target("two", label="canary"), PLUS3, PLUS2, started, done, until=moved)
    load.check_switch(Target("steady"), PLUS2, PLUS2, started, done, until=moved)
    # Second reload: base path and policy change over without a gap.
    load.check_switch(Target("steady"), PLUS2, PLUS3, moved, settled, since=done)
    load.check_switch(Target("two", label="canary"), PLUS2, PLUS3, moved, settled, since=done)
    load.check_switch(Target("two", label="stable"), PLUS3, PLUS3, moved, settled, since=done)
    load.check_switch(Target("two"), PLUS3, PLUS3, started, settled)

    error = rpc.predict_error("three")
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert error.details() == "Servable not found for request: Latest(three)"
    assert rest_predict(client, "two", version=123) == (
        404, {"error": "Servable not found for request: Specific(two, 123)"})
    assert rpc.predict("steady") == (PLUS3, 2)
    assert {"steady", "two", "added"} <= set(listed_models(client))
    assert "Traceback" not in server.log()
    # Both checks at once, so one does not hide the other.
    problems = []
    if load.failures:
        problems.append(f"{len(load.failures)} failed requests, e.g. {load.failures[:3]}")
    if added_at_return != (200, PLUS2):
        problems.append(f"the reload answered before the added model was available: {added_at_return}")
    assert not problems, problems
    load.assert_no_failures()


def test_a_label_moved_off_a_version_the_same_reload_drops_never_fails_a_request(
        start_server, two_versions, tmp_path):
    """The label map changes before the dropped version starts unloading (TF Serving's
    ReloadConfig order: UpdateModelVersionLabelMap, then the sources), so a request by
    label never lands on a version on its way out. Three rounds, by SIGHUP."""
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("two", two_versions, versions=[123, 124],
                                              labels={"stable": 123})))
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    stable = Target("two", label="stable")
    with Load(server, [stable], rest_threads=3, grpc_threads=2) as load:
        rounds = []
        for versions, label, gone, back in (((124,), 124, 123, None), ((123, 124), 124, None, 123),
                                            ((123,), 123, 124, None)):
            started = time.monotonic()
            write_config(config, config_text(model_entry(
                "two", two_versions, versions=list(versions), labels={"stable": label})))
            server.proc.send_signal(signal.SIGHUP)
            states = lambda: rest_version_states(client, "two")  # noqa: E731
            if gone is not None:
                server.wait_for(lambda: states().get(gone) in (None, "END"), timeout=30)
            if back is not None:
                server.wait_for(lambda: states().get(back) == "AVAILABLE", timeout=30)
            rounds.append((started, time.monotonic(), label))
            time.sleep(0.3)
    value = {123: PLUS2, 124: PLUS3}
    load.check_switch(stable, PLUS2, PLUS3, rounds[0][0], rounds[0][1], until=rounds[1][0])
    load.check_switch(stable, PLUS3, PLUS2, rounds[2][0], rounds[2][1], since=rounds[1][1])
    assert {a.value for a in load.of(stable)} <= set(value.values())
    load.assert_no_failures()


def test_labels_for_unavailable_versions_need_the_flag(
        start_server, two_versions, tmp_path, grpc_to):
    """--allow_version_labels_for_unavailable_models: a new label may name any version;
    a label already on one version moves only to an available one."""
    config = tmp_path / "models.config"
    config.write_text(config_text(
        model_entry("two", two_versions, versions=[123, 124],
                    labels={"stable": 123, "future": 999}),
    ))
    server = start_server([f"--model_config_file={config}",
                           "--allow_version_labels_for_unavailable_models"])
    client = server.client()
    rpc = grpc_to(server)
    assert rest_predict(client, "two", label="stable") == (200, PLUS2)
    # The label resolves; its version is not loaded.
    assert rest_predict(client, "two", label="future") == (
        404, {"error": "Servable not found for request: Specific(two, 999)"})
    assert rpc.predict_error("two", label="future").code() == grpc.StatusCode.NOT_FOUND

    # Another new label on an unavailable version: allowed.
    response = rpc.reload(config_text(model_entry(
        "two", two_versions, versions=[123, 124],
        labels={"stable": 123, "future": 999, "later": 1000})))
    assert response.status.error_code == 0
    # Moving an existing label to an unavailable version: refused, nothing changes.
    error = rpc.reload_error(config_text(model_entry(
        "two", two_versions, versions=[123, 124], labels={"stable": 555})))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert error.details() == ("Request to assign label to version 555 of model two, which is "
                               "not currently available for inference")
    assert rest_predict(client, "two", label="stable") == (200, PLUS2)
    assert rest_predict(client, "two", label="later") == (
        404, {"error": "Servable not found for request: Specific(two, 1000)"})
    # Moving it to an available version: fine; a dropped label is gone.
    response = rpc.reload(config_text(model_entry(
        "two", two_versions, versions=[123, 124], labels={"stable": 124})))
    assert response.status.error_code == 0
    assert rest_predict(client, "two", label="stable") == (200, PLUS3)
    assert rest_predict(client, "two", label="future") == (
        400, {"error": "Unrecognized servable version label: future"})


# ---- --model_repository ----------------------------------------------------------------

def test_model_repository_serves_every_folder_latest_version(start_server, model_store, tmp_path, grpc_to):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_store / "half_plus_two", repo / "alpha")
    shutil.copytree(model_store / "half_plus_two_v2" / "2", repo / "alpha" / "2")
    shutil.copytree(model_store / "half_plus_two", repo / "beta")
    server = start_server([f"--model_repository={repo}", "--file_system_poll_wait_seconds=1"])
    client = server.client()
    rpc = grpc_to(server)
    assert rest_predict(client, "alpha") == (200, PLUS3)  # latest 1: version 2
    assert rpc.predict("alpha") == (PLUS3, 2)
    assert rest_predict(client, "beta") == (200, PLUS2)
    assert rest_predict(client, "alpha", version=1) == (
        404, {"error": "Servable not found for request: Specific(alpha, 1)"})
    models = listed_models(client)
    assert set(models) == {"alpha", "beta"}
    assert models["alpha"].get(2) == "AVAILABLE" and models["alpha"].get(1) in (None, "END")
    # A model folder moved in later is picked up by the file system poll.
    shutil.copytree(model_store / "half_plus_two_v2", tmp_path / "staging")
    (tmp_path / "staging").rename(repo / "gamma")
    server.wait_for(lambda: rest_predict(client, "gamma") == (200, PLUS3), timeout=30)
    assert set(listed_models(client)) == {"alpha", "beta", "gamma"}


def test_model_repository_with_a_config_file_whose_entries_win(
        start_server, model_store, two_versions, tmp_path, grpc_to):
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copytree(model_store / "half_plus_two", repo / "alpha")
    shutil.copytree(model_store / "half_plus_two", repo / "two")  # overridden below
    config = tmp_path / "models.config"
    config.write_text(config_text(labelled_two(two_versions)))
    server = start_server([f"--model_repository={repo}", f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)
    assert rest_predict(client, "alpha") == (200, PLUS2)
    # "two" is the config file's: versions 123 and 124 with labels, not the folder's v1.
    assert rest_predict(client, "two") == (200, PLUS3)
    assert rpc.predict("two", label="stable") == (PLUS2, 123)
    assert rest_version_states(client, "two") == {123: "AVAILABLE", 124: "AVAILABLE"}
    assert set(listed_models(client)) == {"alpha", "two"}


def test_a_config_file_that_disappears_keeps_the_config_in_force(start_server, model_store, tmp_path):
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two")))
    server = start_server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    client = server.client()
    config.unlink()
    server.wait_for(lambda: "Cannot read --model_config_file" in server.log(), timeout=30)
    time.sleep(2.5)  # more polls of the missing file
    assert rest_predict(client, "steady") == (200, PLUS2)
    assert server.log().count("Cannot read --model_config_file") == 1  # said once, not every poll
    # Back with a change: applied on the next poll.
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two"),
                                  model_entry("three", model_store / "half_plus_two_v2")))
    server.wait_for(lambda: rest_predict(client, "three") == (200, PLUS3), timeout=30)


def test_a_reload_to_a_missing_base_path_is_refused_whole(start_server, model_store, tmp_path, grpc_to):
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two")))
    server = start_server([f"--model_config_file={config}"])
    client = server.client()
    rpc = grpc_to(server)
    missing = tmp_path / "not_copied_yet"
    error = rpc.reload_error(config_text(
        model_entry("steady", model_store / "half_plus_two_v2"),  # a change that would be fine
        model_entry("typo", missing),
    ))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == f"Could not find base path {missing} for servable typo"
    # Nothing of it was applied: "steady" still serves version 1 (0.5x + 2).
    assert rest_predict(client, "steady") == (200, PLUS2)
    assert "typo" not in listed_models(client)


def test_a_polled_config_refused_for_a_missing_folder_is_applied_once_the_folder_appears(
        start_server, model_store, tmp_path):
    # TF Serving's poll calls ReloadConfig every time: a refusal that hangs on the file
    # system is lifted when the operator fixes the file system, not only the file.
    config = tmp_path / "models.config"
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two")))
    server = start_server([f"--model_config_file={config}", "--model_config_file_poll_wait_seconds=1"])
    client = server.client()
    later = tmp_path / "copied_later"
    config.write_text(config_text(model_entry("steady", model_store / "half_plus_two"),
                                  model_entry("later", later)))
    server.wait_for(lambda: f"Could not find base path {later} for servable later" in server.log(), timeout=30)
    time.sleep(2.5)  # more polls of the same text
    assert server.log().count(f"Could not find base path {later}") == 1  # said once
    assert "later" not in listed_models(client)
    shutil.copytree(model_store / "half_plus_two", later)
    server.wait_for(lambda: rest_predict(client, "later") == (200, PLUS2), timeout=30)
    assert rest_predict(client, "steady") == (200, PLUS2)
