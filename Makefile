# `make demo` and `make test` each set up .venv from nothing, then run.
# `make test`: ruff, the import layers (lint-imports), the strict docs build, then the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo
PYTEST_ARGS ?=

.PHONY: venv demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[all,test,docs]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/spinexr demo --out $(DEMO_DIR)

test: venv
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build/site
