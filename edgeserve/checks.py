"""A request's inputs and output filter against a signature, with TF Serving's texts.

Names (predict_util.cc's size check, then TensorFlow's GetInputValues), dtypes (the
session's feed check) and shapes, checked before a model runs. Used by the api layer
for requests and by warmup for replayed ones; knows nothing of models or transports.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from . import dtypes
from .errors import invalid_argument
from .servable import SignatureSpec


def _join(names) -> str:
    return ",".join(sorted(names))


def _shape_text(shape) -> str:
    return "[" + ",".join(str(d) for d in shape) + "]"


def check_input_names(signature: SignatureSpec, names: Sequence[str]) -> None:
    """The request's input aliases against the signature's, before any tensor is parsed:
    predict_util.cc's size check, then TF's GetInputValues (cc/saved_model/util.cc),
    which walks the signature's inputs and then refuses names it did not use."""
    expected = signature.inputs
    if len(names) == len(expected):
        for alias in names:
            if alias not in expected:
                break
        else:
            return  # every input named once: the usual request
    if len(names) > len(expected) or (len(names) < len(expected) and not signature.defaults):
        raise invalid_argument(
            f"input size does not match signature: {len(names)}!={len(expected)} "
            f"len({{{_join(names)}}}) != len({{{_join(expected)}}}). "
            f"Sent extra: {{{_join(set(names) - set(expected))}}}. "
            f"Missing but required: {{{_join(set(expected) - set(names))}}}."
        )
    for alias, spec in expected.items():
        if alias not in names and alias not in signature.defaults:
            raise invalid_argument(
                f"Signature input alias: {alias}(feed name: {spec.name}) not found in request "
                f"and no default value provided. Inputs expected to be in the request "
                f"{{{_join(names)}}}, or default input alias set: {_join(signature.defaults)}"
            )
    used = [alias for alias in names if alias in expected]
    if len(used) != len(names):
        raise invalid_argument(
            f"Inputs contains invalid name. Used request inputs: {_join(used)}, "
            f"request input: {_join(names)}"
        )


def type_string(dtype: int) -> str:
    """TF's DataTypeString: DT_FLOAT -> "float", DT_FLOAT_REF -> "float_ref"."""
    return dtypes.name(dtype).removeprefix("DT_").lower()


def check_inputs(signature: SignatureSpec, inputs: Mapping[str, np.ndarray]) -> None:
    """Names, dtypes and shapes of a request's inputs against the signature.

    Names and dtypes with TF Serving's messages (its session's feed check names the
    feed by its position in the signature's inputs). Shapes: when the rank matches the
    signature's, every fixed dimension after the first must agree (the first is the
    batch dimension, which TF2 exports often record as a fixed 1). A different rank is
    left to the model, as TF Serving does: its documented example sends rows of
    scalars ({"instances": [1.0, 2.0]}) to half_plus_two's [-1,1] input.
    """
    check_input_names(signature, inputs)
    for position, (alias, spec) in enumerate(signature.inputs.items()):
        array = inputs.get(alias)
        if array is None:
            continue
        want = dtypes.to_numpy(spec.dtype)
        if want is not None and array.dtype != want:
            raise invalid_argument(
                f"Expects arg[{position}] to be {type_string(spec.dtype)} but "
                f"{type_string(dtypes.from_numpy(array.dtype))} is provided"
            )
        shape = spec.shape
        if shape is None:
            continue
        got = array.shape
        if len(got) == len(shape) and any(
            want_dim >= 0 and got_dim != want_dim
            for want_dim, got_dim in zip(shape[1:], got[1:])
        ):
            raise invalid_argument(
                f"Input \"{alias}\" has shape {_shape_text(got)} but the signature expects "
                f"{_shape_text(shape)} (-1: any size)"
            )


def check_output_filter(signature: SignatureSpec, output_filter: Sequence[str]) -> None:
    seen: set[str] = set()
    for alias in output_filter:
        if alias not in signature.outputs:
            raise invalid_argument(
                f"output tensor alias not found in signature: {alias} "
                f"Outputs expected to be in the set {{{_join(signature.outputs)}}}."
            )
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
