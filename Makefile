# Quick start: `make run` serves the example order service on http://127.0.0.1:8089
# (SQLite; set DB_URL for PostgreSQL or MariaDB); `make test` runs the whole suite
# (the command CI runs); `make check` runs ruff and mypy --strict.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

LOWEST ?= .venv-lowest
# the interpreter of the lowest-versions run (CI: the lowest Python supported, 3.11)
LOWEST_PYTHON ?= $(BIN)/python

.PHONY: install run test test-lowest check dist docs services bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

run: install
	$(BIN)/python -m example_app

services:
	bash scripts/ensure-services.sh
	bash scripts/ensure-prometheus.sh
	bash scripts/ensure-patroni.sh || echo "make: the Patroni cluster is not available (its tests skip, or fail under CI=true)" >&2
	bash scripts/ensure-tls.sh || echo "make: the TLS servers are not available (their tests skip, or fail under CI=true)" >&2

# The suite on asyncpg, then its PostgreSQL part again on psycopg (TEST_PG_DRIVER);
# $(2): further pytest arguments. pytest exits 5 when it collected no test: that is a
# broken suite, not a pass.
PYTEST_BOTH = for driver in asyncpg psycopg; do \
	TEST_PG_DRIVER=$$driver $(1)/bin/python -m pytest $(PYTEST_ARGS) $(2); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make: pytest collected no tests ($$driver)" >&2; exit 1; fi; \
	if [ $$status -ne 0 ]; then exit $$status; fi; \
	done

test: install services
	@$(call PYTEST_BOTH,$(VENV))

# the same suite on the lowest versions pyproject.toml allows for every direct dependency:
# every test but the slow scenarios (failover, chaos, workers, ...: in make test), of
# which the chaos kill and restart faults run here too (marker floors); the fast tests
# of what they rest on (pool, liveness, overload, read-only, multi-host) all run here
test-lowest: install services
	rm -rf $(LOWEST)
	$(BIN)/uv venv --quiet --python $(LOWEST_PYTHON) $(LOWEST)
	$(BIN)/uv pip install --quiet --python $(LOWEST)/bin/python --resolution lowest-direct -e '.[dev]'
	$(BIN)/uv pip freeze --python $(LOWEST)/bin/python | grep -iE '^(litestar|advanced-alchemy|sqlalchemy|asyncpg|psycopg|psycopg-binary|asyncmy|aiosqlite|msgspec|python-dotenv|greenlet|pytest|pytest-asyncio)=='
	@$(call PYTEST_BOTH,$(LOWEST),-m "not slow or floors")

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# the wheel and sdist as users install them, checked by twine; the wheel must carry py.typed
dist: install
	rm -rf dist
	$(BIN)/uv build --quiet --out-dir dist
	$(BIN)/twine check --strict dist/*
	$(BIN)/python -m zipfile -l dist/*.whl | grep -q 'litestar_bento_db/py.typed'

$(BIN)/.docs-installed: pyproject.toml $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,docs]'
	touch $@

# the documentation site (guides in docs/, API reference from the docstrings), warnings
# as errors
docs: $(BIN)/.docs-installed
	rm -rf docs/_build
	$(BIN)/sphinx-build --fail-on-warning --keep-going --quiet -b html docs docs/_build/html

$(BIN)/.bench-installed: pyproject.toml $(BIN)/.installed
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	touch $@

# on demand, not in CI: needs the local servers (the replica too) and installs wrk and
# valgrind from Debian if missing; about 35 minutes. BENCH_ARGS="--only wrk" reruns one
# section, BENCH_ARGS=--quick is a smoke test (output in benchmarks/results/quick/)
bench: install services $(BIN)/.bench-installed
	$(BIN)/python -m benchmarks.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(LOWEST) .pytest_cache .mypy_cache .ruff_cache docs/_build
