"""tensorflow_model_server's command line → a frozen `Options`.

This module owns the flag table: every flag of TF Serving's
`model_servers/main.cc` with the same name, type and default as its
`Server::Options` struct (`model_servers/server.h`), plus edgeserve's own
flags. It parses and validates argv and nothing else: it never opens a file,
a socket or a model. Checks that depend on the filesystem or on features that
are not here yet (e.g. "model_base_path is required unless model_config_file")
belong to the server.

Syntax accepted (a superset of TF's parser, so every TF command line works):
`--name=value`, `-name=value`, `--name value`, `-name value`; booleans also as
a bare `--name` (true) and `--name=true|false|1|0`. TF's own parser only knows
`--name=value` and bare booleans, and merely *prints* unknown arguments before
starting anyway; edgeserve refuses them instead (one line on stderr, exit 2).
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, NoReturn

__all__ = [
    "FLAGS",
    "FlagSpec",
    "IGNORED_ON_CPU",
    "NOT_SUPPORTED_YET",
    "Options",
    "format_help",
    "parse_args",
]

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)
_TYPE_BOUNDS = {"int32": _INT32, "int64": _INT64}
_PORT = (0, 65535)
LOG_LEVELS = ("debug", "info", "warning", "error")
TRANSITION_POLICIES = ("auto", "availability", "resource")


def num_schedulable_cpus() -> int:
    """CPUs this process may run on — TF's port::NumSchedulableCPUs()."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


# Flags that parse today but whose feature arrives with a later issue: flag →
# the topic of that issue. Giving one a non-default value makes parse_args exit
# with "--X is not supported yet". Delete an entry when its feature lands.
NOT_SUPPORTED_YET: dict[str, str] = {
    "use_alts_credentials": "gRPC credentials",
    "platform_config_file": "platform config",
    "tensorflow_session_config_file": "session config",
    "thread_pool_factory_config_file": "thread pool factory",
}

# GPU/XLA flags that mean nothing on a CPU edge box: accepted, and listed in
# Options.ignored_flags when given so the server can say so in its log.
IGNORED_ON_CPU: frozenset[str] = frozenset({
    "per_process_gpu_memory_fraction",
    "xla_cpu_compilation_enabled",
    "xla_gpu_compilation_enabled",
})


@dataclass(frozen=True)
class FlagSpec:
    """One command-line flag: how to parse it, its default, its help line."""

    name: str
    type: str  # TF's type names: int32, int64, bool, string, float
    default: Any | Callable[[], Any]  # a callable for machine-dependent defaults
    help: str
    edgeserve: bool = False  # an edgeserve addition, not a TF Serving flag
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()

    def default_value(self) -> Any:
        return self.default() if callable(self.default) else self.default


def _four_threads_per_cpu() -> int:
    return 4 * num_schedulable_cpus()


_f = FlagSpec  # keeps the table below readable

# TF Serving's flags, in main.cc's order. Help texts are edgeserve's own words.
_TF_FLAGS: tuple[FlagSpec, ...] = (
    _f("port", "int32", 8500,
       "TCP port for the gRPC API; 0 disables it.", min=_PORT[0], max=_PORT[1]),
    _f("grpc_socket_path", "string", "",
       "If non-empty, also serve gRPC on this UNIX socket path."),
    _f("rest_api_port", "int32", 0,
       "TCP port for the HTTP/REST API; 0 disables it. Must differ from --port.",
       min=_PORT[0], max=_PORT[1]),
    _f("rest_api_num_threads", "int32", _four_threads_per_cpu,
       "REST worker threads in TF Serving; accepted and ignored "
       "(edgeserve serves REST from one event loop).", min=1),
    _f("rest_api_timeout_in_ms", "int32", 30000,
       "Deadline for one REST call; <= 0 means no deadline."),
    _f("rest_api_enable_cors_support", "bool", False,
       "Add CORS headers to REST responses."),
    _f("enable_batching", "bool", False,
       "Merge concurrent requests into batches."),
    _f("allow_version_labels_for_unavailable_models", "bool", False,
       "Allow assigning a version label to a version that is not loaded yet."),
    _f("batching_parameters_file", "string", "",
       "Text BatchingParameters proto overriding the default batching "
       "parameters (needs --enable_batching)."),
    _f("enable_per_model_batching_parameters", "bool", False,
       "Read batching parameters from batching_params.pbtxt in each "
       "SavedModel directory (needs --enable_batching)."),
    _f("model_config_file", "string", "",
       "Text ModelServerConfig proto listing the models to serve; overrides "
       "--model_name and --model_base_path."),
    _f("model_config_file_poll_wait_seconds", "int32", 0,
       "Seconds between re-reads of --model_config_file; 0 reads it once."),
    _f("model_name", "string", "default",
       "Name of the single model to serve (ignored with --model_config_file)."),
    _f("model_base_path", "string", "",
       "Directory holding the model's numbered version directories; required "
       "unless --model_config_file is given."),
    _f("num_load_threads", "int32", 0,
       "Threads loading servables; 0 loads them one at a time.", min=0),
    _f("num_unload_threads", "int32", 0,
       "Threads unloading servables; 0 unloads them one at a time.", min=0),
    _f("max_num_load_retries", "int32", 5,
       "Retries after a failed load before giving up; 0 tries once.", min=0),
    _f("load_retry_interval_micros", "int64", 60_000_000,
       "Microseconds between load retries; negative retries immediately."),
    _f("file_system_poll_wait_seconds", "int32", 1,
       "Seconds between polls for new model versions; 0 polls once, "
       "negative never polls (testing only)."),
    _f("flush_filesystem_caches", "bool", True,
       "Drop filesystem caches after loading servables to save memory."),
    _f("tensorflow_session_parallelism", "int64", 0,
       "Threads for both of a session's thread pools; 0 = automatic."),
    _f("tensorflow_session_config_file", "string", "",
       "Text ConfigProto proto for TensorFlow sessions."),
    _f("tensorflow_intra_op_parallelism", "int64", 0,
       "Threads used inside one op; 0 = automatic."),
    _f("tensorflow_inter_op_parallelism", "int64", 0,
       "Ops that may run at the same time; 0 = automatic."),
    _f("use_alts_credentials", "bool", False,
       "Secure gRPC with Google ALTS credentials."),
    _f("ssl_config_file", "string", "",
       "Text SSLConfig proto; if given, gRPC uses TLS."),
    _f("platform_config_file", "string", "",
       "Text PlatformConfigMap proto replacing the TensorFlow platform config."),
    _f("per_process_gpu_memory_fraction", "float", 0.0,
       "Share of GPU memory to reserve (GPU builds only)."),
    _f("saved_model_tags", "string", "serve",
       "Comma-separated tags selecting the MetaGraphDef to load."),
    _f("grpc_channel_arguments", "string", "",
       "Comma-separated key=value gRPC server channel arguments."),
    _f("grpc_max_threads", "int32", _four_threads_per_cpu,
       "Upper bound on gRPC server threads.", min=1),
    _f("enable_model_warmup", "bool", True,
       "Replay assets.extra/tf_serving_warmup_requests at load time."),
    _f("num_request_iterations_for_warmup", "int32", 0,
       "How often each warmup request is replayed; used only if > 0."),
    _f("version", "bool", False,
       "Print the server and TensorFlow versions and exit."),
    _f("monitoring_config_file", "string", "",
       "Text MonitoringConfig proto (Prometheus endpoint)."),
    _f("remove_unused_fields_from_bundle_metagraph", "bool", True,
       "Drop MetaGraphDef fields not needed for serving to save memory."),
    _f("prefer_tflite_model", "bool", False,
       "Serve model.tflite from a version directory instead of saved_model.pb "
       "when present."),
    _f("num_tflite_pools", "int32", num_schedulable_cpus,
       "TFLite interpreter pools per model.", min=1),
    _f("num_tflite_interpreters_per_pool", "int32", 1,
       "TFLite interpreters in each pool.", min=1),
    _f("enable_signature_method_name_check", "bool", False,
       "Require the classify/regress method name on the SignatureDef "
       "(leave off for TF2 models)."),
    _f("xla_cpu_compilation_enabled", "bool", False,
       "Enable the XLA:CPU JIT."),
    _f("xla_gpu_compilation_enabled", "bool", False,
       "Enable the XLA:CPU and XLA:GPU JITs."),
    _f("enable_profiler", "bool", True,
       "Offer the TensorFlow profiler service."),
    _f("thread_pool_factory_config_file", "string", "",
       "Text ThreadPoolConfig proto for the inference thread pools."),
    _f("mixed_precision", "string", "",
       "Automatic mixed precision mode; TF Serving knows only 'bfloat16'."),
    _f("skip_initialize_tpu", "bool", False,
       "Do not initialize a TPU system at start (TPU builds only)."),
    # On by default here (TF Serving: off): edgeserve's health answers reflect real
    # model states, so probes can rely on them.
    _f("enable_grpc_healthcheck_service", "bool", True,
       "Offer the standard grpc.health.v1 Health service (per model name, "
       "and \"\" for the server)."),
    _f("enable_serialization_as_tensor_content", "bool", False,
       "Put Predict response tensors in tensor_content bytes instead of "
       "typed value fields."),
)

_EDGESERVE_FLAGS: tuple[FlagSpec, ...] = (
    _f("bind_address", "string", "0.0.0.0",
       "Address the gRPC and REST ports listen on (TF Serving: all "
       "interfaces); 127.0.0.1 keeps them local to the box.",
       edgeserve=True),
    _f("rest_api_max_request_bytes", "int64", 16 * 1024 * 1024,
       "Largest REST request body, after gzip inflation; larger gets 413.",
       edgeserve=True, min=1),
    _f("rest_api_max_header_bytes", "int32", 64 * 1024,
       "Largest request line plus headers; larger gets 431.",
       edgeserve=True, min=1024),
    _f("rest_api_header_timeout_in_ms", "int32", 10000,
       "Time to receive a whole request (headers and body) once its first "
       "byte arrived; exceeded gets 408 and the connection is closed.",
       edgeserve=True, min=1),
    _f("rest_api_idle_timeout_in_ms", "int32", 60000,
       "Idle keep-alive connections are closed after this.",
       edgeserve=True, min=1),
    _f("rest_api_max_connections", "int32", 1024,
       "Open HTTP connections at most; one more is answered 503 and closed "
       "(0 = no limit).",
       edgeserve=True, min=0),
    _f("grpc_max_connections", "int32", 1024,
       "Open gRPC connections at most (--port and --grpc_socket_path together); "
       "one more is sent GOAWAY with the reason and closed (0 = no limit).",
       edgeserve=True, min=0),
    _f("max_pending_requests", "int32", 1024,
       "Inference requests (REST and gRPC) waiting at once for a worker thread, a "
       "batch or a version; one more is answered 503 / UNAVAILABLE at once "
       "(0 = no limit).",
       edgeserve=True, min=0),
    _f("request_log_max_file_bytes", "int64", 16 * 1024 * 1024,
       "Request logging (a model's logging_config): a log file is closed and a new "
       "one started once the next batch of records would take it past this size.",
       edgeserve=True, min=4096),
    _f("request_log_max_total_bytes", "int64", 256 * 1024 * 1024,
       "Request logging: the request log files of every configured filename_prefix "
       "together take at most this much disk; at the cap logging pauses (a log line "
       "and a metric say so) and serving goes on (0 = no cap but the disk).",
       edgeserve=True, min=0),
    _f("enable_status_page", "bool", True,
       "Serve a status page at GET / on --rest_api_port: models, versions, errors, "
       "labels, memory, requests/s, latency and event-loop lag, refreshed every few "
       "seconds. Turns metrics recording on; the Prometheus page is then served at "
       "/monitoring/prometheus/metrics unless --monitoring_config_file names a path.",
       edgeserve=True),
    _f("inline_run_threshold_micros", "int32", 1000,
       "A signature whose recent p99 run time stays below this runs inline on "
       "the event loop instead of a worker thread; 0 = always the worker.",
       edgeserve=True, min=0),
    _f("shutdown_grace_period_seconds", "float", 10.0,
       "On SIGTERM/SIGINT, how long in-flight requests may take to finish.",
       edgeserve=True, min=0),
    _f("log_level", "string", "info",
       "Least severe log level written: " + ", ".join(LOG_LEVELS) + ".",
       edgeserve=True, choices=LOG_LEVELS),
    _f("model_repository", "string", "",
       "Serve every sub-folder of this folder as a model named after it "
       "(latest version); folders are picked up and dropped on each poll. "
       "Combines with --model_config_file, whose entries win.",
       edgeserve=True),
    # TF Serving has this as a ServerCore option only (default: no limit); here
    # it is a flag so a small box can say how much RAM its models may take.
    _f("total_model_memory_limit_bytes", "int64", 0,
       "RAM all loaded model versions together may take (0 = no limit). A "
       "version's cost is estimated as 1.2x its files' size before loading, then "
       "replaced by the RSS its load added; a load that would not fit is refused "
       "with its reason in GetModelStatus.",
       edgeserve=True, min=0),
    _f("adaptive_batching", "bool", True,
       "With --enable_batching: a batch starts as soon as a batch thread is free "
       "(a lone request runs at once); false = TF Serving's rule, a batch short "
       "of max_batch_size waits batch_timeout_micros.",
       edgeserve=True),
    _f("version_transition_policy", "string", "auto",
       "How a model moves to a new version: availability (load the new, then "
       "unload the old), resource (unload the old, then load the new; requests "
       "in the gap wait for the new one), auto (availability when the memory "
       "limit holds both versions, resource otherwise).",
       edgeserve=True, choices=TRANSITION_POLICIES),
)

FLAGS: tuple[FlagSpec, ...] = _TF_FLAGS + _EDGESERVE_FLAGS
_BY_NAME: dict[str, FlagSpec] = {f.name: f for f in FLAGS}
_HELP_NAMES = ("help", "h")


def _default(name: str) -> Any:
    spec = _BY_NAME[name]
    if callable(spec.default):
        return field(default_factory=spec.default)
    return spec.default


@dataclass(frozen=True)
class Options:
    """Every flag's value; field names and defaults are TF Serving's."""

    # --- TF Serving flags ---
    port: int = _default("port")
    grpc_socket_path: str = _default("grpc_socket_path")
    rest_api_port: int = _default("rest_api_port")
    rest_api_num_threads: int = _default("rest_api_num_threads")
    rest_api_timeout_in_ms: int = _default("rest_api_timeout_in_ms")
    rest_api_enable_cors_support: bool = _default("rest_api_enable_cors_support")
    enable_batching: bool = _default("enable_batching")
    allow_version_labels_for_unavailable_models: bool = _default(
        "allow_version_labels_for_unavailable_models")
    batching_parameters_file: str = _default("batching_parameters_file")
    enable_per_model_batching_parameters: bool = _default(
        "enable_per_model_batching_parameters")
    model_config_file: str = _default("model_config_file")
    model_config_file_poll_wait_seconds: int = _default(
        "model_config_file_poll_wait_seconds")
    model_name: str = _default("model_name")
    model_base_path: str = _default("model_base_path")
    num_load_threads: int = _default("num_load_threads")
    num_unload_threads: int = _default("num_unload_threads")
    max_num_load_retries: int = _default("max_num_load_retries")
    load_retry_interval_micros: int = _default("load_retry_interval_micros")
    file_system_poll_wait_seconds: int = _default("file_system_poll_wait_seconds")
    flush_filesystem_caches: bool = _default("flush_filesystem_caches")
    tensorflow_session_parallelism: int = _default("tensorflow_session_parallelism")
    tensorflow_session_config_file: str = _default("tensorflow_session_config_file")
    tensorflow_intra_op_parallelism: int = _default(
        "tensorflow_intra_op_parallelism")
    tensorflow_inter_op_parallelism: int = _default(
        "tensorflow_inter_op_parallelism")
    use_alts_credentials: bool = _default("use_alts_credentials")
    ssl_config_file: str = _default("ssl_config_file")
    platform_config_file: str = _default("platform_config_file")
    per_process_gpu_memory_fraction: float = _default(
        "per_process_gpu_memory_fraction")
    saved_model_tags: str = _default("saved_model_tags")
    grpc_channel_arguments: str = _default("grpc_channel_arguments")
    grpc_max_threads: int = _default("grpc_max_threads")
    enable_model_warmup: bool = _default("enable_model_warmup")
    num_request_iterations_for_warmup: int = _default(
        "num_request_iterations_for_warmup")
    version: bool = _default("version")
    monitoring_config_file: str = _default("monitoring_config_file")
    remove_unused_fields_from_bundle_metagraph: bool = _default(
        "remove_unused_fields_from_bundle_metagraph")
    prefer_tflite_model: bool = _default("prefer_tflite_model")
    num_tflite_pools: int = _default("num_tflite_pools")
    num_tflite_interpreters_per_pool: int = _default(
        "num_tflite_interpreters_per_pool")
    enable_signature_method_name_check: bool = _default(
        "enable_signature_method_name_check")
    xla_cpu_compilation_enabled: bool = _default("xla_cpu_compilation_enabled")
    xla_gpu_compilation_enabled: bool = _default("xla_gpu_compilation_enabled")
    enable_profiler: bool = _default("enable_profiler")
    thread_pool_factory_config_file: str = _default(
        "thread_pool_factory_config_file")
    mixed_precision: str = _default("mixed_precision")
    skip_initialize_tpu: bool = _default("skip_initialize_tpu")
    enable_grpc_healthcheck_service: bool = _default(
        "enable_grpc_healthcheck_service")
    enable_serialization_as_tensor_content: bool = _default(
        "enable_serialization_as_tensor_content")

    # --- edgeserve's own flags ---
    bind_address: str = _default("bind_address")
    rest_api_max_request_bytes: int = _default("rest_api_max_request_bytes")
    rest_api_max_header_bytes: int = _default("rest_api_max_header_bytes")
    rest_api_header_timeout_in_ms: int = _default("rest_api_header_timeout_in_ms")
    rest_api_idle_timeout_in_ms: int = _default("rest_api_idle_timeout_in_ms")
    rest_api_max_connections: int = _default("rest_api_max_connections")
    grpc_max_connections: int = _default("grpc_max_connections")
    max_pending_requests: int = _default("max_pending_requests")
    request_log_max_file_bytes: int = _default("request_log_max_file_bytes")
    request_log_max_total_bytes: int = _default("request_log_max_total_bytes")
    enable_status_page: bool = _default("enable_status_page")
    inline_run_threshold_micros: int = _default("inline_run_threshold_micros")
    shutdown_grace_period_seconds: float = _default(
        "shutdown_grace_period_seconds")
    log_level: str = _default("log_level")
    model_repository: str = _default("model_repository")
    total_model_memory_limit_bytes: int = _default("total_model_memory_limit_bytes")
    version_transition_policy: str = _default("version_transition_policy")
    adaptive_batching: bool = _default("adaptive_batching")

    # --- what the command line said, for the server's log ---
    # Flags given that this CPU build ignores (IGNORED_ON_CPU), in argv order.
    ignored_flags: tuple[str, ...] = ()
    # Every flag given on the command line, in argv order, without repeats.
    given_flags: tuple[str, ...] = ()

    def session_threads(self) -> tuple[int, int]:
        """(intra_op, inter_op) threads, combined as TF Serving's server.cc does.

        Either explicit pool flag > 0 wins over tensorflow_session_parallelism,
        and the other explicit one is used as given (0 = automatic); otherwise
        tensorflow_session_parallelism sizes both. 0 means "let TF decide";
        a negative inter_op value is TF's "run ops on the caller's thread".
        """
        intra = self.tensorflow_intra_op_parallelism
        inter = self.tensorflow_inter_op_parallelism
        if intra > 0 or inter > 0:
            return intra, inter
        return self.tensorflow_session_parallelism, self.tensorflow_session_parallelism

    def saved_model_tag_set(self) -> set[str]:
        """The MetaGraphDef tags to load; {"serve"} when none are given."""
        tags = {t.strip() for t in self.saved_model_tags.split(",")}
        tags.discard("")
        return tags or {"serve"}


_OPTION_FIELDS = {f.name for f in dataclasses.fields(Options)}
assert set(_BY_NAME) <= _OPTION_FIELDS, set(_BY_NAME) - _OPTION_FIELDS


def _fail(message: str) -> NoReturn:
    print(f"edgeserve: {message}", file=sys.stderr)
    sys.exit(2)


_INT_RE = re.compile(r"[+-]?[0-9]+")
_FLOAT_RE = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = ("true", "1")
_FALSE = ("false", "0")


def _convert(spec: FlagSpec, raw: str) -> Any:
    flag = f"--{spec.name}"
    if spec.type == "bool":
        low = raw.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        _fail(f"{flag}: expected true or false, got {raw!r}")
    if spec.type in ("int32", "int64"):
        if not _INT_RE.fullmatch(raw):
            _fail(f"{flag}: expected an integer, got {raw!r}")
        value: Any = int(raw)
    elif spec.type == "float":
        if not _FLOAT_RE.fullmatch(raw) or not math.isfinite(float(raw)):
            _fail(f"{flag}: expected a number, got {raw!r}")
        value = float(raw)
    else:
        if spec.choices:
            if raw.lower() not in spec.choices:
                _fail(f"{flag}: expected one of {', '.join(spec.choices)}, "
                      f"got {raw!r}")
            return raw.lower()
        return raw
    bounds = _TYPE_BOUNDS.get(spec.type)
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        _fail(f"{flag}: out of range for {spec.type}, got {raw}")
    lo, hi = spec.min, spec.max
    if lo is not None and hi is not None and not lo <= value <= hi:
        _fail(f"{flag}: must be between {lo:g} and {hi:g}, got {raw}")
    if lo is not None and value < lo:
        _fail(f"{flag}: must be >= {lo:g}, got {raw}")
    if hi is not None and value > hi:
        _fail(f"{flag}: must be <= {hi:g}, got {raw}")
    return value


def _flag_name(arg: str) -> tuple[str, str | None] | None:
    """'--name=v' / '-name' → (name, value or None); None if not flag-shaped."""
    if arg.startswith("--"):
        body = arg[2:]
    elif arg.startswith("-") and len(arg) > 1:
        body = arg[1:]
    else:
        return None
    name, eq, value = body.partition("=")
    return name, (value if eq else None)


def _looks_like_flag(arg: str) -> bool:
    parsed = _flag_name(arg)
    return parsed is not None and (parsed[0] in _BY_NAME or parsed[0] in _HELP_NAMES)


def _unknown(name: str) -> NoReturn:
    close = difflib.get_close_matches(name, list(_BY_NAME), n=1)
    hint = f" (did you mean --{close[0]}?)" if close else ""
    _fail(f"unknown flag --{name}{hint}")


def parse_args(argv: list[str]) -> Options:
    """Parse argv (without the program name) into Options, or exit.

    Exits 0 after printing the help for --help; exits 2 with one line on stderr
    for an unknown flag, a missing or bad value, a positional argument, a
    not-yet-supported feature, or a flag combination TF Serving refuses.
    """
    argv = list(argv)
    end = argv.index("--") if "--" in argv else len(argv)
    for arg in argv[:end]:
        parsed = _flag_name(arg)
        if parsed is not None and parsed[0] in _HELP_NAMES:
            sys.stdout.write(format_help())
            sys.exit(0)

    values: dict[str, Any] = {}
    given: dict[str, None] = {}  # insertion-ordered set
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            if i < len(argv):
                _fail(f"unexpected argument {argv[i]!r} after '--'")
            break
        parsed = _flag_name(arg)
        if parsed is None:
            _fail(f"unexpected argument {arg!r} "
                  f"(flags are written --name=value)")
        name, raw = parsed
        spec = _BY_NAME.get(name)
        if spec is None:
            _unknown(name)
        if raw is None:
            if spec.type == "bool":
                raw = "true"
            elif i < len(argv) and not _looks_like_flag(argv[i]) and argv[i] != "--":
                raw = argv[i]
                i += 1
            else:
                _fail(f"--{name}: missing value (write --{name}=VALUE)")
        values[name] = _convert(spec, raw)
        given[name] = None

    options = Options(
        **values,
        ignored_flags=tuple(n for n in given if n in IGNORED_ON_CPU),
        given_flags=tuple(given),
    )
    if options.version:
        # TF Serving prints the version before it looks at how flags combine.
        return options
    _check_combinations(options)
    return options


def _check_combinations(options: Options) -> None:
    defaults = Options()
    for name in NOT_SUPPORTED_YET:
        if getattr(options, name) != getattr(defaults, name):
            _fail(f"--{name} is not supported yet")
    if options.port != 0 and options.port == options.rest_api_port:
        # TF Serving logs this and silently skips REST; a drop-in is louder.
        _fail(f"--rest_api_port: cannot be the same as --port ({options.port}); "
              "use a different port for the HTTP/REST API")
    if (options.tensorflow_intra_op_parallelism > 0
            and options.tensorflow_inter_op_parallelism > 0
            and options.tensorflow_session_parallelism > 0):
        _fail("--tensorflow_session_parallelism: give either it or "
              "--tensorflow_intra_op_parallelism and "
              "--tensorflow_inter_op_parallelism, not all three")


def _display_default(spec: FlagSpec) -> str:
    value = spec.default_value()
    if spec.type == "bool":
        return "true" if value else "false"
    if spec.type == "string":
        return f'"{value}"'
    if spec.type == "float":
        return f"{value:g}"
    return str(value)


def _status(spec: FlagSpec) -> str:
    if spec.name in NOT_SUPPORTED_YET:
        return f" [not supported yet: {NOT_SUPPORTED_YET[spec.name]}]"
    if spec.name in IGNORED_ON_CPU:
        return " [ignored on this CPU build]"
    return ""


def format_help() -> str:
    """The --help text: every flag with its type, default and one line."""
    lines = [
        "usage: edgeserve [--flag=value ...]",
        "",
        "A drop-in tensorflow_model_server. Flags take the form --name=value;",
        "-name=value and '--name value' work too; booleans also as a bare --name.",
        "",
    ]
    sections = (
        ("TensorFlow Serving flags:", _TF_FLAGS),
        ("edgeserve additions:", _EDGESERVE_FLAGS),
    )
    for title, specs in sections:
        lines.append(title)
        for spec in specs:
            left = f"--{spec.name}={_display_default(spec)}"
            lines.append(f"  {left:<52} {spec.type:<7} {spec.help}{_status(spec)}")
        lines.append("")
    lines.append(f"  {'--help':<52} {'':<7} Print this help and exit.")
    return "\n".join(lines) + "\n"
