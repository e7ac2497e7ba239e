"""Realized labels on predictions: null when a row is scored before its outcome exists, merged on
when the outcome lands (the daily job on R+1 labels R's predictions).

The label comes from the training spine (:func:`~sparkfs.ml.assembly.build_spine` with
``labelled=True``), so a prediction's realized label is exactly what training would have used
for that flight. Every write goes through the one MERGE writer on the predictions' keys: merging
the same labels again updates nothing.

Once a day's labels are in, :func:`realized_day` measures how the day's predictions did.

Example::

    merged = merge_labels(lake, config, date(2013, 12, 1), date(2013, 12, 1))
    merged.rows_updated       # the predictions of 2013-12-01 that got their label
    realized_day(lake, config, date(2013, 12, 1)).roc_auc
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.window import Window

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.ml.assembly import build_spine
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.model import PROBABILITY
from sparkfs.ml.score import SCORE_DATE, with_realized_labels


def realized_labels(lake: Lakehouse, config: TrainingConfig, start: date, end: date) -> DataFrame:
    """Keys, timestamp and the label of the rows of ``start..end`` whose outcome is known; a day
    whose outcomes have not landed has no rows here."""
    keys = [*config.keys, config.timestamp]
    labelled = build_spine(lake, config, start, end, labelled=True)
    return labelled.where(F.col(config.label).isNotNull()).select(*keys, config.label)


def merge_labels(lake: Lakehouse, config: TrainingConfig, start: date, end: date) -> MergeResult | None:
    """MERGE the realized labels of ``start..end`` onto the predictions of those days; None when
    nothing has been predicted yet. Reads only the predictions partitions the days can be in."""
    table = config.inference.table
    if not lake.exists("ml", table):
        return None
    keys = [*config.keys, config.timestamp]
    labels_df = realized_labels(lake, config, start, end)
    # score_date is the spine's day (spine.date_column, else the timestamp's UTC date), the same
    # day build_spine selects the labels by: only the partitions of start..end are read.
    days = F.col(SCORE_DATE).between(F.lit(start), F.lit(end))
    predicted = lake.read("ml", table).where(days).join(labels_df.select(*keys), on=keys, how="left_semi")
    labelled = with_realized_labels(predicted, labels_df, config)
    return merge_upsert(lake, "ml", table, labelled, keys, partition_by=SCORE_DATE)


@dataclass(frozen=True)
class RealizedDay:
    """How one day's predictions did: rows predicted, rows with a realized label, and the ROC AUC
    of the probabilities on the labelled rows (None while no label, or only one class, is in)."""

    day: date
    predictions: int
    labelled: int
    roc_auc: float | None


def realized_day(lake: Lakehouse, config: TrainingConfig, day: date) -> RealizedDay:
    """The realized performance of the predictions scored for ``day`` (``score_date``), in Spark."""
    table = config.inference.table
    if not lake.exists("ml", table):
        return RealizedDay(day, 0, 0, None)
    rows = lake.read("ml", table).where(F.col(SCORE_DATE) == F.lit(day))
    counts = rows.agg(F.count(F.lit(1)).alias("n"), F.count(config.label).alias("labelled")).first()
    assert counts is not None
    labelled = rows.where(F.col(config.label).isNotNull())
    return RealizedDay(day, int(counts["n"]), int(counts["labelled"]),
                       roc_auc(labelled, config.label, PROBABILITY) if counts["labelled"] else None)


def roc_auc(df: DataFrame, label: str, score: str) -> float | None:
    """Exact ROC AUC of ``score`` for the 0/1 ``label``, tied scores counting one half: the
    Mann-Whitney statistic over the distinct scores (one aggregation and a sort of the distinct
    scores). None when one class is missing.

    Example: ``roc_auc(predictions_df, "is_arr_delayed", "probability")``.
    """
    y = F.col(label).cast("int")
    per_score = df.groupBy(F.col(score).alias("s")).agg(
        F.sum(y).alias("pos"), F.sum(1 - y).alias("neg"))
    # One partition on purpose (the distinct scores are few); a constant key says so to Spark.
    below = Window.partitionBy(F.lit(0)).orderBy("s").rowsBetween(Window.unboundedPreceding, -1)
    ranked = per_score.withColumn("neg_below", F.coalesce(F.sum("neg").over(below), F.lit(0)))
    row = ranked.agg(
        F.sum(F.col("pos") * (F.col("neg_below") + F.col("neg") / 2)).alias("wins"),
        F.sum("pos").alias("p"), F.sum("neg").alias("n"),
    ).first()
    if row is None or not row["p"] or not row["n"]:
        return None
    return float(row["wins"]) / (float(row["p"]) * float(row["n"]))
