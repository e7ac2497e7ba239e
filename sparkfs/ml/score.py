"""Batch inference: score a day's spine with the model behind an alias, MERGE the predictions.

The features are looked up with the same point-in-time code training used, scored by the
packaged pyfunc (on the driver for a day-sized batch, else inside Spark by an MLflow
``spark_udf``: the rows never come to the driver), and MERGEd into
``<ml schema>.<inference.table>`` keyed by the spine keys + timestamp and partitioned by
``score_date``, the day the row is scored for: the spine's ``date_column`` (for the flights, the
local date ``infer --date D`` selects), so ``score_date = D`` holds every row of that run. Each
row carries the model name and version and the Delta version of every feature table it was
built from. Scores are deterministic and the rows hold no run timestamp,
so re-running a date updates nothing.

Example::

    model = load_scoring_model(settings, "flight_delay", "champion")
    check_feature_schema(features_df, model, feature_columns)
    scored_df = score(features_df, model, keep=["flight_id", "sched_dep_ts", "carrier"])
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import mlflow
import pandas as pd
import pyarrow as pa
from mlflow.models import get_model_info
from mlflow.pyfunc import PyFuncModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.checks import require_columns
from sparkfs.core.column_lineage import TRANSFORMATION, ColumnInput, plan_column_inputs, then
from sparkfs.core.config import Settings
from sparkfs.core.errors import (
    FeatureSchemaMismatchError,
    SchemaMismatchError,
)
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.ml.assembly import build_features
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.model import PREDICTION, PROBABILITY
from sparkfs.ml.tracking import configure_mlflow, model_by_alias, registered_model_name
from sparkfs.pit.api import FEATURE_LAYER
from sparkfs.pit.spec import TrainingSetSpec

log = logging.getLogger(__name__)

SCORE_DATE = "score_date"
MODEL_NAME = "model_name"
MODEL_VERSION = "model_version"
FEATURE_VERSIONS = "feature_versions"
# Which feature row each prediction used: struct(<lookup>: struct(event_ts, known_at)) (the leakage audit).
FEATURE_TIMES = "feature_times"
DRIVER_MAX_ROWS = 100_000  # the default of InferenceConfig.driver_max_rows

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
    """A registered model version resolved from ``name@alias``, pinned by version.

    Example::

        model = load_scoring_model(settings, "flight_delay", "champion")
        model.uri            # "models:/flight_delay/3": a later alias move does not change it
    """

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
    :class:`~sparkfs.core.errors.ModelNotFoundError` naming the aliases that exist.

    Example::

        model = load_scoring_model(settings, "flight_delay", "champion")
        model.version, model.input_columns
    """
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


def score(df: DataFrame, model: ScoringModel, keep: Sequence[str], *,
          driver_max_rows: int = DRIVER_MAX_ROWS) -> DataFrame:
    """``keep`` columns + ``probability`` + ``prediction``, computed by the model's pyfunc.

    Features are cast to the signature types first (e.g. an integer column to double), after
    :func:`check_feature_schema` has made sure the cast is meaningful. A batch of at most
    ``driver_max_rows`` rows (a day's flights) is collected as Arrow and scored on the driver by
    the pyfunc, loaded once per process and model version, and comes back as a local DataFrame; a
    larger one (or any, with 0) is scored inside Spark by MLflow's ``spark_udf``, its rows never
    on the driver. Both paths run the same pyfunc on the same cast inputs. The UDF pays, on every
    call, a model download, a requirements check and a model load in each Python worker: seconds
    that a batch of a thousand rows does not need.
    """
    check_feature_schema(df, model)
    require_columns(df, keep, "the rows to score")
    inputs: list[Column] = [F.col(c).cast(_ACCEPTS[t][1]).alias(c) for c, t in model.inputs]
    if driver_max_rows:
        on_driver = _score_on_driver(df, model, keep, inputs, driver_max_rows)
        if on_driver is not None:
            return on_driver
    predict = mlflow.pyfunc.spark_udf(
        df.sparkSession, model.uri,
        result_type=f"{PROBABILITY} double, {PREDICTION} int", env_manager="local",
    )
    scored = df.withColumn("_sparkfs_score", predict(F.struct(*inputs)))
    return scored.select(
        *keep,
        F.col(f"_sparkfs_score.{PROBABILITY}").alias(PROBABILITY),
        F.col(f"_sparkfs_score.{PREDICTION}").alias(PREDICTION),
    )


def _score_on_driver(
    df: DataFrame, model: ScoringModel, keep: Sequence[str], inputs: Sequence[Column], max_rows: int
) -> DataFrame | None:
    """The scored rows as a local DataFrame, or None when ``df`` has more than ``max_rows`` rows
    (one Spark job either way: at most ``max_rows + 1`` rows are collected)."""
    names = [f"_sparkfs_input_{i}" for i in range(len(inputs))]  # a kept column may be an input too
    batch = df.select(*keep, *(c.alias(n) for c, n in zip(inputs, names, strict=True))).limit(max_rows + 1).toArrow()
    if batch.num_rows > max_rows:
        return None
    probability, prediction = pa.array([], pa.float64()), pa.array([], pa.int32())
    if batch.num_rows:
        frame = batch.select(names).rename_columns(model.input_columns).to_pandas()
        predicted = _pyfunc(mlflow.get_registry_uri(), model.uri, model.run_id).predict(frame)
        if not isinstance(predicted, pd.DataFrame):
            raise SchemaMismatchError(f"model {model.name} version {model.version} returned {type(predicted).__name__}, "
                                      f"not a DataFrame with {PROBABILITY!r} and {PREDICTION!r}")
        probability = pa.array(predicted[PROBABILITY].to_numpy(dtype="float64"), pa.float64())
        prediction = pa.array(predicted[PREDICTION].to_numpy(dtype="int32"), pa.int32())
    scored = batch.select(list(keep)).append_column(PROBABILITY, probability).append_column(PREDICTION, prediction)
    schema = T.StructType([*df.select(*keep).schema.fields, T.StructField(PROBABILITY, T.DoubleType()),
                           T.StructField(PREDICTION, T.IntegerType())])
    return df.sparkSession.createDataFrame(scored, schema=schema)


@functools.lru_cache(maxsize=4)
def _pyfunc(registry_uri: str, model_uri: str, run_id: str | None) -> PyFuncModel:
    """The pyfunc of ``model_uri`` in the registry at ``registry_uri``, loaded once per process (a
    model version is immutable; ``run_id`` tells a version apart from one of a registry that was
    deleted and built again at the same place)."""
    return mlflow.pyfunc.load_model(model_uri)


def scoring_day(config: TrainingConfig) -> Column:
    """The day a spine row is scored for: the spine's ``date_column`` (the day ``build_spine``
    selects rows by, e.g. a flight's local date), else the UTC date of the timestamp."""
    day = config.spine.date_column
    return F.col(day) if day else F.to_date(F.col(config.timestamp))


def with_model_lineage(
    scored_df: DataFrame, model: ScoringModel, feature_versions: Mapping[str, int]
) -> DataFrame:
    """Add the model name and version, and the feature tables' Delta versions as a JSON object
    with sorted keys (comparable across runs)."""
    return scored_df.select(
        "*",
        F.lit(model.name).alias(MODEL_NAME),
        F.lit(model.version).alias(MODEL_VERSION),
        F.lit(json.dumps(dict(feature_versions), sort_keys=True)).alias(FEATURE_VERSIONS),
    )


def score_column_lineage(
    lake: Lakehouse, spine_df: DataFrame, spec: TrainingSetSpec, model: ScoringModel
) -> dict[str, tuple[ColumnInput, ...]]:
    """``probability`` and ``prediction`` <- every column the model is given (a TRANSFORMATION by
    the model), each traced to a table column: a looked-up feature to its gold table's column, as
    the lookup's spec names it, a spine column through the spine's analyzed plan. Empty when one
    input is not known exactly: a score depends on all the model's inputs, so a partial list
    would misstate it. (The feature lookups' keys and times choose the feature row; they are not
    listed.)"""
    looked_up = {output: (ColumnInput(f"{FEATURE_LAYER}.{lookup.table}", feature),)
                 for lookup in spec.lookups for feature, output in zip(lookup.features, lookup.outputs, strict=True)}
    spine = plan_column_inputs(lake, spine_df)
    inputs: list[ColumnInput] = []
    for column in model.input_columns:
        origin = looked_up.get(column) or spine.get(column)
        if not origin:
            return {}
        inputs += origin
    scored = then(inputs, TRANSFORMATION, f"scored by model {model.name} version {model.version}")
    return {PROBABILITY: scored, PREDICTION: scored}


def with_realized_labels(predictions_df: DataFrame, labels_df: DataFrame | None, config: TrainingConfig) -> DataFrame:
    """``predictions_df`` with the label column (``config.label``, int): the realized label where
    ``labels_df`` knows it, else null. An existing label column is replaced."""
    keys = [*config.keys, config.timestamp]
    rows = predictions_df.drop(config.label)
    if labels_df is None:
        return rows.withColumn(config.label, F.lit(None).cast("int"))
    known = labels_df.select(*keys, F.col(config.label).cast("int").alias(config.label))
    return rows.join(known, on=keys, how="left")


def write_predictions(
    lake: Lakehouse, predictions_df: DataFrame, table: str, keys: Sequence[str]
) -> MergeResult:
    """Create the predictions table on first use, then MERGE on ``keys`` (partition-pruned by
    ``score_date``). Re-running the same rows inserts and updates nothing."""
    lake.create(
        "ml", table, predictions_df.schema, partition_by=[SCORE_DATE],
        comment="Batch predictions: one row per scored spine row, with model and feature versions",
        column_comments={
            PROBABILITY: "predicted probability of the positive label",
            PREDICTION: "1 when probability >= the model's threshold (chosen on validation)",
            SCORE_DATE: "the day the row was scored for (the inference run's --date)",
            MODEL_VERSION: "registered model version that scored the row",
            FEATURE_VERSIONS: "JSON {feature table: Delta version} the features were read from",
            FEATURE_TIMES: "per lookup, the event time and landing time (known_at) of the feature row used",
        },
    )
    return merge_upsert(lake, "ml", table, predictions_df, keys, partition_by=SCORE_DATE)


@dataclass(frozen=True)
class InferenceResult:
    model: ScoringModel
    merge: MergeResult
    feature_versions: dict[str, int]
    inputs: DataFrame | None = None  # the rows scored: spine + features (persisted by the lookup)


def predict_and_merge(
    lake: Lakehouse,
    features_df: DataFrame,
    model: ScoringModel,
    config: TrainingConfig,
    feature_versions: Mapping[str, int],
    labels_df: DataFrame | None = None,
) -> InferenceResult:
    """Check the features against the signature, score them in Spark, and MERGE the predictions
    (keys + timestamp + prediction time + context columns + ``score_date`` + probability,
    prediction, lineage, and the realized label from ``labels_df``, null until known) into the
    table, partitioned by ``score_date`` (:func:`scoring_day`).

    The scored rows are persisted once, so the model runs once per row however many passes the
    MERGE makes over its source. A row scored again exactly as before (same model version, score
    and label) is left as it is, with the feature versions it was first scored from: a rerun
    after an idle features MERGE (a new Delta version, the same rows) changes nothing.
    """
    check_feature_schema(features_df, model, config.feature_columns)
    if config.spine.date_column:
        require_columns(features_df, [config.spine.date_column], "the rows to score (spine.date_column)")
    times = [FEATURE_TIMES] if FEATURE_TIMES in features_df.columns else []
    keep = list(dict.fromkeys([*config.keys, config.timestamp, config.lookup_timestamp,
                               *config.inference.context_columns, SCORE_DATE, *times]))
    scored = score(features_df.withColumn(SCORE_DATE, scoring_day(config)), model, keep,
                   driver_max_rows=config.inference.driver_max_rows)
    keys = [*config.keys, config.timestamp]
    lineage = with_model_lineage(scored, model, feature_versions)
    predictions = _not_scored_before(lake, with_realized_labels(lineage, labels_df, config), config).persist()
    try:
        merged = write_predictions(lake, predictions, config.inference.table, keys)
    finally:
        predictions.unpersist()
    return InferenceResult(model, merged, dict(feature_versions))


def _not_scored_before(lake: Lakehouse, predictions_df: DataFrame, config: TrainingConfig) -> DataFrame:
    """Drop the rows the table already holds with the same model version, score and label."""
    table = config.inference.table
    if not lake.exists("ml", table):
        return predictions_df
    same = [*config.keys, config.timestamp, MODEL_VERSION, PROBABILITY, PREDICTION, config.label]
    held = lake.read("ml", table).where(F.col(SCORE_DATE).isin(  # the batch's partitions only
        [r[0] for r in predictions_df.select(SCORE_DATE).distinct().collect()])).select(*same)
    return predictions_df.join(held, on=[predictions_df[c].eqNullSafe(held[c]) for c in same], how="left_anti")


def score_batch(
    lake: Lakehouse, settings: Settings, spine_df: DataFrame, config: TrainingConfig,
    *, alias: str | None = None,
) -> DataFrame:
    """Score a spine the way batch inference does, without writing anything: look up its features
    with the training set's point-in-time code, and score them with ``model_name@alias``.

    Returns the spine's columns + ``probability`` + ``prediction``.

    Example::

        scored_df = score_batch(lake, settings, spine_df, config)   # the @champion by default
    """
    model = load_scoring_model(settings, config.model_name, alias or config.alias)
    features = build_features(lake, config, spine_df, label=None)
    check_feature_schema(features.df, model, config.feature_columns)
    return score(features.df, model, keep=spine_df.columns, driver_max_rows=config.inference.driver_max_rows)
