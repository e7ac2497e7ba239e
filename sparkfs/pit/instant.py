"""The ``"instant"`` plan: every spine row looks features up at one and the same time.

A daily batch scores all of a day's rows as of its cutoff (``prediction_time: {mode: batch}``),
so its spine holds one instant ``t``. The answer for every spine row is then the same snapshot:
per key, the greatest (event time[, sequence]) among the feature rows with
``event_ts <= t`` (and, with a lookback L, ``event_ts > t - L``), which the lookup has already
cut the table down to, and, with ``known_at``, ``known_at <= t``. One aggregation by key and an
equi-join on the keys replace the other plans' windows, bins and sort: the same rows, since the
latest visible row is the one the validity intervals of :mod:`sparkfs.pit.intervals` assign to
``t``. The matched (time[, sequence]) go on to :mod:`sparkfs.pit.fetch`, which gets the
features and finds ties, as for the other plans.
"""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.pit.columns import all_of, column
from sparkfs.pit.lookup import ResolvedLookup


def instant_join(spine_df: DataFrame, feature_df: DataFrame, lk: ResolvedLookup, t: int) -> DataFrame:
    """Each spine row with its matched feature row's time, for a spine whose non-null times are
    all ``t`` (microseconds) and ``feature_df`` already cut to the rows that can match it
    (:meth:`~sparkfs.pit.lookup.ResolvedLookup.can_match`). Returns the spine columns + ``mt``
    (+ ``mq``), ready for the fetch; a spine row without a time matches nothing."""
    assert lk.event_time is not None and lk.spine_time is not None
    keys = lk.keys
    ts, seq, hit = lk.col("ts"), lk.col("seq"), lk.col("hit")
    visible = feature_df.where(all_of([column(k).isNotNull() for k, _ in lk.key_map]))
    if lk.known_at:
        visible = visible.where(F.unix_micros(column(lk.known_at)) <= F.lit(t))  # a null known_at never is
    latest = visible.groupBy(*[column(k).alias(n) for (k, _), n in zip(lk.key_map, keys, strict=True)]).agg(
        F.max(F.struct(F.unix_micros(column(lk.event_time)).alias(ts),
                       *([column(lk.sequence).alias(seq)] if lk.sequence else []))).alias(hit)
    )
    on_keys = [column(s) == F.col(n) for (_, s), n in zip(lk.key_map, keys, strict=True)]
    matched = spine_df.join(latest, all_of(on_keys), "left")
    timed = column(lk.spine_time).isNotNull()
    return matched.select(
        *[column(c) for c in spine_df.columns],
        F.when(timed, F.col(hit).getField(ts)).alias(lk.col("mt")),
        *([F.when(timed, F.col(hit).getField(seq)).alias(lk.col("mq"))] if lk.sequence else []),
    )
