# F-KOD Partner Platform. `make help` lists the targets.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INI ?= development.ini
# Four test processes: most tests wait on I/O, so this beats one per core.
PYTEST_ARGS ?= -n 4

.DEFAULT_GOAL := help

.PHONY: help install run migrate demo-data demo worker test test-embedded test-production lint bench clean

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-16s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The contributed plugin packages, installed after the platform they depend on.
CONTRIB_PLUGINS := $(sort $(dir $(wildcard plugins_contrib/*/pyproject.toml)))

$(BIN)/fkod: setup.cfg pyproject.toml $(wildcard plugins_contrib/*/pyproject.toml) sdk/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet $(foreach plugin,$(CONTRIB_PLUGINS),-e ./$(plugin))
	$(BIN)/python -m pip install --quiet -e sdk/python
	@touch $@

install: $(BIN)/fkod ## Create .venv and install the platform with its test tools

migrate: install ## Migrate the database of $(INI) to the newest schema
	$(BIN)/fkod migrate $(INI)

demo-data: migrate ## Load the verified demo partner (with a new test key), courses and mentors
	$(BIN)/fkod demo-data $(INI)

run: demo-data ## Set up and serve the API at http://127.0.0.1:6543 on SQLite (Ctrl-C stops)
	$(BIN)/pserve $(INI)

demo: install ## Run the main job against the running server and verify the webhook it receives
	$(BIN)/fkod demo --url http://127.0.0.1:6543

worker: install ## Run background tasks for a Redis-broker configuration (INI=production.ini)
	$(BIN)/fkod worker $(INI)

test: test-embedded test-production ## Run the whole suite: SQLite first, then PostgreSQL + Redis

test-embedded: install ## Run every test on the embedded default (SQLite, in-process broker), plugins' own tests too
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests plugins_contrib

test-production: install ## Run the functional tests on PostgreSQL + Redis (dramatiq Redis broker)
	FKOD_TEST_STACK=production $(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS) tests/functional

lint: install ## Check style with ruff
	$(BIN)/ruff check fkod tests bench plugins_contrib alembic

bench: install ## Run the benchmarks; each prints its ratio against a baseline
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean: ## Remove the virtual environment and the development database
	rm -rf $(VENV) var
