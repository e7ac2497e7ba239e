"""Batch inference: score a day's spine with the model behind an alias, MERGE the predictions.

The features are looked up with the same point-in-time code training used, scored inside Spark
by the packaged pyfunc (an MLflow ``spark_udf``: the rows never come to the driver), and MERGEd
into ``<ml schema>.<inference.table>`` keyed by the spine keys + timestamp and partitioned by
``event_date``. Each row carries the model name and version and the Delta version of every
feature table it was built from. Scores are deterministic and the rows hold no run timestamp,
so re-running a date updates nothing.

Example::

    model = load_scoring_model(settings, "flight_delay", "champion")
    check_feature_schema(features_df, model, feature_columns)
    scored_df = score(features_df, model, keep=["flight_id", "sched_dep_ts", "carrier"])
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import mlflow
from mlflow.models import get_model_info
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.config import Settings
from sparkfs.errors import (
    ConfigError,
    FeatureSchemaMismatchError,
    SchemaMismatchError,
    TrainingServingSkewError,
)
from sparkfs.jobs import JobContext, RunWindow
from sparkfs.lakehouse import Lakehouse
from sparkfs.merge import MergeResult, merge_upsert, require_columns
from sparkfs.model import PREDICTION, PROBABILITY
from sparkfs.point_in_time import rebuild_training_set
from sparkfs.runs import record_run
from sparkfs.tracking import configure_mlflow, model_by_alias, registered_model_name
from sparkfs.training import (
    SPEC_ARTIFACT,
    SPINE_ARTIFACT,
    build_features,
    flights_spine,
    spec_table_versions,
)
from sparkfs.training_config import TrainingConfig, load_training_config

log = logging.getLogger(__name__)

EVENT_DATE = "event_date"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
FEATURE_VERSIONS = "feature_versions"

# MLflow signature type -> (Spark types it accepts, the Spark type it is cast to for scoring).
_ACCEPTS: dict[str, tuple[tuple[type[T.DataType], ...], T.DataType]] = {
    "double": ((T.NumericType,), T.DoubleType()),
    "float": ((T.NumericType,), T.FloatType()),
    "long": ((T.IntegralType,), T.LongType()),
    "integer": ((T.ByteType, T.ShortType, T.IntegerType), T.IntegerType()),
    "string": ((T.StringType,), T.StringType()),
    "boolean": ((T.BooleanType,), T.BooleanType()),
    "datetime": ((T.TimestampType, T.TimestampNTZType, T.DateType), T.TimestampType()),
}


@dataclass(frozen=True)
class ScoringModel:
    """A registered model version resolved from ``name@alias``, pinned by version."""

    name: str
    alias: str
    version: str
    run_id: str | None
    inputs: list[tuple[str, str]]  # (column, MLflow type) from the signature, in order
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        # Pinned to the version resolved once, so a concurrent alias move cannot mix versions.
        return f"models:/{self.name}/{self.version}"

    @property
    def input_columns(self) -> list[str]:
        return [c for c, _ in self.inputs]


def load_scoring_model(settings: Settings, name: str, alias: str) -> ScoringModel:
    """Resolve ``name@alias`` in the configured registry; a missing model or alias is a
    :class:`~sparkfs.errors.ModelNotFoundError` naming the aliases that exist."""
    configure_mlflow(settings)
    full_name = registered_model_name(settings, name)
    version = model_by_alias(full_name, alias)
    signature = get_model_info(f"models:/{full_name}/{version.version}").signature
    if signature is None or signature.inputs is None:
        raise SchemaMismatchError(f"model {full_name} version {version.version} has no signature")
    inputs = [(spec.name, spec.type.name) for spec in signature.inputs.inputs]
    return ScoringModel(full_name, alias, str(version.version), version.run_id, inputs, dict(version.tags))


def check_feature_schema(
    df: DataFrame, model: ScoringModel, feature_columns: Sequence[str] | None = None
) -> None:
    """Raise :class:`FeatureSchemaMismatchError` when the features do not fit the signature.

    Missing: a signature column ``df`` lacks. Mistyped: a column whose Spark type cannot be cast
    to the signature type without changing its meaning (e.g. a string where a double is
    expected). Extra: a column in ``feature_columns`` (the features the inference path built)
    that the model does not take, i.e. the feature config changed since the model was trained.
    """
    types = dict(df.dtypes)
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [c for c in model.input_columns if c not in fields]
    mistyped = []
    for column, mlflow_type in model.inputs:
        if column in fields and not isinstance(fields[column], _ACCEPTS[mlflow_type][0]):
            mistyped.append(f"{column}: signature {mlflow_type}, features {types[column]}")
    extra = sorted(set(feature_columns or ()) - set(model.input_columns))
    if missing or mistyped or extra:
        raise FeatureSchemaMismatchError(
            f"features do not match the signature of {model.name} version {model.version} "
            f"(@{model.alias}): missing {missing}, extra {extra}, mistyped {mistyped}; "
            f"the signature expects {[f'{c}: {t}' for c, t in model.inputs]}"
        )


def score(df: DataFrame, model: ScoringModel, keep: Sequence[str]) -> DataFrame:
    """``keep`` columns + ``probability`` + ``prediction``, computed inside Spark by the pyfunc.

    Features are cast to the signature types first (e.g. an integer column to double), after
    :func:`check_feature_schema` has made sure the cast is meaningful.
    """
    check_feature_schema(df, model)
    require_columns(df, keep, "the rows to score")
    predict = mlflow.pyfunc.spark_udf(
        df.sparkSession, model.uri,
        result_type=f"{PROBABILITY} double, {PREDICTION} int", env_manager="local",
    )
    inputs: list[Column] = [F.col(c).cast(_ACCEPTS[t][1]).alias(c) for c, t in model.inputs]
    scored = df.withColumn("_sparkfs_score", predict(F.struct(*inputs)))
    return scored.select(
        *keep,
        F.col(f"_sparkfs_score.{PROBABILITY}").alias(PROBABILITY),
        F.col(f"_sparkfs_score.{PREDICTION}").alias(PREDICTION),
    )


def with_model_lineage(
    scored_df: DataFrame, model: ScoringModel, timestamp: str, feature_versions: Mapping[str, int]
) -> DataFrame:
    """Add ``event_date`` (the date of ``timestamp``, UTC), the model name and version, and the
    feature tables' Delta versions as a JSON object with sorted keys (comparable across runs)."""
    return scored_df.select(
        "*",
        F.to_date(F.col(timestamp)).alias(EVENT_DATE),
        F.lit(model.name).alias(MODEL_NAME),
        F.lit(model.version).alias(MODEL_VERSION),
        F.lit(json.dumps(dict(feature_versions), sort_keys=True)).alias(FEATURE_VERSIONS),
    )


def write_predictions(
    lake: Lakehouse, predictions_df: DataFrame, table: str, keys: Sequence[str]
) -> MergeResult:
    """Create the predictions table on first use, then MERGE on ``keys`` (partition-pruned by
    ``event_date``). Re-running the same rows inserts and updates nothing."""
    lake.create(
        "ml", table, predictions_df.schema, partition_by=[EVENT_DATE],
        comment="Batch predictions: one row per scored spine row, with model and feature versions",
        column_comments={
            PROBABILITY: "predicted probability of the positive label",
            PREDICTION: "1 when probability >= the model's threshold (chosen on validation)",
            MODEL_VERSION: "registered model version that scored the row",
            FEATURE_VERSIONS: "JSON {feature table: Delta version} the features were read from",
        },
    )
    return merge_upsert(lake, "ml", table, predictions_df, keys, partition_by=EVENT_DATE)


@dataclass(frozen=True)
class SkewReport:
    """Feature-by-feature comparison of training rows with the same rows built for inference."""

    rows_compared: int
    missing_in_inference: int
    missing_in_training: int
    mismatched_rows: dict[str, int]
    type_mismatches: dict[str, tuple[str, str]]
    examples: list[dict[str, Any]]

    @property
    def identical(self) -> bool:
        return not (self.missing_in_inference or self.missing_in_training
                    or any(self.mismatched_rows.values()) or self.type_mismatches)

    def describe(self) -> str:
        if self.identical:
            return f"no training-serving skew: {self.rows_compared} rows identical on every feature"
        differing = {c: n for c, n in self.mismatched_rows.items() if n}
        return (
            f"training-serving skew on {self.rows_compared} rows compared: differing rows per "
            f"feature {differing}, types {self.type_mismatches}, rows only in training "
            f"{self.missing_in_inference}, only in inference {self.missing_in_training}; "
            f"examples {self.examples}"
        )


def compare_features(
    training_df: DataFrame, inference_df: DataFrame, keys: Sequence[str], features: Sequence[str]
) -> SkewReport:
    """Exact, null-safe comparison of ``features`` for rows matched on ``keys``.

    Runs in Spark; only counts and at most 5 example rows come back. Types must match too
    (an int feature at training and a double at inference is skew, even if values agree).
    """
    for what, frame in (("training rows", training_df), ("inference rows", inference_df)):
        require_columns(frame, [*keys, *features], f"the {what} for the skew check")
    train_types, infer_types = dict(training_df.dtypes), dict(inference_df.dtypes)
    type_mismatches = {
        c: (train_types[c], infer_types[c]) for c in features if train_types[c] != infer_types[c]
    }
    left = training_df.select(*keys, *features, F.lit(True).alias("_in_training"))
    right = inference_df.select(
        *[F.col(c).alias(f"_i_{c}") for c in [*keys, *features]], F.lit(True).alias("_in_inference")
    )
    on = [F.col(k).eqNullSafe(F.col(f"_i_{k}")) for k in keys]
    joined = left.join(right, on=on, how="full_outer")
    both = F.col("_in_training").isNotNull() & F.col("_in_inference").isNotNull()
    differs = {c: both & ~F.col(c).eqNullSafe(F.col(f"_i_{c}")) for c in features}
    stats = joined.agg(
        F.count_if(both).alias("_rows"),
        F.count_if(F.col("_in_inference").isNull()).alias("_only_training"),
        F.count_if(F.col("_in_training").isNull()).alias("_only_inference"),
        *[F.count_if(cond).alias(f"_d_{c}") for c, cond in differs.items()],
    ).first()
    assert stats is not None
    any_diff = F.lit(False)
    for cond in differs.values():
        any_diff = any_diff | cond
    examples = [r.asDict() for r in joined.where(any_diff).limit(5).collect()] if features else []
    return SkewReport(
        rows_compared=int(stats["_rows"]),
        missing_in_inference=int(stats["_only_training"]),
        missing_in_training=int(stats["_only_inference"]),
        mismatched_rows={c: int(stats[f"_d_{c}"]) for c in features},
        type_mismatches=type_mismatches,
        examples=examples,
    )


@dataclass(frozen=True)
class InferenceResult:
    model: ScoringModel
    merge: MergeResult
    feature_versions: dict[str, int]


def predict_and_merge(
    lake: Lakehouse,
    features_df: DataFrame,
    model: ScoringModel,
    config: TrainingConfig,
    feature_versions: Mapping[str, int],
) -> InferenceResult:
    """Check the features against the signature, score them in Spark, and MERGE the predictions
    (keys + timestamp + context columns + probability, prediction, lineage) into the table.

    The scored rows are persisted once, so the model runs once per row however many passes the
    MERGE makes over its source.
    """
    check_feature_schema(features_df, model, config.feature_columns)
    keep = list(dict.fromkeys([*config.keys, config.timestamp, *config.inference.context_columns]))
    scored = score(features_df, model, keep)
    predictions = with_model_lineage(scored, model, config.timestamp, feature_versions).persist()
    try:
        merged = write_predictions(lake, predictions, config.inference.table, [*config.keys, config.timestamp])
    finally:
        predictions.unpersist()
    return InferenceResult(model, merged, dict(feature_versions))


def skew_check(
    lake: Lakehouse, config: TrainingConfig, model: ScoringModel, sample_rows: int
) -> SkewReport:
    """Compare, for a sample of the model's training flights, the feature vector the model was
    trained on with the one the inference path builds now.

    The training rows are rebuilt exactly from the run's lineage (the spine table at its recorded
    Delta version, every feature table at the version in the training-set spec); the inference
    rows go through :func:`flights_spine` without labels and :func:`build_features`, as
    ``infer_job`` does. A difference means code skew, or feature rows changed since training
    (late corrections). The sample is deterministic: the ``sample_rows`` flights with the
    smallest key hash. Cost: one rebuild of the training set.
    """
    if model.run_id is None:
        raise SchemaMismatchError(f"{model.name} version {model.version} has no training run")
    spec = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPEC_ARTIFACT}")
    spine = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPINE_ARTIFACT}")
    keys = [*config.keys, config.timestamp]
    training_spine = flights_spine(
        lake, config, date.fromisoformat(spine["start"]), date.fromisoformat(spine["end"]),
        labelled=True, version=spine.get("version"),
    )
    trained = rebuild_training_set(lake, spec, spine=training_spine).df
    sample = trained.orderBy(F.xxhash64(*keys), *keys).limit(sample_rows).persist()
    try:
        days = sample.agg(F.min(F.to_date(config.timestamp)), F.max(F.to_date(config.timestamp))).first()
        assert days is not None
        day_spine = flights_spine(lake, config, days[0], days[1], labelled=False)
        inference_spine = day_spine.join(sample.select(*keys), on=keys, how="left_semi")
        inference_df = build_features(lake, config, inference_spine, label=None).df
        return compare_features(sample, inference_df, keys, model.input_columns)
    finally:
        sample.unpersist()


def infer_job(ctx: JobContext, window: RunWindow | None) -> None:
    """``sparkfs run infer --date D``: score the flights scheduled on D with the model behind the
    alias and MERGE the predictions (a range scores every day in it, in one pass).

    With ``inference.skew_check`` on, the skew check runs first and a difference stops the run
    before any prediction is written.
    """
    if window is None:
        raise ConfigError("infer needs a date: sparkfs run infer --date YYYY-MM-DD (or --start/--end)")
    config = load_training_config(ctx.settings)
    lake = ctx.lake
    params = {"start": window.start, "end": window.end, "model": config.model_name, "alias": config.alias}
    with record_run(lake, "infer", params) as run:
        with run.stage("resolve_model") as stage:
            model = load_scoring_model(ctx.settings, config.model_name, config.alias)
            stage.details.update(model=model.name, version=model.version)
        if config.inference.skew_check:  # before anything is written
            with run.stage("skew_check") as stage:
                report = skew_check(lake, config, model, config.inference.skew_sample_rows)
                stage.rows_in = report.rows_compared
                stage.details["report"] = report.describe()
                if not report.identical:
                    raise TrainingServingSkewError(report.describe())
        with run.stage("features") as stage:
            spine_df = flights_spine(lake, config, window.start, window.end, labelled=False)
            features = build_features(lake, config, spine_df, label=None)
            versions = spec_table_versions(features.spec)
            stage.details["table_versions"] = versions
        with run.stage("predict") as stage:
            result = predict_and_merge(lake, features.df, model, config, versions)
            stage.table_name, stage.table_version = result.merge.table, result.merge.version
            stage.rows_in, stage.rows_out = result.merge.source_rows, result.merge.rows_inserted
            stage.details["rows_updated"] = result.merge.rows_updated
    merge = result.merge
    print(
        f"\n{merge.table}: scored {merge.source_rows} flights of {window} with {model.name} "
        f"version {model.version} (@{model.alias}); inserted {merge.rows_inserted}, updated "
        f"{merge.rows_updated} (Delta version {merge.version})"
        + (f"\n{report.describe()}" if config.inference.skew_check else "")
    )
