# One command per chore; CI runs `make test`, exactly as the README says.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench bench-quick

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' -e clients/python

run: install
	$(BIN)/metagov serve

LINTED := src tests migrations bench clients/python examples/driver

lint: install
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)
	$(BIN)/mypy
	cd clients/python && $(CURDIR)/$(BIN)/mypy
	cd examples/driver && $(CURDIR)/$(BIN)/mypy

# The quick benchmark runs with the tests so that it never rots; its figures are not judged.
test: lint
	./.ci/install-chromium
	$(BIN)/python -m pytest
	$(BIN)/python -m bench --quick
	$(BIN)/python -m bench.statements -n 300

# The full benchmark (about 15 minutes): see docs/benchmarks.md.
bench: install
	$(BIN)/python -m bench

bench-quick: install
	$(BIN)/python -m bench --quick

format: install
	$(BIN)/ruff format $(LINTED)
	$(BIN)/ruff check --fix $(LINTED)
