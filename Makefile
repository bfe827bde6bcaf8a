# One command per chore; `make help` lists them. CI runs `.ci/run`: `make bench-check`, then
# `make test`, exactly as the README says.
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# Every package at the version the tests passed with; `make lock` writes it again.
CONSTRAINTS := constraints.txt

.DEFAULT_GOAL := help
.PHONY: help install run test lint format bench bench-quick bench-check lock

help: ## List the targets
	@echo "make TARGET, where TARGET is one of:"
	@awk 'BEGIN {FS = ":.*## "} /^[a-z][a-z-]*:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python ## Install metagov, its test tools and the Driver client into .venv, at the locked versions
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[test]' -e clients/python

run: install ## Run the gateway; HOST= and PORT= choose where (default 127.0.0.1 and 8000)
	$(BIN)/metagov serve --host $(HOST) --port $(PORT)

LINTED := src tests migrations bench clients/python examples/driver

lint: install ## ruff (lint and format check) and mypy
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	cd clients/python && $(CURDIR)/$(BIN)/mypy
	cd examples/driver && $(CURDIR)/$(BIN)/mypy

test: lint ## The linters, then every test on SQLite and PostgreSQL, on two cores (about 8 minutes)
	./.ci/install-chromium
	$(BIN)/python -m pytest -n 2 --dist loadgroup

bench-check: install ## The benchmark harness, quickly, so that it never rots (figures not judged)
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.statements -n 300
	$(BIN)/python -m bench.tracing -n 200000

bench: install ## The full benchmark (about 15 minutes): see docs/benchmarks.md
	$(BIN)/python -m bench

bench-quick: install ## The quick benchmark alone (under a minute)
	$(BIN)/python -m bench --quick

format: install ## Format and fix what ruff can
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)

lock: $(BIN)/python ## Re-resolve the dependencies and write constraints.txt from the result
	$(BIN)/python -m pip install --quiet --upgrade -e '.[test]' -e clients/python hatchling
	@{ echo "# Every package metagov, its extras (otel, test) and its build backend install, at the"; \
	   echo "# versions the test suite last passed with. Written by \`make lock\`; used by"; \
	   echo "# \`make install\`, the Dockerfile and CI. Do not edit by hand."; \
	   $(BIN)/python -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)=='; \
	} > $(CONSTRAINTS)
