# ct-glip: `make run` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where tables, volumes and the synthetic cohort go; override with CTGLIP_DATA=/path make run.
export CTGLIP_DATA ?= $(CURDIR)/data
# Project-local Dagster instance so runs persist without any global set-up.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Lets `dagster asset materialize --select X` find the Definitions without -m (its CLI ignores
# pyproject's [tool.dagster] block); `source .venv/bin/activate` sets the same for your shell.
export DAGSTER_MODULE_NAME ?= assets.definitions
# Torch: 2.13.0 is the CPU build on this machine's disk; a bare `torch` pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# Only the class map of TotalSegmentator is needed by default (no weights, no nnU-Net); its full
# dependency set (timm -> torchvision) does not import beside the CPU torch, so it stays optional.
TOTALSEG_PIN ?= totalsegmentator==2.18.0
STAMP := $(VENV)/.ct-glip-installed
UI_PORT ?= 3000

.PHONY: setup run test ui bench benchmark clean help

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(TOTALSEG_PIN)
	@mkdir -p $(DAGSTER_HOME) && touch $(DAGSTER_HOME)/dagster.yaml
	@grep -q DAGSTER_MODULE_NAME $(VENV)/bin/activate || printf '%s\n' \
		'# ct-glip: project-local Dagster instance and Definitions for the dagster CLI' \
		'export DAGSTER_HOME="$${DAGSTER_HOME:-$(DAGSTER_HOME)}"' \
		'export DAGSTER_MODULE_NAME="$${DAGSTER_MODULE_NAME:-assets.definitions}"' >> $(VENV)/bin/activate
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything (offline apart from the package registry)

run: $(STAMP)  ## materialize the whole asset graph on the synthetic cohort into $CTGLIP_DATA
	$(PY) -m assets.run_all

test: $(STAMP)  ## run the test suite
	$(PY) -m pytest -q

ui: $(STAMP)  ## Dagster UI on http://127.0.0.1:$(UI_PORT) (loopback only)
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p $(UI_PORT)

bench: $(STAMP)  ## run every speed/ablation script in bench/ (not the test-split benchmark)
	@for b in bench/*.py; do [ $$b = bench/benchmark.py ] && continue; echo "== $$b"; $(PY) $$b || exit 1; done

benchmark: $(STAMP)  ## the one command that reads the test split: writes bench/results/benchmark.json (hours)
	$(PY) bench/benchmark.py

clean:  ## remove generated data and the Dagster instance (keeps .venv)
	rm -rf $(CTGLIP_DATA) $(DAGSTER_HOME)
