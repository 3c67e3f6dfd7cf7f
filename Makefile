# The two quick-start commands: `make demo` and `make test`. Everything else is a step they use.
SHELL := /bin/bash
PYTHON ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3 2>/dev/null || command -v python3.13 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
DATA ?= .bip/data/simulated

.PHONY: setup browser demo test lint bench clean

$(BIN)/bip: pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 12), f"bip needs Python 3.12+, found {sys.version}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(BIN)/bip

setup: $(BIN)/bip

# Debian's Chromium for the browser tests (Playwright drives it; nothing is downloaded at run time).
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The demo signs in like production: a caseworker of every job centre and a service token, printed.
demo: setup
	$(BIN)/bip simulate --out $(DATA)
	$(BIN)/bip ingest $(DATA)
	$(BIN)/bip train --truth $(DATA)-truth
	$(BIN)/bip users demo
	$(BIN)/bip serve --port $(PORT)

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadgroup

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

clean:
	rm -rf $(VENV) .bip
