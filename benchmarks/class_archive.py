"""A cold start with the class-data archive ``sparkfs setup`` writes, against the JDK's own archive
only (Java's default), each a fresh process.

A run is what a scheduled job does first: start Python and Spark, create a Delta table, two
MERGEs, one read. Runs alternate between the two (``--rounds`` each); printed: wall seconds
(Spark's start, the work), the machine's busy core-seconds (``/proc/stat``) and the ratios of
the medians.

    python benchmarks/class_archive.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path


def busy_core_seconds() -> float:
    """CPU time the machine has spent outside idle and iowait since it booted (Linux)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / 100  # USER_HZ


def cold_run(java_options: str) -> dict[str, float]:
    """In a fresh process: Spark's start and a small Delta job's seconds."""
    started = time.perf_counter()
    from pyspark.sql import functions as F
    from scratch import scratch_lakehouse

    from sparkfs.core.merge import merge_upsert

    with scratch_lakehouse("archive", java_options=java_options) as lake:
        up = time.perf_counter()
        rows = lake.spark.range(20).select(F.col("id").alias("k"), F.lit(1.0).alias("v"))
        lake.create("gold", "bench_archive", rows.schema)
        for _ in range(2):
            merge_upsert(lake, "gold", "bench_archive", rows, keys=["k"])
        assert lake.read("gold", "bench_archive").count() == 20
        return {"start": up - started, "work": time.perf_counter() - up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(cold_run(args.child)))
        return
    from sparkfs.core.jvm import class_archive, sparkfs_jar
    from sparkfs.core.session import find_java, ivy_dir

    java = find_java()
    archive = class_archive(ivy_dir() / "sparkfs", java, sparkfs_jar(ivy_dir() / "sparkfs", build=False))
    if not archive.is_file():
        sys.exit(f"no class-data archive {archive}: run `sparkfs setup` (make setup) first")
    # The JDK's own archive: what every JVM maps without sparkfs's (the later option wins).
    jdk_only = f"-XX:SharedArchiveFile={Path(java).resolve().parents[1] / 'lib' / 'server' / 'classes.jsa'}"
    results: dict[str, list[dict[str, float]]] = {"sparkfs": [], "jdk": []}
    for round_ in range(args.rounds):
        for which in (["sparkfs", "jdk"] if round_ % 2 == 0 else ["jdk", "sparkfs"]):
            busy, wall = busy_core_seconds(), time.perf_counter()
            done = subprocess.run([sys.executable, __file__, f"--child={jdk_only if which == 'jdk' else ''}"],
                                  capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            result |= {"wall": time.perf_counter() - wall, "busy": busy_core_seconds() - busy}
            results[which].append(result)
            print(f"round {round_ + 1}, {which + ' archive':15s} {result['wall']:5.1f} s wall (Spark up "
                  f"{result['start']:4.1f} s, work {result['work']:4.1f} s), {result['busy']:5.1f} busy core-s")

    def median(which: str, key: str) -> float:
        return statistics.median(r[key] for r in results[which])

    print(f"a cold small Delta job, median of {args.rounds}: JDK's archive only {median('jdk', 'wall'):.1f} s wall, "
          f"{median('jdk', 'busy'):.1f} core-s; with sparkfs's {median('sparkfs', 'wall'):.1f} s, "
          f"{median('sparkfs', 'busy'):.1f} core-s; sparkfs / JDK = {median('sparkfs', 'wall') / median('jdk', 'wall'):.2f} "
          f"wall, {median('sparkfs', 'busy') / median('jdk', 'busy'):.2f} CPU")


if __name__ == "__main__":
    main()
