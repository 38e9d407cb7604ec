"""The TF Serving message classes edgeserve speaks, built in one place, without TensorFlow.

Every other module takes its request/response classes from here. They are built from
`edgeserve/protos/serving_descriptors.binpb`: a FileDescriptorSet of TF Serving's .proto
files (tensorflow_serving/apis, its config, and the TensorFlow framework protos they
import), written by `protos/generate_messages.py` from the descriptors the installed
tensorflow-serving-api and tensorflow packages register, so the wire format is
exactly theirs (rule 3 of ../shared/DESIGN.md). Importing this module
costs a few milliseconds and never imports TensorFlow: the lite (TFLite) flavour
serves with it, and the full flavour uses the very same classes.

The files go into a private DescriptorPool (`POOL`), not protobuf's default one:
once TensorFlow is imported (full flavour, a SavedModel loads), it registers the
same file names in the default pool, and a second registration there would clash.
The price: these classes are not TensorFlow's or tensorflow_serving.apis' classes.
The wire format is the same, so messages cross between them as bytes
(`SerializeToString` / `FromString`), never by `CopyFrom` or `==`.

gRPC server reflection looks files up through `REFLECTION_POOL`: this pool first,
then the default one (grpclib's health and reflection services live there).
"""
from __future__ import annotations

import importlib
from importlib import resources
from types import SimpleNamespace
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

DESCRIPTORS_FILE = "serving_descriptors.binpb"
_WELL_KNOWN_PREFIX = "google/protobuf/"  # not shipped: protobuf's runtime has them

POOL = descriptor_pool.DescriptorPool()


def _add_well_known(pool: Any, name: str, added: set[str]) -> None:
    """Adds google/protobuf/<x>.proto (and what it imports) from protobuf's own
    `google.protobuf.<x>_pb2`, the copy that matches the installed runtime."""
    if name in added:
        return
    module = importlib.import_module(
        "google.protobuf." + name[len(_WELL_KNOWN_PREFIX):-len(".proto")].replace("/", ".") + "_pb2")
    for dependency in module.DESCRIPTOR.dependencies:
        _add_well_known(pool, dependency.name, added)
    pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    added.add(name)


def _load(pool: Any) -> tuple[str, ...]:
    """Adds the shipped files (written dependencies first) to `pool`; their names."""
    data = resources.files("edgeserve.protos").joinpath(DESCRIPTORS_FILE).read_bytes()
    files = descriptor_pb2.FileDescriptorSet.FromString(data).file
    added: set[str] = set()
    for file in files:
        for dependency in file.dependency:
            if dependency.startswith(_WELL_KNOWN_PREFIX):
                _add_well_known(pool, dependency, added)
        # What generated _pb2 modules call: the one way every protobuf backend supports.
        pool.AddSerializedFile(file.SerializeToString())
    return tuple(file.name for file in files)


FILES = _load(POOL)


def _message(full_name: str) -> Any:
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


def _proto_file(name: str) -> SimpleNamespace:
    """A .proto file's top-level messages, enums and enum values by name, as its
    generated `_pb2` module offers them (`types.DT_FLOAT`, `types.DataType.Name(1)`)."""
    file = POOL.FindFileByName(name)
    namespace = SimpleNamespace(DESCRIPTOR=file)
    for message in file.message_types_by_name.values():
        setattr(namespace, message.name, message_factory.GetMessageClass(message))
    for enum in file.enum_types_by_name.values():
        setattr(namespace, enum.name, EnumTypeWrapper(enum))
        for value in enum.values:
            setattr(namespace, value.name, value.number)
    return namespace


class DescriptorPools:
    """Descriptor look-ups across several pools, the first that knows a name
    answering: the part of DescriptorPool's interface grpclib's ServerReflection
    uses. Extensions are looked up in the pool of the message they extend."""

    def __init__(self, *pools: Any) -> None:
        self._pools = pools

    def _first(self, method: str, name: str) -> Any:
        for pool in self._pools:
            try:
                return getattr(pool, method)(name)
            except KeyError:
                continue
        raise KeyError(name)

    def FindFileByName(self, name: str) -> Any:  # noqa: N802 (protobuf's names)
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> Any:  # noqa: N802
        return self._first("FindFileContainingSymbol", symbol)

    def FindMessageTypeByName(self, name: str) -> Any:  # noqa: N802
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: Any, number: int) -> Any:  # noqa: N802
        return message.file.pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Any) -> Any:  # noqa: N802
        return message.file.pool.FindAllExtensions(message)


REFLECTION_POOL = DescriptorPools(POOL, descriptor_pool.Default())

# The files whose services edgeserve serves (for reflection and tests).
SERVICE_FILES = (
    POOL.FindFileByName("tensorflow_serving/apis/model_service.proto"),
    POOL.FindFileByName("tensorflow_serving/apis/prediction_service.proto"),
)

# Module-like views of two files, for their enums (model_server_config_pb2.TENSORFLOW,
# DataTypeProto.DT_FLOAT / DataTypeProto.DataType.Name(1)), named as before.
model_server_config_pb2 = _proto_file("tensorflow_serving/config/model_server_config.proto")
DataTypeProto = _proto_file("tensorflow/core/framework/types.proto")

ModelServerConfig = model_server_config_pb2.ModelServerConfig
Example = _message("tensorflow.Example")
TensorProto = _message("tensorflow.TensorProto")
SignatureDef = _message("tensorflow.SignatureDef")
ModelSpecProto = _message("tensorflow.serving.ModelSpec")
Input = _message("tensorflow.serving.Input")
PredictRequest = _message("tensorflow.serving.PredictRequest")
PredictResponse = _message("tensorflow.serving.PredictResponse")
ClassificationRequest = _message("tensorflow.serving.ClassificationRequest")
ClassificationResponse = _message("tensorflow.serving.ClassificationResponse")
ClassificationResult = _message("tensorflow.serving.ClassificationResult")
RegressionRequest = _message("tensorflow.serving.RegressionRequest")
RegressionResponse = _message("tensorflow.serving.RegressionResponse")
RegressionResult = _message("tensorflow.serving.RegressionResult")
MultiInferenceRequest = _message("tensorflow.serving.MultiInferenceRequest")
MultiInferenceResponse = _message("tensorflow.serving.MultiInferenceResponse")
GetModelMetadataRequest = _message("tensorflow.serving.GetModelMetadataRequest")
GetModelMetadataResponse = _message("tensorflow.serving.GetModelMetadataResponse")
SignatureDefMap = _message("tensorflow.serving.SignatureDefMap")
GetModelStatusRequest = _message("tensorflow.serving.GetModelStatusRequest")
GetModelStatusResponse = _message("tensorflow.serving.GetModelStatusResponse")
ReloadConfigRequest = _message("tensorflow.serving.ReloadConfigRequest")
ReloadConfigResponse = _message("tensorflow.serving.ReloadConfigResponse")
PredictionLog = _message("tensorflow.serving.PredictionLog")  # model warmup records
