# make pyz: dist/edgeserve.pyz, edgeserve and all its dependencies in one file (shiv).
# Run it with `python3 dist/edgeserve.pyz --model_base_path=...` on any Linux x86-64
# machine with Python 3.11; its native wheels (TensorFlow, uvloop, ...) are unpacked
# once into $SHIV_ROOT (default ~/.shiv; the systemd unit sets /var/cache/edgeserve).
PYTHON ?= python3

.PHONY: pyz
pyz:
	$(PYTHON) -m pip install -q 'shiv>=1.0.6,<2'
	mkdir -p dist
	$(PYTHON) -m shiv --console-script edgeserve --python '/usr/bin/env python3' \
		--output-file dist/edgeserve.pyz .
