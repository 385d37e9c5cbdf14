# Two commands do all set-up on a fresh machine with Python 3.11:
#   make demo       - create .venv, install the light default from the lock (no torch), build a sample
#                     collection, index -> query -> dedupe
#   make test       - create .venv, install from the lock with the test, train and plot extras, run the whole suite
# Also:
#   make test-fast  - the suite without tests marked slow
#   make bench-deps - the face_recognition CLI that bench/pipeline.py races (pure Python, no deps: dlib-bin,
#                     click and face_recognition_models are installed already)
#   make lock       - re-resolve pyproject.toml's ranges with every extra the tests use (test,train,plot) in a scratch
#                     venv and rewrite requirements.lock: one lock covers the light install and the tests
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LOCK := requirements.lock
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
# What the suite needs on top of the default install: torch (train), matplotlib (plot), test tools.
ALL := .[test,train,plot]
# Two pytest workers, each taking whole files (module fixtures such as a live server stay in one
# process): much of the suite waits on servers, browsers and subprocesses, so two workers on two cores
# ran it in 437 s against 559 s for one (2026-12-07). PAR= runs it in one process.
PAR ?= -n 2 --dist loadfile
# The lock pins what we run and build with (pip, setuptools included); pyproject.toml keeps the ranges.
PIP_LOCKED := $(BIN)/python -m pip install -q -c $(LOCK) --build-constraint $(LOCK)

.PHONY: install demo test test-fast bench-deps lock clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q -c $(LOCK) --upgrade pip

# The default install: what index, query, dedupe, people, serve, watch and doctor need (no torch).
$(STAMP): pyproject.toml $(LOCK) | $(BIN)/python
	$(PIP_LOCKED) -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(PIP_LOCKED) -e '$(ALL)'
	touch $(TEST_STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m facesearch.install.demo

test: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra $(PAR)

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -q -ra -m "not slow" $(PAR)

bench-deps: $(TEST_STAMP)
	$(BIN)/python -m pip install -q --no-deps face_recognition==1.3.0

lock:
	rm -rf .lockenv
	$(PY) -m venv .lockenv
	.lockenv/bin/python -m pip install -q --upgrade pip setuptools
	.lockenv/bin/python -m pip install -q '$(ALL)'
	{ echo "# Exact versions of a green run, made by 'make lock' from pyproject.toml's ranges on $$(date -u +%F)"; \
	  echo "# (Python $$(.lockenv/bin/python -c 'import platform; print(platform.python_version(), platform.machine())')). Used as constraints by"; \
	  echo "# make install/test/demo and .ci/run; refresh with 'make lock' after changing a dependency."; \
	  .lockenv/bin/python -m pip freeze --all --exclude facesearch; } > $(LOCK).tmp
	mv $(LOCK).tmp $(LOCK)
	rm -rf .lockenv build

clean:
	rm -rf demo_out .pytest_cache
