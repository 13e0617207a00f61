# Every target does its own set-up: a fresh clone needs only python3 and make.
# The toolchain comes from the committed uv.lock (exact versions, hashed); `make lock` refreshes it.
PYTHON     ?= python3
UV_VERSION := 0.13.9
UV_HOME    := .uv
UV         := $(UV_HOME)/bin/uv
VENV       := .venv
PY         := $(VENV)/bin/python
STAMP      := $(VENV)/.locked
PYTEST_ARGS ?=
TEST_WORKERS ?= 3
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: docs test test-fast test-oldest test-latest demo check lint types bench bench-deps bench-compare bench-lua loadtest loadtest-patterns webapp doctor lock clean

# uv itself, pinned, in a venv of its own (the only thing installed outside the lock)
$(UV):
	@echo "make: installing uv $(UV_VERSION) into $(UV_HOME)/ (once)"
	@$(PYTHON) -m venv $(UV_HOME)
	@$(UV_HOME)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): uv.lock pyproject.toml | $(UV)
	@echo "make: installing the locked toolchain from uv.lock into $(VENV)/ (uv sync --locked)"
	$(UV) sync --locked --python $(PYTHON)
	@touch $(STAMP)

## test: lint, types, then the whole suite on every server kind found (standalone + cluster)
test: check
	@echo "make: pytest, every backend (fakeredis, standalone and cluster of each server kind)"
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

## test-fast: the day-to-day loop: pure core, fakeredis and one standalone server (no cluster)
test-fast: $(STAMP)
	$(PY) -m pytest -q -n 4 -m "not slow" --backends=fakeredis,redis --server-kinds=valkey $(PYTEST_ARGS)

## test-oldest / test-latest: the suite on the lowest declared versions (Python 3.10) and on the
## newest of everything (Python 3.13), each in its own venv, outside the lock
test-oldest: | $(UV)
	@UV=$(UV) bash tools/matrix.sh oldest 3.10 $(PYTEST_ARGS)

test-latest: | $(UV)
	@UV=$(UV) bash tools/matrix.sh latest 3.13 $(PYTEST_ARGS)

## check: ruff + mypy --strict
check: lint types

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

types: $(STAMP)
	$(PY) -m mypy

## lock: re-resolve uv.lock to the newest versions pyproject.toml allows (commit the result)
lock: | $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

## docs: the API reference from the docstrings, README and ARCHITECTURE, into .site/ (strict:
## a broken link or reference fails); open .site/index.html, no server needed
docs: $(STAMP)
	$(PY) -m mkdocs build --strict --quiet
	@echo "make: docs built: .site/index.html"

## demo: a narrated tour of every pattern (embedded server unless REDIS_URL is set)
demo: $(STAMP)
	$(PY) -m redispatterns demo

doctor: $(STAMP)
	$(PY) -m redispatterns doctor

## bench: every pattern's cost as a ratio to the raw redis-py floor, peers beside it (the
## locked bench group); writes .bench/latest.json and .bench/latest.png. BENCH_ARGS=cache narrows it.
BENCH_ARGS ?=
bench-deps: $(STAMP)
	@$(UV) sync --locked --inexact --group bench --python $(PYTHON) --quiet

bench: bench-deps
	@mkdir -p .bench
	$(PY) -m loadtests.run_bench --json .bench/latest.json --chart .bench/latest.png $(BENCH_ARGS)

## bench-compare BASE=<git rev>: the same bench at BASE and here, ratio by ratio
bench-compare: bench-deps
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=<git rev> [BENCH_ARGS=cache]"; exit 2; }
	@mkdir -p .bench && rm -rf .bench/base && git worktree prune
	git worktree add --quiet --detach .bench/base $(BASE)
	-cd .bench/base && ../../$(PY) -m loadtests.run_bench --json ../base.json $(BENCH_ARGS)
	-$(PY) -m loadtests.run_bench --json .bench/head.json $(BENCH_ARGS)
	git worktree remove --force .bench/base
	$(PY) -m loadtests.compare .bench/base.json .bench/head.json

## bench-lua: each pattern's scripts' server cost in instructions (callgrind: the same count every
## run, whatever the machine is doing), the limiters beside their commands alone; needs valgrind
bench-lua: $(STAMP)
	$(PY) -m loadtests.lua_cost $(BENCH_ARGS)

## loadtest: Locust over HTTP against the example shop (uvicorn workers, loopback, 60 s, headless;
## LOCUST_UI=1 for the web UI): requests/s, p50/p95/p99, failures; report in loadtests/out/
loadtest: $(STAMP)
	$(PY) -m loadtests.run_http_locust

## loadtest-patterns: Locust on the patterns themselves (micro-load, no HTTP), 20 s
loadtest-patterns: $(STAMP)
	$(PY) -m loadtests.run_locust

## webapp: the example shop (examples/webapp) on http://127.0.0.1:8000, embedded server unless REDIS_URL
webapp: $(STAMP)
	$(PY) -m loadtests.webapp_server

clean:
	rm -rf $(VENV) $(UV_HOME) .venv-oldest .venv-latest .bench .pytest_cache .mypy_cache .ruff_cache dist build
