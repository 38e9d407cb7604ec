# make pyz: dist/edgeserve.pyz, edgeserve and all its dependencies in one file (shiv),
# TensorFlow included (SavedModels and TFLite models).
# make pyz-lite: dist/edgeserve-lite.pyz, without TensorFlow (TFLite models only).
# Run either with `python3 dist/edgeserve.pyz --model_base_path=...` on any Linux
# x86-64 machine with Python 3.11; its native wheels (TensorFlow, LiteRT, uvloop, ...)
# are unpacked once into $SHIV_ROOT (default ~/.shiv; the systemd unit sets
# /var/cache/edgeserve).
PYTHON ?= python3
SHIV = $(PYTHON) -m shiv --console-script edgeserve --python '/usr/bin/env python3'

.PHONY: pyz pyz-lite shiv
shiv:
	$(PYTHON) -m pip install -q 'shiv>=1.0.6,<2'
	mkdir -p dist

pyz: shiv
	$(SHIV) --output-file dist/edgeserve.pyz '.[tensorflow]'

# LiteRT's WebGPU accelerator, NPU compiler plugins and command-line tools are never
# used by a CPU interpreter: left out, they would be a quarter of the file.
LITERT_UNUSED = ai_edge_litert/libLiteRtWebGpuAccelerator.so ai_edge_litert/vendors ai_edge_litert/tools/apply_plugin_main

pyz-lite: shiv
	rm -rf build/pyz-lite
	$(PYTHON) -m pip install -q --target build/pyz-lite .
	cd build/pyz-lite && rm -rf $(LITERT_UNUSED) bin
	$(SHIV) --site-packages build/pyz-lite --output-file dist/edgeserve-lite.pyz
