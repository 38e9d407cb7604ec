"""The zipapp: `make pyz` builds dist/edgeserve.pyz, which serves on its own.

The file is run by a bare interpreter (`-I -S`: no site-packages, no environment), so
everything it needs must be inside it. The first start unpacks the native wheels into
$SHIV_ROOT; the second reuses them and is much faster. Building takes about two
minutes (pip fetches TensorFlow into the archive), so it is done once for the module.
"""
from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

import edgeserve.__main__ as entry
from conftest import REPO, free_port

pytestmark = pytest.mark.timeout(900)


def build(target: str, name: str) -> "os.PathLike":
    if not shutil.which("make"):
        pytest.skip("make is not installed")
    result = subprocess.run(
        ["make", "-C", str(REPO), target, f"PYTHON={sys.executable}"],
        capture_output=True, text=True, timeout=840,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    path = REPO / "dist" / name
    assert path.is_file()
    return path


@pytest.fixture(scope="module")
def pyz():
    return build("pyz", "edgeserve.pyz")


@pytest.fixture(scope="module")
def pyz_lite():
    return build("pyz-lite", "edgeserve-lite.pyz")


def first_answer(pyz, shiv_root, model, log, check=None) -> tuple[float, bytes]:
    """Seconds from starting the zipapp to its first correct prediction; `check(pid)`
    runs on the serving process before it is stopped."""
    port = free_port()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SHIV_ROOT": str(shiv_root)}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-I", "-S", str(pyz), f"--rest_api_port={port}", "--port=0",
         "--model_name=m", f"--model_base_path={model}"],
        env=env, cwd="/", stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        while time.monotonic() - started < 300:
            assert proc.poll() is None, f"the zipapp exited with {proc.returncode}"
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/v1/models/m:predict", json.dumps({"instances": [[2.0]]}))
                response = conn.getresponse()
                body = response.read()
                conn.close()
                if response.status == 200:
                    seconds = time.monotonic() - started
                    if check is not None:
                        check(proc.pid)
                    return seconds, body
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("no answer from the zipapp in 300 s")
    finally:
        proc.terminate()
        proc.wait(60)


def test_zipapp_serves_and_unpacks_only_once(pyz, model_store, tmp_path):
    shiv_root = tmp_path / "shiv"
    with open(tmp_path / "pyz.log", "ab") as log:
        first, body = first_answer(pyz, shiv_root, model_store / "half_plus_two", log)
        assert json.loads(body) == {"predictions": [[3.0]]}
        unpacked = sorted(p.name for p in shiv_root.iterdir())
        # One folder of unpacked site-packages (and shiv's lock file beside it).
        assert len([n for n in unpacked if not n.startswith(".")]) == 1, unpacked
        second, body = first_answer(pyz, shiv_root, model_store / "half_plus_two", log)
        assert json.loads(body) == {"predictions": [[3.0]]}
    assert sorted(p.name for p in shiv_root.iterdir()) == unpacked  # not unpacked again
    assert second < first
    print(f"\nzipapp {pyz.stat().st_size / 2**20:.0f} MiB; first answer after {first:.1f} s "
          f"(unpacking), second after {second:.1f} s")


def test_too_old_python_is_told_which_version_it_needs(monkeypatch, capsys):
    monkeypatch.setattr(entry, "REQUIRED_PYTHON", (sys.version_info[0] + 1, 0))
    assert entry.main(["--version"]) == 2
    message = capsys.readouterr().err.strip()
    assert message == (
        f"edgeserve needs Python {sys.version_info[0] + 1}.0 or newer; this is Python "
        f"{sys.version_info[0]}.{sys.version_info[1]} ({sys.executable})"
    )


def test_lite_zipapp_serves_tflite_without_tensorflow(pyz_lite, tmp_path):
    import tflite_models

    model = tmp_path / "lite"
    tflite_models.convert_half_plus_two(model / "1")
    mapped: list[str] = []

    def no_tensorflow(pid: int) -> None:
        with open(f"/proc/{pid}/maps") as f:
            mapped.extend(line.split()[-1] for line in f if "tensorflow" in line)

    with open(tmp_path / "pyz.log", "ab") as log:
        first, body = first_answer(pyz_lite, tmp_path / "shiv", model, log, check=no_tensorflow)
        assert json.loads(body) == {"predictions": [[3.0]]}
        second, body = first_answer(pyz_lite, tmp_path / "shiv", model, log)
        assert json.loads(body) == {"predictions": [[3.0]]}
    assert mapped == []
    print(f"\nlite zipapp {pyz_lite.stat().st_size / 2**20:.1f} MiB; first answer after {first:.2f} s "
          f"(unpacking), second after {second:.2f} s")
