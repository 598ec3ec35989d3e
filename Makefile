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

.PHONY: demo test lint typecheck pytest check-deploy bench clean sslyze-venv engine

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The compiled HTTP/1.1 engine (setup.py): pip builds it in place at install; a change to one of
# its sources or type declarations rebuilds it, so the tests never run a stale extension.
ENGINE_SOURCES := setup.py $(wildcard proxy/http1/*.pxd proxy/*.pxd) $(patsubst %.pxd,%.py,$(wildcard proxy/http1/*.pxd proxy/*.pxd))
STAMP_ENGINE := $(VENV)/.built-engine

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@ $(STAMP_ENGINE)

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP_RUN) $(STAMP_ENGINE)

$(STAMP_ENGINE): $(ENGINE_SOURCES) | $(STAMP_TEST)
	$(BIN)/python setup.py --quiet build_ext --inplace
	touch $@

engine: $(STAMP_ENGINE)

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

# The whole suite on the compiled engine, then the HTTP tests again on the pure-Python one
# (EDGE_PROXY_NO_EXTENSIONS): one source of behaviour, both ways of running it checked.
PURE_TESTS ?= tests/test_https_proxy.py tests/test_https_smuggling.py tests/test_https_lifecycle.py tests/test_upstream_reads.py \
	tests/test_redirect.py tests/test_logs.py tests/test_access_lines.py tests/test_h2_proxy.py tests/test_one_port.py tests/test_engine.py
pytest: $(STAMP_TEST) $(STAMP_SSLYZE) $(STAMP_ENGINE)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)
	EDGE_PROXY_NO_EXTENSIONS=1 $(BIN)/python -m pytest -q $(PURE_TESTS)

test: lint typecheck pytest

# Only the deployment files (also part of `make test`): Kubernetes schemas, kustomize, systemd-analyze.
check-deploy: $(STAMP_TEST)
	$(BIN)/python -m pytest -q tests/test_deploy.py

bench: $(STAMP_RUN)
	bash bench/run.sh

clean:
	rm -rf $(VENV) $(SSLYZE_VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
	find proxy -name '*.so' -delete -o -name '*.c' -delete
