"""TF Serving's rules for classification and regression signatures.

What a Classify, Regress or MultiInference call feeds and fetches, and how the
outputs become `ClassificationResult` / `RegressionResult` messages, with TF
Serving's checks and message texts (servables/tensorflow/classifier.cc,
regressor.cc, util.cc). Pure functions over signatures, `Input` messages and numpy
arrays: nothing here resolves models or runs anything.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
from google.protobuf import text_format

from . import dtypes
from .dtypes import DataType
from .errors import ServingError, StatusCode, invalid_argument
from .servable import CLASSIFY_METHOD_NAME, REGRESS_METHOD_NAME, SignatureSpec

if TYPE_CHECKING:  # the message classes import TensorFlow; only the runtime needs it
    from .messages import ClassificationResult, Input, RegressionResult

CLASSIFY_INPUTS = "inputs"
CLASSIFY_OUTPUT_CLASSES = "classes"
CLASSIFY_OUTPUT_SCORES = "scores"
REGRESS_INPUTS = "inputs"
REGRESS_OUTPUTS = "outputs"

# Renders a signature as TF's SignatureDef::DebugString for error messages; given
# by the caller, who knows where the SignatureDef bytes live.
DebugString = Callable[[], str]


def debug_string(serialized_signature_def: bytes) -> str:
    """A SignatureDef in protobuf text format, as DebugString() prints it."""
    from .messages import SignatureDef

    return text_format.MessageToString(SignatureDef.FromString(serialized_signature_def))


def serialized_examples(input_message: Input) -> np.ndarray:
    """The examples of an `Input` as a 1-D string tensor (util.cc's
    InputToSerializedExampleTensor): with a context, each entry is the context's
    bytes followed by the example's, which parses as the two merged."""
    kind = input_message.WhichOneof("kind")
    if kind == "example_list":
        examples = [e.SerializeToString() for e in input_message.example_list.examples]
    elif kind == "example_list_with_context":
        with_context = input_message.example_list_with_context
        context = with_context.context.SerializeToString()
        examples = [context + e.SerializeToString() for e in with_context.examples]
    else:
        examples = []
    if not examples:
        raise invalid_argument("Input is empty.")
    array = np.empty(len(examples), dtype=object)
    array[:] = examples
    return array


def classification_outputs(signature: SignatureSpec, describe: DebugString) -> list[str]:
    """The output aliases a classification signature is run for (PreProcessClassification)."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) not in (1, 2):
        raise invalid_argument(f"Expected one or two output Tensors, found {len(signature.outputs)}")
    if CLASSIFY_INPUTS not in signature.inputs:
        raise invalid_argument(f"No classification inputs found in SignatureDef: {describe()}")
    outputs = [a for a in (CLASSIFY_OUTPUT_CLASSES, CLASSIFY_OUTPUT_SCORES) if a in signature.outputs]
    if not outputs:
        raise invalid_argument(
            'Expected classification signature outputs to contain at least one of "classes" '
            f'or "scores". Signature was: {describe()}'
        )
    return outputs


def regression_outputs(signature: SignatureSpec, describe: DebugString) -> list[str]:
    """The output aliases a regression signature is run for (PreProcessRegression)."""
    if len(signature.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if len(signature.outputs) != 1:
        raise invalid_argument("Expected one output Tensor.")
    if REGRESS_INPUTS not in signature.inputs:
        raise invalid_argument(f"No regression inputs found in SignatureDef: {describe()}")
    if REGRESS_OUTPUTS not in signature.outputs:
        raise invalid_argument(f"No regression outputs found in SignatureDef: {describe()}")
    return [REGRESS_OUTPUTS]


def _shape_debug_string(array: np.ndarray) -> str:
    return "[" + ",".join(str(d) for d in array.shape) + "]"


def _dtype_name(array: np.ndarray) -> str:
    return dtypes.name(dtypes.from_numpy(array.dtype))


def fill_classification_result(
    outputs: Mapping[str, np.ndarray], num_examples: int, result: ClassificationResult
) -> None:
    """PostProcessClassificationResult: classes (DT_STRING) and/or scores (DT_FLOAT),
    both [batch_size, num_classes]."""
    classes = outputs.get(CLASSIFY_OUTPUT_CLASSES)
    scores = outputs.get(CLASSIFY_OUTPUT_SCORES)
    for name, array, dtype in (("classes", classes, DataType.DT_STRING), ("scores", scores, DataType.DT_FLOAT)):
        if array is None:
            continue
        if array.ndim != 2:
            raise invalid_argument(
                f"Expected Tensor shape: [batch_size num_classes] but got {_shape_debug_string(array)}"
            )
        if dtypes.from_numpy(array.dtype) != dtype:
            raise invalid_argument(f"Expected {name} Tensor of {dtypes.name(dtype)}. Got: {_dtype_name(array)}")
        if array.shape[0] != num_examples:
            raise invalid_argument(
                f"Expected {name} output batch size of {num_examples}. Got: {array.shape[0]}"
            )
    if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
        raise invalid_argument(
            "Tensors class and score should match in dim_size(1). "
            f"Got {classes.shape[1]} vs. {scores.shape[1]}"
        )
    num_classes = (classes if classes is not None else scores).shape[1]
    score_rows = scores.tolist() if scores is not None else None
    for i in range(num_examples):
        classifications = result.classifications.add()
        for c in range(num_classes):
            entry = classifications.classes.add()
            if classes is not None:
                label = classes[i, c]
                entry.label = label if isinstance(label, bytes) else str(label).encode()
            if score_rows is not None:
                entry.score = score_rows[i][c]


def fill_regression_result(
    outputs: Mapping[str, np.ndarray], num_examples: int, result: RegressionResult
) -> None:
    """PostProcessRegressionResult: one float per example, [batch_size] or [batch_size, 1]."""
    output = outputs[REGRESS_OUTPUTS]
    if not (output.ndim == 1 or (output.ndim == 2 and output.shape[1] == 1)):
        raise invalid_argument(
            "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] "
            f"but got {_shape_debug_string(output)}"
        )
    if output.shape[0] != num_examples:
        raise invalid_argument(
            f"Input batch size did not match output batch size: {num_examples} vs. {output.shape[0]}"
        )
    if dtypes.from_numpy(output.dtype) != DataType.DT_FLOAT:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {_dtype_name(output)}")
    for value in output.reshape(-1).tolist():
        result.regressions.add().value = value


def task_outputs(
    method_name: str, signature: SignatureSpec, describe: DebugString
) -> list[str]:
    """A MultiInference task's output aliases, by the task's method name."""
    if method_name == CLASSIFY_METHOD_NAME:
        return classification_outputs(signature, describe)
    if method_name == REGRESS_METHOD_NAME:
        return regression_outputs(signature, describe)
    raise ServingError(StatusCode.UNIMPLEMENTED, f"Unsupported signature method_name: {method_name}")

