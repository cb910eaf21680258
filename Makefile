# Two entry points that work on a fresh machine: `make run` and `make test`.
# Each creates .venv if missing and installs torch==2.13.0 first (the CPU wheel;
# an unpinned torch would pull several GB of CUDA packages), then the project.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.whitevec-installed

.PHONY: run test setup eval-demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml clients/pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]' -e ./clients
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

# The service on the bundled model; builds the demo index into ./data on first run.
run: $(STAMP)
	$(VENV)/bin/whitevec serve --demo --data-dir data --host 127.0.0.1 --port 8000

eval-demo: $(STAMP)
	$(VENV)/bin/whitevec eval sts service/demo/sample_pairs.tsv --beta 0 1 --gamma 0 1 --dim 48 32 16

clean:
	rm -rf $(VENV) .pytest_cache
