"""The registry of jobs: each name maps to its ``job(ctx, window)`` function, run with one error rule.

Before a job's module is imported or Spark starts, :func:`run_job` checks what can be checked
cheaply: the job's name, its dates, the settings and the job's own configuration files. What needs
Great Expectations (seconds to import) is checked while the JVM starts, before any table is opened.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sparkfs.core.config import Settings
from sparkfs.core.errors import SparkfsError, UsageError
from sparkfs.jobs.console import report_error
from sparkfs.jobs.context import (
    JobContext,
    check_environment,
    check_window,
    job_context,
    settings_from_args,
    window_from_args,
)

if TYPE_CHECKING:
    from sparkfs.core.runs import RunWindow

JobFn = Callable[[JobContext, "RunWindow | None"], None]


def _check_pipeline_conf(settings: Settings) -> None:
    from sparkfs.features.pipeline import load_pipeline

    load_pipeline(settings.conf_dir, settings.data_path, check_expectation_kwargs=False)


def _check_expectations(settings: Settings) -> None:
    """The expectations' kwargs, through Great Expectations: the one conf check that needs it
    (importing it takes seconds), so the jobs run it while Spark starts."""
    from sparkfs.features.pipeline import load_pipeline

    load_pipeline(settings.conf_dir, settings.data_path)


def _check_training_conf(settings: Settings) -> None:
    from sparkfs.ml.config import load_training_config

    load_training_config(settings)


def _check_daily_conf(settings: Settings) -> None:
    """Both configs load, and the serving spine is a silver table of the pipeline."""
    from sparkfs.features.pipeline import load_pipeline
    from sparkfs.ml.config import load_training_config

    spine = load_training_config(settings).spine
    pipeline = load_pipeline(settings.conf_dir, settings.data_path, check_expectation_kwargs=False)
    pipeline.source_of(spine.serving_table or spine.table)


def _check_monitoring_conf(settings: Settings) -> None:
    from sparkfs.ml.config import load_training_config
    from sparkfs.monitoring.config import load_monitoring_config

    load_training_config(settings)
    load_monitoring_config(settings)


@dataclass(frozen=True)
class Job:
    """A registered job: where its function lives and what ``sparkfs run --help`` says about it."""

    target: str  # "module:function", imported only when the job runs, so the CLI starts fast
    summary: str
    dates: str  # what --date / --start --end mean for this job
    needs_dates: bool = False
    # Loads the job's own conf files, so a bad one stops the job before Spark starts.
    check_conf: Callable[[Settings], None] | None = None
    # The rest of the check, run while the JVM starts; a bad conf stops the job once Spark is up,
    # before it opens a table.
    check_while_starting: Callable[[Settings], None] | None = None


JOBS: dict[str, Job] = {
    "smoke": Job(
        "sparkfs.jobs.smoke:smoke_job",
        "create a Delta table, MERGE a batch into it, print its history",
        "--date D: the event date of the batch (default 2013-01-01)",
    ),
    "features": Job(
        "sparkfs.jobs.features:features_job",
        "bronze -> silver -> gold feature tables from the landed raw files",
        "--date D: the events of day D; --start S --end E: a backfill of S..E in one pass "
        "(one of them is required)",
        needs_dates=True, check_conf=_check_pipeline_conf, check_while_starting=_check_expectations,
    ),
    "train": Job(
        "sparkfs.jobs.train:train_job",
        "point-in-time training set, XGBoost, gate, MLflow run, register the alias",
        "no date: train on the configured start..end; --date D: on the configured start up to "
        "D; --start S --end E: on exactly S..E",
        check_conf=_check_training_conf,
    ),
    "infer": Job(
        "sparkfs.jobs.infer:infer_job",
        "score a day's spine with the model behind the alias, MERGE the predictions",
        "--date D: the spine's rows on day D (the flights scheduled that day); --start S --end E: "
        "every day of the range (one of them is required)",
        needs_dates=True, check_conf=_check_training_conf,
    ),
    "daily": Job(
        "sparkfs.jobs.daily:daily_job",
        "the scheduled daily loop: features for the day before, today's schedule, yesterday's "
        "labels onto its predictions, today's predictions as of the cutoff",
        "--date R: the run date (the day the scheduler starts the job; features are built for "
        "R-1, predictions for the flights scheduled on R); --start S --end E: each run date in "
        "order (one of them is required)",
        needs_dates=True, check_conf=_check_daily_conf, check_while_starting=_check_expectations,
    ),
    "monitor": Job(
        "sparkfs.jobs.monitor:monitor_job",
        "drift of a day's predictions (inputs and score) against the model's reference, NannyML's "
        "estimated performance, realized performance of the day before, alerts",
        "--date D: the day whose predictions are checked (the realized metrics are D-1's); "
        "--start S --end E: each day in order (one of them is required)",
        needs_dates=True, check_conf=_check_monitoring_conf,
    ),
    "maintain": Job(
        "sparkfs.jobs.maintain:maintain_job",
        "OPTIMIZE (Z-order on keys + event time) and VACUUM every table, keeping every version a "
        "registered model's training set pinned",
        "no date needed (--date is accepted and ignored: upkeep covers the whole table)",
    ),
}


def job_named(name: str) -> Job:
    """The registered job ``name``; an unknown name is a usage error with the nearest names."""
    if name in JOBS:
        return JOBS[name]
    close = difflib.get_close_matches(name, JOBS, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UsageError(f"unknown job '{name}'; {hint}jobs: {', '.join(sorted(JOBS))} (sparkfs run --help)")


def resolve_job(name: str) -> JobFn:
    target = job_named(name).target
    module, func = target.split(":")
    try:
        job: JobFn = getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise SparkfsError(f"job '{name}' is registered as {target} but cannot be loaded: {exc}") from exc
    return job


def check_job(name: str, args: argparse.Namespace) -> Settings:
    """Everything about running ``name`` with ``args`` that can be checked before Spark starts;
    returns the settings to run it with."""
    job = job_named(name)
    if check_window(args) is None and job.needs_dates:
        raise UsageError(f"the {name} job needs --date YYYY-MM-DD, or --start/--end for a backfill")
    settings = settings_from_args(args)
    check_environment(settings)
    if job.check_conf is not None:
        job.check_conf(settings)
    return settings


def run_job(name: str, args: argparse.Namespace, *, verbose: bool = False) -> int:
    """Run job ``name``; an error prints ``error: ...`` once and returns its exit status (2: the
    command or its configuration is wrong, 1: the job failed)."""
    try:
        settings = check_job(name, args)
        window = window_from_args(args)
        job = resolve_job(name)
        late = job_named(name).check_while_starting
        with job_context(settings, verbose=verbose, command=name,
                         while_starting=functools.partial(late, settings) if late else None) as ctx:
            job(ctx, window)
    except Exception as exc:  # every failure ends here, printed once
        return report_error(exc, verbose=verbose)
    return 0
