# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo   - create .venv, install, build a sample collection, index -> query -> dedupe
#   make test   - create .venv, install with test extras, run pytest
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m facesearch.demo

test: install
	$(BIN)/python -m pytest -q -ra

clean:
	rm -rf demo_out .pytest_cache
