# aeguard developer entry points. `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
DEMO_EXTRAS := cpu,train
TEST_EXTRAS := cpu,train,serve,dev,distributed

.PHONY: demo test lint install install-demo clean bench-train

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

$(VENV)/.demo-installed: pyproject.toml | $(VENV)/bin/python
	# torch==2.13.0 is pinned in the train extra (a CPU wheel); pip, not uv, so that pin is honoured.
	$(PIP) install -e ".[$(DEMO_EXTRAS)]"
	touch $@

$(VENV)/.test-installed: pyproject.toml | $(VENV)/bin/python
	$(PIP) install -e ".[$(TEST_EXTRAS)]"
	touch $@ $(VENV)/.demo-installed

install-demo: $(VENV)/.demo-installed
install: $(VENV)/.test-installed

demo: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard demo

test: $(VENV)/.test-installed
	$(PY) -m pytest -q -p no:cacheprovider

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

bench-train: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard bench-train -o docs/benchmarks/train_overhead.json

clean:
	rm -rf $(VENV) artifacts .bentoml .pytest_cache

# --- edge deployment (issue 6) ---------------------------------------------------------------------------
EDGE_DATA ?= $(or $(AEGUARD_DATA),../shared/data/odds)
.PHONY: edge-check bench-edge

# aarch64 parity under qemu (needs root; caches the arm64 root filesystem in ~/.cache/aeguard/edge)
edge-check: $(VENV)/.demo-installed
	PY=$(abspath $(PY)) scripts/edge_check.sh

bench-edge: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard bench-edge --data-dir $(EDGE_DATA) -o docs/benchmarks/edge.json
