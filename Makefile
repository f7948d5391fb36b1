# dpmap: `make demo` runs the main job, `make test` runs the test suite.
# Both install into a local virtual environment (.venv) from pyproject.toml first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## demo: release a private map of synthetic Hebei debtors into out/
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

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python benchmarks/bench_release.py
	$(BIN)/python benchmarks/bench_noise.py
	$(BIN)/python benchmarks/bench_pipelinedp.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis .mypy_cache .ruff_cache
