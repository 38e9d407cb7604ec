"""The command line: TF Serving's flags, names and defaults, and how bad input fails."""
from __future__ import annotations

import dataclasses
import pathlib
import re
import subprocess

import pytest

from edgeserve import cli
from edgeserve.cli import FLAGS, IGNORED_ON_CPU, NOT_SUPPORTED_YET, Options, parse_args

TF_SERVING_REPO = pathlib.Path("/work/.mirror/tensorflow+serving/repo")
CPUS = cli.num_schedulable_cpus()

# Every flag of tensorflow_model_server (model_servers/main.cc) and the default of
# the Server::Options field behind it (model_servers/server.h).
TF_SERVING_DEFAULTS = {
    "port": 8500,
    "grpc_socket_path": "",
    "rest_api_port": 0,
    "rest_api_num_threads": 4 * CPUS,
    "rest_api_timeout_in_ms": 30000,
    "rest_api_enable_cors_support": False,
    "enable_batching": False,
    "allow_version_labels_for_unavailable_models": False,
    "batching_parameters_file": "",
    "enable_per_model_batching_parameters": False,
    "model_config_file": "",
    "model_config_file_poll_wait_seconds": 0,
    "model_name": "default",
    "model_base_path": "",
    "num_load_threads": 0,
    "num_unload_threads": 0,
    "max_num_load_retries": 5,
    "load_retry_interval_micros": 60_000_000,
    "file_system_poll_wait_seconds": 1,
    "flush_filesystem_caches": True,
    "tensorflow_session_parallelism": 0,
    "tensorflow_session_config_file": "",
    "tensorflow_intra_op_parallelism": 0,
    "tensorflow_inter_op_parallelism": 0,
    "use_alts_credentials": False,
    "ssl_config_file": "",
    "platform_config_file": "",
    "per_process_gpu_memory_fraction": 0.0,
    "saved_model_tags": "serve",
    "grpc_channel_arguments": "",
    "grpc_max_threads": 4 * CPUS,
    "enable_model_warmup": True,
    "num_request_iterations_for_warmup": 0,
    "version": False,
    "monitoring_config_file": "",
    "remove_unused_fields_from_bundle_metagraph": True,
    "prefer_tflite_model": False,
    "num_tflite_pools": CPUS,
    "num_tflite_interpreters_per_pool": 1,
    "enable_signature_method_name_check": False,
    "xla_cpu_compilation_enabled": False,
    "xla_gpu_compilation_enabled": False,
    "enable_profiler": True,
    "thread_pool_factory_config_file": "",
    "mixed_precision": "",
    "skip_initialize_tpu": False,
    "enable_grpc_healthcheck_service": False,
    "enable_serialization_as_tensor_content": False,
}

# Flags whose default edgeserve changes on purpose (README: differences from TF Serving).
DELIBERATE_DEFAULTS = {"enable_grpc_healthcheck_service": True}

EDGESERVE_DEFAULTS = {
    "bind_address": "0.0.0.0",
    "rest_api_max_request_bytes": 16 * 1024 * 1024,
    "rest_api_max_header_bytes": 65536,
    "rest_api_header_timeout_in_ms": 10000,
    "rest_api_idle_timeout_in_ms": 60000,
    "rest_api_max_connections": 1024,
    "grpc_max_connections": 1024,
    "max_pending_requests": 1024,
    "request_log_max_file_bytes": 16 * 1024 * 1024,
    "request_log_max_total_bytes": 256 * 1024 * 1024,
    "enable_status_page": True,
    "inline_run_threshold_micros": 1000,
    "shutdown_grace_period_seconds": 10.0,
    "log_level": "info",
    "total_model_memory_limit_bytes": 0,
    "version_transition_policy": "auto",
    "adaptive_batching": True,
    "model_repository": "",
}


def exit_line(capsys, argv: list[str]) -> str:
    """Run parse_args expecting exit 2; return its single stderr line."""
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgeserve: ")
    return lines[0]


def help_text(capsys, argv: list[str] = ["--help"]) -> str:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out


# --- TF Serving's source, when the mirror is here -------------------------------

def _tf_source(path: str) -> str:
    if not TF_SERVING_REPO.exists():
        pytest.skip("TF Serving mirror not available")
    return subprocess.run(
        ["git", "-C", str(TF_SERVING_REPO), "show", f"HEAD:tensorflow_serving/{path}"],
        check=True, capture_output=True, text=True).stdout


def _main_cc_flags() -> dict[str, str]:
    """main.cc's flag name → the variable it sets (Options field or local)."""
    pairs = re.findall(r'tensorflow::Flag\(\s*"(\w+)",\s*&(?:options\.)?(\w+)',
                       _tf_source("model_servers/main.cc"))
    assert len(pairs) > 40
    return dict(pairs)


def _evaluate_cpp_default(expr: str) -> object:
    expr = expr.strip()
    if expr in ("true", "false"):
        return expr == "true"
    expr = expr.replace("port::NumSchedulableCPUs()", str(CPUS))
    expr = re.sub(r"(\d+)LL\b", r"\1", expr)
    if not re.fullmatch(r"[\d. *+]+", expr):
        raise AssertionError(f"cannot evaluate C++ default {expr!r}")
    return eval(expr)  # digits and * only, checked above


def _server_h_defaults() -> dict[str, object]:
    """Server::Options field → default, from server.h, server.cc and main.cc."""
    header = _tf_source("model_servers/server.h")
    struct = header[header.index("struct Options"):]
    struct = struct[:struct.index("Options();")]
    defaults: dict[str, object] = {}
    for type_, name, init in re.findall(
            r"^\s*((?:tensorflow::)?\w+)\s+(\w+)(?:\s*=\s*([^;]+))?;", struct, re.M):
        if init:
            value = _evaluate_cpp_default(init)
            if "int" in type_ and isinstance(value, float):
                value = int(value)  # int32 x = 4.0 * cpus truncates
            defaults[name] = value
        else:
            defaults[name] = "" if "string" in type_ else None
    # Initialised in the constructor (server.cc): model_name("default"),
    # saved_model_tags(tensorflow::kSavedModelTagServe).
    ctor = _tf_source("model_servers/server.cc")
    assert 'model_name("default")' in ctor
    assert "saved_model_tags(tensorflow::kSavedModelTagServe)" in ctor
    defaults["model_name"] = "default"
    defaults["saved_model_tags"] = "serve"
    # main.cc's own locals.
    main = _tf_source("model_servers/main.cc")
    for name, value in re.findall(r"^\s*bool (\w+) = (true|false);", main, re.M):
        defaults[name] = value == "true"
    return defaults


def test_every_main_cc_flag_is_an_option_with_tf_servings_default():
    flags = _main_cc_flags()
    defaults = _server_h_defaults()
    options = Options()
    for flag, variable in flags.items():
        assert hasattr(options, flag), f"--{flag} has no Options field"
        assert getattr(options, flag) == DELIBERATE_DEFAULTS.get(flag, defaults[variable]), flag


def test_hard_coded_flag_list_matches_main_cc():
    assert set(_main_cc_flags()) == set(TF_SERVING_DEFAULTS)


def test_help_lists_every_main_cc_flag(capsys):
    text = help_text(capsys)
    for flag in _main_cc_flags():
        assert re.search(rf"^\s+--{flag}=", text, re.M), flag


# --- defaults and the flag table --------------------------------------------------

def test_defaults_equal_tf_servings_and_edgeserves():
    options = parse_args([])
    for name, value in {**TF_SERVING_DEFAULTS, **EDGESERVE_DEFAULTS, **DELIBERATE_DEFAULTS}.items():
        assert getattr(options, name) == value, name
        assert type(getattr(options, name)) is type(value), name
    assert options.ignored_flags == ()
    assert options.given_flags == ()
    assert parse_args([]) == Options()


def test_options_has_one_field_per_flag_and_nothing_else():
    fields = {f.name for f in dataclasses.fields(Options)}
    assert fields == set(TF_SERVING_DEFAULTS) | set(EDGESERVE_DEFAULTS) | {
        "ignored_flags", "given_flags"}
    assert {f.name for f in FLAGS} == set(TF_SERVING_DEFAULTS) | set(EDGESERVE_DEFAULTS)


def test_options_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        parse_args([]).port = 1  # type: ignore[misc]


def test_flag_tables_name_real_flags_and_do_not_overlap():
    names = {f.name for f in FLAGS}
    assert set(NOT_SUPPORTED_YET) <= names
    assert IGNORED_ON_CPU <= names
    assert not set(NOT_SUPPORTED_YET) & IGNORED_ON_CPU
    assert all(topic for topic in NOT_SUPPORTED_YET.values())


# --- syntax -------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["--rest_api_port=8501"],
    ["-rest_api_port=8501"],
    ["--rest_api_port", "8501"],
    ["-rest_api_port", "8501"],
    ["--rest_api_port=+8501"],
])
def test_int_flag_syntax_forms(argv):
    assert parse_args(argv).rest_api_port == 8501


@pytest.mark.parametrize("argv", [
    ["--model_base_path=/models/m"],
    ["-model_base_path=/models/m"],
    ["--model_base_path", "/models/m"],
    ["-model_base_path", "/models/m"],
])
def test_string_flag_syntax_forms(argv):
    assert parse_args(argv).model_base_path == "/models/m"


def test_string_value_may_contain_equals_and_be_empty():
    assert parse_args(["--model_name=a=b"]).model_name == "a=b"
    assert parse_args(["--model_name="]).model_name == ""
    assert parse_args(["--model_name", ""]).model_name == ""


@pytest.mark.parametrize("arg, value", [
    ("--rest_api_enable_cors_support", True),
    ("-rest_api_enable_cors_support", True),
    ("--rest_api_enable_cors_support=true", True),
    ("--rest_api_enable_cors_support=True", True),
    ("--rest_api_enable_cors_support=1", True),
    ("--rest_api_enable_cors_support=false", False),
    ("--rest_api_enable_cors_support=FALSE", False),
    ("--rest_api_enable_cors_support=0", False),
])
def test_bool_flag_syntax_forms(arg, value):
    assert parse_args([arg]).rest_api_enable_cors_support is value


def test_bool_flag_can_turn_a_true_default_off():
    options = parse_args(["--enable_profiler=false", "--flush_filesystem_caches=0"])
    assert options.enable_profiler is False
    assert options.flush_filesystem_caches is False


def test_last_occurrence_wins():
    assert parse_args(["--port=1", "--port=2"]).port == 2


def test_negative_value_after_a_space_is_a_value_not_a_flag():
    options = parse_args(["--tensorflow_session_parallelism", "-1"])
    assert options.tensorflow_session_parallelism == -1


def test_a_typical_tf_serving_command_line():
    options = parse_args([
        "--port=8500", "--rest_api_port=8501", "--model_name=half_plus_two",
        "--model_base_path=/models/half_plus_two", "--file_system_poll_wait_seconds=5",
        "--rest_api_timeout_in_ms=5000", "--enable_model_warmup=false",
    ])
    assert (options.port, options.rest_api_port) == (8500, 8501)
    assert options.model_name == "half_plus_two"
    assert options.model_base_path == "/models/half_plus_two"
    assert options.file_system_poll_wait_seconds == 5
    assert options.rest_api_timeout_in_ms == 5000
    assert options.enable_model_warmup is False
    assert options.given_flags == (
        "port", "rest_api_port", "model_name", "model_base_path",
        "file_system_poll_wait_seconds", "rest_api_timeout_in_ms", "enable_model_warmup")


def test_trailing_double_dash_is_allowed():
    assert parse_args(["--port=1", "--"]).port == 1


@pytest.mark.parametrize("argv, field, value", [
    (["--load_retry_interval_micros=-1"], "load_retry_interval_micros", -1),
    (["--load_retry_interval_micros=9000000000"], "load_retry_interval_micros",
     9_000_000_000),
    (["--file_system_poll_wait_seconds=-1"], "file_system_poll_wait_seconds", -1),
    (["--file_system_poll_wait_seconds=0"], "file_system_poll_wait_seconds", 0),
    (["--rest_api_timeout_in_ms=0"], "rest_api_timeout_in_ms", 0),
    (["--port=0"], "port", 0),
    (["--port=65535"], "port", 65535),
    (["--max_num_load_retries=0"], "max_num_load_retries", 0),
    (["--rest_api_num_threads=3"], "rest_api_num_threads", 3),
    (["--grpc_max_threads=2"], "grpc_max_threads", 2),
    (["--num_load_threads=2"], "num_load_threads", 2),
    (["--enable_model_warmup=false"], "enable_model_warmup", False),
    (["--enable_signature_method_name_check"], "enable_signature_method_name_check", True),
    (["--enable_serialization_as_tensor_content"],
     "enable_serialization_as_tensor_content", True),
    (["--remove_unused_fields_from_bundle_metagraph=false"],
     "remove_unused_fields_from_bundle_metagraph", False),
    (["--skip_initialize_tpu"], "skip_initialize_tpu", True),
    (["--mixed_precision=bfloat16"], "mixed_precision", "bfloat16"),
    (["--rest_api_max_request_bytes=1024"], "rest_api_max_request_bytes", 1024),
    (["--rest_api_header_timeout_in_ms=500"], "rest_api_header_timeout_in_ms", 500),
    (["--rest_api_idle_timeout_in_ms=500"], "rest_api_idle_timeout_in_ms", 500),
    (["--inline_run_threshold_micros=0"], "inline_run_threshold_micros", 0),
    (["--shutdown_grace_period_seconds=2.5"], "shutdown_grace_period_seconds", 2.5),
    (["--shutdown_grace_period_seconds=0"], "shutdown_grace_period_seconds", 0.0),
    (["--shutdown_grace_period_seconds=1e1"], "shutdown_grace_period_seconds", 10.0),
    (["--log_level=warning"], "log_level", "warning"),
    (["--log_level=DEBUG"], "log_level", "debug"),
])
def test_accepted_values(argv, field, value):
    assert getattr(parse_args(argv), field) == value


# --- exit 2 -------------------------------------------------------------------------

def test_unknown_flag(capsys):
    assert exit_line(capsys, ["--foo=1"]) == "edgeserve: unknown flag --foo"
    assert exit_line(capsys, ["-foo"]) == "edgeserve: unknown flag --foo"


def test_unknown_flag_suggests_a_close_name(capsys):
    line = exit_line(capsys, ["--rest_api_prot=8501"])
    assert line == ("edgeserve: unknown flag --rest_api_prot "
                    "(did you mean --rest_api_port?)")


def test_a_flag_name_that_only_starts_like_a_bool_flag_is_unknown(capsys):
    assert "unknown flag --enable_batchingx" in exit_line(capsys, ["--enable_batchingx"])


@pytest.mark.parametrize("argv", [["model"], ["--port=1", "/models/x"], [""]])
def test_positional_argument(capsys, argv):
    assert "unexpected argument" in exit_line(capsys, argv)


def test_argument_after_double_dash(capsys):
    line = exit_line(capsys, ["--", "--port=1"])
    assert line == "edgeserve: unexpected argument '--port=1' after '--'"


def test_bool_flag_does_not_take_the_next_argument(capsys):
    assert "unexpected argument 'false'" in exit_line(
        capsys, ["--rest_api_enable_cors_support", "false"])


@pytest.mark.parametrize("argv", [
    ["--port"],
    ["--model_base_path"],
    ["--model_base_path", "--port=1"],
    ["--model_name", "-port=1"],
    ["--model_name", "--"],
])
def test_missing_value(capsys, argv):
    line = exit_line(capsys, argv)
    assert line == f"edgeserve: {argv[0]}: missing value (write {argv[0]}=VALUE)"


@pytest.mark.parametrize("raw", ["abc", "", "1.5", "0x10", "1_000", " 1", "1 "])
def test_int_flag_with_a_non_integer(capsys, raw):
    line = exit_line(capsys, [f"--rest_api_port={raw}"])
    assert line == f"edgeserve: --rest_api_port: expected an integer, got {raw!r}"


@pytest.mark.parametrize("raw", ["yes", "", "2", "on"])
def test_bool_flag_with_a_bad_value(capsys, raw):
    line = exit_line(capsys, [f"--enable_profiler={raw}"])
    assert line == f"edgeserve: --enable_profiler: expected true or false, got {raw!r}"


@pytest.mark.parametrize("raw", ["abc", "", "nan", "inf", "1_0"])
def test_float_flag_with_a_bad_value(capsys, raw):
    line = exit_line(capsys, [f"--shutdown_grace_period_seconds={raw}"])
    assert line == ("edgeserve: --shutdown_grace_period_seconds: "
                    f"expected a number, got {raw!r}")


@pytest.mark.parametrize("flag", ["port", "rest_api_port"])
@pytest.mark.parametrize("raw", ["-1", "65536", "100000"])
def test_port_out_of_range(capsys, flag, raw):
    line = exit_line(capsys, [f"--{flag}={raw}"])
    assert line == f"edgeserve: --{flag}: must be between 0 and 65535, got {raw}"


def test_int32_overflow(capsys):
    line = exit_line(capsys, ["--file_system_poll_wait_seconds=2147483648"])
    assert line == ("edgeserve: --file_system_poll_wait_seconds: "
                    "out of range for int32, got 2147483648")


def test_int64_overflow(capsys):
    line = exit_line(capsys, ["--load_retry_interval_micros=9223372036854775808"])
    assert "out of range for int64" in line


@pytest.mark.parametrize("flag, raw, minimum", [
    ("num_load_threads", "-1", 0),
    ("num_unload_threads", "-1", 0),
    ("max_num_load_retries", "-1", 0),
    ("rest_api_num_threads", "0", 1),
    ("grpc_max_threads", "0", 1),
    ("rest_api_max_request_bytes", "0", 1),
    ("rest_api_header_timeout_in_ms", "0", 1),
    ("rest_api_idle_timeout_in_ms", "-5", 1),
    ("inline_run_threshold_micros", "-1", 0),
    ("shutdown_grace_period_seconds", "-0.5", 0),
])
def test_value_below_its_meaningful_minimum(capsys, flag, raw, minimum):
    line = exit_line(capsys, [f"--{flag}={raw}"])
    assert line == f"edgeserve: --{flag}: must be >= {minimum}, got {raw}"


def test_log_level_outside_its_choices(capsys):
    line = exit_line(capsys, ["--log_level=verbose"])
    assert line == ("edgeserve: --log_level: expected one of debug, info, warning, "
                    "error, got 'verbose'")


def test_grpc_and_rest_on_the_same_port(capsys):
    line = exit_line(capsys, ["--port=8500", "--rest_api_port=8500"])
    assert line == ("edgeserve: --rest_api_port: cannot be the same as --port (8500); "
                    "use a different port for the HTTP/REST API")


def test_both_ports_zero_is_not_a_clash():
    options = parse_args(["--port=0", "--rest_api_port=0"])
    assert (options.port, options.rest_api_port) == (0, 0)


def test_session_parallelism_together_with_both_pool_flags(capsys):
    line = exit_line(capsys, [
        "--tensorflow_session_parallelism=2", "--tensorflow_intra_op_parallelism=2",
        "--tensorflow_inter_op_parallelism=2"])
    assert line.startswith("edgeserve: --tensorflow_session_parallelism: ")
    assert "not all three" in line


# --- not supported yet, ignored on CPU ------------------------------------------------

def _non_default_arg(name: str) -> str:
    spec = next(f for f in FLAGS if f.name == name)
    default = spec.default_value()
    if spec.type == "bool":
        return f"--{name}={'false' if default else 'true'}"
    if spec.type == "string":
        return f"--{name}=/etc/edgeserve/x.pbtxt"
    return f"--{name}={default + 1}"


@pytest.mark.parametrize("name", sorted(NOT_SUPPORTED_YET))
def test_later_flag_with_a_non_default_value_is_not_supported_yet(capsys, name):
    line = exit_line(capsys, [_non_default_arg(name)])
    assert line == f"edgeserve: --{name} is not supported yet"


@pytest.mark.parametrize("name", sorted(NOT_SUPPORTED_YET))
def test_later_flag_with_its_default_value_is_accepted(name):
    spec = next(f for f in FLAGS if f.name == name)
    default = spec.default_value()
    raw = ("true" if default else "false") if spec.type == "bool" else str(default)
    options = parse_args([f"--{name}={raw}"])
    assert getattr(options, name) == default
    assert options.given_flags == (name,)


def test_the_not_supported_yet_table_is_the_one_the_brief_lists():
    assert set(NOT_SUPPORTED_YET) == {
        "platform_config_file", "tensorflow_session_config_file",
        "thread_pool_factory_config_file",
        "use_alts_credentials",
    }


def test_model_warmup_is_accepted_either_way():
    assert parse_args(["--enable_model_warmup"]).enable_model_warmup is True
    assert parse_args(["--enable_model_warmup=false"]).enable_model_warmup is False


def test_warmup_iterations_flag_is_supported():
    assert parse_args(["--num_request_iterations_for_warmup=3"]).num_request_iterations_for_warmup == 3


def test_gpu_and_xla_flags_are_accepted_and_reported_as_ignored():
    options = parse_args([
        "--xla_gpu_compilation_enabled", "--port=9000",
        "--per_process_gpu_memory_fraction=0.5", "--xla_cpu_compilation_enabled=false",
        "--xla_gpu_compilation_enabled=true",
    ])
    assert options.per_process_gpu_memory_fraction == 0.5
    assert options.xla_gpu_compilation_enabled is True
    assert options.ignored_flags == (
        "xla_gpu_compilation_enabled", "per_process_gpu_memory_fraction",
        "xla_cpu_compilation_enabled")
    assert IGNORED_ON_CPU == {
        "per_process_gpu_memory_fraction", "xla_cpu_compilation_enabled",
        "xla_gpu_compilation_enabled"}


# --- --version and --help -------------------------------------------------------------

def test_version_sets_the_field():
    assert parse_args(["--version"]).version is True
    assert parse_args(["--version=false"]).version is False


def test_version_skips_the_checks_that_come_after_parsing():
    # TF Serving prints its version before it looks at how the flags combine.
    options = parse_args(["--version", "--enable_batching", "--port=1",
                          "--rest_api_port=1"])
    assert options.version and options.enable_batching


def test_version_still_rejects_malformed_flags(capsys):
    assert "expected an integer" in exit_line(capsys, ["--version", "--port=x"])


@pytest.mark.parametrize("argv", [
    ["--help"], ["-help"], ["-h"], ["--port=x", "--help"], ["--model_name", "--help"]])
def test_help_exits_zero(capsys, argv):
    assert "--port=8500" in help_text(capsys, argv)


def test_help_after_double_dash_is_just_an_argument(capsys):
    assert "unexpected argument" in exit_line(capsys, ["--", "--help"])


def test_help_shows_every_flag_with_type_and_default(capsys):
    text = help_text(capsys)
    for spec in FLAGS:
        line = next(l for l in text.splitlines() if l.lstrip().startswith(
            f"--{spec.name}="))
        assert f" {spec.type} " in line, line
        assert len(line.split(spec.type, 1)[1].strip()) > 10, line
    assert '--model_name="default"' in text
    assert "--rest_api_num_threads=" + str(4 * CPUS) in text
    assert "--enable_profiler=true" in text
    assert "--rest_api_max_request_bytes=16777216" in text
    assert "--shutdown_grace_period_seconds=10 " in text


def test_help_lists_tf_serving_flags_first_then_edgeserve_additions(capsys):
    text = help_text(capsys)
    tf_section = text.index("TensorFlow Serving flags:")
    ours = text.index("edgeserve additions:")
    assert tf_section < ours
    for name in TF_SERVING_DEFAULTS:
        assert tf_section < text.index(f"--{name}=") < ours, name
    for name in EDGESERVE_DEFAULTS:
        assert text.index(f"--{name}=") > ours, name


def test_help_marks_later_and_ignored_flags(capsys):
    text = help_text(capsys)
    line = next(l for l in text.splitlines() if "--platform_config_file=" in l)
    assert "not supported yet" in line
    line = next(l for l in text.splitlines() if "--per_process_gpu_memory_fraction" in l)
    assert "ignored" in line


# --- derived helpers ----------------------------------------------------------------

@pytest.mark.parametrize("session, intra, inter, expected", [
    (0, 0, 0, (0, 0)),
    (4, 0, 0, (4, 4)),
    (0, 3, 0, (3, 0)),
    (0, 0, 2, (0, 2)),
    (0, 3, 2, (3, 2)),
    (4, 3, 0, (3, 0)),  # an explicit pool flag wins; session is ignored
    (4, 0, 2, (0, 2)),
    (-1, 0, 0, (-1, -1)),
])
def test_session_threads_combine_like_tf_serving(session, intra, inter, expected):
    options = parse_args([
        f"--tensorflow_session_parallelism={session}",
        f"--tensorflow_intra_op_parallelism={intra}",
        f"--tensorflow_inter_op_parallelism={inter}",
    ])
    assert options.session_threads() == expected


@pytest.mark.parametrize("tags, expected", [
    (None, {"serve"}),
    ("serve", {"serve"}),
    ("serve,gpu", {"serve", "gpu"}),
    ("serve, tpu ,", {"serve", "tpu"}),
    ("", {"serve"}),
    (",", {"serve"}),
])
def test_saved_model_tag_set(tags, expected):
    argv = [] if tags is None else [f"--saved_model_tags={tags}"]
    assert parse_args(argv).saved_model_tag_set() == expected
