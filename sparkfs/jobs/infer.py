"""``sparkfs run infer``: score a day's spine with the model behind the alias, MERGE the predictions."""

from __future__ import annotations

from dataclasses import replace

from sparkfs.core.errors import ConfigError, TrainingServingSkewError
from sparkfs.core.lineage import (
    LineageEdge,
    edges_from_reads,
    model_node,
    record_lineage,
    table_node,
)
from sparkfs.core.runs import RunRecorder, RunWindow, record_run
from sparkfs.jobs.context import JobContext
from sparkfs.ml.assembly import build_features, build_spine, with_model_rule
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.labels import realized_labels
from sparkfs.ml.score import (
    FEATURE_TIMES,
    InferenceResult,
    load_scoring_model,
    predict_and_merge,
    score_column_lineage,
)
from sparkfs.ml.skew import skew_check
from sparkfs.pit.provenance import audit_feature_times


def infer_job(ctx: JobContext, window: RunWindow | None) -> None:
    """``sparkfs run infer --date D``: score the flights scheduled on D with the model behind the
    alias and MERGE the predictions (a range scores every day in it, in one pass).

    With ``inference.skew_check`` on, the skew check runs first and a difference stops the run
    before any prediction is written. The leakage audit runs on every batch: a feature row used
    from after a row's prediction time, or one that had not landed by then, stops the run before
    anything is written (:class:`~sparkfs.core.errors.LeakageError`). A window whose spine has no rows (no flights scheduled)
    says so and writes nothing.
    """
    if window is None:
        raise ConfigError("infer needs a date: sparkfs run infer --date YYYY-MM-DD (or --start/--end)")
    config = load_training_config(ctx.settings)
    params = {"start": window.start, "end": window.end, "model": config.model_name, "alias": config.alias}
    with ctx.one_day(window), record_run(ctx.lake, "infer", params) as run:
        result = infer_stages(ctx, config, window, run)
    print(describe_inference(result, config, window))


def infer_stages(
    ctx: JobContext, config: TrainingConfig, window: RunWindow, run: RunRecorder
) -> InferenceResult | None:
    """The inference stages of a run (the ``infer`` and ``daily`` jobs): resolve the model, the
    skew check when configured, the spine and its features by the model's prediction-time rule,
    scoring and the MERGE. None when the spine of ``window`` is empty (nothing scheduled)."""
    lake = ctx.lake
    with run.stage("resolve_model") as stage:
        model = load_scoring_model(ctx.settings, config.model_name, config.alias)
        stage.details.update(model=model.name, version=model.version)
    # The spine follows the rule the model was trained and evaluated with.
    config = with_model_rule(config, model.tags)
    if config.inference.skew_check:  # before anything is written
        with run.stage("skew_check") as stage:
            report = skew_check(lake, config, model, config.inference.skew_sample_rows)
            stage.rows_in = report.rows_compared
            stage.details["report"] = report.describe()
            if not report.identical:
                raise TrainingServingSkewError(report.describe())
    with run.stage("features") as stage, lake.track_reads() as reads:
        spine_df = build_spine(lake, config, window.start, window.end, labelled=False)
        if spine_df.isEmpty():  # a day with nothing scheduled: a fact to report, not an error
            stage.rows_in = 0
            return None
        features = build_features(lake, config, spine_df, label=None, feature_times=FEATURE_TIMES)
        versions = features.spec.table_versions()
        stage.details["table_versions"] = versions
        stage.details["prediction_time"] = config.prediction_time.describe()
    with run.stage("leakage_audit") as stage:  # before anything is written
        audit = audit_feature_times(features.df, FEATURE_TIMES, config.lookup_timestamp)
        stage.rows_in = features.checks["rows"]
        stage.details["audit"] = audit.counts
        audit.raise_on_violation(f"the features of {window}")
    with run.stage("predict") as stage:
        # Outcomes that have landed already (a backtest, a late rerun) label the rows at once.
        labels_df = realized_labels(lake, config, window.start, window.end)
        result = predict_and_merge(lake, features.df, model, config, versions, labels_df)
        stage.table_name, stage.table_version = result.merge.table, result.merge.version
        stage.rows_in, stage.rows_out = result.merge.source_rows, result.merge.rows_inserted
        stage.details["rows_updated"] = result.merge.rows_updated
    merge = result.merge
    if merge.rows_inserted or merge.rows_updated:
        target = table_node("ml", config.inference.table)
        # The spine's table and every feature table, at the versions read; and the model.
        edges = edges_from_reads(lake, target, merge.version, reads)
        edges.append(LineageEdge(target, merge.version, "model", model_node(model.name), int(model.version)))
        columns = {(target, merge.version): score_column_lineage(lake, spine_df, features.spec, model)}
        record_lineage(lake, edges, job=run.job, run_id=run.run_id, columns=columns)
    return replace(result, inputs=features.df)


def describe_inference(result: InferenceResult | None, config: TrainingConfig, window: RunWindow) -> str:
    """What the console shows after inference for ``window``."""
    if result is None:
        spine = config.spine.serving_table or config.spine.table
        return f"\nno rows in the spine for {window} ({config.spine.layer}.{spine}): nothing scheduled, nothing scored"
    merge, model = result.merge, result.model
    return (
        f"\n{merge.table}: scored {merge.source_rows} new or changed predictions for {window} with "
        f"{model.name} version {model.version} (@{model.alias}); inserted {merge.rows_inserted}, "
        f"updated {merge.rows_updated} (Delta version {merge.version})"
    )
