# A newcomer's two commands: `make demo` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# GPU users: make demo TORCH_SPEC='torch==2.13.0 --index-url <your CUDA wheel index>'
TORCH_SPEC ?= torch==2.13.0
DATA_DIR ?= $(HOME)/.stalwart
PORT ?= 8080
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: demo test install test-deps lint format down status clean bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: $(BIN)/python harness/pyproject.toml master/pyproject.toml agent/pyproject.toml requirements-examples.txt
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e harness -e master -e agent -r requirements-examples.txt
	touch $@

$(VENV)/.bench-deps: $(VENV)/.installed bench/requirements.txt
	$(BIN)/pip install --quiet -r bench/requirements.txt
	touch $@

$(VENV)/.test-deps: $(VENV)/.installed requirements-test.txt
	$(BIN)/pip install --quiet -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

test-deps: $(VENV)/.test-deps

MASTER_URL = http://127.0.0.1:$(PORT)

## make demo: install, start a local cluster (embedded PostgreSQL + Redis, master, Celery worker,
## one agent), log in as admin and train the digits example to completion.
demo: install
	$(BIN)/stalwart deploy local up --data-dir $(DATA_DIR) --port $(PORT)
	STALWART_MASTER=$(MASTER_URL) STALWART_PASSWORD="$$(cat $(DATA_DIR)/admin-password)" \
		$(BIN)/stalwart user login admin
	STALWART_MASTER=$(MASTER_URL) $(BIN)/stalwart experiment create \
		examples/digits/const.yaml examples/digits --follow --json > $(DATA_DIR)/demo-experiment.json
	@STALWART_MASTER=$(MASTER_URL) $(BIN)/python examples/digits/summary.py $(DATA_DIR)/demo-experiment.json \
		"$$(cat $(DATA_DIR)/admin-password)"

## make test: install what tests need, lint and type-check, then run the whole suite.
test: test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy master/src harness/src agent/src
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

## make bench: the benchmarks, each against its baseline in the same run (see docs/benchmarks.md).
bench: $(VENV)/.bench-deps
	$(BIN)/python bench/harness_overhead.py
	$(BIN)/python bench/metric_ingestion.py
	$(BIN)/python bench/checkpoint.py --sizes 1,4
	$(BIN)/python bench/search.py

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/mypy master/src harness/src agent/src
	$(BIN)/ruff format --check .

format: test-deps
	$(BIN)/ruff format .

down:
	$(BIN)/stalwart deploy local down --data-dir $(DATA_DIR)

status:
	$(BIN)/stalwart deploy local status --data-dir $(DATA_DIR)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
