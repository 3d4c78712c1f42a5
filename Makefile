# Two commands do everything: `make train` (set up + default job) and `make test` (set up + test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# datumaro, the converter the annotation-format tests check our readers against, in a venv of its own: its pins
# (pandas 2, pillow 12) differ from ours
DATUMARO_VENV ?= .venv-datumaro

.PHONY: setup datumaro train test lint bench clean

setup: $(VENV)/.installed

datumaro: $(DATUMARO_VENV)/.installed

$(DATUMARO_VENV)/.installed:
	$(PYTHON) -m venv $(DATUMARO_VENV)
	$(DATUMARO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DATUMARO_VENV)/bin/python -m pip install --quiet "datumaro>=1.10,<2"
	touch $@

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

train: setup
	$(BIN)/visionkit-train

test: setup datumaro
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

bench: setup
	$(BIN)/python bench/bench_classification.py

clean:
	rm -rf outputs multirun .pytest_cache
