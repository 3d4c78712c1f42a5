# Two commands do everything: `make train` (set up + default job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# datumaro, the converter the annotation-format tests check our readers against, in a venv of its own: its pins
# (pandas 2, pillow 12) differ from ours
DATUMARO_VENV ?= .venv-datumaro
# visionkit without PyTorch (the base install and the `runtime` and `serve` extras): the tests that predict from and
# serve exported files where PyTorch is not installed run here
RUNTIME_VENV ?= .venv-runtime

.PHONY: setup datumaro runtime train test test-fast lint typecheck docs docs-serve bench clean

setup: $(VENV)/.installed

datumaro: $(DATUMARO_VENV)/.installed

$(DATUMARO_VENV)/.installed:
	$(PYTHON) -m venv $(DATUMARO_VENV)
	$(DATUMARO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DATUMARO_VENV)/bin/python -m pip install --quiet "datumaro>=1.10,<2"
	touch $@

runtime: $(RUNTIME_VENV)/.installed

$(RUNTIME_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(RUNTIME_VENV)
	$(RUNTIME_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(RUNTIME_VENV)/bin/python -m pip install --quiet -e ".[runtime,serve]"
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: setup
	$(BIN)/visionkit-train

test: setup datumaro runtime
	$(BIN)/python -m pytest -q

# the inner loop: the tests that train no model, start no server and run no console script end to end
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup typecheck
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

# mypy over visionkit/ at the strictness set in pyproject.toml ([tool.mypy]: the checks left off, and why)
typecheck: setup
	$(BIN)/mypy

# the documentation site (mkdocs-material): strict, so a broken link, reference or warning fails the build
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8000

bench: setup
	$(BIN)/python bench/bench_classification.py

clean:
	rm -rf outputs multirun .pytest_cache site
