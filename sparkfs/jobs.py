"""Job entry points: argument parsing, then one call into the library.

Every job has the signature ``job(ctx, window)`` and is reachable three ways with the same code:
``sparkfs run <job> ...`` / ``sparkfs backfill <job> ...``, ``spark-submit jobs/<job>.py ...``,
and the wheel entry point ``sparkfs-<job>`` (Databricks ``python_wheel_task``). A daily run is a
window of one day; a backfill is a longer window through the same function.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pyspark.sql import SparkSession

from sparkfs.config import Settings, load_settings
from sparkfs.errors import SparkfsError
from sparkfs.lakehouse import Lakehouse, open_lakehouse
from sparkfs.session import get_spark

log = logging.getLogger("sparkfs")


@dataclass(frozen=True)
class RunWindow:
    """Inclusive range of event dates a run processes: one day daily, many in a backfill."""

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise SparkfsError(f"run window ends ({self.end}) before it starts ({self.start})")

    def days(self) -> Iterator[date]:
        day = self.start
        while day <= self.end:
            yield day
            day += timedelta(days=1)

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}..{self.end}"


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    spark: SparkSession
    lake: Lakehouse


JobFn = Callable[[JobContext, "RunWindow | None"], None]

# name -> "module:function"; imported only when the job runs, so the CLI starts fast.
JOBS: dict[str, str] = {
    "smoke": "sparkfs.smoke:smoke_job",
    "features": "sparkfs.pipeline:features_job",
    "train": "sparkfs.training:train_job",
    "infer": "sparkfs.inference:infer_job",
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


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="environment overlay: local (default), dev, prod")
    parser.add_argument("--conf-dir", default=None, help="folder holding sparkfs.yaml (default: ./conf)")
    parser.add_argument("--catalog", default=None, help="Unity Catalog catalog (overrides config)")
    parser.add_argument("--date", type=date.fromisoformat, help="run for one event date (YYYY-MM-DD)")
    parser.add_argument("--start", type=date.fromisoformat, help="first event date of a range")
    parser.add_argument("--end", type=date.fromisoformat, help="last event date of a range (inclusive)")


def window_from_args(args: argparse.Namespace) -> RunWindow | None:
    if args.date and (args.start or args.end):
        raise SparkfsError("give either --date or --start/--end, not both")
    if args.date:
        return RunWindow(args.date, args.date)
    if args.start or args.end:
        if not (args.start and args.end):
            raise SparkfsError("a range needs both --start and --end")
        return RunWindow(args.start, args.end)
    return None


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for ``--conf-dir`` / ``--env``, with ``--catalog`` overriding ``storage.catalog``.

    On Databricks the bundle passes ``--conf-dir ${workspace.file_path}/conf`` (the synced copy of
    ``conf/``), because a job's working directory is not the project folder there.
    """
    settings = load_settings(args.conf_dir, args.env)
    if args.catalog:
        storage = settings.storage.model_copy(update={"catalog": args.catalog})
        settings = settings.model_copy(update={"storage": storage})
    return settings


def job_context(args: argparse.Namespace) -> JobContext:
    settings = settings_from_args(args)
    spark = get_spark(settings)
    return JobContext(settings, spark, open_lakehouse(spark, settings))


def setup_logging() -> None:
    level = os.environ.get("SPARKFS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "alembic", "mlflow", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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
