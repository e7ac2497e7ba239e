"""One day's drift in Spark vs NannyML's univariate drift on pandas, at 100k and 1M rows.

A reference of 50,000 rows and a day of N rows (10 numeric columns, 3 categorical, a score;
nulls in every column; the day shifted in two columns) are written as Parquet. Measured, in one
process, median of ``--repeat`` runs:

- *scan*: one pass over the day's rows in Spark (count + sum of every column), the unit of the bar;
- *spark drift*: :func:`sparkfs.monitoring.drift.drift` of the day against the profiled
  reference: PSI, KS on the grid of its reference rows (in pandas, as the monitor job holds them),
  Jensen-Shannon, chi-squared, null shares, all counted in one pass over the day, by the JVM
  engine (one aggregate, ``DayCountsAggregate.java``) where the session has it;
- *counted in Python workers*: the same with ``engine="python"`` (``mapInArrow``), the engine
  where the JVM's is not available (Spark Connect, Databricks);
- *nannyml*: ``UnivariateDriftCalculator`` (Kolmogorov-Smirnov + Jensen-Shannon on numeric
  columns, chi-squared + Jensen-Shannon on categorical ones) fitted on the reference and run on
  the day, both read with pandas, one chunk.

Printed: seconds, Python-side peak memory (tracemalloc: pandas and numpy buffers; the Spark
side's memory is the JVM's, bounded by its configured heap and not counted here), and the ratios
spark drift / scan (bar: at most 3x) and nannyml / spark drift.

    python benchmarks/monitoring.py [--rows 100000 1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkfs.core.config import StorageSettings, load_settings
from sparkfs.core.session import get_spark
from sparkfs.monitoring.drift import drift
from sparkfs.monitoring.performance import nannyml
from sparkfs.monitoring.profile import profile_reference

NUMERIC = [f"x{i}" for i in range(10)] + ["score"]
CATEGORICAL = ["c0", "c1", "c2"]
REFERENCE_ROWS = 50_000
BAR = 3.0


def rows(spark: SparkSession, n: int, seed: int, shift: float) -> DataFrame:
    """``n`` rows; ``shift`` moves x0's mean by that many sds and skews c0's categories."""
    base = spark.range(n)
    columns = [
        F.when(F.rand(seed + i) < 0.02, None).otherwise(F.randn(seed + 100 + i) + (shift if i == 0 else 0.0)).alias(f"x{i}")
        for i in range(10)
    ]
    score = F.lit(1.0) / (1 + F.exp(-F.randn(seed + 300))).alias("score")
    categorical = [
        F.when(F.rand(seed + 200 + j) < 0.01, None).otherwise(
            F.concat(F.lit("v"), (F.floor(F.pow(F.rand(seed + 400 + j), 1.0 + (shift if j == 0 else 0.0)) * (5 + 10 * j))).cast("string"))
        ).alias(f"c{j}")
        for j in range(3)
    ]
    return base.select(*columns, score.alias("score"), *categorical)


def timed(fn: Callable[[], Any], repeat: int, *, memory: bool = False) -> tuple[float, float]:
    """Median seconds of ``repeat`` runs, and the Python-side peak MB of the last one."""
    seconds, peak = [], 0.0
    for _ in range(repeat):
        if memory:
            tracemalloc.start()
        start = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - start)
        if memory:
            peak = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    return statistics.median(seconds), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="sparkfs-bench-monitoring-"))
    settings = load_settings()
    quiet = settings.spark.model_copy(update={"conf": {**settings.spark.conf, "spark.ui.showConsoleProgress": "false"}})
    settings = settings.model_copy(update={"storage": StorageSettings(data_dir=str(root / "data")), "spark": quiet})
    spark = get_spark(settings)
    nml = nannyml()
    import pandas as pd

    rows(spark, REFERENCE_ROWS, seed=1, shift=0.0).write.parquet(str(root / "reference"))
    reference = spark.read.parquet(str(root / "reference"))
    profile = profile_reference(reference, numeric=NUMERIC, categorical=CATEGORICAL)
    reference_pdf = pd.read_parquet(root / "reference")  # the monitor job holds its reference rows so (an MLflow artifact)
    print(f"reference: {REFERENCE_ROWS:,} rows, {len(NUMERIC)} numeric + {len(CATEGORICAL)} categorical columns")
    for n in args.rows:
        path = root / f"day_{n}"
        rows(spark, n, seed=2, shift=0.5).write.parquet(str(path))
        day = spark.read.parquet(str(path))
        scan_s, _ = timed(lambda day=day: day.agg(F.count(F.lit(1)), *(F.sum(c) for c in NUMERIC),
                                                   *(F.count(c) for c in CATEGORICAL)).collect(), args.repeat)
        drift_s, drift_mb = timed(lambda day=day: drift(day, profile, reference=reference_pdf), args.repeat, memory=True)
        python_s, _ = timed(lambda day=day: drift(day, profile, reference=reference_pdf, engine="python"), args.repeat)

        def with_nannyml(path: Path = path) -> None:
            reference_pdf = pd.read_parquet(root / "reference")
            day_pdf = pd.read_parquet(path)
            calculator = nml.UnivariateDriftCalculator(
                column_names=[*NUMERIC, *CATEGORICAL], treat_as_categorical=CATEGORICAL, chunk_number=1,
                continuous_methods=["kolmogorov_smirnov", "jensen_shannon"],
                categorical_methods=["chi2", "jensen_shannon"])
            calculator.fit(reference_pdf).calculate(day_pdf)

        try:
            nml_s, nml_mb = timed(with_nannyml, args.repeat, memory=True)
            nml_text = f"nannyml {nml_s:7.2f}s (peak {nml_mb:6.0f} MB); nannyml / spark drift {nml_s / drift_s:4.1f}x"
        except MemoryError:
            nml_text = "nannyml: out of memory"
        ratio = drift_s / scan_s
        print(f"{n:>9,} rows: scan {scan_s:6.2f}s; spark drift {drift_s:6.2f}s (driver peak {drift_mb:4.0f} MB), "
              f"{ratio:4.1f}x a scan ({'within' if ratio <= BAR else 'ABOVE'} the {BAR:g}x bar); counted in Python "
              f"workers {python_s:6.2f}s ({python_s / scan_s:4.1f}x); {nml_text}")
    spark.stop()


if __name__ == "__main__":
    main()
