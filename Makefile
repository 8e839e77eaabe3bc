# Every target bootstraps .venv itself, so a fresh clone needs nothing but `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install test unit integration lint demo bench bench-client bench-bridge soak run clean

install: $(STAMP)

$(STAMP): pyproject.toml sim/pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]' -e ./sim
	@touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

unit: $(STAMP)
	$(PY) -m pytest -q -m "not integration"

integration: $(STAMP)
	$(PY) -m pytest -q -m integration

lint: $(STAMP)
	$(PY) -m ruff check sidecar sim devkit tests examples
	$(PY) -m ruff format --check sidecar sim devkit tests examples
	$(PY) -m mypy sidecar sim/pmsim

demo: $(STAMP)
	$(PY) -m devkit.demo

bench: $(STAMP)
	$(PY) -m devkit.bench
	$(PY) -m devkit.bench.client
	$(PY) -m devkit.bench.bridge

bench-client: $(STAMP)
	$(PY) -m devkit.bench.client

bench-bridge: $(STAMP)
	$(PY) -m devkit.bench.bridge

soak: $(STAMP)
	$(PY) -m devkit.soak

run: $(STAMP)
	$(PY) -m sidecar run

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
