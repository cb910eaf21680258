# Two entry points that work on a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and installs torch==2.13.0 first (the CPU wheel;
# an unpinned torch would pull several GB of CUDA packages), then the project:
# `make run` only what serving needs, `make test` (and `make docs`) the dev extras too.
PYTHON ?= python3
PORT ?= 8000
HOST ?= 127.0.0.1
VENV := .venv
PY := $(VENV)/bin/python
SERVE_STAMP := $(VENV)/.whitevec-serve
# setuptools prints an "Editable installation" notice for every editable package pip builds, even with -q:
# it is advice about import paths, not a problem, and it buried real output
QUIET_BUILD := PYTHONWARNINGS="ignore:Editable installation"
DEV_STAMP := $(VENV)/.whitevec-dev

.PHONY: run test docs setup setup-dev eval-demo clean

setup: $(SERVE_STAMP)

setup-dev: $(DEV_STAMP)

$(SERVE_STAMP): pyproject.toml clients/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(QUIET_BUILD) $(PY) -m pip install -q -e . -e ./clients
	touch $(SERVE_STAMP)

$(DEV_STAMP): $(SERVE_STAMP)
	$(QUIET_BUILD) $(PY) -m pip install -q -e '.[dev]' -e './clients[numpy]'
	touch $(DEV_STAMP)

test: $(DEV_STAMP)
	$(PY) -m pytest -q

# The docs site into ./site, strict: a broken link or a page missing from the nav fails the build
# (not with -q: mkdocs counts no warnings then).
docs: $(DEV_STAMP)
	$(VENV)/bin/mkdocs build --strict -d site

# The service on the bundled model; builds the demo index into ./data on first run.
# Another port: `make run PORT=8001`.
run: $(SERVE_STAMP)
	$(VENV)/bin/whitevec serve --demo --data-dir data --host $(HOST) --port $(PORT)

eval-demo: $(SERVE_STAMP)
	$(VENV)/bin/whitevec eval sts service/demo/sample_pairs.tsv --beta 0 1 --gamma 0 1 --dim 48 32 16

clean:
	rm -rf $(VENV) .pytest_cache site
