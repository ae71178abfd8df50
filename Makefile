# recsys: `make demo` runs the whole platform on generated data; `make test` runs the suite.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV_VERSION := 0.13.8
PYTHON ?= python3.11
RECSYS_HOME ?= $(CURDIR)/var
VENV := $(CURDIR)/.venv
UV := $(CURDIR)/.tools/bin/uv
MANIFEST := dbt_project/target/manifest.json
DBT_SOURCES := $(shell find dbt_project -name '*.sql' -o -name '*.yml' | grep -v /target/)

export RECSYS_HOME
export DAGSTER_HOME := $(RECSYS_HOME)/dagster
export PATH := $(VENV)/bin:$(PATH)
# Telemetry off everywhere; weights only from local packages.
export DO_NOT_TRACK := 1
export DBT_SEND_ANONYMOUS_USAGE_STATS := False
export RAY_USAGE_STATS_ENABLED := 0
export MLFLOW_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export UV_PYTHON_DOWNLOADS := never

.PHONY: help setup system-packages test deploy-check validate-defs demo pipeline dev serve observe bench soak clean
help:
	@echo "make setup     install the pinned stack into .venv and missing Debian packages (idempotent)"
	@echo "make demo      setup + generate data + run the whole pipeline + serve on 127.0.0.1:8000"
	@echo "make test      deploy-check + validate-defs + the test suite"
	@echo "make validate-defs  the code location loads (dagster definitions validate), locally and under gcp"
	@echo "make deploy-check  the GKE deployment rendered from example Terraform outputs and validated offline"
	@echo "make pipeline  materialize every asset (not the on-demand search) for every day in RECSYS_HOME/landing"
	@echo "make dev       Dagster UI + daemon on http://127.0.0.1:3000"
	@echo "make serve     the Ray Serve API + demo page on http://127.0.0.1:8000 (RECSYS_SERVE_PORT)"
	@echo "make observe   Prometheus + Alertmanager on 127.0.0.1 (9090, 9093) over serving and the pipeline exporter"
	@echo "make bench     benchmarks -> bench/results/*.json"
	@echo "make soak      the fault suite held longer + a 10-minute soak -> bench/results/reliability.json"

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet uv==$(UV_VERSION)

# Re-installs only when the lock or the project's metadata changes.
$(VENV)/.installed: $(UV) uv.lock pyproject.toml
	$(UV) sync --frozen --python $(PYTHON)
	touch $@

$(MANIFEST): $(VENV)/.installed $(DBT_SOURCES) recsys_assets/defs/features/dbt_project.py
	dagster-dbt project prepare-and-package --file recsys_assets/defs/features/dbt_project.py
	touch $@

$(DAGSTER_HOME)/dagster.yaml: recsys_assets/settings.py
	mkdir -p $(DAGSTER_HOME)
	recsys init-dagster-home

# Debian packages the tests, the demo page and the benchmarks use (installed when missing, see the script).
system-packages:
	@scripts/system-packages.sh

setup: system-packages $(VENV)/.installed $(MANIFEST) $(DAGSTER_HOME)/dagster.yaml

test: setup deploy-check validate-defs
	pytest

# Dagster's own check that the code location loads, with the local resources and with the gcp ones (built
# offline: no cloud call is made to construct them).
validate-defs: setup
	dagster definitions validate -w workspace.yaml
	RECSYS_ENV=gcp RECSYS_GCP_PROJECT=example-project dagster definitions validate -w workspace.yaml

deploy-check: setup
	python deploy/check.py

pipeline: setup
	recsys pipeline

# Only the demo has a token for POST /interactions (its page's likes): `make serve` or `make dev` without
# RECSYS_API_TOKEN refuse writes (403) and say so at start.
demo: export RECSYS_API_TOKEN ?= demo-token
demo: pipeline serve

serve: setup
	recsys serve

dev: setup
	dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

# Prometheus (alert rules loaded) and Alertmanager over what runs under RECSYS_HOME; starts the pipeline
# exporter when none runs; Ctrl-C stops them (PROMETHEUS_PORT, ALERTMANAGER_PORT to move them).
observe: setup
	python deploy/observability/observe.py

bench: setup
	python bench/freshness.py
	python bench/quality.py
	python bench/ceiling.py
	python bench/ingest.py
	python bench/history.py
	python bench/feature_store.py
	python bench/training.py
	python bench/incremental.py
	python bench/serving.py

soak: setup
	python bench/reliability.py

clean:
	rm -rf $(RECSYS_HOME) dbt_project/target dbt_project/logs .pytest_cache
