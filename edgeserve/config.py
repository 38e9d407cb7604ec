"""TF Serving's ModelServerConfig (a text proto file's text or the message) → validated dataclasses.

Pure functions: nothing here reads a file, starts a source or touches the manager. The
caller reads the text, parses it here and applies the result. The checks, their order
and their messages are TF Serving's (model_servers/server_core.cc: ReloadConfig,
ValidateModelConfigList, GetPlatform, ValidateNoModelsChangePlatforms,
UpdateModelVersionLabelMap, CreateStoragePathRoutes), so a config TF Serving refuses
is refused here with the same words and status code.

An empty ModelServerConfig (neither `model_config_list` nor `custom_model_config`: an
empty or comments-only file) is TF Serving's CONFIG_NOT_SET. It is returned as a
`ServerConfig` with `not_set=True` and no models. TF Serving takes no action for it
as the first config ("Taking no action for empty config") and refuses it with
FAILED_PRECONDITION once a model list is in force; `check_transition` does the latter,
so a caller that forgets the flag still cannot unload every model with a stray file.

TF Serving's message classes come from `messages` (the one place they are built; it
never imports TensorFlow), and only inside `parse_config_text`: importing this module
costs nothing, and `single_model`, `check_transition` and `check_labels` never build
them.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

from .errors import ServingError, StatusCode
from .sources import VersionPolicy

TENSORFLOW_PLATFORM = "tensorflow"  # TF Serving's kTensorFlowModelPlatform
TFLITE_PLATFORM = "tflite"
SUPPORTED_PLATFORMS = frozenset({TENSORFLOW_PLATFORM, TFLITE_PLATFORM})

# ModelType (deprecated) enum numbers of model_server_config.proto.
_MODEL_TYPE_UNSPECIFIED = 0
_MODEL_TYPE_TENSORFLOW = 1

# tensorflow/core/platform/path.cc ParseURI: a scheme is [a-zA-Z][0-9a-zA-Z.]+ then "://"
# (Scanner::Many is one-or-more, so a one-letter scheme is not a scheme).
_URI_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9.]+://")

_MESSAGE_TYPE = "tensorflow.serving.ModelServerConfig"


class ConfigError(ServingError, ValueError):
    """A config that cannot be used: one line, with TF Serving's status code.

    `code` is INVALID_ARGUMENT unless TF Serving answers FAILED_PRECONDITION (a label
    on a version that is not available; a transition away from a model list).
    """

    def __init__(self, message: str, code: StatusCode = StatusCode.INVALID_ARGUMENT) -> None:
        # One line even when it quotes a name, path or platform holding a line break
        # (a text proto's "\n"): the message goes to logs and to systemd's STATUS=,
        # where a line break would start a line of its own.
        if "\n" in message or "\r" in message:
            message = message.replace("\r", "\\r").replace("\n", "\\n")
        super().__init__(code, message)

    def __repr__(self) -> str:
        return f"ConfigError({self.code.name}, {self.message!r})"


# The one LogCollector type edgeserve has: TFRecord files of PredictionLog records.
# TF Serving's open-source build registers no LogCollector at all (a logging_config
# is refused there with "No request-logger-creator provided."); an empty type means
# this one.
TFRECORD_LOG_COLLECTOR = "tfrecord"


@dataclass(frozen=True)
class LoggingConfig:
    """A model's logging_config (logging_config.proto), checked: where its sampled
    requests go and how many of them."""

    filename_prefix: str  # absolute; files are <prefix>.<UTC time>.<n>.tfrecord
    sampling_rate: float  # in [0, 1]
    sampling_config: bytes = b""  # the SamplingConfig as given, for LogMetadata


@dataclass(frozen=True)
class ModelConfig:
    name: str
    base_path: str
    platform: str  # "tensorflow" or "tflite"
    version_policy: VersionPolicy
    version_labels: tuple[tuple[str, int], ...] = ()  # (label, version), sorted by label
    logging: LoggingConfig | None = None  # request logging, when configured


@dataclass(frozen=True)
class ServerConfig:
    models: tuple[ModelConfig, ...]  # in the file's order
    not_set: bool = False  # an empty ModelServerConfig (CONFIG_NOT_SET); models is ()

    def model(self, name: str) -> ModelConfig | None:
        for model in self.models:
            if model.name == name:
                return model
        return None


class _Entry(NamedTuple):
    """One ModelConfig as given, before the checks."""

    name: str
    base_path: str
    model_type: int
    model_platform: str
    version_policy: VersionPolicy
    version_labels: tuple[tuple[str, int], ...]
    logging: LoggingConfig | None = None


# ---- parsing --------------------------------------------------------------------------


def parse_config_text(text: str, source: str = "<config>", *,
                      previous: ServerConfig | None = None) -> ServerConfig:
    """Parses a ModelServerConfig text proto (what --model_config_file holds).

    A syntax error becomes ConfigError("<source>:<line>:<column>: Error parsing
    text-format tensorflow.serving.ModelServerConfig: <protobuf's message>"): the phrase
    TF Serving's C++ parser logs (and its tests look for), with the location kept.
    `previous`: see `from_proto`.
    """
    from google.protobuf import text_format

    from . import messages  # on first use: building the classes takes ~20 ms
    from .text_proto import parse

    message = messages.ModelServerConfig()
    try:
        parse(text, message)
    except text_format.ParseError as exc:
        raise ConfigError(_parse_error_text(exc, source)) from None
    return from_proto(message, previous=previous)


def _parse_error_text(exc: Any, source: str) -> str:
    line, column = exc.GetLine(), exc.GetColumn()
    detail = str(exc)
    where = source
    if line is not None:
        location = f"{line}:{column}" if column is not None else f"{line}"
        detail = detail.removeprefix(f"{location} : ")
        where = f"{source}:{location}"
    detail = " ".join(detail.split("\n"))  # one line, whatever the offending token held
    return f"{where}: Error parsing text-format {_MESSAGE_TYPE}: {detail}"


def from_proto(message: Any, *, previous: ServerConfig | None = None) -> ServerConfig:
    """The ModelServerConfig message (a parsed file, or HandleReloadConfigRequest's config).

    With `previous` (the config in force) the transition checks run too, in TF
    Serving's order (ReloadConfig: the config case, then the list's own checks, then
    platform changes, then unsupported platforms); without it the caller runs
    `check_transition` itself. Labels need the serving state: `check_labels`.
    """
    case = message.WhichOneof("config")
    if previous is not None:
        _check_case_transition(previous, new_is_list=case == "model_config_list")
    if case is None:
        return ServerConfig(models=(), not_set=True)  # "Taking no action for empty config."
    if case != "model_config_list":
        # server.cc's custom model config loader: LOG(FATAL) with this text.
        raise ConfigError("ModelServer does not yet support custom model config.")
    entries = [
        _Entry(
            name=m.name,
            base_path=m.base_path,
            model_type=int(m.model_type),
            model_platform=m.model_platform,
            version_policy=_version_policy(m.model_version_policy),
            version_labels=tuple(sorted(m.version_labels.items())),
            logging=_logging_config(m.name, m.logging_config) if m.HasField("logging_config") else None,
        )
        for m in message.model_config_list.config
    ]
    return _build(entries, previous)


def from_reload_config_request(message: Any, *, previous: ServerConfig | None = None) -> ServerConfig:
    """ReloadConfigRequest.config: model_service_impl.cc HandleReloadConfigRequest takes
    a model list only (an empty or custom config is INVALID_ARGUMENT there, before
    ReloadConfig), then goes on as `from_proto`."""
    if message.WhichOneof("config") != "model_config_list":
        raise ConfigError("ServerModelConfig type not supported by HandleReloadConfigRequest. "
                          "Only ModelConfigList is currently supported")
    return from_proto(message, previous=previous)


def _version_policy(policy: Any) -> VersionPolicy:
    """ServableVersionPolicy as FileSystemStoragePathSource reads it."""
    choice = policy.WhichOneof("policy_choice")
    if choice == "all":
        return VersionPolicy(kind="all")
    if choice == "specific":
        # An empty list is legal: TF Serving warns "No specific versions requested for
        # servable X." on every poll and aspires nothing.
        return VersionPolicy(kind="specific", versions=frozenset(policy.specific.versions))
    # Unset or latest{}: the latest max(num_versions, 1) (AspireLatestVersions).
    return VersionPolicy(kind="latest", num_versions=max(policy.latest.num_versions, 1))


def _logging_config(model_name: str, config: Any) -> LoggingConfig:
    """A logging_config, checked whole: an unknown collector type is NOT_FOUND with
    LogCollector::Create's text; a missing or relative prefix and a rate outside
    [0, 1] are INVALID_ARGUMENT. Whether the prefix's folder can be written is the
    file system's business (`request_log.folder_problem`), not this pure check."""
    collector = config.log_collector_config
    if collector.type not in ("", TFRECORD_LOG_COLLECTOR):
        raise ConfigError(f"Cannot find LogCollector::Factory for type: {collector.type}", StatusCode.NOT_FOUND)
    prefix = collector.filename_prefix
    where = f"logging_config of model {model_name}"
    if not prefix:
        raise ConfigError(f"{where}: log_collector_config.filename_prefix is empty; "
                          "give the path the request log files start with, such as /var/log/edgeserve/" + model_name)
    if not os.path.isabs(prefix) or _URI_SCHEME.match(prefix) or prefix.endswith("/"):
        raise ConfigError(f"{where}: log_collector_config.filename_prefix must be an absolute local path "
                          f"ending in a file name part, such as /var/log/edgeserve/{model_name}; got {prefix}")
    sampling = config.sampling_config
    rate = sampling.sampling_rate
    # RequestLogger's rule: the first per-task rule that matches this task replaces
    # the rate. edgeserve is one task with no data centre (dc "", task_index 0).
    for rule in sampling.per_task_sampling_configs:
        if not rule.dc and (not rule.HasField("task_index") or rule.task_index == 0):
            rate = rule.sampling_rate
            break
    rates = [sampling.sampling_rate] + [rule.sampling_rate for rule in sampling.per_task_sampling_configs]
    for value in rates:
        if math.isnan(value) or not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where}: sampling_rate must be in [0, 1]; got {value}")
    return LoggingConfig(prefix, rate, sampling.SerializeToString(deterministic=True))


def single_model(name: str, base_path: str) -> ServerConfig:
    """--model_name/--model_base_path: server.cc's BuildSingleModelConfig, then the
    same checks a config file gets (a relative base path is refused)."""
    entry = _Entry(name, base_path, _MODEL_TYPE_UNSPECIFIED, TENSORFLOW_PLATFORM, VersionPolicy(), ())
    return _build([entry], None)


def _build(entries: list[_Entry], previous: ServerConfig | None) -> ServerConfig:
    _validate_model_config_list(entries)
    models = tuple(
        ModelConfig(
            name=e.name,
            base_path=e.base_path,
            platform=_platform(e),
            version_policy=e.version_policy,
            version_labels=e.version_labels,
            logging=e.logging,
        )
        for e in entries
    )
    config = ServerConfig(models=models)
    if previous is not None:
        check_transition(previous, config)
    for model in models:
        _check_platform_supported(model)
    return config


# ---- TF Serving's checks ----------------------------------------------------------------


def _validate_model_config_list(entries: Iterable[_Entry]) -> None:
    """ValidateModelConfigList (without --model_config_list_root_dir, which edgeserve
    does not have): unique names, then absolute base paths. An empty name is refused
    too; TF Serving would serve a model no request can name."""
    entries = list(entries)
    seen: set[str] = set()
    for entry in entries:
        if not entry.name:
            raise ConfigError(
                "Illegal to list a model with an empty name in config list; "
                f"got base_path()={entry.base_path}")
        if entry.name in seen:
            raise ConfigError(f"Illegal to list model {entry.name} multiple times in config list")
        seen.add(entry.name)
    for entry in entries:
        if uri_is_relative_path(entry.base_path):
            raise ConfigError(
                f"Expected model {entry.name} to have an absolute path or URI; "
                f"got base_path()={entry.base_path}")


def uri_is_relative_path(uri: str) -> bool:
    """server_core.cc UriIsRelativePath: no scheme://host and no leading "/"."""
    if _URI_SCHEME.match(uri):
        return False  # a scheme (and maybe a host): never relative
    return not uri.startswith("/")


def _platform(entry: _Entry) -> str:
    """GetPlatform: model_platform, or the deprecated model_type, never both."""
    if entry.model_type != _MODEL_TYPE_UNSPECIFIED:
        if entry.model_platform:
            raise ConfigError(
                "Illegal setting both ModelServerConfig::model_type (deprecated) and "
                f"ModelServerConfig::model_platform, model name is {entry.name}")
        if entry.model_type != _MODEL_TYPE_TENSORFLOW:
            raise ConfigError(f"ModelServerConfig::model_type choice {entry.model_type} not supported.")
        return TENSORFLOW_PLATFORM
    if not entry.model_platform:
        raise ConfigError(
            "Illegal setting neither ModelServerConfig::model_type (deprecated) nor "
            f"ModelServerConfig::model_platform, model name is {entry.name}")
    return entry.model_platform


def _check_platform_supported(model: ModelConfig) -> None:
    """CreateStoragePathRoutes: a platform with no source adapter is refused."""
    if model.platform in SUPPORTED_PLATFORMS:
        return
    raise ConfigError(f"Model {model.name} requests unsupported platform {model.platform}")


_NO_TRANSITION = ("Cannot transition to requested config. It is only legal to transition "
                  "from one ModelConfigList to another.")


def _check_case_transition(old: ServerConfig | None, *, new_is_list: bool) -> None:
    # ReloadConfig: once a model list is in force, only another model list is accepted
    # (an empty or custom config: FAILED_PRECONDITION). A custom config is never in
    # force here, so ReloadConfig's "the same config" exception is moot.
    if old is not None and not old.not_set and not new_is_list:
        raise ConfigError(_NO_TRANSITION, StatusCode.FAILED_PRECONDITION)


def check_transition(old: ServerConfig | None, new: ServerConfig) -> None:
    """May `new` replace `old` (None or not_set: nothing in force yet)?

    ReloadConfig's rule (an empty config after a model list: FAILED_PRECONDITION) and
    ValidateNoModelsChangePlatforms (a model keeps its platform: INVALID_ARGUMENT).
    """
    _check_case_transition(old, new_is_list=not new.not_set)
    if old is None:
        return
    old_platforms = {m.name: m.platform for m in old.models}
    for model in new.models:
        old_platform = old_platforms.get(model.name)
        if old_platform is not None and old_platform != model.platform:
            raise ConfigError(
                f"Illegal to change a model's platform. For model {model.name} platform was "
                f"{old_platform} and new platform requested is {model.platform}")


def check_labels(
    config: ServerConfig,
    available: Callable[[str, int], bool],
    current_label: Callable[[str, str], int | None],
    allow_unavailable: bool,
) -> None:
    """UpdateModelVersionLabelMap's rule: a label must name an AVAILABLE version.

    With --allow_version_labels_for_unavailable_models a label may name any version
    (even one not loaded yet) unless it currently names a different version: a label
    is never moved onto a version that cannot serve. `available(name, version)`: is
    that version AVAILABLE now; `current_label(name, label)`: the version the label
    names now, or None. Raises ConfigError with code FAILED_PRECONDITION.
    """
    for model in config.models:
        for label, version in model.version_labels:
            if allow_unavailable:
                existing = current_label(model.name, label)
                if existing is None or existing == version:
                    continue
            if not available(model.name, version):
                raise ConfigError(
                    f"Request to assign label to version {version} of model {model.name}, "
                    "which is not currently available for inference",
                    StatusCode.FAILED_PRECONDITION)
