"""edgeserve.messages against the official classes, and warmup's TFRecord reader against TF's.

`messages` builds TF Serving's classes from edgeserve/protos/serving_descriptors.binpb in
a private descriptor pool. Here: that file is what protos/generate_messages.py writes
from the installed packages, bytes cross between our classes and tensorflow_serving.apis'
both ways unchanged, and `warmup.read_tfrecords` reads what tf.io.TFRecordWriter writes
and fails on damaged files exactly as TF's tf_record_iterator does.
"""
from __future__ import annotations

import importlib.util
import struct

import pytest

tf = pytest.importorskip("tensorflow")

from google.protobuf import any_pb2, descriptor_pool, text_format  # noqa: E402
from tensorflow.core.example import example_pb2  # noqa: E402
from tensorflow.core.framework import types_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow_serving.apis import (  # noqa: E402
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    predict_pb2,
    prediction_log_pb2,
)
from tensorflow_serving.config import model_server_config_pb2  # noqa: E402

from conftest import REPO  # noqa: E402
from edgeserve import messages, tfrecord, warmup  # noqa: E402
from edgeserve.errors import StatusCode  # noqa: E402


def generator():
    spec = importlib.util.spec_from_file_location("generate_messages", REPO / "protos" / "generate_messages.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the descriptor file ----------------------------------------------------------------

def test_descriptor_file_is_what_the_generator_writes_from_the_installed_packages():
    tool = generator()
    files = tool.collect()
    assert (REPO / "edgeserve" / "protos" / "serving_descriptors.binpb").read_bytes() == tool.serialize(files)
    assert tool.check_imports(files) == []  # == the imported modules' DESCRIPTORs
    assert messages.FILES == tuple(proto.name for _module, proto in files)


def test_classes_live_in_a_private_pool():
    assert messages.PredictRequest.DESCRIPTOR.file.pool is messages.POOL
    assert messages.POOL is not descriptor_pool.Default()
    # TensorFlow's own registrations of the same files are untouched.
    assert predict_pb2.PredictRequest.DESCRIPTOR.file.pool is descriptor_pool.Default()
    assert messages.PredictRequest is not predict_pb2.PredictRequest


def test_public_names_and_enums():
    assert messages.DataTypeProto.DT_FLOAT == types_pb2.DT_FLOAT
    assert messages.DataTypeProto.DT_STRING == types_pb2.DT_STRING
    assert messages.DataTypeProto.DataType.Name(types_pb2.DT_HALF) == "DT_HALF"
    assert messages.model_server_config_pb2.TENSORFLOW == model_server_config_pb2.TENSORFLOW
    names = {
        "Example": example_pb2.Example, "TensorProto": tf.make_tensor_proto(1.0).__class__,
        "SignatureDef": meta_graph_pb2.SignatureDef, "PredictionLog": prediction_log_pb2.PredictionLog,
        "ModelServerConfig": model_server_config_pb2.ModelServerConfig,
        "GetModelStatusResponse": get_model_status_pb2.GetModelStatusResponse,
    }
    for name, official in names.items():
        assert getattr(messages, name).DESCRIPTOR.full_name == official.DESCRIPTOR.full_name, name
    services = {s.full_name for f in messages.SERVICE_FILES for s in f.services_by_name.values()}
    assert services == {"tensorflow.serving.ModelService", "tensorflow.serving.PredictionService"}


def test_reflection_pool_finds_ours_first_then_the_default_pools():
    from grpclib.health.v1 import health_pb2  # noqa: F401 (registers grpc.health.v1)

    pool = messages.REFLECTION_POOL
    assert pool.FindFileContainingSymbol("tensorflow.serving.PredictionService").pool is messages.POOL
    assert pool.FindFileByName("google/protobuf/any.proto").pool is messages.POOL
    assert pool.FindFileContainingSymbol("grpc.health.v1.Health").name == "grpclib/health/v1/health.proto"
    message = pool.FindMessageTypeByName("tensorflow.serving.PredictRequest")
    assert pool.FindAllExtensions(message) == []
    with pytest.raises(KeyError):
        pool.FindFileContainingSymbol("no.such.Symbol")
    with pytest.raises(KeyError):
        pool.FindExtensionByNumber(message, 1000)


# ---- wire compatibility, both ways ------------------------------------------------------

def roundtrip(official, ours_class):
    """official -> bytes -> ours -> bytes -> official: nothing lost, nothing changed."""
    data = official.SerializeToString(deterministic=True)
    ours = ours_class.FromString(data)
    assert ours.SerializeToString(deterministic=True) == data
    assert text_format.MessageToString(ours) == text_format.MessageToString(official)
    back = type(official).FromString(ours.SerializeToString())
    assert back == official
    return ours


def predict_request():
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    request.model_spec.version.value = 7
    request.model_spec.signature_name = "serving_default"
    request.inputs["floats"].CopyFrom(tf.make_tensor_proto([[1.0, 2.5], [3.0, -4.0]]))
    request.inputs["strings"].CopyFrom(tf.make_tensor_proto([b"a", b"\xff\x00"]))
    request.inputs["ints"].CopyFrom(tf.make_tensor_proto([1, 2, 3], dtype=tf.int64))
    request.inputs["half"].CopyFrom(tf.make_tensor_proto([1.5], dtype=tf.float16))
    request.output_filter.append("y")
    return request


def test_predict_request_with_tensors():
    ours = roundtrip(predict_request(), messages.PredictRequest)
    assert ours.model_spec.version.value == 7
    assert ours.inputs["strings"].string_val == [b"a", b"\xff\x00"]
    assert ours.inputs["floats"].dtype == messages.DataTypeProto.DT_FLOAT
    # Built on our side, read on theirs.
    mine = messages.PredictResponse()
    mine.outputs["y"].dtype = messages.DataTypeProto.DT_FLOAT
    mine.outputs["y"].tensor_shape.dim.add().size = 2
    mine.outputs["y"].float_val.extend([1.0, 2.0])
    theirs = predict_pb2.PredictResponse.FromString(mine.SerializeToString())
    assert tf.make_ndarray(theirs.outputs["y"]).tolist() == [1.0, 2.0]


def test_classification_request_with_examples():
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "m"
    request.model_spec.version_label = "stable"
    context = request.input.example_list_with_context.context
    context.features.feature["c"].bytes_list.value.append(b"ctx")
    for value in (1.0, 2.0):
        example = request.input.example_list_with_context.examples.add()
        example.features.feature["x"].float_list.value.append(value)
        example.features.feature["n"].int64_list.value.extend([1, -(2**63)])
    ours = roundtrip(request, messages.ClassificationRequest)
    assert ours.input.WhichOneof("kind") == "example_list_with_context"
    assert ours.model_spec.WhichOneof("version_choice") == "version_label"
    response = classification_pb2.ClassificationResponse()
    result = response.result.classifications.add()
    result.classes.add(label="a", score=0.25)
    roundtrip(response, messages.ClassificationResponse)


def test_get_model_metadata_response_with_an_any_packed_signature_def_map():
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    signature = signature_map.signature_def["serving_default"]
    signature.method_name = "tensorflow/serving/predict"
    signature.inputs["x"].name = "x:0"
    signature.inputs["x"].dtype = types_pb2.DT_FLOAT
    signature.inputs["x"].tensor_shape.dim.add().size = -1
    signature.outputs["y"].name = "y:0"
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = "m"
    response.model_spec.version.value = 1
    response.metadata["signature_def"].Pack(signature_map)

    ours = roundtrip(response, messages.GetModelMetadataResponse)
    unpacked = messages.SignatureDefMap()
    assert ours.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].inputs["x"].name == "x:0"

    # The other way: packed on our side (as grpc_api does), unpacked on theirs.
    mine = messages.GetModelMetadataResponse()
    mine.metadata["signature_def"].Pack(unpacked)
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(mine.SerializeToString())
    assert theirs.metadata["signature_def"].type_url == "type.googleapis.com/tensorflow.serving.SignatureDefMap"
    again = get_model_metadata_pb2.SignatureDefMap()
    assert theirs.metadata["signature_def"].Unpack(again)
    assert again == signature_map


def test_model_server_config_text_format():
    text = """
    model_config_list {
      config {
        name: "a" base_path: "/models/a" model_platform: "tensorflow"
        model_version_policy { specific { versions: 1 versions: 2 } }
        version_labels { key: "stable" value: 1 }
        logging_config { sampling_config { sampling_rate: 0.5 } }
      }
      config { name: "b" base_path: "/models/b" model_platform: "tensorflow" model_type: TENSORFLOW }
    }
    """
    ours = text_format.Parse(text, messages.ModelServerConfig())
    official = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    assert ours.SerializeToString(deterministic=True) == official.SerializeToString(deterministic=True)
    assert text_format.MessageToString(ours) == text_format.MessageToString(official)
    roundtrip(official, messages.ModelServerConfig)


def test_prediction_log_and_model_status():
    log = prediction_log_pb2.PredictionLog()
    log.predict_log.request.CopyFrom(predict_request())
    log.log_metadata.model_spec.name = "m"
    roundtrip(log, messages.PredictionLog)
    status = get_model_status_pb2.GetModelStatusResponse()
    version = status.model_version_status.add(version=3, state=get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    version.status.error_message = "x"
    roundtrip(status, messages.GetModelStatusResponse)


def test_any_holding_a_well_known_type_packs_across():
    ours = messages.GetModelMetadataResponse()
    ours.metadata["x"].Pack(messages.ModelSpecProto(name="m"))
    theirs = get_model_metadata_pb2.GetModelMetadataResponse.FromString(ours.SerializeToString())
    assert isinstance(theirs.metadata["x"], any_pb2.Any)
    assert theirs.metadata["x"].TypeName() == "tensorflow.serving.ModelSpec"


# ---- the TFRecord reader -----------------------------------------------------------------

def write_tf(path, records):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for record in records:
            writer.write(record)


def read_tf(path):
    """TF's records and error as (records, (code, message) or None)."""
    records = []
    try:
        for record in tf.compat.v1.io.tf_record_iterator(str(path)):
            records.append(record)
    except tf.errors.OpError as exc:
        return records, (StatusCode(exc.error_code), exc.message)
    return records, None


def read_ours(path):
    records = []
    try:
        for record in warmup.read_tfrecords(str(path)):
            records.append(record)
    except warmup.RecordError as exc:
        return records, (exc.code, exc.message)
    return records, None


RECORDS = [b"first", b"", bytes(range(48)), prediction_log_pb2.PredictionLog().SerializeToString()]


def test_crc32c():
    assert tfrecord.crc32c(b"") == 0
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tfrecord.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4


def test_reads_what_tf_writes_and_writes_what_tf_writes(tmp_path):
    path = tmp_path / "records"
    write_tf(path, RECORDS)
    assert read_ours(path) == (RECORDS, None) == read_tf(path)
    ours = b"".join(
        struct.pack("<QI", len(r), tfrecord.masked_crc32c(struct.pack("<Q", len(r))))
        + r + struct.pack("<I", tfrecord.masked_crc32c(r)) for r in RECORDS)
    assert ours == path.read_bytes()


def test_empty_file(tmp_path):
    path = tmp_path / "records"
    path.write_bytes(b"")
    assert read_ours(path) == ([], None) == read_tf(path)


def test_truncated_anywhere_fails_as_tf_does(tmp_path):
    good = tmp_path / "good"
    write_tf(good, RECORDS)
    data = good.read_bytes()
    cut = tmp_path / "cut"
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        assert read_ours(cut) == read_tf(cut), size
    cut.write_bytes(data[:-3])
    records, (code, message) = read_ours(cut)
    assert (records, code) == (RECORDS[:-1], StatusCode.DATA_LOSS)
    assert message.startswith("truncated record at ")


def test_corrupted_anywhere_fails_as_tf_does(tmp_path):
    good = tmp_path / "good"
    write_tf(good, RECORDS)
    data = good.read_bytes()
    bad = tmp_path / "bad"
    for position in range(len(data)):
        damaged = bytearray(data)
        damaged[position] ^= 0x41
        bad.write_bytes(bytes(damaged))
        assert read_ours(bad) == read_tf(bad), position


def test_corrupted_data_crc_and_not_a_tfrecord_texts(tmp_path):
    path = tmp_path / "records"
    write_tf(path, [b"one", b"two"])
    damaged = bytearray(path.read_bytes())
    damaged[-6] ^= 0xFF  # inside the second record's data
    path.write_bytes(bytes(damaged))
    second = 12 + 3 + 4
    assert read_ours(path) == ([b"one"], (StatusCode.DATA_LOSS, f"corrupted record at {second + 12}"))
    path.write_text('{"instances": [1.0]} is JSON')
    assert read_ours(path) == ([], (StatusCode.DATA_LOSS, "corrupted record at 0 (Is this even a TFRecord file?)"))
    assert read_ours(path) == read_tf(path)


def test_unreadable_paths(tmp_path):
    code, message = read_ours(tmp_path / "missing")[1]
    assert (code, message) == (StatusCode.NOT_FOUND, f"{tmp_path / 'missing'}; No such file or directory")
    code, message = read_ours(tmp_path)[1]
    assert (code, message) == (StatusCode.FAILED_PRECONDITION, f"{tmp_path}; Is a directory")
