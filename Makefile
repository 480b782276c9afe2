# Quick start: `make demo` and `make test` on a fresh machine with only Python 3.11+.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Tests run on 2 cores in CI; xdist spreads modules over them.
PYTEST_ARGS ?= -n 2

.PHONY: demo test venv dev clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip >/dev/null

venv: $(BIN)/python
	$(BIN)/pip install -e .

dev: $(BIN)/python
	$(BIN)/pip install -e '.[dev]'

demo: venv
	$(BIN)/qengine demo

test: dev
	HYPOTHESIS_PROFILE=ci $(BIN)/python -m pytest $(PYTEST_ARGS)

bench: dev
	$(BIN)/qengine bench

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
