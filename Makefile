# Two entry points, each sets everything up first (a local .venv) and is safe to re-run:
#   make run    train a PSO study on the embedded digits dataset
#   make test   run the default test suite (make test-all adds tests marked slow)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-all clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0  # the CPU wheel first: the dev extra's range then adds nothing
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

run: $(STAMP)
	$(BIN)/jaxswarm run

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m 'slow or not slow'

clean:
	rm -rf $(VENV) runs .pytest_cache
