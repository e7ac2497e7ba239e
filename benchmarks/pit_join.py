"""Point-in-time join benchmark: sparkfs against the usual exact and inexact alternatives.

One run generates a spine and a feature table (``--feature-cols`` double columns, as real feature
tables have) for uniform and Zipf-skewed keys (the hot key holds a third of the rows of both
inputs), writes them to Parquet, and times on the same files:

- ``floor``:   one shuffle + sort of both inputs by (key, time), wide rows as they are: the
               reference cost the bars are set against;
- ``sparkfs``: :func:`sparkfs.pit.as_of_join` with ``plan="auto"``, the join
  ``create_training_set`` runs (it logs which plan it chose and why);
- ``intervals``, ``sf-union``, ``sf-wide``: the same with one plan forced (``intervals``: binned
  validity intervals; ``union``: union + window on the narrow columns, then a fetch of the matched
  rows; ``union-wide``: union + window carrying every feature column);
- ``union``:   union + last-value window, the plain form of tempo's algorithm, made exact (one
  struct per row, so no per-column back-fill);
- ``tempo``:   ``tempo.TSDF.asofJoin`` from ``dbl-tempo`` (per-column back-fill by default);
- ``naive``:   range join on key and ``f.ts <= s.ts`` + ``row_number`` (grows as labels x history
  per key; skipped with the estimate when above ``--naive-max-pairs``);
- ``duckdb``:  DuckDB ``ASOF LEFT JOIN`` on the same Parquet files (single process, other engine).

Every Spark result is fully computed by writing it to the ``noop`` sink; with ``--repeat N`` each
method runs N times, round robin over the methods (a slow spell of the machine then hits all of
them), every time is printed and the best counts. Ratios are against the floor of the same
distribution. Run::

    .venv/bin/python benchmarks/pit_join.py                       # small default
    .venv/bin/python benchmarks/pit_join.py --spine-rows 1000000 --feature-rows 10000000 --keys 100000
"""

from __future__ import annotations

import argparse
import logging
import math
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from sparkfs.core.config import Settings, SparkSettings, StorageSettings
from sparkfs.core.session import get_spark
from sparkfs.pit import as_of_join

YEAR_SECONDS = 365 * 86_400
BARS = {"sparkfs / floor": 1.3, "tempo / sparkfs": 1.5, "naive / sparkfs": 1.5, "zipf / uniform (sparkfs)": 1.5}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--spine-rows", type=int, default=20_000)
    p.add_argument("--feature-rows", type=int, default=200_000)
    p.add_argument("--keys", type=int, default=2_000)
    p.add_argument("--feature-cols", type=int, default=10)
    p.add_argument("--partitions", type=int, default=8, help="spark.sql.shuffle.partitions")
    p.add_argument("--driver-memory", default="4g")
    p.add_argument("--distributions", default="uniform,zipf")
    p.add_argument("--methods", default="floor,sparkfs,intervals,sf-union,sf-wide,union,tempo,naive,duckdb")
    p.add_argument("--naive-max-pairs", type=float, default=1e8,
                   help="skip the naive range join above this many (spine, feature) candidate pairs")
    p.add_argument("--repeat", type=int, default=1, help="time each method this many times, keep the best")
    p.add_argument("--verify", action="store_true", help="also check that the exact methods agree")
    p.add_argument("--data-dir", default=None, help="where to write the generated Parquet (default: temp)")
    return p.parse_args()


def key_column(skewed: bool, keys: int, seed: int) -> F.Column:
    """Uniform keys, or one hot key (0) holding a third of the rows and the rest uniform."""
    uniform = F.floor(F.rand(seed) * keys).cast("long")
    if not skewed:
        return uniform
    return F.when(F.rand(seed + 1) < 1 / 3, F.lit(0).cast("long")).otherwise(
        1 + F.floor(F.rand(seed + 2) * (keys - 1)).cast("long"))


def generate(spark: SparkSession, args: argparse.Namespace, skewed: bool, folder: Path) -> tuple[str, str]:
    start = F.lit("2024-01-01 00:00:00").cast("timestamp")
    instant = (F.unix_micros(start) + F.floor(F.rand(11) * YEAR_SECONDS * 1e6)).cast("long")
    features = (
        spark.range(args.feature_rows)
        .select(key_column(skewed, args.keys, 1).alias("key"), F.timestamp_micros(instant).alias("ts"),
                *[F.rand(100 + i).alias(f"f{i}") for i in range(args.feature_cols)])
        .dropDuplicates(["key", "ts"])  # feature tables are unique on (key, event time)
    )
    s_instant = (F.unix_micros(start) + F.floor(F.rand(21) * YEAR_SECONDS * 1e6)).cast("long")
    spine = spark.range(args.spine_rows).select(
        "id", key_column(skewed, args.keys, 5).alias("key"), F.timestamp_micros(s_instant).alias("ts"),
        (F.rand(31) < 0.2).cast("int").alias("label"))
    name = "zipf" if skewed else "uniform"
    f_path, s_path = str(folder / f"features_{name}"), str(folder / f"spine_{name}")
    features.write.mode("overwrite").parquet(f_path)
    spine.write.mode("overwrite").parquet(s_path)
    return s_path, f_path


# --- the methods ------------------------------------------------------------------------------


def floor(spine: DataFrame, feats: DataFrame, cols: list[str]) -> list[DataFrame]:
    return [spine.repartition("key").sortWithinPartitions("key", "ts"),
            feats.repartition("key").sortWithinPartitions("key", "ts")]


def sparkfs_plan(plan: str) -> Callable[[DataFrame, DataFrame, list[str]], list[DataFrame]]:
    def run(spine: DataFrame, feats: DataFrame, cols: list[str]) -> list[DataFrame]:
        return [as_of_join(spine, feats, ["key"], spine_time="ts", event_time="ts", features=cols, prefix="r",
                           plan=plan)]
    return run


def union_last(spine: DataFrame, feats: DataFrame, cols: list[str]) -> list[DataFrame]:
    """Exact union + last-value: feature rows sort before spine rows at equal times."""
    row = F.struct(F.col("ts").alias("fts"), *[F.col(c) for c in cols])
    row_type = "struct<fts:timestamp," + ",".join(f"{c}:double" for c in cols) + ">"
    left = spine.select("id", "key", "ts", "label", F.lit(1).alias("is_spine"),
                        F.lit(None).cast(row_type).alias("row"))
    right = feats.select(F.lit(None).cast("long").alias("id"), "key", "ts", F.lit(None).cast("int").alias("label"),
                         F.lit(0).alias("is_spine"), row.alias("row"))
    w = Window.partitionBy("key").orderBy("ts", "is_spine").rowsBetween(Window.unboundedPreceding, 0)
    both = left.unionByName(right).withColumn("hit", F.last("row", ignorenulls=True).over(w))
    return [both.where(F.col("is_spine") == 1).select("id", "key", "ts", "label",
                                                         *[F.col("hit")[c].alias(f"r_{c}") for c in cols])]


def naive(spine: DataFrame, feats: DataFrame, cols: list[str]) -> list[DataFrame]:
    f = feats.select(F.col("key").alias("fkey"), F.col("ts").alias("fts"), *cols)
    pairs = spine.join(f, (spine.key == f.fkey) & (f.fts <= spine.ts), "left")
    rank = F.row_number().over(Window.partitionBy("id").orderBy(F.col("fts").desc()))
    return [pairs.withColumn("rn", rank).where("rn = 1").select(
        "id", "key", "ts", "label", *[F.col(c).alias(f"r_{c}") for c in cols])]


def tempo_join(spine: DataFrame, feats: DataFrame, cols: list[str]) -> list[DataFrame]:
    from tempo import TSDF  # dev extra `dbl-tempo`; imported here so the rest runs without it

    left = TSDF(spine, ts_col="ts", partition_cols=["key"])
    right = TSDF(feats, ts_col="ts", partition_cols=["key"])
    return [left.asofJoin(right, right_prefix="r").df]


SPARK_METHODS: dict[str, Callable[[DataFrame, DataFrame, list[str]], list[DataFrame]]] = {
    "floor": floor, "sparkfs": sparkfs_plan("auto"), "intervals": sparkfs_plan("intervals"),
    "sf-union": sparkfs_plan("union"), "sf-wide": sparkfs_plan("union-wide"), "union": union_last,
    "tempo": tempo_join, "naive": naive,
}


def time_spark(method: str, spine: DataFrame, feats: DataFrame, cols: list[str]) -> float:
    started = time.perf_counter()
    for df in SPARK_METHODS[method](spine, feats, cols):
        df.write.format("noop").mode("overwrite").save()
    return time.perf_counter() - started


def time_duckdb(s_path: str, f_path: str, cols: list[str], threads: int) -> float:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads = {threads}")
    started = time.perf_counter()
    con.execute(
        "CREATE TEMP TABLE out AS SELECT s.*, " + ", ".join(f"f.{c} AS r_{c}" for c in cols)
        + f" FROM read_parquet('{s_path}/*.parquet') s ASOF LEFT JOIN read_parquet('{f_path}/*.parquet') f"
        " ON s.key = f.key AND s.ts >= f.ts"
    )
    return time.perf_counter() - started


def candidate_pairs(spine: DataFrame, feats: DataFrame) -> float:
    """Sum over keys of spine rows x feature rows: what a plain range join compares."""
    s = spine.groupBy("key").agg(F.count(F.lit(1)).alias("s"))
    f = feats.groupBy("key").agg(F.count(F.lit(1)).alias("f"))
    row = s.join(f, "key").agg(F.sum(F.col("s") * F.col("f") / 2).alias("pairs")).first()
    return float(row["pairs"] or 0) if row else 0.0


def checksum(df: DataFrame, cols: list[str]) -> tuple[int, int]:
    h = F.xxhash64("id", *[F.coalesce(F.col(f"r_{c}"), F.lit(-1.0)) for c in cols])
    row = df.agg(F.count(F.lit(1)).alias("n"), F.sum(h.cast("decimal(38,0)")).alias("h")).first()
    assert row is not None
    return int(row["n"]), int(row["h"] or 0)


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.WARNING, format="  %(message)s")
    logging.getLogger("sparkfs.pit.api").setLevel(logging.INFO)
    data_dir = Path(args.data_dir or tempfile.mkdtemp(prefix="pit_bench_"))
    settings = Settings(
        env="bench", conf_dir=str(Path(__file__).resolve().parents[1] / "conf"),
        spark=SparkSettings(master="local[2]", app_name="pit-bench", driver_memory=args.driver_memory,
                            shuffle_partitions=args.partitions, log_level="ERROR",
                            conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}),
        storage=StorageSettings(data_dir=str(data_dir / "lake")),
    )
    spark = get_spark(settings)
    cols = [f"f{i}" for i in range(args.feature_cols)]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(f"spine {args.spine_rows:,} x features {args.feature_rows:,} rows, {args.keys:,} keys, "
          f"{args.feature_cols} feature columns, {args.partitions} shuffle partitions, local[2]", flush=True)
    results: dict[tuple[str, str], float | str] = {}
    dists = [d.strip() for d in args.distributions.split(",") if d.strip()]
    for dist in dists:
        s_path, f_path = generate(spark, args, dist == "zipf", data_dir)
        spine, feats = spark.read.parquet(s_path), spark.read.parquet(f_path)
        if dist == dists[0]:  # warm up the JVM (JIT, codegen) on a slice of every method
            for m in [m for m in methods if m in SPARK_METHODS]:
                try:
                    time_spark(m, spine.limit(2000), feats.limit(20000), cols)
                except Exception:  # noqa: S112 - a method that fails is reported when it is timed
                    continue
        runs: dict[str, list[float]] = {m: [] for m in methods}
        for method in methods:  # baselines that cannot run are reported once, not timed
            if method == "naive" and (pairs := candidate_pairs(spine, feats)) > args.naive_max_pairs:
                results[(dist, method)] = f"skipped: {pairs:.2g} candidate pairs"
        for _ in range(args.repeat):  # round robin, so a slow spell of the machine hits every method
            for method in methods:
                if (dist, method) in results:
                    continue
                try:
                    if method == "duckdb":
                        runs[method].append(time_duckdb(s_path, f_path, cols, threads=2))
                    else:
                        runs[method].append(time_spark(method, spine, feats, cols))
                except Exception as exc:  # a baseline that cannot run is reported, not fatal
                    traceback.print_exc()
                    results[(dist, method)] = f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        for method in methods:
            if (dist, method) not in results:
                results[(dist, method)] = min(runs[method])
            value = results[(dist, method)]
            shown = f"{value:.1f}s (runs: {', '.join(f'{t:.1f}' for t in runs[method])})" \
                if isinstance(value, float) else value
            print(f"  {dist:8s} {method:9s} {shown}", flush=True)
        if args.verify:
            exact = {m: checksum(SPARK_METHODS[m](spine, feats, cols)[0], cols)
                     for m in ("sparkfs", "intervals", "sf-union", "sf-wide", "union")
                     + (("naive",) if isinstance(results.get((dist, "naive")), float) else ())}
            print(f"  {dist:8s} checksums (rows, hash): {exact}; agree: {len(set(exact.values())) == 1}", flush=True)

    print()
    print("| method | " + " | ".join(f"{d} s | {d} / floor" for d in ("uniform", "zipf")) + " |")
    print("|---|" + "---|---|" * 2)
    for method in methods:
        cells = []
        for dist in ("uniform", "zipf"):
            value, base = results.get((dist, method)), results.get((dist, "floor"))
            if isinstance(value, float):
                ratio = f"{value / base:.2f}x" if isinstance(base, float) else "-"
                cells += [f"{value:.1f}", ratio]
            else:
                cells += [str(value or "-"), "-"]
        print(f"| {method} | " + " | ".join(cells) + " |")
    print()

    def ratio(a: tuple[str, str], b: tuple[str, str]) -> float | None:
        x, y = results.get(a), results.get(b)
        return x / y if isinstance(x, float) and isinstance(y, float) and y > 0 else None

    for dist in ("uniform", "zipf"):
        checks = {
            "sparkfs / floor": (ratio((dist, "sparkfs"), (dist, "floor")), "<="),
            "tempo / sparkfs": (ratio((dist, "tempo"), (dist, "sparkfs")), ">="),
            "naive / sparkfs": (ratio((dist, "naive"), (dist, "sparkfs")), ">="),
        }
        for name, (value, op) in checks.items():
            _report(f"{dist}: {name}", value, op, BARS[name])
    _report("zipf / uniform (sparkfs)", ratio(("zipf", "sparkfs"), ("uniform", "sparkfs")), "<=",
            BARS["zipf / uniform (sparkfs)"])
    spark.stop()


def _report(name: str, value: float | None, op: str, bar: float) -> None:
    if value is None or math.isnan(value):
        print(f"  {name}: n/a")
        return
    ok = value <= bar if op == "<=" else value >= bar
    print(f"  {name}: {value:.2f} (bar {op} {bar}) {'PASS' if ok else 'MISS'}")


if __name__ == "__main__":
    main()
