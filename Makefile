# Two commands do all the set-up: `make run` (the main job) and `make test` (the test suite).
# Each first builds .venv when it is missing or older than the files that define it.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
INSTALL_INPUTS := requirements.txt constraints.txt pyproject.toml $(wildcard plugins/*/pyproject.toml registry/pyproject.toml api/pyproject.toml)

.PHONY: install run test clean

install: $(STAMP)

$(STAMP): $(INSTALL_INPUTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -r requirements.txt
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/l2l demo

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV)
