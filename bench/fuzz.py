"""Longer fuzzing runs: every target of tests/fuzz for minutes, one after the other.

    python bench/fuzz.py                        # 300 s per target, then bench/RESULTS.md
    python bench/fuzz.py --seconds 120
    python bench/fuzz.py --targets rest_json,tensor_proto --seconds 60 --no-write

Each target runs under atheris/libFuzzer as a subprocess pinned to one core (`taskset
-c 1` when taskset exists), from a copy of its seed corpus, with -timeout=5 and
-rss_limit_mb=2048 (tests/fuzz/fuzz_common.run_libfuzzer, which tests/test_fuzz.py
uses for its 20 s runs). Per target: executions, executions per second, coverage (cov:
and ft: as libFuzzer counts them: edge counters of the instrumented Python code, which
is edgeserve plus, for the config targets, protobuf's text parser) and the corpus it
ended with, and the crash files it wrote (kept under --work, default a temporary
folder, and printed). The table goes to stdout and into the "fuzz" section of
bench/RESULTS.md, with the defects fuzzing found while the targets were written (FOUND).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(REPO / "tests" / "fuzz"))
sys.path.insert(0, str(BENCH_DIR))

import fuzz_common  # noqa: E402
from results_md import write_section  # noqa: E402

# Defects the targets found while they were being written, all fixed at the source and
# kept as regression tests (tests/test_fuzz.py unless named otherwise).
FOUND = [
    ("model_config", 'model_type: 77777777777777777777 (an enum number beyond int32)',
     "protobuf's text parser let a ValueError out (not a ConfigError): no line/column, "
     "a start-up traceback instead of the config error",
     "text_proto.parse: the parser's ValueError becomes a ParseError at the number "
     "(config.py, batch_options.py and text_proto.read_file use it)",
     "test_regression_model_config_enum_number_beyond_int32_is_a_located_parse_error"),
    ("model_config", "custom_model_config { [type.googleapis.com/google.protobuf.Any] { ... } } nested 600 deep "
     "(a seed added while writing the target, not found by mutation)",
     "RecursionError out of protobuf's text parser (no depth limit for Any expansions); an unknown "
     "Any type or too deep a nesting refused without line and column",
     "text_proto.parse: depth limit 100 (C++ TextFormat's), every located",
     "test_regression_nested_any_expansions_are_a_located_parse_error"),
    ("model_config", 'model_platform: "t\\nf" (a line break in a quoted name, path or platform)',
     "a ConfigError of two lines, which ends up in logs and in systemd's STATUS=",
     "ConfigError escapes \\n and \\r in its message",
     "test_regression_config_error_quoting_a_line_break_stays_one_line"),
    ("monitoring_config", '"\\r\\r#\\r_#####g" (a lone CR inside a comment)',
     "files were read with universal newlines: a CR ended a comment that TF Serving's parser "
     "continues, so the rest was parsed as fields (and refused)",
     "text_proto.read_file and batch_options.read_file read with newline=\"\"",
     "test_regression_text_proto_files_keep_lone_carriage_returns"),
    ("tensor_proto", "DT_BOOL [3], tensor_content 01 00 11",
     "accepted (0x11 read as true) where TF's Tensor::FromProto refuses it (found against "
     "tf.io.parse_tensor)",
     'tensor_proto.to_ndarray: a DT_BOOL content byte other than 0 or 1 is "tensor parsing error"',
     "test_regression_bool_tensor_content_byte_other_than_0_or_1_is_refused, "
     "test_tensor_proto.py::test_bool_content_takes_bytes_0_and_1_only_as_tf_does"),
]


def _fmt(value, spec: str = ",") -> str:
    return "—" if value is None else format(value, spec)


def table(results: list[fuzz_common.RunResult]) -> str:
    lines = [
        "| target | seconds | executions | execs/s | cov | ft | corpus | crashes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        crashes = ", ".join(p.name for p in r.artifacts) or ("none" if r.returncode == 0 else f"exit {r.returncode}")
        rate = r.execs_per_second
        lines.append(
            f"| {r.target} | {_fmt(r.fuzz_seconds, ',.0f')} | {_fmt(r.executions)} | "
            f"{_fmt(None if rate is None else round(rate))} | {_fmt(r.coverage)} | {_fmt(r.features)} | "
            f"{_fmt(r.corpus_size)} | {crashes} |")
    return "\n".join(lines)


def found_list() -> str:
    lines = ["Defects found by these targets while they were written (each fixed at the source):", ""]
    for target, given, symptom, fix, test in FOUND:
        lines.append(f"- **{target}**: {given}. Symptom: {symptom}. Fix: {fix}. Regression test: `{test}`.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=300, help="fuzzing time per target")
    parser.add_argument("--targets", default=",".join(fuzz_common.TARGETS))
    parser.add_argument("--cpu", default="1", help="the core each run is pinned to (taskset -c)")
    parser.add_argument("--work", default=None, help="where corpora and crash files go (default: a temp folder)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets.split(",") if t]
    unknown = set(targets) - set(fuzz_common.TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    work = Path(args.work or tempfile.mkdtemp(prefix="edgeserve-fuzz-"))
    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    for target in targets:
        print(f"{target}: {args.seconds} s ...", flush=True)
        result = fuzz_common.run_libfuzzer(target, work / target, args.seconds, pin_cpu=args.cpu,
                                           grace_seconds=180)
        results.append(result)
        print(f"  {_fmt(result.executions)} executions, {_fmt(result.coverage)} cov, "
              f"exit {result.returncode}, {len(result.artifacts)} crash file(s)", flush=True)
        for path in result.artifacts:
            print(f"  crash file: {path}")
        if result.returncode != 0:
            print(result.tail(40))
    crashed = any(r.artifacts or r.returncode != 0 for r in results)
    try:
        import atheris

        atheris_version = getattr(atheris, "__version__", None) or _dist_version("atheris")
    except ImportError:  # pragma: no cover
        atheris_version = "not installed"
    pinned = f"`taskset -c {args.cpu}`" if shutil.which("taskset") else "not pinned (no taskset)"
    text = "\n".join([
        "# Fuzzing (tests/fuzz, atheris/libFuzzer)",
        "",
        f"- date: {started:%Y-%m-%d %H:%M} UTC",
        f"- machine: {os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}",
        f"- software: Python {platform.python_version()}, atheris {atheris_version}",
        f"- command: `python bench/fuzz.py --seconds {args.seconds}`; each target {pinned}, "
        "one after the other, from its seed corpus (tests/fuzz/corpus), -timeout=5 -rss_limit_mb=2048",
        "- cov / ft: libFuzzer's edge and feature counts over the instrumented Python code (edgeserve; "
        "for the three config targets also protobuf's text parser); http_request counts only what runs "
        "in Python (httptools and uvloop are C)",
        "",
        table(results),
        "",
        found_list(),
        "",
    ])
    print()
    print(text)
    if not args.no_write:
        write_section("fuzz", text)
        print(f"written to {BENCH_DIR / 'RESULTS.md'} (section fuzz)")
    if not crashed and args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"corpora and crash files kept in {work}")
    return 1 if crashed else 0


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
