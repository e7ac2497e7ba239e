"""Benchmark: trailing window aggregates vs one shuffle+sort, and vs a range self-join.

Prints each variant's wall time as a ratio to the baseline measured in the same run: one
shuffle + sort of the events by (key, event time), the least any per-entity window needs.

    python benchmarks/bench_trailing_aggregates.py [--rows 40000] [--keys 40] [--days 60]

Variants (each writes to Spark's ``noop`` sink, so the whole plan runs and nothing is stored):
- ``with_trailing_aggregates``: 4 windows (1h, 1d, 7d, 30d) x 6 aggregates in one call.
- ``count, sum, mean``: 4 windows x the running-total aggregates only (O(rows) per window).
- ``std, min, max``: 4 windows x the sliding-frame aggregates only (cost grows with window size).
- ``one call per window``: all 24 columns from 4 chained calls.
- ``range self-join``: the SQL habit -- join each event to its key's events in the last 30 days,
  then aggregate per event with one conditional aggregate per window; grows as rows x history.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import timedelta

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkfs.core.config import Settings, SparkSettings, StorageSettings
from sparkfs.core.session import get_spark
from sparkfs.features.transformations import AGGREGATES, with_trailing_aggregates

WINDOWS = {
    "1h": timedelta(hours=1),
    "1d": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}


def events(spark: SparkSession, rows: int, keys: int, days: int) -> DataFrame:
    start = 1_704_067_200  # 2024-01-01 UTC
    return (
        spark.range(rows)
        .select(
            F.col("id"),
            (F.hash("id") % keys).cast("string").alias("key"),
            F.timestamp_seconds(F.lit(start) + (F.rand(1) * days * 86_400).cast("long")).alias("ts"),
            F.when(F.rand(2) < 0.05, None).otherwise(F.randn(3) * 10).alias("value"),
        )
        .cache()
    )


def shuffle_sort(df: DataFrame) -> DataFrame:
    return df.repartition("key").sortWithinPartitions("key", "ts")


def one_call(df: DataFrame) -> DataFrame:
    return df.transform(with_trailing_aggregates, ["key"], "ts", "value", WINDOWS)


def running_only(df: DataFrame) -> DataFrame:
    return df.transform(with_trailing_aggregates, ["key"], "ts", "value", WINDOWS, ["count", "sum", "mean"])


def sliding_only(df: DataFrame) -> DataFrame:
    return df.transform(with_trailing_aggregates, ["key"], "ts", "value", WINDOWS, ["std", "min", "max"])


def call_per_window(df: DataFrame) -> DataFrame:
    for suffix, width in WINDOWS.items():
        df = df.transform(with_trailing_aggregates, ["key"], "ts", "value", {suffix: width})
    return df


def range_self_join(df: DataFrame) -> DataFrame:
    past = df.select(F.col("key"), F.col("ts").alias("past_ts"), F.col("value").alias("past_value"))
    age = F.unix_micros(F.col("ts")) - F.unix_micros(F.col("past_ts"))
    joined = df.join(past, "key").where((age >= 0) & (age < WINDOWS["30d"] // timedelta(microseconds=1)))
    aggregates = []
    for suffix, width in WINDOWS.items():
        value = F.when(age < width // timedelta(microseconds=1), F.col("past_value"))
        aggregates += [
            F.count(value).alias(f"value_count_{suffix}"),
            F.sum(value).alias(f"value_sum_{suffix}"),
            F.avg(value).alias(f"value_mean_{suffix}"),
            F.stddev_samp(value).alias(f"value_std_{suffix}"),
            F.min(value).alias(f"value_min_{suffix}"),
            F.max(value).alias(f"value_max_{suffix}"),
        ]
    return joined.groupBy("id", "key", "ts", "value").agg(*aggregates)


def timed(build: Callable[[DataFrame], DataFrame], df: DataFrame, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        began = time.perf_counter()
        build(df).write.format("noop").mode("overwrite").save()
        best = min(best, time.perf_counter() - began)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=40_000)
    parser.add_argument("--keys", type=int, default=40)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-self-join", action="store_true", help="it grows as rows x window")
    args = parser.parse_args()
    settings = Settings(
        env="bench",
        spark=SparkSettings(master="local[2]", shuffle_partitions=4, log_level="ERROR",
                            conf={"spark.ui.enabled": "false"}),
        storage=StorageSettings(data_dir=tempfile.mkdtemp(prefix="sparkfs-bench-")),
    )
    spark = get_spark(settings)
    df = events(spark, args.rows, args.keys, args.days)
    df.count()
    variants = {
        "shuffle+sort (baseline)": shuffle_sort,
        "with_trailing_aggregates": one_call,
        "count, sum, mean": running_only,
        "std, min, max": sliding_only,
        "one call per window": call_per_window,
    }
    if not args.skip_self_join:
        variants["range self-join"] = range_self_join
    timed(shuffle_sort, df, 1)  # warm-up: JIT and code generation
    seconds = {name: timed(build, df, args.repeats) for name, build in variants.items()}
    base = seconds["shuffle+sort (baseline)"]
    print(f"{args.rows} events, {args.keys} keys, {args.days} days; "
          f"{len(WINDOWS)} windows x {len(AGGREGATES)} aggregates; best of {args.repeats}")
    for name, s in seconds.items():
        print(f"  {name:<26} {s:7.2f} s   {s / base:5.2f}x baseline")
    spark.stop()


if __name__ == "__main__":
    main()
