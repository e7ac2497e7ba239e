"""Fetching the features of the matched rows, after a plan has matched each spine row.

The ``"union"`` and ``"intervals"`` plans match on the narrow columns only and hand over each
spine row with its matched ``(keys, event time[, sequence])``. The features come from the table
with one equi-join on those columns, and only the matched rows are needed, at most one per spine
row. The same join finds ties: two table rows on one matched (keys, event time[, sequence]).
A tie makes the join return a spine row once per tied row; the ``tie`` column marks one of those
copies, so the checks count each spine row behind a tie once.
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkfs.pit.columns import all_of, column
from sparkfs.pit.lookup import ResolvedLookup


def fetch_features(
    matched: DataFrame, feature_df: DataFrame, lk: ResolvedLookup, *, broadcast: bool
) -> DataFrame:
    """Fetch the feature columns of each spine row's matched row: an equi-join on (keys, event
    time[, sequence]) of ``matched`` (spine columns + ``mt``/``mq``) with the table.

    With ``broadcast`` (a spine small enough to broadcast its matches), the table is first cut
    down to the matched rows with a broadcast semi-join, in the scan, so the wide rows that get
    shuffled are the matched ones, not the whole table. ``matched`` is used twice then, so it is
    checkpointed locally (computed once, dropped with the DataFrame). Otherwise the whole table
    is joined. Returns the spine columns + ``mt`` + the outputs + ``tie``.
    """
    assert lk.event_time is not None
    keys = lk.keys
    ts, seq, mt, mq = lk.col("ts"), lk.col("seq"), lk.col("mt"), lk.col("mq")
    wide = feature_df.select(
        *[column(k).alias(n) for (k, _), n in zip(lk.key_map, keys, strict=True)],
        F.unix_micros(column(lk.event_time)).alias(ts),
        *([column(lk.sequence).alias(seq)] if lk.sequence else []),
        *[column(f).alias(o) for f, o in zip(lk.features, lk.outputs, strict=True)],
    )
    if broadcast:
        matched = matched.localCheckpoint(eager=False)
        wanted = matched.where(F.col(mt).isNotNull()).select(
            *[column(s).alias(k + "_m") for (_, s), k in zip(lk.key_map, keys, strict=True)],
            F.col(mt).alias(ts + "_m"),
            *([F.col(mq).alias(seq + "_m")] if lk.sequence else []),
        ).distinct()
        same = [F.col(c) == F.col(c + "_m") for c in [*keys, ts]]
        if lk.sequence:
            same.append(F.col(seq).eqNullSafe(F.col(seq + "_m")))
        wide = wide.join(F.broadcast(wanted), all_of(same), "left_semi")
    # Two fetched rows for one (keys, time[, sequence]) are a tie: counted on the side the join
    # shuffles by those columns anyway. Only the first of them is marked, so each spine row
    # joined to the tied rows is marked once. One window (one sort) gives both numbers.
    match = [*keys, ts, *([seq] if lk.sequence else [])]
    per_match = Window.partitionBy(*match).orderBy(*match)
    rows_per_match = F.count(F.lit(1)).over(
        per_match.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    wide = wide.withColumn(lk.col("tie"), (rows_per_match > 1) & (F.row_number().over(per_match) == 1))
    fetch_on = [column(s) == F.col(n) for (_, s), n in zip(lk.key_map, keys, strict=True)]
    fetch_on.append(F.col(mt) == F.col(ts))
    if lk.sequence:
        fetch_on.append(F.col(mq).eqNullSafe(F.col(seq)))
    out = matched.join(wide, all_of(fetch_on), "left")
    tie = F.coalesce(F.col(lk.col("tie")), F.lit(False)).alias(lk.col("tie"))
    return out.select(
        *[column(c) for c in matched.columns if c != mq], *[column(o) for o in lk.outputs], tie
    )
