# The two commands of the quick start: `make demo` and `make test`. Both work on a fresh
# machine with only Python >= 3.11: they create .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# sslyze (a TLS scanner, for tests/test_sslyze.py) pins cryptography<47: it gets a venv of its own
# so that it can never move the versions the edge runs with.
SSLYZE_VENV ?= .venv-sslyze
STAMP_SSLYZE := $(SSLYZE_VENV)/.installed

.PHONY: demo test lint typecheck pytest check-deploy bench clean sslyze-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN)

demo: $(STAMP_RUN)
	$(BIN)/python -m proxy.demo

lint: $(STAMP_TEST)
	$(BIN)/ruff check proxy tests bench
	$(BIN)/ruff format --check proxy tests bench

typecheck: $(STAMP_TEST)
	$(BIN)/mypy proxy

$(STAMP_SSLYZE):
	$(PYTHON) -m venv $(SSLYZE_VENV)
	$(SSLYZE_VENV)/bin/python -m pip install --quiet 'sslyze>=6.3,<7'
	touch $@

sslyze-venv: $(STAMP_SSLYZE)

pytest: $(STAMP_TEST) $(STAMP_SSLYZE)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck pytest

# Only the deployment files (also part of `make test`): Kubernetes schemas, kustomize, systemd-analyze.
check-deploy: $(STAMP_TEST)
	$(BIN)/python -m pytest -q tests/test_deploy.py

bench: $(STAMP_RUN)
	bash bench/run.sh

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
