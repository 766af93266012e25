# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` directly.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# e.g. make bench BENCH_ARGS="--sizes 10000,100000 --repeat 5 --no-write"
BENCH_ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "} {printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/session-status: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

.PHONY: venv
venv: $(BIN)/session-status ## Create .venv and install the package with its test dependencies

.PHONY: system-deps
system-deps: ## Install PostgreSQL and pg_cron from Debian when missing (as root; otherwise prints the command)
	@scripts/ensure-pg-cron

.PHONY: demo
demo: venv system-deps ## Start a throwaway PostgreSQL with pg_cron, migrate, and watch the real job open sessions
	$(BIN)/session-status demo

.PHONY: test
test: venv system-deps ## Run the whole test suite against a throwaway PostgreSQL with pg_cron
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-fast
test-fast: venv system-deps ## Run the tests without the ones that wait for the pg_cron launcher
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

.PHONY: bench
bench: venv system-deps ## Benchmark the tick against a naive tick at 10k-1M sessions; writes docs/benchmarks.md
	$(BIN)/python -m bench.tick_bench $(BENCH_ARGS)

.PHONY: lint
lint: venv ## Run ruff and mypy
	$(BIN)/ruff check session_status migrations tests bench
	$(BIN)/ruff format --check session_status migrations tests bench
	$(BIN)/mypy

.PHONY: clean
clean: ## Remove the virtualenv and build artefacts
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache .hypothesis
