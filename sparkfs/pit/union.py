"""The union + window plans: one shuffle and sort of spine and feature rows together, by key.

- ``"union"``: spine rows and the feature rows' narrow columns (keys, event time, sequence) are
  unioned, shuffled and sorted by key once, and each spine row takes the (time, sequence) of the
  last feature row before it. :mod:`sparkfs.pit.fetch` then fetches the features of only the
  matched rows.
- ``"union-wide"``: the same window carrying every feature column in one struct, for spines too
  big to broadcast their matches: one shuffle of the wide rows instead of two.

Both presort the rows on one long (:mod:`sparkfs.pit.presort`), so the window's own sort by
(keys, time) is cheap, and both put all rows of a key in one task (a hot key is the intervals
plan's case).
"""

from __future__ import annotations

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkfs.pit.columns import all_of, column
from sparkfs.pit.lookup import ResolvedLookup, micros
from sparkfs.pit.presort import presorted


def union_join(
    spine_df: DataFrame, feature_df: DataFrame, lk: ResolvedLookup, hi: int, *, wide: bool
) -> DataFrame:
    """Each spine row with its matched feature row's time: union + window, by key.

    Spine and feature rows are sorted together per key by ``order`` = 2 x time + (1 for a spine
    row), so a feature row at the spine's own time comes first and counts.

    ``wide=False`` (plan ``union``): only (time, sequence) travel. Each spine row takes the
    greatest (time, sequence) of the feature rows before it, a running ``max`` (cheaper than
    ``last``, and independent of how tied rows are ordered); the fetch gets the features and
    finds ties. Returns the spine columns + ``mt`` (+ ``mq``). ``wide=True`` (plan
    ``union-wide``): every feature column travels, and each spine row takes the last feature row
    before it as **one struct** (whole row, no per-column back-fill); a feature row with the same
    (time, sequence) as the feature row just before it is marked as a tie (sorted last of its
    group, it is the one a spine row would take), so ties behind a match are reported. Returns
    the spine columns + ``mt`` + the outputs + ``tie``.
    """
    assert lk.event_time is not None and lk.spine_time is not None
    keys = lk.keys
    ts, seq, is_spine, order, tie, hit = (lk.col(c) for c in ("ts", "seq", "is_spine", "order", "tie", "hit"))
    seq_type = feature_df.schema[lk.sequence].dataType if lk.sequence else None
    spine_types = {f.name: f.dataType for f in spine_df.schema.fields}
    payload = [(o, feature_df.schema[f].dataType) for f, o in zip(lk.features, lk.outputs, strict=True)]
    if not wide:  # only the matched row's (time, sequence) come out; the fetch gets its features
        payload = []

    spine_side = spine_df.select(
        *[column(c) for c in spine_df.columns],
        *[column(s).alias(k) for (_, s), k in zip(lk.key_map, keys, strict=True)],
        F.unix_micros(column(lk.spine_time)).alias(ts),
        *([F.lit(None).cast(seq_type).alias(seq)] if seq_type else []),
        F.lit(True).alias(is_spine),
        *[F.lit(None).cast(t).alias(o) for o, t in payload],
    )
    feature_side = feature_df.where(all_of([column(k).isNotNull() for k, _ in lk.key_map])).select(
        *[F.lit(None).cast(spine_types[c]).alias(c) for c in spine_df.columns],
        *[column(k).alias(n) for (k, _), n in zip(lk.key_map, keys, strict=True)],
        F.unix_micros(column(lk.event_time)).alias(ts),
        *([column(lk.sequence).alias(seq)] if lk.sequence else []),
        F.lit(False).alias(is_spine),
        *[column(f).alias(o) for f, o in zip(lk.features, lk.outputs, strict=True) if wide],
    )
    both = spine_side.unionByName(feature_side).withColumn(
        order, F.col(ts) * 2 + F.col(is_spine).cast("long")
    )
    both = presorted(both, keys, F.col(order), 2 * hi + 1)
    sort_cols = [order, *([seq] if lk.sequence else [])]
    by_time = Window.partitionBy(*keys).orderBy(*[F.col(c).asc_nulls_first() for c in sort_cols])
    running = by_time.rowsBetween(Window.unboundedPreceding, Window.currentRow)
    if wide:
        previous_same = all_of(
            [~F.lag(F.col(is_spine)).over(by_time)]
            + [F.lag(F.col(c)).over(by_time).eqNullSafe(F.col(c)) for c in sort_cols]
        )
        both = both.withColumn(tie, F.coalesce(~F.col(is_spine) & previous_same, F.lit(False)))
        # Fields by position: a feature may be called "ts" or "tie" too.
        fields = [column(o).alias(f"f{i}") for i, (o, _) in enumerate(payload)]
        row = F.struct(F.col(ts).alias("ts"), F.col(tie).alias("tie"), *fields)
        latest = F.last(F.when(~F.col(is_spine), row), ignorenulls=True).over(running)
    else:
        row = F.struct(F.col(ts).alias("ts"), *([F.col(seq).alias("seq")] if lk.sequence else []))
        latest = F.max(F.when(~F.col(is_spine), row)).over(running)
    matched = both.withColumn(hit, latest).where(F.col(is_spine))
    hit_row = F.col(hit)
    ok = F.col(ts).isNotNull() & hit_row.isNotNull()
    if lk.lookback is not None:  # hit.ts > ts - lookback, as a difference: hit.ts <= ts
        ok &= F.col(ts) - hit_row.getField("ts") < F.lit(micros(lk.lookback))
    return matched.select(
        *[column(c) for c in spine_df.columns],
        F.when(ok, hit_row.getField("ts")).alias(lk.col("mt")),
        *([*[F.when(ok, hit_row.getField(f"f{i}")).alias(o) for i, (o, _) in enumerate(payload)],
           F.coalesce(F.when(ok, hit_row.getField("tie")), F.lit(False)).alias(tie)] if wide
          else [F.when(ok, hit_row.getField("seq")).alias(lk.col("mq"))] if lk.sequence else []),
    )
