# Every target does its own set-up: a fresh clone needs only python3 and make.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: test demo check lint types bench loadtest doctor clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## test: lint, types, then the whole suite on every server kind found (standalone + cluster)
test: check
	$(PY) -m pytest $(PYTEST_ARGS)

## check: ruff + mypy --strict
check: lint types

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

types: $(STAMP)
	$(PY) -m mypy

## demo: a narrated tour of every pattern (embedded server unless REDIS_URL is set)
demo: $(STAMP)
	$(PY) -m redispatterns demo

doctor: $(STAMP)
	$(PY) -m redispatterns doctor

## bench: every pattern's cost as a ratio to the raw redis-py floor
bench: $(STAMP)
	$(PY) -m loadtests.run_bench

## loadtest: Locust, headless, bounded in time, against a private server
loadtest: $(STAMP)
	$(PY) -m loadtests.run_locust

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache dist build
