"""The TF Serving message classes edgeserve speaks, imported in one place.

Request/response messages come from the tensorflow-serving-api package and
TensorFlow's framework protos (DESIGN.md rule 3). Every other module takes them
from here, so that where they come from (today: packages that import TensorFlow)
is one decision, made in one file.
"""
from __future__ import annotations

from .tensorflow_import import import_tensorflow

import_tensorflow()  # first, under its lock: the imports below run TensorFlow's init

from tensorflow.core.example import example_pb2
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    input_pb2,
    model_management_pb2,
    model_pb2,
    predict_pb2,
    prediction_log_pb2,
    regression_pb2,
)
# Imported for their service descriptors: server reflection looks the services
# up in the default descriptor pool.
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2
from tensorflow_serving.config import model_server_config_pb2; ModelServerConfig = model_server_config_pb2.ModelServerConfig  # noqa: E702

SERVICE_FILES = (model_service_pb2.DESCRIPTOR, prediction_service_pb2.DESCRIPTOR)

Example = example_pb2.Example
TensorProto = tensor_pb2.TensorProto
DataTypeProto = types_pb2
SignatureDef = meta_graph_pb2.SignatureDef
ModelSpecProto = model_pb2.ModelSpec
Input = input_pb2.Input
PredictRequest = predict_pb2.PredictRequest
PredictResponse = predict_pb2.PredictResponse
ClassificationRequest = classification_pb2.ClassificationRequest
ClassificationResponse = classification_pb2.ClassificationResponse
ClassificationResult = classification_pb2.ClassificationResult
RegressionRequest = regression_pb2.RegressionRequest
RegressionResponse = regression_pb2.RegressionResponse
RegressionResult = regression_pb2.RegressionResult
MultiInferenceRequest = inference_pb2.MultiInferenceRequest
MultiInferenceResponse = inference_pb2.MultiInferenceResponse
GetModelMetadataRequest = get_model_metadata_pb2.GetModelMetadataRequest
GetModelMetadataResponse = get_model_metadata_pb2.GetModelMetadataResponse
SignatureDefMap = get_model_metadata_pb2.SignatureDefMap
GetModelStatusRequest = get_model_status_pb2.GetModelStatusRequest
GetModelStatusResponse = get_model_status_pb2.GetModelStatusResponse
ReloadConfigRequest = model_management_pb2.ReloadConfigRequest
ReloadConfigResponse = model_management_pb2.ReloadConfigResponse
PredictionLog = prediction_log_pb2.PredictionLog  # model warmup records
