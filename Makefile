# aeguard developer entry points. `make demo` and `make test` work on a fresh machine (they create .venv).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q
DEMO_EXTRAS := cpu,train
TEST_EXTRAS := cpu,train,serve,dev,distributed,sign

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
	$(PY) -m pytest -q -p no:cacheprovider --durations=15

lint: $(VENV)/.test-installed
	$(VENV)/bin/ruff check .

bench-train: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard bench-train -o docs/benchmarks/train_overhead.json

clean:
	rm -rf $(VENV) artifacts .bentoml .pytest_cache

# --- edge deployment (docs/edge.md) ------------------------------------------------------------------------
.PHONY: edge-check bench-edge edge-gpu

# aarch64 parity under qemu (needs root; caches the arm64 root filesystem in ~/.cache/aeguard/edge)
edge-check: $(VENV)/.demo-installed
	PY=$(abspath $(PY)) edge/check.sh

# INT8 vs FP32 on every ODDS dataset in $(ODDS_DIR) (default: $AEGUARD_DATA, then the per-user cache)
bench-edge: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard bench-edge $(if $(ODDS_DIR),--data-dir $(ODDS_DIR)) -o docs/benchmarks/edge.json

# CUDA provider against CPU (difference, batch throughput); run where onnxruntime-gpu and a GPU are present
edge-gpu: $(VENV)/.demo-installed
	$(PY) -m aeguard.edge.check_score make .cache/edge-gpu
	$(PY) -m aeguard.edge.check_score devices .cache/edge-gpu --json .cache/edge-gpu/devices.json

# --- serving (docs/serving.md) -----------------------------------------------------------------------------
# The bento and its model store live in a project-local BENTOML_HOME; serve the built bento with the same
# BENTOML_HOME (`BENTOML_HOME=.bentoml/home bentoml serve aeguard-scoring:latest`).
SERVE_ARTIFACT ?= artifacts/demo-ae
BENTO_MODEL ?= aeguard-demo
BENTO_ENV := BENTOML_DO_NOT_TRACK=True BENTOML_HOME=$(CURDIR)/.bentoml/home
BENCH_OUT ?= runs/serving-bench.jsonl

.PHONY: serve bento bench-serve test-serving

$(SERVE_ARTIFACT): | $(VENV)/.test-installed
	$(VENV)/bin/aeguard demo --detector ae -o $(SERVE_ARTIFACT)

serve: $(VENV)/.test-installed $(SERVE_ARTIFACT)
	$(VENV)/bin/aeguard serve $(SERVE_ARTIFACT)

# offline: the wheel is built without build isolation (needs setuptools>=68 and wheel in the venv, else pip
# falls back to an isolated build from the index), packages are not locked, the artifact is a store entry
bento: $(VENV)/.test-installed $(SERVE_ARTIFACT)
	$(BENTO_ENV) $(VENV)/bin/aeguard models import $(SERVE_ARTIFACT) --name $(BENTO_MODEL)
	rm -f dist/aeguard-*.whl
	$(PY) -m pip wheel -q --no-deps --no-build-isolation -w dist . || $(PY) -m pip wheel -q --no-deps -w dist .
	$(BENTO_ENV) $(VENV)/bin/bentoml build .

# the load-benchmark tables of docs/serving.md: the service against the plain-Starlette reference endpoint,
# side by side (JSON lines appended to $(BENCH_OUT), Markdown tables in runs/serving-bench*.md); the machine's
# load average is printed before and after, and recorded in every result line
BENCH_DURATION ?= 6
bench-serve: $(VENV)/.test-installed $(SERVE_ARTIFACT)
	@mkdir -p $(dir $(BENCH_OUT))
	@uptime
	$(VENV)/bin/aeguard bench-serve $(SERVE_ARTIFACT) --body records,columns,arrow --rows-per-request 1,256,4096 \
		--concurrency 1,8 --requests 1000000 --duration $(BENCH_DURATION) --rounds 3 --burst-seconds 10 \
		-o $(BENCH_OUT) --report runs/serving-bench.md
	$(VENV)/bin/aeguard bench-serve $(SERVE_ARTIFACT) --workers 2 --body records,arrow --rows-per-request 256,4096 \
		--concurrency 8 --requests 1000000 --duration $(BENCH_DURATION) --rounds 3 \
		-o $(BENCH_OUT) --report runs/serving-bench-2workers.md
	$(VENV)/bin/aeguard bench-serve $(SERVE_ARTIFACT) --requests 10000 --concurrency 16 --rows-per-request 16 \
		--bad-fraction 0.5 --max-rows 100 --max-body-bytes 262144 -o $(BENCH_OUT)
	@uptime

test-serving: $(VENV)/.test-installed
	$(PY) -m pytest -q -p no:cacheprovider tests/test_serving.py

# The committed ODDS benchmark (docs/benchmarks/odds.md): ae + the 8 PyOD baselines, 5 seeds, every ODDS dataset
# present in $(ODDS_DIR) (default: $AEGUARD_DATA, then the per-user cache). Reruns resume in runs/odds.
ODDS_DIR ?=
.PHONY: bench-odds
bench-odds: $(VENV)/.demo-installed
	$(VENV)/bin/aeguard benchmark --suite odds --detectors ae,baselines --seeds 5 --workers 2 --out runs/odds \
		$(if $(ODDS_DIR),--data-dir $(ODDS_DIR)) --report-to docs/benchmarks/odds.md

# --- reliability and security (docs/security.md, docs/serving.md "Faults and endurance") -------------------
.PHONY: fuzz fuzz-atheris fault-kill soak test-security
FUZZ_EXAMPLES ?= 2000
# the property tests of tests/test_fuzz.py with many more cases than CI's 100 per property (random seed;
# hypothesis prints the number of cases run per property)
fuzz: $(VENV)/.test-installed
	AEGUARD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) AEGUARD_FUZZ_RANDOM=1 $(PY) -m pytest -q -p no:cacheprovider \
		tests/test_fuzz.py --hypothesis-show-statistics

# coverage-guided (atheris/libFuzzer), bounded: ATHERIS_RUNS inputs or 10 minutes over the loaders and parsers
ATHERIS_RUNS ?= 200000
fuzz-atheris: $(VENV)/.test-installed
	$(PIP) install atheris
	$(PY) tests/fuzz/atheris_loaders.py -runs=$(ATHERIS_RUNS) -max_len=4096 -rss_limit_mb=2048 -max_total_time=600

test-security: $(VENV)/.test-installed
	$(PY) -m pytest -q -p no:cacheprovider tests/test_security.py tests/test_fuzz.py

# SIGKILL one of 2 workers under bounded mixed load; JSON result appended to runs/faults.jsonl
fault-kill: $(VENV)/.test-installed $(SERVE_ARTIFACT)
	@mkdir -p runs
	$(VENV)/bin/aeguard fault-kill $(SERVE_ARTIFACT) --workers 2 --before 5 --after 25 -o runs/faults.jsonl

# 5 minutes of mixed good/bad load on 2 workers: RSS start/end (fails over 10 % growth), requests/s
SOAK_SECONDS ?= 300
soak: $(VENV)/.test-installed $(SERVE_ARTIFACT)
	@mkdir -p runs
	$(VENV)/bin/aeguard soak $(SERVE_ARTIFACT) --duration $(SOAK_SECONDS) --workers 2 -o runs/faults.jsonl
