"""Realized labels on predictions: null when a row is scored before its outcome exists, merged on
when the outcome lands (the daily job on R+1 labels R's predictions).

The label comes from the training spine (:func:`~sparkfs.ml.assembly.build_spine` with
``labelled=True``), so a prediction's realized label is exactly what training would have used
for that flight. Every write goes through the one MERGE writer on the predictions' keys: merging
the same labels again updates nothing.

Example::

    merged = merge_labels(lake, config, date(2013, 12, 1), date(2013, 12, 1))
    merged.rows_updated       # the predictions of 2013-12-01 that got their label
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.ml.assembly import build_spine
from sparkfs.ml.config import TrainingConfig
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
