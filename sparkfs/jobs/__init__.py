"""The top floor: every job, its entry points and the ``sparkfs`` command.

Every job has the signature ``job(ctx, window)`` and is reachable three ways with the same code:
``sparkfs run <job> ...`` / ``sparkfs backfill <job> ...``, ``spark-submit jobs/<job>.py ...``,
and the wheel entry point ``sparkfs-<job>`` (Databricks ``python_wheel_task``). A daily run is a
window of one day; a backfill is a longer window through the same function. This package is the
only place that knows all jobs; the library below it never imports it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from sparkfs.core.errors import SparkfsError
from sparkfs.core.runs import RunWindow
from sparkfs.jobs.context import (
    JobContext,
    add_common_arguments,
    job_context,
    setup_logging,
    window_from_args,
)

log = logging.getLogger("sparkfs")

JobFn = Callable[[JobContext, "RunWindow | None"], None]

# name -> "module:function"; imported only when the job runs, so the CLI starts fast.
JOBS: dict[str, str] = {
    "smoke": "sparkfs.jobs.smoke:smoke_job",
    "features": "sparkfs.jobs.features:features_job",
    "train": "sparkfs.jobs.train:train_job",
    "infer": "sparkfs.jobs.infer:infer_job",
}


def resolve_job(name: str) -> JobFn:
    if name not in JOBS:
        raise SparkfsError(f"unknown job '{name}'; jobs: {sorted(JOBS)}")
    module, func = JOBS[name].split(":")
    try:
        job: JobFn = getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise SparkfsError(f"job '{name}' is registered as {JOBS[name]} but cannot be loaded: {exc}") from exc
    return job


def run_job(name: str, args: argparse.Namespace) -> int:
    """Run job ``name``; a sparkfs error prints its message and returns 1 (no traceback)."""
    try:
        job = resolve_job(name)
        window = window_from_args(args)
        ctx = job_context(args)
        job(ctx, window)
    except SparkfsError as exc:
        log.error("%s failed: %s", name, str(exc).splitlines()[0])  # the whole text goes to stderr
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of one job (used by ``jobs/<name>.py`` and the wheel's ``sparkfs-<name>``)."""
    setup_logging()
    parser = argparse.ArgumentParser(prog=f"sparkfs-{name}", description=f"sparkfs {name} job")
    add_common_arguments(parser)
    return run_job(name, parser.parse_args(argv))


def run_entry_point(name: str) -> None:
    """Run job ``name`` from a wheel entry point; a failure raises ``SystemExit`` with its code.

    A returned code becomes an exit status only through a console-script wrapper; a Databricks
    ``python_wheel_task`` calls the function itself, so a failure must raise to fail the task
    (and to keep the tasks that depend on it from starting).
    """
    code = main(name)
    if code:
        raise SystemExit(code)


# Wheel entry points (pyproject [project.scripts]; Databricks python_wheel_task).
def smoke() -> None:
    run_entry_point("smoke")


def features() -> None:
    run_entry_point("features")


def train() -> None:
    run_entry_point("train")


def infer() -> None:
    run_entry_point("infer")
