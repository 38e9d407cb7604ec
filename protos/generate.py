"""Regenerate edgeserve/protos/*_pb2.py from protos/*.proto (a developer tool).

    python protos/generate.py

Why a pinned protoc: generated modules refuse to import under a protobuf
runtime older than the protoc that wrote them. TensorFlow 2.21 and
tensorflow-serving-api 2.21 accept protobuf >= 6.31.1 (< 8), so the modules are
written by protoc 31.1 (Python gencode 6.31.1), the one grpcio-tools 1.74.0
bundles: they import under every protobuf that TensorFlow allows.
grpcio-tools pins protobuf < 7, so it is installed into a throwaway virtualenv,
never beside edgeserve; it is not a runtime dependency.

Each file is compiled under the name `edgeserve/protos/<file>.proto`, which is
the name it registers in protobuf's default descriptor pool: it can never be
the same file name as one TF Serving's packages register
(`tensorflow_serving/config/...`), whatever they ship later.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

GRPCIO_TOOLS = "grpcio-tools==1.74.0"
PROTOC_VERSION = "libprotoc 31.1"
GENCODE_VERSION = "6.31.1"

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_DIR = Path("edgeserve") / "protos"


def protoc_version() -> str | None:
    try:
        result = subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "--version"],
            capture_output=True, text=True, check=False)
    except OSError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def rerun_in_throwaway_venv() -> int:
    with tempfile.TemporaryDirectory(prefix="edgeserve-protoc-") as tmp:
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", GRPCIO_TOOLS], check=True)
        env = dict(os.environ, EDGESERVE_PROTOC_VENV="1")
        return subprocess.run([python, __file__], env=env, check=False).returncode


def generate() -> None:
    sources = sorted(PROTOS.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(tmp)
        (include / PACKAGE_DIR).mkdir(parents=True)
        for source in sources:
            shutil.copy(source, include / PACKAGE_DIR / source.name)
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", f"-I{include}", f"--python_out={ROOT}",
             *(str(PACKAGE_DIR / source.name) for source in sources)],
            cwd=include, check=True)
    for source in sources:
        module = ROOT / PACKAGE_DIR / (source.stem + "_pb2.py")
        if f"Protobuf Python Version: {GENCODE_VERSION}" not in module.read_text():
            sys.exit(f"{module}: not written by protobuf gencode {GENCODE_VERSION}")
        print(f"wrote {module.relative_to(ROOT)}")


def main() -> int:
    if protoc_version() == PROTOC_VERSION:
        generate()
        return 0
    if os.environ.get("EDGESERVE_PROTOC_VENV"):
        sys.exit(f"{GRPCIO_TOOLS} did not provide {PROTOC_VERSION}")
    return rerun_in_throwaway_venv()


if __name__ == "__main__":
    sys.exit(main())
