# Two commands do all the set-up: `make up` runs the stack, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: up test lint typecheck check bench clean migrate token

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## Run the whole stack on embedded defaults: Prefect server + UI (:4200), worker, API (:8000). Ctrl-C stops it.
up: $(STAMP)
	MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS=$${MARKETPLACE_ENDPOINT_TESTS__ALLOW_INSECURE_ENDPOINTS:-true} \
	$(BIN)/python -m deployments.stack

## Install (if needed) and run the test suite against the real PostgreSQL and Redis.
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy .

check: lint typecheck test

migrate: $(STAMP)
	$(BIN)/python -m storage.migrate

bench: $(STAMP)
	$(BIN)/python bench/publish_latency.py

clean:
	rm -rf $(VENV) var .prefect .pytest_cache .mypy_cache .ruff_cache
