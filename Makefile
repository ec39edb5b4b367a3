# Every target installs what it needs, idempotently: a fresh clone needs only python3.11, node and npm.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
AZURITE := node_modules/.bin/azurite-blob
DEPS_STAMP := $(VENV)/.deps-installed

.PHONY: all demo test lint bench clean deps

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEPS_STAMP): $(PY) requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

$(AZURITE): package.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

deps: $(DEPS_STAMP) $(AZURITE)

demo: deps
	$(VENV)/bin/autopilot demo

test: deps
	$(PY) -m ruff check .
	$(PY) -m pytest

lint: $(DEPS_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

bench: deps
	$(PY) benchmarks/bench_validate.py

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis .state
