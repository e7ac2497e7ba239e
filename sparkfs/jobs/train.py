"""``sparkfs run train``: build the point-in-time training set, train, gate, log, register."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from sparkfs.core.lineage import LineageEdge, model_node, record_lineage, table_node
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.features.feature_tables import declared_feature_tables
from sparkfs.jobs.context import JobContext
from sparkfs.ml.assembly import build_features, build_spine
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.evaluation import Evaluation
from sparkfs.ml.fit import DEFAULT_XGB_PARAMS
from sparkfs.ml.mlflow_log import TestSplitHook
from sparkfs.ml.model import PREDICTION, PROBABILITY
from sparkfs.ml.splits import effective_feature_window, split_boundaries
from sparkfs.ml.train import train_model
from sparkfs.monitoring.performance import problem_of
from sparkfs.monitoring.reference import build_reference, log_reference
from sparkfs.pit.spec import TrainingSetSpec

if TYPE_CHECKING:
    import pandas as pd
    from pyspark.sql import SparkSession


def monitoring_reference(spark: SparkSession, config: TrainingConfig) -> TestSplitHook:
    """The training run's hook that profiles the scored test split (inputs and score, and their
    spread from one prediction day to the next), fits NannyML's estimator on it (CBPE for a classifier, DLE for a regressor: by the XGBoost
    objective) and logs both with the model, before it is registered."""
    objective = str({**DEFAULT_XGB_PARAMS, **config.xgboost.params}["objective"])

    def log(scored: pd.DataFrame, evaluation: Evaluation) -> None:
        reference = build_reference(
            spark, scored, numeric=config.features.numeric, categorical=config.features.categorical,
            score=PROBABILITY, prediction=PREDICTION, label=config.label, problem=problem_of(objective),
            metrics=evaluation.metrics, day=prediction_days(scored, config),
        )
        log_reference(reference)

    return log


def prediction_days(scored: pd.DataFrame, config: TrainingConfig) -> pd.Series | None:
    """The UTC date of each row's prediction time: the day a daily batch scored it in (the chunk
    the monitor measures a day of predictions as). None for a training set without that column
    (built outside the spine): its reference keeps the fixed drift levels."""
    if config.lookup_timestamp not in scored.columns:
        return None
    return scored[config.lookup_timestamp].astype("datetime64[us]").dt.date


def training_window(config: TrainingConfig, window: RunWindow | None) -> tuple[date, date]:
    """No window: the configured ``start..end``. ``--date D``: ``start..D`` (train as of D).
    ``--start S --end E``: exactly ``S..E``."""
    if window is None:
        return config.start, config.end
    if window.start == window.end:
        return config.start, window.end
    return window.start, window.end


def train_job(ctx: JobContext, window: RunWindow | None) -> None:
    """``sparkfs run train``: build the PIT training set, train, gate, log, register."""
    config = load_training_config(ctx.settings)
    start, end = training_window(config, window)
    lake = ctx.lake
    # Fail before the (long) training-set build if the window cannot hold the splits.
    feature_window = effective_feature_window(config, declared_feature_tables(ctx.settings))
    split_boundaries(start, end, config.split, feature_window)
    with record_run(lake, "train", {"start": start, "end": end, "model": config.model_name}) as run:
        with run.stage("training_set") as stage:
            layer, table = config.spine.layer, config.spine.table
            version = lake.version(layer, table)
            spine_source = {"layer": layer, "table": table, "version": version}
            spine_df = build_spine(lake, config, start, end, labelled=True, version=version)
            training_set = build_features(lake, config, spine_df, label=config.label)
            stage.rows_in = training_set.checks["spine_rows"]
            stage.rows_out = training_set.checks["rows"]
            stage.table_name = lake.name(layer, table)
            stage.table_version = version
            stage.details["table_versions"] = training_set.spec.table_versions()
        with run.stage("train") as stage:
            result = train_model(training_set.df, training_set.spec, config, ctx.settings,
                                 start=start, end=end, spine_source=spine_source,
                                 on_test_split=monitoring_reference(ctx.spark, config))
            stage.rows_in = result.counts["usable"]
            stage.details.update(
                run_id=result.run_id, registered_version=result.registered_version,
                test=result.model.metrics, baseline=result.baseline.metrics,
            )
        if result.registered_version is not None:
            record_lineage(lake, model_edges(result.model_name, int(result.registered_version), training_set.spec),
                           job=run.job, run_id=run.run_id)
    print(f"\n{result.summary()}")


def model_edges(model_name: str, version: int, spec: TrainingSetSpec) -> list[LineageEdge]:
    """A registered model version's lineage: every table its training set read, at its version."""
    target = model_node(model_name)
    edges = [LineageEdge(target, version, "table", table_node("gold", lk.table), lk.version) for lk in spec.lookups]
    spine = spec.spine
    if spine.layer and spine.table and spine.version is not None:
        edges.append(LineageEdge(target, version, "table", table_node(spine.layer, spine.table), spine.version))
    return edges
