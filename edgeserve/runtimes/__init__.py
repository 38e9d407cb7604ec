"""Runtimes: the only code that loads and runs models (and the only code that imports TensorFlow)."""
