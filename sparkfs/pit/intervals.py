"""The ``"intervals"`` plan: SCD type 2 validity intervals and a binned range join.

1. Each feature row gets its validity interval ``[event_ts, next event_ts of the same key)``,
   capped by ``event_ts + lookback`` and by the spine's last timestamp: an SCD type 2 view
   derived with ``lead()`` over the few narrow columns (keys, event time, sequence) only.
2. Intervals are spread over fixed time bins (bin size estimated from a sample of the data,
   :func:`sparkfs.pit.planner.sample_stats`) and the spine joins them with an **equi-join on
   (keys, bin)** plus the range condition ``start <= spine_ts < end``. Intervals of one key are
   disjoint, so a spine row matches at most one interval, and a hot key is split over many bins
   instead of landing in one task.
3. Intervals spanning more than ``MAX_FINE_BINS`` bins (sparse keys, open-ended last rows) are
   not exploded; they take a second path joined on the keys alone, so rows never multiply
   without bound.
4. The matched ``(keys, event_ts)`` then fetch the feature columns (:mod:`sparkfs.pit.fetch`).

"As known at" (``known_at``): the answer at ``t`` is the latest row by event time among the rows
visible at ``t`` (``known_at <= t``); it only changes when a newly visible row is later than
every row visible before, so the intervals are computed over those "record" rows and the join is
the same.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkfs.pit.columns import all_of, column
from sparkfs.pit.lookup import ResolvedLookup, micros
from sparkfs.pit.presort import presorted

# Intervals covering more bins than this take the keys-only path instead of being exploded.
MAX_FINE_BINS = 8


def validity_intervals(feature_df: DataFrame, lk: ResolvedLookup, lo: int, hi: int) -> DataFrame:
    """The SCD type 2 view: one row per feature row that can win, with ``[start, end)`` in micros.

    ``end`` is the next row's time (same key), capped by ``event_ts + lookback`` (so the lookback
    window ``(t - L, t]`` holds) and by ``hi + 1``; rows whose interval is empty or ends before the
    first spine time are dropped. Only narrow columns are shuffled here. Rows tied on (keys, event
    time[, sequence]) all reach the fetch, which reports them.
    """
    keys = lk.keys
    ts, seq, start, end = (lk.col(c) for c in ("ts", "seq", "start", "end"))
    order_cols = [ts, *([seq] if lk.sequence else [])]
    not_null_keys = [column(k).isNotNull() for k, _ in lk.key_map]
    cols = [
        *[column(k).alias(n) for (k, _), n in zip(lk.key_map, keys, strict=True)],
        F.unix_micros(column(lk.event_time or "")).alias(ts),
        *([column(lk.sequence).alias(seq)] if lk.sequence else []),
        *([F.unix_micros(column(lk.known_at)).alias(lk.col("known"))] if lk.known_at else []),
    ]
    df = feature_df.where(all_of(not_null_keys)).select(*cols)
    if lk.known_at:
        df = df.where(F.col(lk.col("known")).isNotNull())
    df = presorted(df, keys, F.col(ts) * 2, 2 * hi + 1)
    by_time = Window.partitionBy(*keys).orderBy(*[F.col(c).asc_nulls_first() for c in order_cols])

    lookback = micros(lk.lookback)
    if lk.known_at is None:
        df = df.withColumn(start, F.col(ts)).withColumn(
            lk.col("next"), F.lead(F.col(ts)).over(by_time)
        )
    else:
        # Visible from max(event time, known time). A row starts an interval only if it is later
        # (by event time, then sequence) than every row that became visible before it.
        rank = lk.col("rank")
        df = df.withColumn(rank, F.dense_rank().over(by_time)).withColumn(
            start, F.greatest(F.col(ts), F.col(lk.col("known")))
        )
        by_visible = Window.partitionBy(*keys).orderBy(start, rank)
        before = F.max(rank).over(by_visible.rowsBetween(Window.unboundedPreceding, -1))
        df = df.withColumn(lk.col("before"), before)
        df = df.where(F.col(lk.col("before")).isNull() | (F.col(rank) > F.col(lk.col("before"))))
        df = df.withColumn(lk.col("next"), F.lead(F.col(start)).over(by_visible))
    caps = [F.col(lk.col("next")), F.lit(hi + 1)]
    if lookback is not None:
        # event_ts + lookback only where it is below hi + 1 anyway, so it never overflows a long
        # (least() skips the nulls elsewhere).
        caps.append(F.when(F.col(ts) <= F.lit(hi + 1 - lookback), F.col(ts) + F.lit(lookback)))
    df = df.withColumn(end, F.least(*caps))
    return df.where((F.col(end) > F.col(start)) & (F.col(end) > lo)).select(
        *keys, ts, *([seq] if lk.sequence else []), start, end
    )


def interval_join(
    spine_df: DataFrame, feature_df: DataFrame, lk: ResolvedLookup, lo: int, hi: int, size: int
) -> DataFrame:
    """Each spine row with its matched feature row's time, by a range join on (keys, time bin of
    ``size`` microseconds): the spine columns + ``mt`` (+ ``mq``), ready for the fetch."""
    assert lk.spine_time is not None
    keys = lk.keys
    ts, seq, mt, mq = lk.col("ts"), lk.col("seq"), lk.col("mt"), lk.col("mq")
    intervals = validity_intervals(feature_df, lk, lo, hi)
    start, end = F.col(lk.col("start")), F.col(lk.col("end"))
    first_bin = F.floor(F.greatest(start, F.lit(lo)) / size)
    last_bin = F.floor((end - 1) / size)
    is_fine = last_bin - first_bin < MAX_FINE_BINS

    spine_us, spine_bin = lk.col("sus"), lk.col("sbin")
    spine = spine_df.withColumn(spine_us, F.unix_micros(column(lk.spine_time))).withColumn(
        spine_bin, F.floor(F.col(spine_us) / size)
    )
    carried = [ts, *([seq] if lk.sequence else [])]

    def in_interval(suffix: str) -> Column:
        return (F.col(lk.col("start") + suffix) <= F.col(spine_us)) & (
            F.col(spine_us) < F.col(lk.col("end") + suffix)
        )

    def side(df: DataFrame, suffix: str, extra: list[str]) -> DataFrame:
        cols = [*keys, *extra, lk.col("start"), lk.col("end"), *carried]
        return df.select(*[F.col(c).alias(c + suffix) for c in cols])

    def key_eq(suffix: str) -> list[Column]:
        return [column(s) == F.col(n + suffix) for (_, s), n in zip(lk.key_map, keys, strict=True)]

    fine = intervals.where(is_fine).withColumn(
        lk.col("bin"), F.explode(F.sequence(first_bin, last_bin))
    )
    fine_side = side(fine, "_f", [lk.col("bin")])
    step1 = spine.join(
        fine_side,
        all_of([*key_eq("_f"), F.col(spine_bin) == F.col(lk.col("bin") + "_f"), in_interval("_f")]),
        "left",
    )
    long_side = side(intervals.where(~is_fine), "_l", [])
    step2 = step1.join(long_side, all_of([*key_eq("_l"), in_interval("_l")]), "left")
    return step2.select(
        *[column(c) for c in spine_df.columns],
        F.coalesce(F.col(ts + "_f"), F.col(ts + "_l")).alias(mt),
        *([F.coalesce(F.col(seq + "_f"), F.col(seq + "_l")).alias(mq)] if lk.sequence else []),
    )
