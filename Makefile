# soak-runner: `make soak` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= profiles/smoke.toml
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install soak soak-leaky soak-release lint test test-slow test-faults bench-selfsoak bench-detect bench-report bench-load bench-capacity bench-memray bench-runtime clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install soak-runner (leaves .venv/bin/soak ready)

soak: $(STAMP) ## soak the bundled clean target (PROFILE=profiles/x.toml for another)
	$(BIN)/soak run $(PROFILE)

soak-leaky: $(STAMP) ## soak the bundled leaky target: must end LEAK (exit 1)
	-$(BIN)/soak run profiles/leaky.toml

soak-release: $(STAMP) ## the release check (until decided, 3-31 min, profiles/release.toml; TARGET="cmd --port {port}" for your server)
	$(BIN)/soak run profiles/release.toml $(if $(TARGET),--target "$(TARGET)",) $(SOAK_ARGS)

lint: $(STAMP) ## ruff (style, imports, bugbear) and mypy (strict on analysis/ and report/)
	$(BIN)/ruff check runner tests bench
	$(BIN)/ruff format --check runner tests bench
	$(BIN)/mypy

test: lint ## lint, types, then the test suite with coverage of runner/ (prints its slowest tests and its time)
	$(BIN)/python -m pytest -m "not slow" --durations=15 --cov=runner --cov-report=term --cov-fail-under=80 $(PYTEST_ARGS)

test-slow: $(STAMP) ## long soaks and fault tests behind the `slow` marker
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

test-faults: $(STAMP) ## every fault test (crashes, signals, hangs, exposure; real processes, ~7 min)
	$(BIN)/python -m pytest -m faults $(PYTEST_ARGS)

bench-selfsoak: $(STAMP) ## the runner soaked for 30 min, its own RSS judged by its own leak analysis (SELFSOAK_ARGS=...)
	$(BIN)/python bench/selfsoak.py $(SELFSOAK_ARGS)

bench-detect: $(STAMP) ## leak-detection tables from bench/data/: fixed windows, run-until-decided looks (RECORD=1 re-soaks the corpus, ~30 min; ATTRIBUTION=1 re-soaks the memray leak shapes, ~15 min)
	$(if $(RECORD),$(BIN)/python bench/detect.py record,)
	$(if $(ATTRIBUTION),$(BIN)/python bench/detect.py attribution,)
	$(BIN)/python bench/detect.py table $(BENCH_ARGS)
	$(BIN)/python bench/detect.py looks $(BENCH_ARGS)

bench-report: $(STAMP) ## report generation for a 12-hour run at 0.5 s (86,400 samples): seconds and peak memory
	$(BIN)/python bench/report_bench.py $(BENCH_ARGS)

bench-load: $(STAMP) ## load generator churn: cycles/s and CPU ms per cycle vs the bare asyncio websockets client (needs node, ~2 min)
	$(BIN)/python bench/load_churn.py $(BENCH_ARGS)

bench-capacity: $(STAMP) ## 50,000 concurrent connections held: errors and client KB per connection (heavy: ~6 min of both cores)
	$(BIN)/python bench/load_capacity.py $(BENCH_ARGS)

bench-memray: $(STAMP) ## memray's cost: churn and target CPU with/without it side by side, capture MB and analysis s per 1,000 connections (~3 min)
	$(BIN)/python bench/memray_bench.py $(BENCH_ARGS)

bench-runtime: $(STAMP) ## the runtime heap tier's cost on a Node server: CPU per 1,000 connections with/without it side by side, GC share (~2 min, needs node)
	$(BIN)/python bench/runtime_bench.py $(BENCH_ARGS)

clean: ## remove .venv, caches and run folders
	rm -rf $(VENV) .pytest_cache .coverage .coverage.* htmlcov *.egg-info
	find reports -mindepth 1 ! -name README.md -exec rm -rf {} +
