"""Serving without TensorFlow: the modules a request goes through never import it.

The lite (TFLite) flavour must run where TensorFlow is not installed, so the check runs
in a fresh interpreter that imports and exercises those modules (messages, the gRPC
and REST layers, config parsing, tensor conversion, warmup file reading) and then
looks for any `tensorflow*` module in sys.modules. Needs no TensorFlow itself.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import REPO

CHILD = textwrap.dedent(r"""
    import struct, sys, tempfile, os
    import numpy as np

    import edgeserve.messages as pb
    import edgeserve.grpc_api, edgeserve.rest_api, edgeserve.server, edgeserve.core
    import edgeserve.metrics, edgeserve.example_json, edgeserve.grpc_health
    from edgeserve import config, tensor_proto, tfrecord, warmup

    parsed = config.parse_config_text(
        'model_config_list { config { name: "m" base_path: "/models/m" '
        'model_platform: "tensorflow" } }')
    assert [m.name for m in parsed.models] == ["m"], parsed

    request = pb.PredictRequest()
    request.model_spec.name = "m"
    tensor_proto.from_ndarray(np.array([[1.0, 2.0]], np.float32), pb.DataTypeProto.DT_FLOAT,
                              request.inputs["x"])
    again = pb.PredictRequest.FromString(request.SerializeToString())
    array = tensor_proto.to_ndarray(again.inputs["x"], "x")
    assert array.tolist() == [[1.0, 2.0]] and array.dtype == np.float32, array

    request_input, _ = edgeserve.example_json.parse_classify_regress_request(
        b'{"examples": [{"x": [1.5]}]}')
    assert request_input.example_list.examples[0].features.feature["x"].float_list.value == [1.5]

    def record(data):
        length = struct.pack("<Q", len(data))
        return (length + struct.pack("<I", tfrecord.masked_crc32c(length)) + data
                + struct.pack("<I", tfrecord.masked_crc32c(data)))

    log = pb.PredictionLog()
    log.predict_log.request.CopyFrom(request)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "records")
        with open(path, "wb") as f:
            f.write(record(log.SerializeToString()) + record(b""))
        records = list(warmup.read_tfrecords(path))
    assert [pb.PredictionLog.FromString(r) for r in records[:1]] == [log]
    assert records[1] == b""

    assert pb.REFLECTION_POOL.FindFileContainingSymbol(
        "tensorflow.serving.PredictionService").name == "tensorflow_serving/apis/prediction_service.proto"

    loaded = sorted(name for name in sys.modules if name.startswith("tensorflow"))
    print(loaded)
""")


def test_serving_modules_never_import_tensorflow():
    result = subprocess.run([sys.executable, "-c", CHILD], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
