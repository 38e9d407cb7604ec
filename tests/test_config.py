"""edgeserve.config: ModelServerConfig text/message → dataclasses, with TF Serving's checks.

Pure tests: no server, no files written. The expected texts are TF Serving's
(model_servers/server_core.cc) unless edgeserve has its own check.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from conftest import REPO, tfserving_testdata
from google.protobuf import text_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeserve import messages
from edgeserve.config import (
    ConfigError,
    LoggingConfig,
    ModelConfig,
    ServerConfig,
    check_labels,
    check_transition,
    from_proto,
    from_reload_config_request,
    parse_config_text,
    single_model,
    uri_is_relative_path,
)
from edgeserve.errors import ServingError, StatusCode
from edgeserve.sources import VersionPolicy

pb = messages.model_server_config_pb2
LATEST = VersionPolicy()


def one(body: str) -> str:
    """A config file holding one model whose ModelConfig body is `body`."""
    return f"model_config_list {{ config {{ {body} }} }}"


def parse(text: str) -> ServerConfig:
    return parse_config_text(textwrap.dedent(text), "models.config")


def error_of(text: str, **kw) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config_text(textwrap.dedent(text), "models.config", **kw)
    return info.value


def model(name="m", base_path="/models/m", platform="tensorflow", policy=LATEST, labels=()):
    return ModelConfig(name, base_path, platform, policy, tuple(labels))


# ---- fields -------------------------------------------------------------------------------


def test_every_field_of_a_full_config():
    config = parse(
        """
        # a comment
        model_config_list {
          config {
            name: "first"
            base_path: "/models/first"
            model_platform: "tensorflow"
            model_version_policy { specific { versions: 7 versions: 3 versions: 7 } }
            version_labels { key: "stable" value: 3 }
            version_labels { key: "canary" value: 7 }
            logging_config {
              log_collector_config { type: "tfrecord" filename_prefix: "/var/log/first" }
              sampling_config { sampling_rate: 0.5 }
            }
          }
          config {
            name: "second"
            base_path: "gs://bucket/second"
            model_type: TENSORFLOW
            model_version_policy { all {} }
          }
          config {
            name: "third"
            base_path: "/models/third"
            model_platform: "tensorflow"
            model_version_policy { latest { num_versions: 3 } }
          }
        }
        """
    )
    assert config == ServerConfig(
        models=(
            ModelConfig("first", "/models/first", "tensorflow", VersionPolicy("specific", versions=frozenset({3, 7})),
                        (("canary", 7), ("stable", 3)),
                        LoggingConfig("/var/log/first", 0.5, b"\t\x00\x00\x00\x00\x00\x00\xe0?")),
            model("second", "gs://bucket/second", policy=VersionPolicy("all")),
            model("third", "/models/third", policy=VersionPolicy("latest", num_versions=3)),
        )
    )
    assert not config.not_set
    assert config.model("second").base_path == "gs://bucket/second"
    assert config.model("nope") is None
    assert [m.name for m in config.models] == ["first", "second", "third"]  # file order


@pytest.mark.parametrize(
    "policy, expected",
    [
        ("", VersionPolicy("latest", num_versions=1)),
        ("model_version_policy {}", VersionPolicy("latest", num_versions=1)),
        ("model_version_policy { latest {} }", VersionPolicy("latest", num_versions=1)),
        # AspireLatestVersions: max(num_versions, 1)
        ("model_version_policy { latest { num_versions: 0 } }", VersionPolicy("latest", num_versions=1)),
        ("model_version_policy { latest { num_versions: 2 } }", VersionPolicy("latest", num_versions=2)),
        ("model_version_policy { all {} }", VersionPolicy("all")),
        ("model_version_policy { specific { versions: 1 versions: 0 } }",
         VersionPolicy("specific", versions=frozenset({0, 1}))),
        # TF Serving accepts an empty specific list (it warns and serves nothing).
        ("model_version_policy { specific {} }", VersionPolicy("specific", versions=frozenset())),
        # Negative versions are legal int64s: they never match a folder.
        ("model_version_policy { specific { versions: -4 } }", VersionPolicy("specific", versions=frozenset({-4}))),
    ],
)
def test_version_policies(policy, expected):
    config = parse(one(f'name: "m" base_path: "/m" model_platform: "tensorflow" {policy}'))
    assert config.models[0].version_policy == expected


def test_labels_are_sorted_and_a_repeated_key_keeps_the_last_value():
    config = parse(one(
        'name: "m" base_path: "/m" model_platform: "tensorflow" '
        'version_labels { key: "b" value: 2 } version_labels { key: "a" value: 5 } '
        'version_labels { key: "b" value: 9 } version_labels { key: "z" value: -1 }'
    ))
    assert config.models[0].version_labels == (("a", 5), ("b", 9), ("z", -1))


def test_model_type_tensorflow_is_the_tensorflow_platform():
    config = parse(one('name: "m" base_path: "/m" model_type: TENSORFLOW'))
    assert config.models[0].platform == "tensorflow"


def test_empty_config_is_not_set_and_an_empty_list_is_a_list():
    for text in ("", "\n  # only a comment\n"):
        config = parse(text)
        assert config == ServerConfig(models=(), not_set=True)
    config = parse("model_config_list {}")
    assert config == ServerConfig(models=())
    assert not config.not_set


def test_single_model():
    assert single_model("default", "/models/x") == ServerConfig(models=(model("default", "/models/x"),))
    assert single_model("m", "s3://bucket/m").models[0].base_path == "s3://bucket/m"
    with pytest.raises(ConfigError) as info:
        single_model("default", "models/x")
    assert info.value.message == "Expected model default to have an absolute path or URI; got base_path()=models/x"


def test_importing_config_imports_no_tensorflow():
    code = ("import sys, edgeserve.config as c; c.single_model('m', '/m'); "
            "assert 'tensorflow' not in sys.modules and 'tensorflow_serving' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


# ---- errors, with TF Serving's texts ----------------------------------------------------


def test_config_error_is_a_serving_error_and_a_value_error():
    exc = ConfigError("boom")
    assert isinstance(exc, ServingError) and isinstance(exc, ValueError)
    assert (exc.code, exc.message, str(exc)) == (StatusCode.INVALID_ARGUMENT, "boom", "boom")
    assert repr(exc) == "ConfigError(INVALID_ARGUMENT, 'boom')"
    assert ConfigError("x", StatusCode.FAILED_PRECONDITION).code == StatusCode.FAILED_PRECONDITION


@pytest.mark.parametrize(
    "text, message",
    [
        (
            'model_config_list { config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
            'config { name: "b" base_path: "/b" model_platform: "tensorflow" } '
            'config { name: "a" base_path: "/c" model_platform: "tensorflow" } }',
            "Illegal to list model a multiple times in config list",
        ),
        (
            one('base_path: "/a" model_platform: "tensorflow"'),
            "Illegal to list a model with an empty name in config list; got base_path()=/a",
        ),
        (
            one('name: "a" base_path: "relative/a" model_platform: "tensorflow"'),
            "Expected model a to have an absolute path or URI; got base_path()=relative/a",
        ),
        (
            one('name: "a" model_platform: "tensorflow"'),
            "Expected model a to have an absolute path or URI; got base_path()=",
        ),
        (
            one('name: "a" base_path: "/a"'),
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            "ModelServerConfig::model_platform, model name is a",
        ),
        (
            one('name: "a" base_path: "/a" model_type: TENSORFLOW model_platform: "tensorflow"'),
            "Illegal setting both ModelServerConfig::model_type (deprecated) and "
            "ModelServerConfig::model_platform, model name is a",
        ),
        (
            one('name: "a" base_path: "/a" model_type: OTHER'),
            "ModelServerConfig::model_type choice 2 not supported.",
        ),
        (
            one('name: "a" base_path: "/a" model_platform: "pytorch"'),
            "Model a requests unsupported platform pytorch",
        ),
        (
            'custom_model_config { type_url: "type.googleapis.com/x.Y" }',
            "ModelServer does not yet support custom model config.",
        ),
    ],
)
def test_invalid_configs(text, message):
    exc = error_of(text)
    assert exc.message == message
    assert exc.code == StatusCode.INVALID_ARGUMENT


def test_error_order_follows_tf_serving():
    # Duplicate names are found before any relative path, which is found before any platform.
    text = ('model_config_list { config { name: "a" base_path: "rel" } '
            'config { name: "b" base_path: "/b" } config { name: "b" base_path: "/b" } }')
    assert error_of(text).message == "Illegal to list model b multiple times in config list"
    text = ('model_config_list { config { name: "a" base_path: "/a" } '
            'config { name: "b" base_path: "rel" model_platform: "tensorflow" } }')
    assert error_of(text).message == "Expected model b to have an absolute path or URI; got base_path()=rel"


@pytest.mark.parametrize(
    "uri, relative",
    [
        ("/abs", False), ("gs://bucket/x", False), ("s3://b", False), ("hdfs://host:9000/x", False),
        ("a.b2://x", False), ("ram://", False),
        ("", True), ("rel", True), ("./x", True), ("../x", True),
        ("a://x", True),  # a one-letter scheme is no scheme (Scanner::Many is one-or-more)
        ("1a://x", True), ("file:/x", True), ("s-3://x", True),
    ],
)
def test_uri_is_relative_path(uri, relative):
    assert uri_is_relative_path(uri) is relative


# ---- parse errors --------------------------------------------------------------------------


def test_parse_error_keeps_line_and_column():
    exc = error_of("improperly formatted file")
    assert exc.message == (
        "models.config:1:1: Error parsing text-format tensorflow.serving.ModelServerConfig: "
        'Message type "tensorflow.serving.ModelServerConfig" has no field named "improperly".'
    )
    assert exc.code == StatusCode.INVALID_ARGUMENT
    exc = error_of('model_config_list {\n  config {\n    name: "a"\n    bogus: 1\n  }\n}\n')
    assert exc.message == (
        "models.config:4:5: Error parsing text-format tensorflow.serving.ModelServerConfig: "
        'Message type "tensorflow.serving.ModelConfig" has no field named "bogus".'
    )
    exc = error_of('model_config_list {\n  config { name: "a" }\n')
    assert exc.message.startswith("models.config:2:22: Error parsing text-format")  # after the last token
    assert exc.message.endswith('Expected "}".')


@pytest.mark.parametrize(
    "text",
    [
        'model_config_list {} custom_model_config {}',  # both members of the oneof
        'model_config_list {} model_config_list {}',
        one('name: "a" model_version_policy { latest { num_versions: -1 } }'),  # uint32
        one('name: "a" model_version_policy { latest {} all {} }'),
        one('name: "\\377"'),  # not UTF-8
        one('name: "unterminated'),
        one("name: 7"),
        'model_config_list { config { name: "a" } } }',
    ],
)
def test_parse_errors_are_one_line_config_errors(text):
    exc = error_of(text)
    assert exc.message.startswith("models.config:1:")
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig: " in exc.message
    assert "\n" not in exc.message


def test_default_source_name():
    with pytest.raises(ConfigError, match=r"^<config>:1:1: Error parsing"):
        parse_config_text("nope")


# ---- TF Serving's own test configs --------------------------------------------------------


def test_tf_serving_good_model_config():
    # TF Serving's test substitutes the ${...} placeholders before use; so do we.
    text = tfserving_testdata("good_model_config.txt").read_text()
    text = text.replace("${TEST_HALF_PLUS_TWO_DIR}", "/data/half_plus_two")
    text = text.replace("${TEST_HALF_PLUS_THREE_DIR}", "/data/half_plus_three")
    config = parse_config_text(text, "good_model_config.txt")
    assert config == ServerConfig(models=(
        model("half_plus_two", "/data/half_plus_two"),
        model("half_plus_three", "/data/half_plus_three"),
    ))


def test_tf_serving_good_model_config_unsubstituted_is_a_relative_path():
    path = tfserving_testdata("good_model_config.txt")
    with pytest.raises(ConfigError) as info:
        parse_config_text(path.read_text(), str(path))
    assert info.value.message == (
        "Expected model half_plus_two to have an absolute path or URI; "
        "got base_path()=${TEST_HALF_PLUS_TWO_DIR}"
    )


def test_tf_serving_bad_model_config():
    # tensorflow_model_server_test.py testBadModelConfig looks for this phrase in stderr.
    path = tfserving_testdata("bad_model_config.txt")
    with pytest.raises(ConfigError) as info:
        parse_config_text(path.read_text(), str(path))
    assert info.value.message.startswith(
        f"{path}:1:1: Error parsing text-format tensorflow.serving.ModelServerConfig: ")
    assert "Error parsing text-format tensorflow.serving.ModelServerConfig" in info.value.message


# ---- transitions --------------------------------------------------------------------------

NO_TRANSITION = ("Cannot transition to requested config. It is only legal to transition "
                 "from one ModelConfigList to another.")


def test_check_transition_platforms():
    old = ServerConfig(models=(model("a"), model("b")))
    check_transition(old, ServerConfig(models=(model("b", "/elsewhere"), model("c"))))
    check_transition(old, ServerConfig(models=()))
    check_transition(None, ServerConfig(models=(model("a", platform="tflite"),)))
    check_transition(ServerConfig(models=(), not_set=True), ServerConfig(models=(model("a", platform="x"),)))
    with pytest.raises(ConfigError) as info:
        check_transition(old, ServerConfig(models=(model("c"), model("b", platform="tflite"))))
    assert info.value.message == (
        "Illegal to change a model's platform. For model b platform was tensorflow and new "
        "platform requested is tflite"
    )
    assert info.value.code == StatusCode.INVALID_ARGUMENT


def test_check_transition_to_an_empty_config():
    empty = ServerConfig(models=(), not_set=True)
    check_transition(None, empty)
    check_transition(empty, empty)
    for old in (ServerConfig(models=()), ServerConfig(models=(model("a"),))):
        with pytest.raises(ConfigError) as info:
            check_transition(old, empty)
        assert (info.value.code, info.value.message) == (StatusCode.FAILED_PRECONDITION, NO_TRANSITION)


def test_model_type_and_model_platform_name_the_same_platform():
    old = parse(one('name: "a" base_path: "/a" model_type: TENSORFLOW'))
    new = parse(one('name: "a" base_path: "/a" model_platform: "tensorflow"'))
    check_transition(old, new)
    check_transition(new, old)


def test_from_proto_with_previous_runs_transition_checks_in_tf_servings_order():
    previous = single_model("a", "/a")
    # ValidateNoModelsChangePlatforms runs before the router refuses the platform.
    exc = error_of(one('name: "a" base_path: "/a" model_platform: "tflite"'), previous=previous)
    assert exc.message == ("Illegal to change a model's platform. For model a platform was "
                           "tensorflow and new platform requested is tflite")
    # A new model gets the router's text.
    exc = error_of(one('name: "b" base_path: "/b" model_platform: "pytorch"'), previous=previous)
    assert exc.message == "Model b requests unsupported platform pytorch"
    # tflite is a platform like tensorflow.
    config = parse_config_text(one('name: "b" base_path: "/b" model_platform: "tflite"'), "m", previous=previous)
    assert [(m.name, m.platform) for m in config.models] == [("b", "tflite")]
    # But the list's own checks come first.
    exc = error_of(one('name: "a" base_path: "a" model_platform: "tflite"'), previous=previous)
    assert exc.message.startswith("Expected model a to have an absolute path")
    for text in ("", 'custom_model_config { type_url: "x" }'):
        exc = error_of(text, previous=previous)
        assert (exc.code, exc.message) == (StatusCode.FAILED_PRECONDITION, NO_TRANSITION)
    # Nothing in force yet: an empty config is taken (and means no action).
    assert parse_config_text("", previous=ServerConfig(models=(), not_set=True)).not_set
    new = parse_config_text(one('name: "a" base_path: "/b" model_platform: "tensorflow"'), previous=previous)
    assert new == single_model("a", "/b")


def test_from_proto_takes_the_message():
    message = messages.ModelServerConfig()
    entry = message.model_config_list.config.add(name="m", base_path="/m", model_platform="tensorflow")
    entry.model_version_policy.latest.num_versions = 2
    entry.version_labels["stable"] = 4
    assert from_proto(message) == ServerConfig(models=(
        model("m", "/m", policy=VersionPolicy("latest", num_versions=2), labels=(("stable", 4),)),
    ))
    assert from_proto(messages.ModelServerConfig()).not_set
    request = messages.ReloadConfigRequest()
    request.config.CopyFrom(message)
    assert from_proto(request.config) == from_proto(message)


def test_reload_config_request_takes_a_model_list_only():
    previous = single_model("a", "/a")

    def request_config(text):
        request = messages.ReloadConfigRequest()
        text_format.Parse(text, request.config)
        return request.config

    for text in ("", 'custom_model_config { type_url: "x" }'):
        with pytest.raises(ConfigError) as info:
            from_reload_config_request(request_config(text), previous=previous)
        assert info.value.code == StatusCode.INVALID_ARGUMENT
        assert info.value.message == ("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                                      "Only ModelConfigList is currently supported")
    with pytest.raises(ConfigError, match="^Illegal to change a model's platform"):
        config = request_config(one('name: "a" base_path: "/a" model_platform: "tflite"'))
        from_reload_config_request(config, previous=previous)
    config = request_config("model_config_list {}")
    assert from_reload_config_request(config, previous=previous) == ServerConfig(models=())


# ---- labels ---------------------------------------------------------------------------------


def labelled(*labels, name="m"):
    return ServerConfig(models=(model(name, labels=sorted(labels)),))


def unavailable_message(version, name="m"):
    return (f"Request to assign label to version {version} of model {name}, "
            "which is not currently available for inference")


@pytest.mark.parametrize("allow_unavailable", [False, True])
def test_labels_on_available_versions_are_fine(allow_unavailable):
    available = {("m", 1), ("m", 2)}
    current = {("m", "stable"): 1}
    check_labels(labelled(("stable", 2), ("canary", 2)), lambda n, v: (n, v) in available,
                 lambda n, lbl: current.get((n, lbl)), allow_unavailable)


def test_label_on_an_unavailable_version_is_refused_without_the_flag():
    with pytest.raises(ConfigError) as info:
        check_labels(labelled(("stable", 1), ("canary", 3)), lambda n, v: v == 1, lambda n, lbl: None, False)
    assert info.value.message == unavailable_message(3)
    assert info.value.code == StatusCode.FAILED_PRECONDITION


def test_flag_allows_a_new_label_or_an_unchanged_label_on_an_unavailable_version():
    never = lambda n, v: False  # noqa: E731
    check_labels(labelled(("canary", 3)), never, lambda n, lbl: None, True)
    check_labels(labelled(("canary", 3)), never, lambda n, lbl: 3, True)


def test_flag_never_moves_a_label_onto_an_unavailable_version():
    current = {("m", "stable"): 1}
    with pytest.raises(ConfigError) as info:
        check_labels(labelled(("stable", 2)), lambda n, v: v == 1, lambda n, lbl: current.get((n, lbl)), True)
    assert info.value.message == unavailable_message(2)
    assert info.value.code == StatusCode.FAILED_PRECONDITION
    # ... but moves it onto an available one.
    check_labels(labelled(("stable", 2)), lambda n, v: v == 2, lambda n, lbl: current.get((n, lbl)), True)


def test_labels_are_checked_per_model():
    config = ServerConfig(models=(model("a", labels=[("x", 1)]), model("b", labels=[("x", 1)])))
    seen = []

    def available(name, version):
        seen.append((name, version))
        return name == "a"

    with pytest.raises(ConfigError) as info:
        check_labels(config, available, lambda n, lbl: None, False)
    assert info.value.message == unavailable_message(1, "b")
    assert seen == [("a", 1), ("b", 1)]
    check_labels(ServerConfig(models=(), not_set=True), available, lambda n, lbl: None, False)


# ---- generated configs --------------------------------------------------------------------

names = st.text(min_size=1, max_size=12)
int64 = st.integers(-(2**63), 2**63 - 1)
policies = st.one_of(
    st.none(),
    st.integers(0, 2**32 - 1).map(lambda n: ("latest", n)),
    st.just(("all", None)),
    st.lists(int64, max_size=4).map(lambda vs: ("specific", vs)),
)
models_strategy = st.lists(
    st.tuples(
        names,
        st.one_of(st.text(max_size=12).map(lambda p: "/" + p), st.sampled_from(["gs://b/m", "s3://x"])),
        st.booleans(),  # deprecated model_type instead of model_platform
        policies,
        st.dictionaries(st.text(max_size=8), int64, max_size=3),
    ),
    max_size=4,
    unique_by=lambda m: m[0],
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(models_strategy, st.booleans())
def test_generated_configs_round_trip_through_text(specs, as_utf8):
    message = messages.ModelServerConfig()
    message.model_config_list.SetInParent()
    expected = []
    for name, base_path, use_model_type, policy, labels in specs:
        entry = message.model_config_list.config.add(name=name, base_path=base_path)
        if use_model_type:
            entry.model_type = pb.TENSORFLOW
        else:
            entry.model_platform = "tensorflow"
        if policy is None:
            version_policy = VersionPolicy()
        elif policy[0] == "latest":
            entry.model_version_policy.latest.num_versions = policy[1]
            version_policy = VersionPolicy("latest", num_versions=max(policy[1], 1))
        elif policy[0] == "all":
            entry.model_version_policy.all.SetInParent()
            version_policy = VersionPolicy("all")
        else:
            entry.model_version_policy.specific.SetInParent()
            entry.model_version_policy.specific.versions.extend(policy[1])
            version_policy = VersionPolicy("specific", versions=frozenset(policy[1]))
        for label, version in labels.items():
            entry.version_labels[label] = version
        expected.append(ModelConfig(name, base_path, "tensorflow", version_policy, tuple(sorted(labels.items()))))
    text = text_format.MessageToString(message, as_utf8=as_utf8)
    parsed = parse_config_text(text, "generated")
    assert parsed == ServerConfig(models=tuple(expected))
    assert parsed == from_proto(message)


@settings(max_examples=300, deadline=None)
@given(st.one_of(
    st.text(max_size=80),
    st.lists(st.sampled_from([
        "model_config_list", "config", "{", "}", ":", "name", "base_path", '"/a"', '"a"', "model_platform",
        '"tensorflow"', "model_version_policy", "latest", "num_versions", "3", "-1", "all", "specific",
        "versions", "version_labels", "key", "value", "model_type", "TENSORFLOW", "OTHER", "#", "\n",
        "custom_model_config", "logging_config", "[", "]", "<", ">", ",", ";", "1e9", "'x'", "\\",
    ]), max_size=30).map(" ".join),
))
def test_any_text_gives_a_config_or_a_config_error(text):
    try:
        config = parse_config_text(text, "fuzz")
    except ConfigError as exc:
        if "Error parsing text-format" in exc.message:
            assert exc.message.startswith("fuzz:") and "\n" not in exc.message
        assert exc.code in (StatusCode.INVALID_ARGUMENT, StatusCode.FAILED_PRECONDITION)
    else:
        assert isinstance(config, ServerConfig)
