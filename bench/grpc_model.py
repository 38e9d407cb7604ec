"""The Predict a Python user would write, shared by the two gRPC baselines.

`load_predict(model_dir, fast)` loads a SavedModel version the way edgeserve loads it
(`tf.compat.v1.saved_model.loader.load` into a `tf.compat.v1.Session`, one intra-op and
one inter-op thread) and returns `predict(request: PredictRequest) -> PredictResponse`:

- inputs: `tf.make_ndarray` on each `request.inputs[alias]`, fed by the tensor name the
  chosen SignatureDef gives (signature from `model_spec.signature_name`, default
  "serving_default"); `output_filter` honoured;
- the model call: `session.run(fetches, feed_dict)` (what a competent user writes;
  ~85 µs on half_plus_two) or, with fast=True, a cached
  `Session._make_callable_from_options` callable per (inputs, outputs) with
  `run_options.inter_op_thread_pool = -1` (run on the calling thread), the private fast
  path edgeserve uses for inline runs (~5 µs; see DESIGN.md, rule 1 and "How a
  SavedModel signature is called");
- outputs: `tf.make_tensor_proto` per output, copied into `response.outputs[alias]`;
  `model_spec` filled with name, version and signature name, as TF Serving answers.

No validation beyond what TF itself does and no error mapping beyond turning every
exception into INVALID_ARGUMENT: a floor, not a server. Not part of edgeserve; used only
by bench/baseline_grpcio.py and bench/baseline_grpclib.py.
"""
from __future__ import annotations

import os

MODEL_NAME = "half_plus_two"
DEFAULT_SIGNATURE = "serving_default"


def load_predict(model_dir: str, fast: bool = False, model_name: str = MODEL_NAME):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    tf.get_logger().setLevel("ERROR")
    v1 = tf.compat.v1
    config = v1.ConfigProto(intra_op_parallelism_threads=1, inter_op_parallelism_threads=1)
    session = v1.Session(graph=tf.Graph(), config=config)
    with session.graph.as_default():
        meta_graph = v1.saved_model.loader.load(session, ["serve"], model_dir)
    signatures = {
        key: ({a: i.name for a, i in sig.inputs.items()}, {a: i.name for a, i in sig.outputs.items()})
        for key, sig in meta_graph.signature_def.items()
    }
    version = int(os.path.basename(os.path.normpath(model_dir)))
    make_ndarray = tf.make_ndarray
    make_tensor_proto = tf.make_tensor_proto
    PredictResponse = predict_pb2.PredictResponse
    callables: dict[tuple, object] = {}
    if fast:
        from tensorflow.core.protobuf import config_pb2

    def run(sig_inputs, sig_outputs, feeds, out_aliases):
        if not fast:
            values = session.run([sig_outputs[a] for a in out_aliases],
                                 feed_dict={sig_inputs[a]: v for a, v in feeds.items()})
            return dict(zip(out_aliases, values))
        in_aliases = tuple(feeds)
        key = (id(sig_inputs), in_aliases, out_aliases)
        call = callables.get(key)
        if call is None:
            options = config_pb2.CallableOptions(
                feed=[sig_inputs[a] for a in in_aliases],
                fetch=[sig_outputs[a] for a in out_aliases])
            # As edgeserve's inline runs: execute on the calling thread (no pool handoff).
            options.run_options.inter_op_thread_pool = -1
            call = session._make_callable_from_options(options)
            callables[key] = call
        return dict(zip(out_aliases, call(*[feeds[a] for a in in_aliases])))

    def predict(request):
        signature_name = request.model_spec.signature_name or DEFAULT_SIGNATURE
        sig_inputs, sig_outputs = signatures[signature_name]
        feeds = {alias: make_ndarray(proto) for alias, proto in request.inputs.items()}
        out_aliases = tuple(request.output_filter) or tuple(sig_outputs)
        outputs = run(sig_inputs, sig_outputs, feeds, out_aliases)
        response = PredictResponse()
        response.model_spec.name = model_name
        response.model_spec.version.value = version
        response.model_spec.signature_name = signature_name
        for alias, value in outputs.items():
            response.outputs[alias].CopyFrom(make_tensor_proto(value))
        return response

    return session, predict
