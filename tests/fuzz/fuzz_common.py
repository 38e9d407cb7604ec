"""What the fuzz targets share: atheris start-up, the seed corpora, one bounded libFuzzer run.

Each target module (`tests/fuzz/<target>.py`) has `check(data: bytes)`, which raises
(AssertionError, or whatever unexpected exception the code under test lets out) on a
defect, and `main()`, which runs it under atheris:

    mkdir -p /tmp/corpus
    python -m tests.fuzz.rest_json -max_total_time=60 /tmp/corpus tests/fuzz/corpus/rest_json
    python tests/fuzz/rest_json.py CRASH_FILE          # replays one input

(libFuzzer adds what it finds to the first corpus folder: give it a folder of its own,
never the seed folder, which tests/fuzz/make_corpus.py writes.)

edgeserve's modules are imported inside `instrumented(__name__)`, which is atheris's
import hook when the module runs as the program (coverage-guided) and nothing when
pytest or bench imports it (plain, fast). Imports nothing from edgeserve itself.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

FUZZ_DIR = Path(__file__).resolve().parent
REPO = FUZZ_DIR.parent.parent
CORPUS = FUZZ_DIR / "corpus"
TARGETS = ("http_request", "rest_json", "tensor_proto", "model_config", "batching_config", "monitoring_config")


def instrumented(module_name: str, *also: str):
    """atheris's import hook for edgeserve (and the modules `also` names, which must be
    imported first inside the block) when `module_name` is "__main__" (the target runs
    as the fuzzer); a no-op context otherwise."""
    if module_name != "__main__":
        return contextlib.nullcontext()
    import atheris

    return atheris.instrument_imports(include=["edgeserve", *also])


def fuzz_main(check, argv: list[str] | None = None) -> None:
    """Runs `check` under libFuzzer with the command line's libFuzzer arguments."""
    import atheris

    atheris.Setup(list(sys.argv if argv is None else argv), check)
    atheris.Fuzz()


class ScratchFile:
    """A file path whose contents each input replaces, for targets that read files: a
    memfd (its /proc/self/fd path), which goes away with the process however libFuzzer
    ends it; a temporary file where memfd_create does not exist."""

    def __init__(self, name: str) -> None:
        if hasattr(os, "memfd_create"):
            self._fd = os.memfd_create(name)
            self.path = f"/proc/self/fd/{self._fd}"
        else:  # pragma: no cover - not Linux
            import atexit
            import tempfile

            self._fd, self.path = tempfile.mkstemp(prefix=f"edgeserve-{name}-")
            atexit.register(os.remove, self.path)

    def write(self, data: bytes) -> None:
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)


_loaded: dict[str, object] = {}


def load(target: str):
    """A target's module, imported plainly (not instrumented), once per process: how
    the tests call its `check` directly."""
    import importlib.util

    module = _loaded.get(target)
    if module is None:
        spec = importlib.util.spec_from_file_location(f"edgeserve_fuzz_{target}", FUZZ_DIR / f"{target}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _loaded[target] = module
    return module


def corpus_files(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


@dataclass
class RunResult:
    target: str
    seconds: float  # wall time of the whole subprocess (start-up included)
    returncode: int | None
    executions: int | None  # stat::number_of_executed_units
    coverage: int | None  # the last "cov:" libFuzzer printed
    features: int | None  # the last "ft:"
    corpus_size: int | None  # units in the corpus at the end
    artifacts: list[Path] = field(default_factory=list)  # crash-*, timeout-*, oom-*, leak-*
    output: str = ""

    @property
    def execs_per_second(self) -> float | None:
        fuzz_seconds = self.fuzz_seconds
        if self.executions is None or not fuzz_seconds:
            return None
        return self.executions / fuzz_seconds

    @property
    def fuzz_seconds(self) -> float | None:
        """libFuzzer's own "Done N runs in S second(s)", else None."""
        found = re.findall(r"Done \d+ runs in (\d+) second", self.output)
        return float(found[-1]) if found else None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])


def _last_int(pattern: str, text: str) -> int | None:
    found = re.findall(pattern, text)
    return int(found[-1]) if found else None


def run_libfuzzer(
    target: str,
    work_dir: Path,
    seconds: int,
    *,
    extra_args: tuple[str, ...] = (),
    pin_cpu: str | None = None,
    grace_seconds: float = 90.0,
) -> RunResult:
    """Copies the target's seed corpus into work_dir/corpus, runs the target under
    libFuzzer for `seconds` (one process, -timeout=5, -rss_limit_mb=2048), and returns
    what it did. Crash files land in work_dir/artifacts. The process group is killed if
    it outlives `seconds` + `grace_seconds`."""
    corpus = work_dir / "corpus"
    artifacts = work_dir / "artifacts"
    if corpus.exists():
        shutil.rmtree(corpus)
    shutil.copytree(CORPUS / target, corpus)
    artifacts.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable, str(FUZZ_DIR / f"{target}.py"), str(corpus),
        f"-max_total_time={seconds}", "-timeout=5", "-rss_limit_mb=2048",
        "-print_final_stats=1", f"-artifact_prefix={artifacts}/", *extra_args,
    ]
    if pin_cpu is not None and shutil.which("taskset"):
        command = ["taskset", "-c", pin_cpu, *command]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    started = time.monotonic()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(work_dir),
                            env=env, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=seconds + grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        output += b"\n[killed: ran past its time limit]\n"
    finally:
        if proc.poll() is None:  # pragma: no cover - interrupted
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = output.decode("utf-8", "replace")
    return RunResult(
        target=target,
        seconds=time.monotonic() - started,
        returncode=proc.returncode,
        executions=_last_int(r"stat::number_of_executed_units:\s*(\d+)", text),
        coverage=_last_int(r"\bcov: (\d+)", text),
        features=_last_int(r"\bft: (\d+)", text),
        corpus_size=_last_int(r"\bcorp: (\d+)", text),
        artifacts=sorted(p for p in artifacts.iterdir()
                         if p.name.split("-", 1)[0] in ("crash", "timeout", "oom", "leak")),
        output=text,
    )
