"""VACUUM of a small local table: the session's folder-listing parallelism (as many tasks as the
local cores, set by ``get_spark``) against Spark's default (10,000 tasks), in one session.

VACUUM lists the table's folder in Spark jobs whose task count is
``spark.sql.sources.parallelPartitionDiscovery.parallelism``. A table of a few daily MERGEs is
vacuumed ``--repeat`` times on each setting, alternating; the ratio of the medians is printed.

    python benchmarks/vacuum_listing.py [--days 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from datetime import date

from pyspark.sql import functions as F
from scratch import scratch_lakehouse

from sparkfs.core.merge import merge_upsert
from sparkfs.core.session import session_conf

TABLE = "bench_vacuum"
LISTING = "spark.sql.sources.parallelPartitionDiscovery.parallelism"
SPARK_DEFAULT = "10000"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=5, help="daily MERGEs before the VACUUMs (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="VACUUMs per setting (default 3)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with scratch_lakehouse("vacuum") as lake:
        spark = lake.spark
        rows = spark.range(60).select(
            F.col("id").alias("k"), (F.lit(date(2013, 1, 1)) + (F.col("id") % 6).cast("int")).alias("d"),
            F.col("id").cast("double").alias("v"))
        lake.create("gold", TABLE, rows.schema, partition_by=["d"])
        for i in range(args.days):
            merge_upsert(lake, "gold", TABLE, rows.withColumn("v", F.col("v") + i), keys=["k", "d"], partition_by="d")
        ours = spark.conf.get(LISTING)
        times: dict[str, list[float]] = {ours: [], SPARK_DEFAULT: []}
        lake.table("gold", TABLE).vacuum()  # warm-up, not timed
        for _ in range(args.repeat):
            for setting, seconds in times.items():
                with session_conf(spark, {LISTING: setting}):
                    start = time.perf_counter()
                    lake.table("gold", TABLE).vacuum()
                    seconds.append(time.perf_counter() - start)
        base, mine = statistics.median(times[SPARK_DEFAULT]), statistics.median(times[ours])
        files = lake.table("gold", TABLE).detail().first()["numFiles"]  # type: ignore[index]
        print(f"VACUUM of a table after {args.days} MERGEs ({files} files), median of {args.repeat}: "
              f"listing in {SPARK_DEFAULT} tasks {base:.2f}s, in {ours} {mine:.2f}s; "
              f"ours / Spark's default = {mine / base:.2f}")


if __name__ == "__main__":
    main()
