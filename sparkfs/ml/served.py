"""What a model was served: a day's predictions with the inputs they were scored from, and the
labelled predictions of a day, for the monitor job.

The predictions table holds keys, scores and lineage, not the inputs; the inputs are rebuilt
here by the inference path itself (the model's prediction-time rule, the spine of the serving
table, the same point-in-time lookups), so drift is measured on what the model was given. The
lookups read the feature tables as they are now: after a backfill of those days the rebuilt
inputs are the corrected ones, not the ones served (the predictions' ``feature_versions`` say
which versions were). The daily job passes the rows its inference just scored instead, so its
monitoring sees exactly what was served, without a second lookup.

Example::

    served_df = served_rows(lake, config, model, date(2013, 12, 2))
    served_df.columns   # keys, timestamp, score_date, inputs..., probability, prediction, label
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.ml.assembly import build_features, build_spine, with_model_rule
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.model import PREDICTION, PROBABILITY
from sparkfs.ml.score import MODEL_VERSION, SCORE_DATE, ScoringModel


def predictions_of(lake: Lakehouse, config: TrainingConfig, version: str, day: date) -> DataFrame:
    """The predictions of ``day`` (its ``score_date`` partition) made by model ``version``; empty
    when there are none (or no predictions table yet)."""
    keys = [*config.keys, config.timestamp]
    columns = [*keys, SCORE_DATE, PROBABILITY, PREDICTION, config.label]
    table = config.inference.table
    if not lake.exists("ml", table):
        return lake.spark.createDataFrame([], "score_date date").select(
            *(F.lit(None).alias(c) for c in columns)).limit(0)
    return (lake.read("ml", table).where((F.col(SCORE_DATE) == F.lit(day)) & (F.col(MODEL_VERSION) == version))
            .select(*columns))


def served_rows(lake: Lakehouse, config: TrainingConfig, model: ScoringModel, day: date,
                inputs: DataFrame | None = None) -> DataFrame:
    """``day``'s predictions by ``model`` (its version) with their inputs: ``inputs`` when the
    caller has the rows it scored (the daily job: inference just scored ``day``), else rebuilt by
    the inference path (see the module docstring)."""
    keys = [*config.keys, config.timestamp]
    predictions = predictions_of(lake, config, model.version, day)
    if predictions.isEmpty():
        return predictions
    if inputs is None:
        config = with_model_rule(config, model.tags)
        spine_df = build_spine(lake, config, day, day, labelled=False)
        inputs = build_features(lake, config, spine_df, label=None).df
    return predictions.join(inputs.select(*keys, *config.feature_columns), on=keys, how="left")


def labelled_predictions(lake: Lakehouse, config: TrainingConfig, version: str, day: date) -> DataFrame:
    """``day``'s predictions by model ``version`` whose realized label has arrived."""
    return predictions_of(lake, config, version, day).where(F.col(config.label).isNotNull())
