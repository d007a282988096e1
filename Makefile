# `make demo` and `make test` each set up .venv from nothing, then run.
# `make test`: ruff, the import layers (lint-imports), the strict docs build, then the tests.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  ?= torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= demo
PYTEST_ARGS ?=
# The suite runs in this many pytest-xdist workers, a test file to a worker (its module fixtures built once);
# much of it waits on real processes (Orthanc, Ray, a browser, CLI runs), which the workers overlap.
PYTEST_WORKERS ?= 2

.PHONY: venv demo test clean node-deps

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[all,test,docs]'
	touch $@

venv: $(VENV)/.installed

# OHIF's SR reader (@cornerstonejs/adapters) at the versions of tests/node's lock file, for the test that
# hydrates spinexr's SR the way OHIF does; without npm that test is skipped with its reason.
NODE_DEPS := tests/node/node_modules/.installed
$(NODE_DEPS): tests/node/package.json tests/node/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  npm ci --prefix tests/node --no-audit --no-fund --ignore-scripts --loglevel=error && touch $@; \
	else echo "npm not found: tests/test_ohif.py will be skipped"; fi

node-deps: $(NODE_DEPS)

demo: venv
	$(VENV)/bin/spinexr demo --out $(DEMO_DIR)

test: venv node-deps
	$(VENV)/bin/ruff check src tests benchmarks scripts
	$(VENV)/bin/lint-imports
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache build/site
