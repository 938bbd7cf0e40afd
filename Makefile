# scenebench — `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON_BASE ?= python3
VENV        ?= .venv
PY          := $(VENV)/bin/python
PIP         := $(VENV)/bin/pip
EXTRAS      ?= cpu,cluster,dev
# Talking to a cluster (submit, leaderboard, compare, local-kind) needs no TensorFlow: a venv
# with the `cluster` extra only, a few hundred MB instead of two GB.
CLUSTER_VENV ?= .venv-cluster
CLUSTER_PY  := $(CLUSTER_VENV)/bin/python
STORE       ?= file://./artifacts
DATA        ?= synthetic
ARCHS       ?= all
FORMATS     ?= float32,int8
IMAGE_SIZE  ?= 64x96
EPOCHS      ?= 3
WEIGHTS     ?= none
RUN_ID      ?=
# Steps a run may take from an earlier run with the same inputs (empty: the default, train,convert,evaluate).
REUSE       ?=
PYTEST_ARGS ?=
# Test processes: one per core (pytest-xdist), each taking whole files so that a module's
# fixtures (a trained run, a converted model) are built once. TEST_WORKERS=0: one process.
TEST_WORKERS ?= auto

export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: help install install-cluster check-wheels run test test-fast bench bench-quant clean

help: ## List the targets and the variables they take
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_.-]+:.*## /{printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo
	@echo "Variables: STORE=$(STORE) DATA=$(DATA) ARCHS=$(ARCHS) FORMATS=$(FORMATS)"
	@echo "           IMAGE_SIZE=$(IMAGE_SIZE) EPOCHS=$(EPOCHS) WEIGHTS=$(WEIGHTS) RUN_ID=$(RUN_ID) REUSE=$(REUSE)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON_BASE) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[$(EXTRAS)]'
	touch $@

install: $(VENV)/.installed ## Create .venv and install scenebench with pinned dependencies

$(CLUSTER_VENV)/.installed: pyproject.toml
	$(PYTHON_BASE) -m venv $(CLUSTER_VENV)
	$(CLUSTER_VENV)/bin/pip install --quiet --upgrade pip
	$(CLUSTER_VENV)/bin/pip install --quiet -e '.[cluster]'
	touch $@

install-cluster: $(CLUSTER_VENV)/.installed ## Create .venv-cluster: scenebench with the cluster extra only (no TensorFlow)

check-wheels: install ## Check, installing nothing, that the pinned sets resolve to wheels on macOS arm64 (PyPI)
	$(PY) .ci/check_wheels.py

run: install ## Run the whole study on this machine (synthetic data by default) and print the leaderboard
	$(PY) -m jobs.pipeline --data $(DATA) --store $(STORE) --archs $(ARCHS) --formats $(FORMATS) \
		--image-size $(IMAGE_SIZE) --epochs $(EPOCHS) --weights $(WEIGHTS) $(if $(RUN_ID),--run-id $(RUN_ID)) \
		$(if $(REUSE),--reuse $(REUSE))

test: install ## Run the test suite (what CI runs)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: install ## Run the tests that train or convert no model
	$(PY) -m pytest -m 'not slow and not cluster' $(PYTEST_ARGS)

BENCH_OUT   ?= bench/results

bench: install ## Measure pipeline throughput, measurement overhead, runner repeatability, int8 drop, `make run` time, reuse and each integer format's drop into bench/
	$(PY) -m bench.run --out $(BENCH_OUT)
	$(PY) -m bench.quant --out $(BENCH_OUT)

bench-quant: install ## Train to >= 80 % top-1, convert to every format, measure each integer format's drop into BENCH_OUT/quant.json (default bench/results)
	$(PY) -m bench.quant --out $(BENCH_OUT)

clean: ## Remove local artifacts and caches (not .venv)
	rm -rf artifacts .pytest_cache bench/results

include mk/cluster.mk
