# dpmap: `make demo` runs the main job, `make test` runs the test suite.
# Both install into a local virtual environment (.venv) from pyproject.toml first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck docs docs-serve bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: release a private map of synthetic debtors around real Hebei places into out/
demo: $(STAMP)
	$(BIN)/dpmap demo --out out

## test: the whole suite (CI runs exactly this)
test: $(STAMP)
	$(BIN)/python -m pytest

## test-fast: skip the slow statistical tests
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy src/dpmap

## docs: build the documentation site into site/ (strict: a warning is an error)
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

## docs-serve: the documentation site at http://127.0.0.1:8000, rebuilt on every change
docs-serve: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_release.py
	$(BIN)/python benchmarks/bench_noise.py
	$(BIN)/python benchmarks/bench_pipelinedp.py
	$(BIN)/python benchmarks/bench_zones.py
	$(BIN)/python benchmarks/bench_quantiles.py

clean:
	rm -rf $(VENV) out site .pytest_cache .hypothesis .mypy_cache .ruff_cache
