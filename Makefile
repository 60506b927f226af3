# Earmark — two commands: `make run` (set up + serve) and `make test` (set up + test).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.earmark-installed

.PHONY: run test test-all install models clean help

help:
	@echo "make run    - create $(VENV), install Earmark with its bundled Whisper weights, serve on http://127.0.0.1:8000"
	@echo "make test   - create $(VENV), install, run the test suite (slow tests: make test-all)"

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Earmark needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

models: install
	$(BIN)/earmark models

run: install
	$(BIN)/earmark models
	$(BIN)/earmark serve

test: install
	$(BIN)/python -m pytest -m "not slow"

test-all: install
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
