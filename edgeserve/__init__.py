"""edgeserve: TensorFlow Serving's model server for small Linux machines."""

__version__ = "0.1.0"
