"""Generated protobuf code and data: `*_pb2.py` modules for the TF Serving config
messages the tensorflow-serving-api package does not ship (protos/generate.py), and
`serving_descriptors.binpb`, the descriptors TF Serving's message classes are built
from (protos/generate_messages.py; see edgeserve/messages.py).

Everything here is generated; regenerate, never edit.
"""
