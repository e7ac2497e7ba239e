"""One day's point-in-time lookup from a feature table after N daily MERGEs, before and after
``maintain`` (OPTIMIZE Z-ordered on keys + event time, then VACUUM): the ratio of the medians.

A synthetic gold table like the example's (keys, event time, partitioned by event date) gets one
MERGE a day: the day's hourly rows for every entity, and late rows of the day before (the
daily job writes two UTC dates too). Each MERGE adds small files to two partitions. The
lookup is what a daily inference reads: one day's spine (every entity at noon) joined with a 1d
lookback through ``create_training_set``, counted. Median of ``--repeat`` runs each side.

    python benchmarks/maintain.py [--days 120] [--entities 200] [--repeat 5]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scratch import scratch_lakehouse

from sparkfs.catalog.upkeep import maintain_table
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.feature_tables import FeatureTableSpec, write_feature_table
from sparkfs.pit.api import FeatureLookup, create_training_set

TABLE = "bench_daily"
START = date(2013, 1, 1)
SPEC = FeatureTableSpec.model_validate({
    "name": TABLE, "description": "hourly value per entity", "owner": "benchmarks", "keys": ["entity"],
    "event_time": "ts", "partition_by": "event_date", "build": "benchmarks.maintain:unused",
    "columns": {"entity": "entity id", "ts": "hour", "value": "a value", "count_1d": "a count"},
})


def day_rows(lake: Lakehouse, day: date, entities: int, revision: int) -> DataFrame:
    """Every entity's 24 hourly rows of ``day`` (on the hour), and late rows of the day before
    (at half past: new keys, so the MERGE adds a file to yesterday's partition, as late data does;
    a correction of existing keys would rewrite the file instead and leave nothing to compact)."""
    days = [d for d in (day - timedelta(days=1), day) if d >= START]
    base = lake.spark.range(entities * 24 * len(days)).select(
        (F.col("id") % entities).cast("string").alias("entity"),
        (F.floor(F.col("id") / entities) % 24).alias("hour"),
        F.floor(F.col("id") / (entities * 24)).cast("int").alias("i"),
    )
    first = datetime.combine(days[0], datetime.min.time())
    late = F.when((F.col("i") == 0) & F.lit(len(days) == 2), F.lit(30)).otherwise(F.lit(0))
    ts = F.lit(first) + F.make_dt_interval(F.col("i"), F.col("hour").cast("int"), late)
    return base.select(
        "entity", ts.alias("ts"), F.to_date(ts).alias("event_date"),
        (F.hash("entity", "hour", "i") % 1000 / 10 + revision).cast("double").alias("value"),
        (F.col("hour") + revision).cast("long").alias("count_1d"),
    )


def lookup_seconds(lake: Lakehouse, day: date, entities: int, repeat: int) -> float:
    spine_df = lake.spark.range(entities).select(
        F.col("id").cast("string").alias("entity"), F.lit(datetime.combine(day, datetime.min.time()) + timedelta(hours=12)).alias("at"))
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        ts = create_training_set(lake, spine_df, [FeatureLookup(TABLE, ["entity"], "at", lookback=timedelta(days=1))])
        ts.df.count()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=120, help="daily MERGEs (default 120)")
    parser.add_argument("--entities", type=int, default=200, help="entities per day (default 200)")
    parser.add_argument("--repeat", type=int, default=5, help="lookups per side (default 5)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with scratch_lakehouse("maintain") as lake:
        started = time.perf_counter()
        for i in range(args.days):
            write_feature_table(lake, SPEC, day_rows(lake, START + timedelta(days=i), args.entities, i))
        print(f"{args.days} daily MERGEs of {args.entities} entities x 24h: {time.perf_counter() - started:.0f}s")
        day = START + timedelta(days=args.days // 2)
        # Warm up (JIT, caches) on the same query before either side is timed.
        lookup_seconds(lake, day, args.entities, 1)
        before = lookup_seconds(lake, day, args.entities, args.repeat)
        result = maintain_table(lake, "gold", TABLE)
        after = lookup_seconds(lake, day, args.entities, args.repeat)
        print(f"maintain: {result.files_before} -> {result.files_after} files, Z-order by {result.zorder_by}, "
              f"{result.seconds:.0f}s")
        print(f"one day's lookup: before {before:.2f}s, after {after:.2f}s (median of {args.repeat}); "
              f"after / before = {after / before:.2f}")


if __name__ == "__main__":
    main()
