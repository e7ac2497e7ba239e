"""Which plan joins a lookup, and the measurements that choose it.

Four exact plans give the same rows; ``plan="auto"`` picks one per lookup, for speed only:

- ``"instant"`` when every spine row has the same time (a daily batch scored as of its cutoff):
  one snapshot of the latest row per key answers them all (:mod:`sparkfs.pit.instant`);
- else ``"union"`` while the spine has at most ``BROADCAST_MATCH_ROWS`` rows, so its matched
  (keys, event time) can be broadcast to fetch only the matched feature rows
  (:mod:`sparkfs.pit.union`, :mod:`sparkfs.pit.fetch`);
- ``"union-wide"`` for bigger spines: the window carries every feature column instead;
- ``"intervals"`` (:mod:`sparkfs.pit.intervals`) when the hottest key (in a sample of about
  ``SAMPLE_ROWS`` rows) holds more rows than ``HOT_KEY_TASKS`` tasks' fair share
  (``HOT_KEY_TASKS / parallelism``), since both union plans put all rows of a key in one task;
  never on 1 or 2 cores, where no key can and the table is not even sampled; and for
  ``known_at`` (on a spine of more than one time).

The same sample gives the intervals plan its time-bin size (:func:`sample_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from sparkfs.core.config import local_cores
from sparkfs.core.errors import SparkfsError
from sparkfs.pit.columns import column
from sparkfs.pit.lookup import ResolvedLookup

PLANS = ("auto", "instant", "intervals", "union", "union-wide")
# "auto" takes the binned-interval plan when one key holds more rows than this many tasks' fair
# share (so one task of a key-partitioned sort would dominate); otherwise union + window wins.
HOT_KEY_TASKS = 2
# Spines up to this many rows have their matched (keys, event time) broadcast, so only the matched
# wide feature rows are shuffled (about 16 bytes + the keys per row on the driver and executors).
BROADCAST_MATCH_ROWS = 2_000_000
# The bin size is this quantile of the gaps between consecutive rows of a key (row-weighted, so
# dense keys, where skew hurts, decide), estimated on a sample of about SAMPLE_ROWS rows.
GAP_QUANTILE = 0.25
SAMPLE_ROWS = 200_000


def broadcasts_matches(spine_rows: int) -> bool:
    """Whether a spine this big has its matched (keys, event time) broadcast for the fetch."""
    return spine_rows <= BROADCAST_MATCH_ROWS


def check_plan(plan: str, lk: ResolvedLookup, lo: int, hi: int) -> None:
    """Raise :class:`~sparkfs.core.errors.SparkfsError` when ``plan`` cannot join ``lk`` for a
    spine whose times span ``lo..hi`` (microseconds)."""
    if plan not in PLANS:
        raise SparkfsError(f"unknown plan {plan!r}: expected one of {PLANS}")
    if plan.startswith("union") and lk.known_at:
        raise SparkfsError(f"plan '{plan}' does not support known_at; use 'intervals' or 'auto'")
    if plan == "instant" and lo != hi:
        raise SparkfsError(f"plan 'instant' needs every spine time to be one instant; {lk.spine_time!r} "
                           f"spans {lo}..{hi} microseconds: use 'auto'")


def choose_plan(
    feature_df: DataFrame, lk: ResolvedLookup, spine_df: DataFrame, spine_rows: int, chosen: dict[str, str],
    *, one_instant: bool = False,
) -> str:
    """``plan="auto"``: instant for a spine at ``one_instant``; else intervals for ``known_at`` or
    a hot key, else union (narrow while the spine's matches can be broadcast, wide above that).
    Records the reason in ``chosen[lk.label]``.

    A hot key is one holding more rows than ``HOT_KEY_TASKS`` tasks' fair share; with so few
    tasks running at once that the share is 100% or more (a 1- or 2-core machine), no key can,
    and the table is not sampled at all.
    """
    assert lk.event_time is not None
    limit = HOT_KEY_TASKS / parallelism(spine_df)
    small = broadcasts_matches(spine_rows)
    union = "union" if small else "union-wide"
    matches = (f"{spine_rows:,} spine rows {'within' if small else 'over'} "
               f"{BROADCAST_MATCH_ROWS:,}: matches {'broadcast' if small else 'not broadcast'}")
    if one_instant:
        plan, why = "instant", f"all {spine_rows:,} spine rows at one time"
    elif lk.known_at:
        plan, why = "intervals", "known_at needs intervals"
    elif limit >= 1:
        plan, why = union, f"no key can hold over {limit:.0%} of the rows; {matches}"
    else:
        _, hot_share = sample_stats(feature_df, [k for k, _ in lk.key_map], lk.event_time)
        hot = hot_share > limit
        plan = "intervals" if hot else union
        why = (f"hottest key holds {hot_share:.1%} of the rows ({'over' if hot else 'within'} "
               f"{limit:.1%} = {HOT_KEY_TASKS} tasks' share)" + ("" if hot else f"; {matches}"))
    chosen[lk.label] = f"{plan}: {why}"
    return plan


def sample_stats(
    feature_df: DataFrame, keys: Sequence[str], event_time: str
) -> tuple[int | None, float]:
    """From a sample of about ``SAMPLE_ROWS`` rows: a bin size and the hottest key's share of rows.

    The bin size is a low quantile (``GAP_QUANTILE``) of the gaps between a key's consecutive rows,
    row-weighted so dense keys, where skew hurts, decide; the gaps in a sample with fraction ``p``
    are about ``1/p`` times the real ones. Two cheap jobs (a count, windows over the sample). The
    result chooses speed, never rows.
    """
    total = feature_df.count()
    if total == 0:
        return None, 0.0
    fraction = min(1.0, SAMPLE_ROWS / total)
    # Only names made here below: the user's names could be "ts" or hold a dot.
    key_names = [f"k{i}" for i in range(len(keys))]
    sample = feature_df.select(
        *[column(k).alias(n) for k, n in zip(keys, key_names, strict=True)],
        F.unix_micros(column(event_time)).alias("ts"),
    ).sample(fraction=fraction, seed=17)
    per_key = Window.partitionBy(*key_names)
    gap = F.lead("ts").over(per_key.orderBy("ts")) - F.col("ts")
    row = (
        sample.select(gap.alias("gap"), F.count(F.lit(1)).over(per_key).alias("n"))
        .agg(
            F.percentile_approx(F.when(F.col("gap") > 0, F.col("gap")), GAP_QUANTILE).alias("q"),
            F.max("n").alias("hot"),
            F.count(F.lit(1)).alias("rows"),
        )
        .first()
    )
    if row is None or not row["rows"]:
        return None, 0.0
    gap_us = None if row["q"] is None else max(1, int(row["q"] * fraction))
    return gap_us, float(row["hot"]) / float(row["rows"])


def parallelism(df: DataFrame) -> int:
    """Tasks that run at once: the cores of a local master, else the cluster's default parallelism.

    (Locally ``spark.default.parallelism`` is set to the shuffle partitions, not the cores.)
    """
    spark = df.sparkSession
    try:
        cores = local_cores(spark.sparkContext.master or "")
        return max(1, cores if cores is not None else int(spark.sparkContext.defaultParallelism))
    except Exception:  # Spark Connect has no SparkContext
        return max(1, int(spark.conf.get("spark.sql.shuffle.partitions") or 1))
