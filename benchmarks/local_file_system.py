"""Small Delta writes on sparkfs's local file system (``sparkfs/core/LocalFiles.java``, set by
``get_spark``) against Hadoop's own, each in a session of its own.

A unit is what a day does to a small table: create it, two MERGEs of 20 rows, two reads. Each
round starts one process per file system (alternating which goes first); a process warms up on
``--warmup`` units, then times ``--units``. Printed: seconds per unit, the forks the machine made
during the timed units (``/proc/stat``: processes and threads; Hadoop's file system starts a
``chmod`` or ``readlink`` process for most file operations), and the ratio of the medians.

    python benchmarks/local_file_system.py [--rounds 2] [--warmup 6] [--units 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

# What a session without sparkfs's classes uses: the FileSystem pyspark's jars register for file:
# (Hive's, over Hadoop's LocalFileSystem) and Hadoop's FileContext one.
HADOOPS = {
    "spark.hadoop.fs.file.impl": "org.apache.hadoop.hive.ql.io.ProxyLocalFileSystem",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "org.apache.hadoop.fs.local.LocalFs",
}


def processes_started() -> int:
    """Forks (processes and threads) the machine has made since it booted (Linux)."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("processes "):
            return int(line.split()[1])
    raise RuntimeError("no 'processes' line in /proc/stat: this benchmark needs Linux")


def run_units(which: str, warmup: int, units: int) -> dict[str, float]:
    """One session on ``which`` file system ("sparkfs" or "hadoop"): seconds per timed unit."""
    from pyspark.sql import functions as F
    from scratch import scratch_lakehouse

    from sparkfs.core.merge import merge_upsert

    with scratch_lakehouse("localfs", conf=HADOOPS if which == "hadoop" else None) as lake:
        spark = lake.spark
        rows = spark.createDataFrame(
            [(k, date(2013, 1, 1) + timedelta(days=k % 3), float(k)) for k in range(20)], "k int, d date, v double")
        count = [0]

        def unit() -> None:
            count[0] += 1
            table = f"bench_localfs_{count[0]}"
            lake.create("gold", table, rows.schema, partition_by=["d"])
            merge_upsert(lake, "gold", table, rows, keys=["k", "d"], partition_by="d")
            merge_upsert(lake, "gold", table, rows.withColumn("v", F.col("v") + 1), keys=["k", "d"], partition_by="d")
            lake.read("gold", table).where(F.col("d") == date(2013, 1, 2)).count()
            lake.read("gold", table).join(rows.select("k"), "k").count()

        for _ in range(warmup):
            unit()
        started, start = processes_started(), time.perf_counter()
        for _ in range(units):
            unit()
        seconds = (time.perf_counter() - start) / units
        spawned = (processes_started() - started) / units
        system = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(lake.settings.data_path.as_uri()).getFileSystem(  # type: ignore[union-attr]
            spark.sparkContext._jsc.hadoopConfiguration()).getClass().getName()  # type: ignore[union-attr]
        spark.stop()
        return {"seconds": seconds, "processes": spawned, "class": system}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="processes per file system (default 2)")
    parser.add_argument("--warmup", type=int, default=6, help="units before the timed ones (default 6)")
    parser.add_argument("--units", type=int, default=8, help="timed units per process (default 8)")
    parser.add_argument("--child", choices=["sparkfs", "hadoop"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_units(args.child, args.warmup, args.units)))
        return
    results: dict[str, list[dict[str, float]]] = {"sparkfs": [], "hadoop": []}
    for round_ in range(args.rounds):
        for which in (["sparkfs", "hadoop"] if round_ % 2 == 0 else ["hadoop", "sparkfs"]):
            done = subprocess.run(
                [sys.executable, __file__, "--child", which, "--warmup", str(args.warmup), "--units", str(args.units)],
                capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            results[which].append(result)
            print(f"round {round_ + 1}, {result['class']}: {result['seconds']:.2f} s a unit, "
                  f"{result['processes']:.0f} forks a unit")
    ours, base = (statistics.median(r["seconds"] for r in results[w]) for w in ("sparkfs", "hadoop"))
    print(f"create + 2 MERGEs + 2 reads of a 20-row table, median of {args.rounds} sessions x {args.units} units: "
          f"Hadoop's local file system {base:.2f} s, sparkfs's {ours:.2f} s; sparkfs / Hadoop = {ours / base:.2f}")


if __name__ == "__main__":
    main()
