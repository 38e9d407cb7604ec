"""Generated protobuf modules for the TF Serving config messages that the
tensorflow-serving-api package does not ship (see protos/ and protos/generate.py).

Nothing but generated `*_pb2.py` modules lives here; regenerate, never edit them.
"""
