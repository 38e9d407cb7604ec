"""Regenerate edgeserve/protos/serving_descriptors.binpb (a developer tool).

    python protos/generate_messages.py            # write the file
    python protos/generate_messages.py --check    # exit 1 if it is out of date

The file is one serialized google.protobuf.FileDescriptorSet: every .proto file
edgeserve speaks (ROOTS) and all their dependencies, dependencies first, except
protobuf's own well-known types (google/protobuf/*.proto), which `messages` takes
from the protobuf runtime. `edgeserve.messages` builds TF Serving's message
classes from it in a private descriptor pool, so serving never imports TensorFlow.

Where the descriptors come from: the installed tensorflow and tensorflow-serving-api
packages. Each generated `<name>_pb2.py` registers its file with
`AddSerializedFile(b'...')`; that literal is the FileDescriptorProto protoc wrote,
the same bytes as the imported module's `DESCRIPTOR.serialized_pb`. It is read
from the module's source with `ast` rather than by importing the module, because
importing any `tensorflow.*` module runs TensorFlow's package init (seconds,
~550 MB) for nothing. `--check-imports` does import them (it needs TensorFlow)
and confirms that every file written equals the loaded DESCRIPTOR's.

Deterministic: the same installed packages always give the same bytes (files in
a fixed depth-first order, deterministic serialization), so the output can be
committed and `--check` can run anywhere the packages are installed.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import sys
from pathlib import Path

from google.protobuf import descriptor_pb2

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "edgeserve" / "protos" / "serving_descriptors.binpb"

# What edgeserve.messages exposes, directly or as a service for reflection.
ROOTS = (
    "tensorflow_serving/apis/classification.proto",
    "tensorflow_serving/apis/get_model_metadata.proto",
    "tensorflow_serving/apis/get_model_status.proto",
    "tensorflow_serving/apis/inference.proto",
    "tensorflow_serving/apis/input.proto",
    "tensorflow_serving/apis/model_management.proto",
    "tensorflow_serving/apis/model.proto",
    "tensorflow_serving/apis/predict.proto",
    "tensorflow_serving/apis/prediction_log.proto",
    "tensorflow_serving/apis/regression.proto",
    "tensorflow_serving/apis/model_service.proto",
    "tensorflow_serving/apis/prediction_service.proto",
    "tensorflow_serving/config/model_server_config.proto",
    "tensorflow/core/example/example.proto",
    "tensorflow/core/framework/tensor.proto",
    "tensorflow/core/framework/types.proto",
    "tensorflow/core/protobuf/meta_graph.proto",
)

# protobuf's runtime ships these; `messages` adds them to its pool from there.
WELL_KNOWN_PREFIX = "google/protobuf/"


def module_name(proto_name: str) -> str:
    """protoc's Python module for a .proto file: a/b/c.proto -> a.b.c_pb2."""
    return proto_name[: -len(".proto")].replace("/", ".") + "_pb2"


def import_alias(proto_name: str) -> str:
    """The alias generated code imports a dependency under (protoc's ModuleAlias)."""
    return module_name(proto_name).replace("_", "__").replace(".", "_dot_")


def module_source(module: str) -> Path:
    """The installed source of `module`, found through its top-level package's
    spec, which (unlike importing it, or find_spec on a submodule) does not run the
    package's __init__."""
    top = module.split(".", 1)[0]
    spec = importlib.util.find_spec(top)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"{module}: package {top!r} is not installed")
    relative = module.replace(".", "/") + ".py"
    for location in spec.submodule_search_locations:
        path = Path(location).parent / relative
        if path.is_file():
            return path
    sys.exit(f"{module}: no {relative} in the installed {top!r} package")


def read_module(module: str) -> tuple[bytes, dict[str, str]]:
    """The FileDescriptorProto bytes `module` registers, and the modules it imports
    by alias (alias -> module), which is where its dependencies really live: TF's
    packaging moves some (xla/tsl/... is tensorflow.compiler.xla.tsl....)."""
    path = module_source(module)
    found = []
    imports: dict[str, str] = {}
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if alias.asname:
                    imports[alias.asname] = f"{node.module}.{alias.name}"
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Attribute) and node.func.attr == "AddSerializedFile":
            found.extend(arg.value for arg in node.args[:1] if isinstance(arg, ast.Constant))
        # Older gencode: _descriptor.FileDescriptor(..., serialized_pb=b'...').
        found.extend(k.value.value for k in node.keywords
                     if k.arg == "serialized_pb" and isinstance(k.value, ast.Constant))
    found = [value for value in found if isinstance(value, bytes)]
    if len(found) != 1:
        sys.exit(f"{path}: expected one serialized file descriptor, found {len(found)}")
    return found[0], imports


def collect(roots=ROOTS) -> list[tuple[str, descriptor_pb2.FileDescriptorProto]]:
    """ROOTS and their dependencies, each after everything it imports, with the
    module that registers each."""
    ordered: list[tuple[str, descriptor_pb2.FileDescriptorProto]] = []
    done: set[str] = set()

    def visit(name: str, module: str, chain: tuple[str, ...]) -> None:
        if name in done or name.startswith(WELL_KNOWN_PREFIX):
            return
        if name in chain:
            sys.exit(f"import cycle: {' -> '.join((*chain, name))}")
        serialized, imports = read_module(module)
        proto = descriptor_pb2.FileDescriptorProto.FromString(serialized)
        if proto.name != name:
            sys.exit(f"{module} describes {proto.name!r}, not {name!r}")
        for dependency in proto.dependency:
            alias = import_alias(dependency)
            if not dependency.startswith(WELL_KNOWN_PREFIX) and alias not in imports:
                sys.exit(f"{module} does not import {dependency} (as {alias})")
            visit(dependency, imports.get(alias, ""), (*chain, name))
        done.add(name)
        ordered.append((module, proto))

    for root in roots:
        visit(root, module_name(root), ())
    return ordered


def serialize(files: list[tuple[str, descriptor_pb2.FileDescriptorProto]]) -> bytes:
    file_set = descriptor_pb2.FileDescriptorSet()
    file_set.file.extend(proto for _module, proto in files)
    return file_set.SerializeToString(deterministic=True)


def check_imports(files: list[tuple[str, descriptor_pb2.FileDescriptorProto]]) -> list[str]:
    """Names of files that differ from the imported modules' DESCRIPTORs."""
    stale = []
    for name, proto in files:
        module = importlib.import_module(name)
        loaded = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(loaded)
        if loaded != proto:
            stale.append(proto.name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit 1 if the committed file is out of date")
    parser.add_argument("--check-imports", action="store_true",
                        help="also import each module (needs TensorFlow) and compare")
    args = parser.parse_args(argv)
    files = collect()
    data = serialize(files)
    if args.check_imports:
        stale = check_imports(files)
        if stale:
            print("differ from the imported DESCRIPTORs:", *stale, sep="\n  ")
            return 1
    if args.check:
        current = OUTPUT.read_bytes() if OUTPUT.exists() else b""
        if current != data:
            print(f"{OUTPUT.relative_to(ROOT)} is out of date: run python protos/generate_messages.py")
            return 1
        print(f"{OUTPUT.relative_to(ROOT)} is up to date ({len(files)} files, {len(data)} bytes)")
        return 0
    OUTPUT.write_bytes(data)
    print(f"wrote {OUTPUT.relative_to(ROOT)}: {len(files)} files, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
