"""``sparkfs run daily --date R``: the scheduled daily loop for run date R, with only what has landed.

At R's cutoff (06:00 UTC in the example) the outcomes and weather of R-1 have landed (after R-1
ended) and R's schedule has too (the evening before); R's own outcomes have not. So the run:

1. ``features R-1``: bronze -> silver for R-1 (every source: its outcomes become features), gold
   for the UTC dates R-1 and R (a New York evening departs on the next UTC date: R's early hours
   before the cutoff; rows after it exist too, but no lookup as of the cutoff matches them);
2. ``schedule R``: bronze -> silver of the serving spine's source (``spine.serving_table``) for R;
3. ``labels R-1``: merges the realized labels of R-1 onto R-1's predictions (null until now);
4. ``inference R``: scores the flights scheduled on R as of R's cutoff, by the model's rule;
5. ``monitor R``: drift of R's predictions against the model's reference, NannyML's estimate
   for R, the realized metrics of R-1 (labelled in step 3), alert rows (see
   :mod:`sparkfs.jobs.monitor`); skipped when nothing was scored or the model logged no
   reference. Alerts are written and printed here; failing on them is the ``monitor`` job's
   (``fail_on_alert``), so a drifted day still gets its predictions.

Every step is an idempotent MERGE: a rerun of R changes no table but the run records. A range
(``sparkfs backfill daily --start S --end E``) replays the days in order, as the scheduler would.
"""

from __future__ import annotations

from datetime import date, timedelta

from sparkfs.core.errors import ConfigError
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.features.pipeline import Pipeline, load_pipeline, run_pipeline
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.infer import describe_inference, infer_stages
from sparkfs.jobs.monitor import describe_monitoring, monitor_stages
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.labels import merge_labels
from sparkfs.monitoring.config import load_monitoring_config


def daily_job(ctx: JobContext, window: RunWindow | None) -> None:
    """The registered ``daily`` job: :func:`run_day` for the run date, or for each day of a range."""
    if window is None:
        raise ConfigError("the daily job needs the run date: sparkfs run daily --date YYYY-MM-DD")
    pipeline = load_pipeline(ctx.settings.conf_dir, ctx.settings.data_path)
    config = load_training_config(ctx.settings)
    serving_source(pipeline, config)  # checked before Spark too (registry); here for library callers
    for day in window.days():
        run_day(ctx, pipeline, config, day)


def serving_source(pipeline: Pipeline, config: TrainingConfig) -> str:
    """The raw source behind the serving spine (``spine.serving_table``; else ``spine.table``)."""
    return pipeline.source_of(config.spine.serving_table or config.spine.table)


def run_day(ctx: JobContext, pipeline: Pipeline, config: TrainingConfig, run_date: date) -> None:
    """One scheduled run for ``run_date`` R: features for R-1, R's schedule, R-1's labels, R's
    predictions (see the module docstring); one run record ``daily`` with every stage."""
    lake = ctx.lake
    yesterday = RunWindow(run_date - timedelta(days=1), run_date - timedelta(days=1))
    today = RunWindow(run_date, run_date)
    params = {"date": run_date, "features_for": yesterday.start, "model": config.model_name,
              "alias": config.alias}
    with record_run(lake, "daily", params) as run:
        run_pipeline(lake, pipeline, yesterday, run, gold_window=RunWindow(yesterday.start, run_date))
        run_pipeline(lake, pipeline, today, run, sources=[serving_source(pipeline, config)])
        with run.stage("labels") as stage:
            merged = merge_labels(lake, config, yesterday.start, yesterday.end)
            if merged is not None:
                stage.table_name, stage.table_version = merged.table, merged.version
                stage.rows_in, stage.rows_out = merged.source_rows, merged.rows_updated
        result = infer_stages(ctx, config, today, run)
        monitored = None
        if result is not None:
            monitored = monitor_stages(ctx, config, load_monitoring_config(ctx.settings), run_date, run)
    labelled = merged.rows_updated if merged is not None else 0
    print(f"\ndaily {run_date} (run {run.run_id}): features for {yesterday.start}; labels merged onto "
          f"{labelled} predictions of {yesterday.start}" + describe_inference(result, config, today)
          + (describe_monitoring(monitored, config, run_date) if result is not None else ""))
