# ct-glip: `make run` and `make test` do all set-up themselves on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where tables, volumes and the synthetic cohort go; override with CTGLIP_DATA=/path make run.
export CTGLIP_DATA ?= $(CURDIR)/data
# Project-local Dagster instance so runs persist without any global set-up.
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
# Torch: 2.13.0 is the CPU build on this machine's disk; a bare `torch` pulls a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0
# Only the class map of TotalSegmentator is needed by default (no weights, no nnU-Net); its full
# dependency set (timm -> torchvision) does not import beside the CPU torch, so it stays optional.
TOTALSEG_PIN ?= totalsegmentator==2.18.0
STAMP := $(VENV)/.ct-glip-installed
UI_PORT ?= 3000

.PHONY: setup run lint format test ui cluster bench tables benchmark clean help
# modules of bench/ that are not benches: `make bench` skips them
BENCH_HELPERS := bench/cohort.py|bench/record.py|bench/report_corpus.py|bench/doc_tables.py

help:  ## list the targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]' $(TORCH_PIN)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps $(TOTALSEG_PIN)
	@mkdir -p $(DAGSTER_HOME)
	@test -s $(DAGSTER_HOME)/dagster.yaml || printf 'telemetry:\n  enabled: false\n' > $(DAGSTER_HOME)/dagster.yaml
	@# `dagster asset materialize` finds our Definitions through a start-up hook, not an exported
	@# DAGSTER_MODULE_NAME, which would stop `dagster dev` from serving the UI (launch/cli_env.py).
	@echo 'import launch.cli_env' > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/ct_glip_dagster.pth"
	@sed -i '/^# ct-glip: project-local/d; /DAGSTER_MODULE_NAME/d; /^export DAGSTER_HOME="$$.DAGSTER_HOME:-/d' $(VENV)/bin/activate
	@printf '%s\n' '# ct-glip: project-local Dagster instance for the dagster CLI' \
		'export DAGSTER_HOME="$${DAGSTER_HOME:-$(DAGSTER_HOME)}"' >> $(VENV)/bin/activate
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install everything (offline apart from the package registry)

run: $(STAMP)  ## materialize the whole asset graph on the synthetic cohort into $CTGLIP_DATA
	$(PY) -m launch.run_all

lint: $(STAMP)  ## ruff format --check and ruff check (pipeline/ and model/ in full, pyflakes elsewhere), mypy on pipeline/ and model/
	$(VENV)/bin/ruff format --check pipeline model
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

format: $(STAMP)  ## ruff format pipeline/ and model/, and apply ruff's safe fixes everywhere it checks
	$(VENV)/bin/ruff format pipeline model
	$(VENV)/bin/ruff check --fix .

test: $(STAMP) lint  ## lint, then the test suite (first installs the Debian packages tests drive where missing: chromium, PostgreSQL, Redis)
	@bash tests/system_deps.sh
	@deploy/cluster/install-servers.sh
	$(PY) -m pytest -q

ui: $(STAMP)  ## Dagster UI on http://127.0.0.1:$(UI_PORT) (loopback only); prints the URL once it answers
	$(PY) -m launch.ui --host 127.0.0.1 --port $(UI_PORT)

cluster: $(STAMP)  ## the cluster on this machine: PostgreSQL, Redis, two Celery workers, daemon, UI on http://127.0.0.1:3001
	@deploy/cluster/install-servers.sh
	$(PY) -m deploy.cluster.local up

bench: $(STAMP)  ## run every speed/ablation script in bench/ (not the test-split benchmark); each writes its record in bench/results/
	@for b in bench/*.py; do case $$b in bench/benchmark.py|$(BENCH_HELPERS)) continue;; esac; echo "== $$b"; $(PY) $$b || exit 1; done

tables: $(STAMP)  ## redraw the tables in README.md and docs/ from the records in bench/results/ (--check: compare only)
	$(PY) bench/doc_tables.py

benchmark: $(STAMP)  ## the one command that reads the test split: builds the benchmark cohort in data/benchmark, trains, writes bench/results/benchmark.json (hours on CPU: the record keeps its wall time, `wall_s`)
	$(PY) bench/benchmark.py

clean:  ## remove generated data and the Dagster instance (keeps .venv)
	rm -rf $(CTGLIP_DATA) $(DAGSTER_HOME)
