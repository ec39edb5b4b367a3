# Every target installs what it needs, idempotently: a fresh clone needs only python3.11, node and npm.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
AZURITE := node_modules/.bin/azurite-blob
DEPS_STAMP := $(VENV)/.deps-installed
LOCAL_STAMP := $(VENV)/.local-deps-installed

.PHONY: all demo test lint bench bench-ledger clean deps deps-local chromium

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(DEPS_STAMP): $(PY) requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $@

# The local engine's ML stack (about 2 GB; torch is the CPU build pinned in the file).
$(LOCAL_STAMP): $(DEPS_STAMP) requirements-local.txt requirements-local-nodeps.txt
	$(PY) -m pip install --quiet -r requirements-local.txt
	$(PY) -m pip install --quiet --no-deps -r requirements-local-nodeps.txt
	touch $@

$(AZURITE): package.json
	npm install --no-audit --no-fund --no-save --loglevel=error
	touch $@

# The browser the dashboard's tests drive (tests/browser): Debian's chromium, launched by Playwright through
# executable_path (`playwright install` is never run: its browsers come from a CDN). Installed only when `chromium`
# is not on PATH; the package lists are fetched only when apt has no candidate for it or the install fails on stale
# lists. As root apt-get runs as is, otherwise through sudo where there is one.
chromium:
	@command -v chromium >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif command -v sudo >/dev/null; then sudo=sudo; \
	else echo "chromium is not on PATH and installing it needs root or sudo: apt-get install chromium" >&2; exit 1; fi; \
	install="$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium"; \
	if ! apt-cache policy chromium 2>/dev/null | grep -q 'Candidate: [0-9]'; then $$sudo apt-get update; fi; \
	echo "$${install# }"; $$install || { $$sudo apt-get update && $$install; }; \
	command -v chromium >/dev/null || { echo "chromium was installed but is not on PATH" >&2; exit 1; }

deps: $(DEPS_STAMP) $(LOCAL_STAMP) $(AZURITE) chromium

deps-local: $(LOCAL_STAMP)

demo: deps
	$(VENV)/bin/autopilot demo

test: deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(DEPS_STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

bench: deps
	$(PY) benchmarks/bench_validate.py

# The sweep over a 10,000-record ledger, with the run index and with a full scan (see benchmarks/README.md);
# e.g. `make bench-ledger BENCH_LEDGER_ARGS="--records 2500"`.
bench-ledger: deps
	$(PY) benchmarks/bench_ledger_sweep.py $(BENCH_LEDGER_ARGS)

clean:
	rm -rf $(VENV) node_modules .pytest_cache .ruff_cache .hypothesis .state
