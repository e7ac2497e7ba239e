"""``sparkfs run daily --date R``: the scheduled daily loop for run date R, with only what has landed.

At R's cutoff (06:00 UTC in the example) the outcomes and weather of R-1 have landed (after R-1
ended) and R's schedule has too (the evening before); R's own outcomes have not. So the run:

1. ``features R-1`` and ``schedule R``, one pass of the pipeline: bronze -> silver for R-1 (every
   source: its outcomes become features) and for R the serving spine's source
   (``spine.serving_table``), gold for the UTC dates R-1 and R (a New York evening departs on the
   next UTC date: R's early hours before the cutoff; rows after it exist too, but no lookup as of
   the cutoff matches them);
2. ``labels R-1``: merges the realized labels of R-1 onto R-1's predictions (null until now);
3. ``inference R``: scores the flights scheduled on R as of R's cutoff, by the model's rule;
4. ``monitor R``: drift of R's predictions against the model's reference, NannyML's estimate
   for R, the realized metrics of R-1 (labelled in step 2), alert rows (see
   :mod:`sparkfs.jobs.monitor`); skipped when nothing was scored or the model logged no
   reference. Alerts are written and printed here; failing on them is the ``monitor`` job's
   (``fail_on_alert``), so a drifted day still gets its predictions.

Every step is an idempotent MERGE: a rerun of R changes no table but the run records. A range
(``sparkfs backfill daily --start S --end E``) replays the days in order, as the scheduler would.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta

from sparkfs.core.errors import ConfigError
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.features.pipeline import Pipeline, load_pipeline, run_pipeline
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.infer import infer_stages
from sparkfs.jobs.monitor import MonitorResult, describe_monitoring, monitor_stages
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.labels import RealizedDay, merge_labels, realized_day
from sparkfs.ml.score import InferenceResult
from sparkfs.monitoring.config import load_monitoring_config


@dataclass(frozen=True)
class DayResult:
    """What one scheduled run did: the predictions of the run date, the labels merged onto the
    day before, and how that day's predictions did."""

    run_date: date
    run_id: str
    inference: InferenceResult | None
    labels_merged: int
    yesterday: RealizedDay
    monitoring: MonitorResult | None
    seconds: float

    def line(self) -> str:
        """One line of the console's day-by-day table (:data:`HEADER`)."""
        inf = self.inference
        scored = (f"{inf.merge.source_rows:>6,} (v{inf.model.version})" if inf is not None else f"{'none':>6}     ")
        auc = f"{self.yesterday.roc_auc:.3f}" if self.yesterday.roc_auc is not None else "  -  "
        level = self.monitoring.report.level if self.monitoring is not None else "-"
        return (f"{self.run_date}  {scored}  {self.yesterday.labelled:>9,} of {self.yesterday.predictions:<6,}"
                f"    {auc}              {level:<7}  {self.seconds:6.1f}s")


HEADER = "run date    scored (model)   labelled day before   ROC AUC day before   monitor  wall"


def daily_job(ctx: JobContext, window: RunWindow | None) -> None:
    """The registered ``daily`` job: :func:`run_day` for the run date, or for each day of a range
    in order (a simulated calendar: ``sparkfs simulate``), one console line per day."""
    if window is None:
        raise ConfigError("the daily job needs the run date: sparkfs run daily --date YYYY-MM-DD")
    pipeline = load_pipeline(ctx.settings.conf_dir, ctx.settings.data_path)
    config = load_training_config(ctx.settings)
    serving_source(pipeline, config)  # checked before Spark too (registry); here for library callers
    print(f"\ndaily runs {window} (each as the scheduler starts it, with what has landed by then)")
    print(HEADER)
    results = []
    with _only_day_lines_unless_verbose(window.start != window.end):
        for day in window.days():
            results.append(run_day(ctx, pipeline, config, day))
            print(results[-1].line(), flush=True)
    scored = sum(r.inference.merge.source_rows for r in results if r.inference is not None)
    aucs = [r.yesterday.roc_auc for r in results if r.yesterday.roc_auc is not None]
    mean_auc = f"; mean realized ROC AUC {sum(aucs) / len(aucs):.3f} over {len(aucs)} days" if aucs else ""
    print(f"{len(results)} run(s), {scored:,} new or changed predictions in "
          f"{ctx.lake.name('ml', config.inference.table)}{mean_auc}")
    last = results[-1]
    if last.inference is not None:  # the monitoring summary of the last day
        print(describe_monitoring(last.monitoring, config, last.run_date).lstrip("\n"))


@contextmanager
def _only_day_lines_unless_verbose(several_days: bool) -> Iterator[None]:
    """Over several days the one line per day is the story; each day's stage and step lines (its
    run record, ``sparkfs runs``) are shown with ``-v`` only. Warnings still show."""
    sparkfs_log = logging.getLogger("sparkfs")
    level = sparkfs_log.level
    if several_days and not sparkfs_log.isEnabledFor(logging.DEBUG):
        sparkfs_log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        sparkfs_log.setLevel(level)


def serving_source(pipeline: Pipeline, config: TrainingConfig) -> str:
    """The raw source behind the serving spine (``spine.serving_table``; else ``spine.table``)."""
    return pipeline.source_of(config.spine.serving_table or config.spine.table)


def run_day(ctx: JobContext, pipeline: Pipeline, config: TrainingConfig, run_date: date) -> DayResult:
    """One scheduled run for ``run_date`` R: features for R-1, R's schedule, R-1's labels, R's
    predictions (see the module docstring); one run record ``daily`` with every stage."""
    started = time.perf_counter()
    lake = ctx.lake
    yesterday = RunWindow(run_date - timedelta(days=1), run_date - timedelta(days=1))
    today = RunWindow(run_date, run_date)
    params = {"date": run_date, "features_for": yesterday.start, "model": config.model_name,
              "alias": config.alias}
    with ctx.one_day(), record_run(lake, "daily", params) as run:
        # R-1's outcomes and R's schedule, in one pass; gold for R-1 and R (features.pipeline.gold_span)
        run_pipeline(lake, pipeline, yesterday, run, next_day=[serving_source(pipeline, config)])
        with run.stage("labels") as stage:
            merged = merge_labels(lake, config, yesterday.start, yesterday.end)
            if merged is not None:
                stage.table_name, stage.table_version = merged.table, merged.version
                stage.rows_in, stage.rows_out = merged.source_rows, merged.rows_updated
            realized = realized_day(lake, config, yesterday.start)
            stage.details.update(labelled=realized.labelled, roc_auc=realized.roc_auc)
        result = infer_stages(ctx, config, today, run)
        monitored = None
        if result is not None:
            monitored = monitor_stages(ctx, config, load_monitoring_config(ctx.settings), run_date, run, result)
    labelled = merged.rows_updated if merged is not None else 0
    return DayResult(run_date, run.run_id, result, labelled, realized, monitored, time.perf_counter() - started)
