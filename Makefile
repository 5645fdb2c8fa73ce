# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 120
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_TO_API_BATCH_INTERVAL ?= 0.3
export RAY_AUTH_MODE ?= disabled
export RAY_USAGE_STATS_ENABLED ?= 0
export RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S ?= 180
export CUPY_CACHE_DIR ?= $(CURDIR)/.cupy-cache
export MPLBACKEND ?= Agg

.PHONY: venv demo test rehearse bench bench-deep clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	# A CPU build of torch lies on local disk; pin it first so nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[all]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m flows.demo

test: $(STAMP)
	$(PY) -m pytest tests -q

# the deployment rehearsal (as root, in network namespaces; a few minutes): .ci/run calls it after `make test`
rehearse: $(STAMP)
	KMEANS_DIST_REHEARSAL=1 $(PY) -m pytest tests/test_deploy.py -q -k rehearsal -rs -s

bench: $(STAMP)
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) benchmarks/bench_kmeans.py

bench-deep: $(STAMP)
	$(PY) benchmarks/deep_mnist.py

clean:
	rm -rf $(VENV) .prefect .cupy-cache demo-output
