# One command per chore; CI runs `make test`, exactly as the README says.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint format bench

$(BIN)/python:
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'

run: install
	$(BIN)/metagov serve

lint: install
	$(BIN)/ruff check src tests migrations
	$(BIN)/ruff format --check src tests migrations
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest

format: install
	$(BIN)/ruff format src tests migrations
	$(BIN)/ruff check --fix src tests migrations
