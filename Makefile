# tcl — one command to regenerate the artifact.
#   make env     build .venv/ from pyproject.toml (torch pinned to the CPU build on our machines)
#   make test    pytest (the test command CI runs)
#   make lint    ruff
SHELL := /bin/bash
.DELETE_ON_ERROR:

VENV    ?= .venv
PYTHON  ?= $(VENV)/bin/python
TORCH   ?= torch==2.13.0
BOOTSTRAP_PYTHON ?= python3

.PHONY: env test lint clean-env

env: $(VENV)/.installed

# Rebuilt when the declared dependencies change. torch is installed first and pinned so that the
# unpinned range in pyproject.toml does not pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	@if [ "$(PYTHON)" = "$(VENV)/bin/python" ]; then \
	  test -x $(VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(VENV); \
	  $(VENV)/bin/python -m pip install --quiet --upgrade pip; \
	  $(VENV)/bin/python -m pip install --quiet "$(TORCH)"; \
	  $(VENV)/bin/python -m pip install --quiet -e ".[dev]"; \
	  $(VENV)/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null; \
	fi
	@mkdir -p $(VENV) && touch $@

test: env
	$(PYTHON) -m pytest -q

lint: env
	$(PYTHON) -m ruff check tcl tests
	$(PYTHON) -m ruff format --check tcl tests

clean-env:
	rm -rf $(VENV)
