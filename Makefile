# Quick start: `make run` serves the example order service on http://127.0.0.1:8089
# (SQLite; set DB_URL for PostgreSQL or MariaDB); `make test` runs the whole suite
# (the command CI runs); `make check` runs ruff and mypy --strict.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install run test check services bench clean

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

# pytest exits 5 when it collected no test: that is a broken suite, not a pass.
test: install services
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# on demand, not in CI: needs the local servers and installs wrk from Debian if missing
bench: install services
	$(BIN)/python -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
