"""Which runtime loads a version folder, and whether this install can run it.

TF Serving decides by the model's platform (`model_platform` in the config file) and,
for "tensorflow" models, by `--prefer_tflite_model`: with it, a version's
`model.tflite` is served instead of its SavedModel. edgeserve also serves a version
that holds only a `model.tflite` (TF Serving would report that no SavedModel was
found). A lite install has no TensorFlow: a SavedModel there fails its load with a
message naming the full install, and nothing imports TensorFlow to find that out.
"""
from __future__ import annotations

import functools
import importlib.util
import os

from ..errors import ServingError, StatusCode

SAVEDMODEL = "tensorflow"  # TF Serving's kTensorFlowModelPlatform
TFLITE = "tflite"
TFLITE_FILENAME = "model.tflite"  # TF Serving's kTfLiteModelFilename
SAVED_MODEL_FILENAMES = ("saved_model.pb", "saved_model.pbtxt")  # what makes a SavedModel folder


def runtime_for(path: str, platform: str, prefer_tflite: bool) -> str:
    """SAVEDMODEL or TFLITE for the version folder `path` of a `platform` model."""
    if platform == TFLITE:
        return TFLITE
    if not os.path.isfile(os.path.join(path, TFLITE_FILENAME)):
        return SAVEDMODEL
    if prefer_tflite:
        return TFLITE
    has_saved_model = any(os.path.isfile(os.path.join(path, name)) for name in SAVED_MODEL_FILENAMES)
    return SAVEDMODEL if has_saved_model else TFLITE


@functools.cache
def has_tensorflow() -> bool:
    """Whether TensorFlow is installed (found, not imported)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # a finder that refuses it outright
        return False


def lite_install_error(path: str) -> ServingError:
    return ServingError(
        StatusCode.UNIMPLEMENTED,
        f"{path} holds a SavedModel, and this is edgeserve's lite install, without TensorFlow: "
        f"it serves {TFLITE_FILENAME} files only. Serve SavedModels with the full install "
        "(pip install 'edgeserve[tensorflow]', or edgeserve.pyz instead of edgeserve-lite.pyz).",
    )
