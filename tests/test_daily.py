"""The daily job as the scheduler runs it: two consecutive run dates on a tiny synthetic upstream
whose files land when the example's upstream would deliver them."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from sklearn.metrics import roc_auc_score
from synthetic_flights import SPEC
from synthetic_landing import flight, land_day, private_conf, trim_conf

from sparkfs.core.config import Settings, StorageSettings
from sparkfs.core.errors import LeakageError
from sparkfs.core.lakehouse import Lakehouse, checksum
from sparkfs.core.runs import RunWindow
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.daily import daily_job
from sparkfs.ml.assembly import build_features, build_spine
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.labels import roc_auc
from sparkfs.ml.train import train_model
from sparkfs.pit.provenance import audit_feature_times

D1, D2, D3 = date(2013, 1, 1), date(2013, 1, 2), date(2013, 1, 3)
MODEL = "daily_delay"
# The sources (with their silver tables) and gold tables the daily model needs: the spine's
# (flights, their schedules) and its lookups' (carrier_delays from flights, weather_hourly).
DAILY_TABLES = (("schedules", "flights", "weather"), ("carrier_delays", "weather_hourly"))


def outcome(day: date, carrier: str, number: int, sched: int, delay: int, arr_delay: float) -> dict[str, object]:
    return {**flight(day, carrier, number, sched, delay), "arr_delay": arr_delay}


def land_until(landing: Path, run_date: date) -> None:
    """What has landed by ``run_date``'s 06:00 batch: every day's schedule up to the run date,
    outcomes and weather up to the day before (each file stamped with its landing time)."""
    days = {
        D1: ([outcome(D1, "AA", 1, 600, 10, 5.0), outcome(D1, "UA", 3, 2330, 45, 50.0),
              # 23:00 local + 200 min: departs at 07:20 UTC on D2, after D2's 06:00 batch started
              outcome(D1, "UA", 5, 2300, 200, 190.0)], {0: 0.1, 12: 0.1, 23: 0.1}),
        D2: ([outcome(D2, "AA", 1, 600, -5, -10.0), outcome(D2, "UA", 3, 700, 120, 110.0)], {0: 0.0, 12: 0.0}),
        D3: ([outcome(D3, "AA", 1, 600, 0, 0.0), outcome(D3, "UA", 3, 900, 5, 20.0)], {0: 0.0}),
    }
    for day, (flights, hours) in days.items():
        if day <= run_date:
            land_day(landing, day, flights, hours)
            if day == run_date:  # the outcomes of the run date itself have not landed
                for source in ("flights", "weather"):
                    (landing / source / day.isoformat() / f"{source}.json").unlink()


def daily_config() -> dict[str, object]:
    return {
        "model_name": MODEL, "keys": ["carrier", "flight", "origin"], "timestamp": "sched_dep_ts",
        "label": "is_arr_delayed", "start": "2012-07-01", "end": "2012-12-31",
        "features": {"numeric": ["distance", "carrier_dep_delay_mean_1d", "origin_temp"], "categorical": ["carrier"]},
        "split": {"validation": "20d", "test": "20d", "gap": "30d"},
        "xgboost": {"params": {"max_depth": 2}, "num_boost_round": 20, "early_stopping_rounds": 5},
        "baseline": {"column": "carrier"},
        "evaluation": {"bootstrap": 10, "slice_bootstrap": 0, "slices": []},
        "gate": {"min_margin": -1.0, "slice_floor": 0.0},
        "inference": {"table": "flight_delay_predictions", "context_columns": ["flight_date"]},
        "spine": {"layer": "silver", "table": "flights", "serving_table": "schedules", "date_column": "flight_date",
                  "columns": ["distance", "flight_date"], "label": {"column": "arr_delay", "above": 15}},
        "prediction_time": {"mode": "batch", "cutoff": "06:00", "timezone": "UTC"},
        "lookups": [
            {"table": "carrier_delays", "lookup_key": ["carrier"], "features": ["carrier_dep_delay_mean_1d"],
             "lookback": "1d", "known_at": "known_at"},
            {"table": "weather_hourly", "lookup_key": ["origin"], "features": ["temp"], "lookback": "3h",
             "prefix": "origin", "known_at": "known_at"},
        ],
    }


def register_model(spark: SparkSession, settings: Settings, config: TrainingConfig) -> None:
    """A model with the config's signature, trained on random rows of 2012 (only its inputs matter)."""
    rng = np.random.default_rng(5)
    n = 1500
    ts = pd.Timestamp("2012-07-01") + pd.to_timedelta(np.sort(rng.integers(0, 183 * 24 * 60, n)), unit="m")
    frame = pd.DataFrame({
        "carrier": rng.choice(["AA", "UA"], n), "flight": rng.integers(1, 9, n).astype("int32"),
        "origin": "JFK", "sched_dep_ts": ts.to_pydatetime(), "distance": rng.uniform(100, 2000, n),
        "carrier_dep_delay_mean_1d": rng.normal(10, 20, n), "origin_temp": rng.normal(40, 10, n),
    })
    frame["is_arr_delayed"] = (rng.random(n) < 1 / (1 + np.exp(-frame["carrier_dep_delay_mean_1d"] / 10))).astype("int32")
    train_model(spark.createDataFrame(frame), SPEC, config, settings, start=config.start, end=config.end)


@pytest.fixture(scope="module")
def calendar(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobContext]:
    """A private lakehouse, the repo's pipeline without its upstream (this test lands the files)
    and with only the tables the model reads, a training config on the real gold tables, and a
    registered model."""
    root = tmp_path_factory.mktemp("daily")
    conf = private_conf(root / "conf", root / "data" / "landing")
    trim_conf(conf, *DAILY_TABLES)
    (conf / "training.yaml").write_text(yaml.safe_dump(daily_config()))
    schemas = {layer: f"day_{layer}" for layer in ("bronze", "silver", "gold", "ml", "ops")}
    private = settings.model_copy(
        update={"conf_dir": str(conf), "storage": StorageSettings(data_dir=str(root / "data"), schemas=schemas)})
    register_model(spark, private, load_training_config(private))
    yield JobContext(private, spark, Lakehouse(spark, private))


def run_daily(ctx: JobContext, run_date: date) -> str:
    land_until(Path(ctx.settings.data_path) / "landing", run_date)
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        daily_job(ctx, RunWindow(run_date, run_date))
    return printed.getvalue()


def content(lake: Lakehouse) -> dict[str, str]:
    """Every table's content checksum, but the ops layer (run records, validation results)."""
    return {f"{layer}.{t}": checksum(lake.read(layer, t))
            for layer in ("bronze", "silver", "gold", "ml") for t in lake.tables(layer)}


def predictions(lake: Lakehouse) -> list[tuple]:
    rows = lake.read("ml", "flight_delay_predictions").select(
        "flight_date", "carrier", "flight", "prediction_ts", "is_arr_delayed").collect()
    return sorted(tuple(r) for r in rows)


@pytest.mark.e2e
def test_two_daily_runs_predict_as_of_the_cutoff_label_the_next_day_and_rerun_changes_nothing(
    calendar: JobContext,
) -> None:
    lake, config = calendar.lake, load_training_config(calendar.settings)
    cutoff_d2, cutoff_d3 = datetime(2013, 1, 2, 6, 0), datetime(2013, 1, 3, 6, 0)

    printed = run_daily(calendar, D2)  # 06:00 on D2: D1's outcomes and D2's schedule have landed
    assert "daily runs 2013-01-02" in printed and "\n2013-01-02       2 (v1)          0 of 0 " in printed
    assert predictions(lake) == [(D2, "AA", 1, cutoff_d2, None), (D2, "UA", 3, cutoff_d2, None)]
    # Gold holds a UA departure after the cutoff (D1's UA 5 left at 07:20 UTC on D2); the
    # features D2 was scored with are those at 06:00: UA's 1-day mean is UA 3's 45 minutes alone.
    late = lake.read("gold", "carrier_delays").where(F.col("event_ts") > F.lit(cutoff_d2))
    assert [r.event_ts for r in late.collect()] == [datetime(2013, 1, 2, 7, 20)]
    served = build_features(lake, config, build_spine(lake, config, D2, D2, labelled=False), label=None)
    assert {r.carrier: r.carrier_dep_delay_mean_1d for r in served.df.collect()} == {"AA": 10.0, "UA": 45.0}
    assert all(v == 0 for k, v in served.checks.items() if k.endswith("_after_spine"))
    # Each prediction records the feature rows it used; the audit proves they had landed by 06:00.
    # D2's 00:00 local weather hour (05:00 UTC) is before the cutoff but lands with D2's weather on
    # D3: the 04:00 UTC hour (D1's 23:00 local, landed D2 05:30) is the one used.
    stored = lake.read("ml", "flight_delay_predictions")
    audit = audit_feature_times(stored, "feature_times", "prediction_ts")
    assert audit.violations == 0 and audit.counts["weather_hourly"]["used"] == 2
    used = {r.weather for r in stored.select(F.col("feature_times")["weather_hourly"]["event_ts"].alias("weather")).collect()}
    assert used == {datetime(2013, 1, 2, 4, 0)}

    printed = run_daily(calendar, D3)  # D2's outcomes label D2's predictions; D3 is scored at its cutoff
    d2 = lake.read("ml", "flight_delay_predictions").where(F.col("score_date") == D2).toPandas()
    expected_auc = roc_auc_score(d2["is_arr_delayed"], d2["probability"])
    assert f"2013-01-03       2 (v1)          2 of 2         {expected_auc:.3f}" in printed
    assert predictions(lake) == [
        (D2, "AA", 1, cutoff_d2, 0), (D2, "UA", 3, cutoff_d2, 1),
        (D3, "AA", 1, cutoff_d3, None), (D3, "UA", 3, cutoff_d3, None),
    ]
    # Now that D2's weather has landed, D2 looked up by event time alone would use its 05:00 UTC
    # hour, which landed after D2's cutoff: the audit fails.
    by_event_time = config.model_copy(update={"lookups": [lk.model_copy(update={"known_at": None}) for lk in config.lookups]})
    leaky = build_features(lake, by_event_time, build_spine(lake, by_event_time, D2, D2, labelled=False),
                           label=None, feature_times="feature_times")
    leaky_audit = audit_feature_times(leaky.df, "feature_times", "prediction_ts")
    assert leaky_audit.counts["weather_hourly"]["landed_after"] == 2
    with pytest.raises(LeakageError, match=r"weather_hourly.*landed_after"):
        leaky_audit.raise_on_violation("D2")
    before = content(lake)
    records = lake.read("ops", "run_records").where(F.col("job") == "daily").select("run_id").distinct().count()

    run_daily(calendar, D3)  # the scheduler retries the day

    assert content(lake) == before
    assert lake.read("ops", "run_records").where(F.col("job") == "daily").select("run_id").distinct().count() == records + 1


def test_realized_roc_auc_in_spark_equals_sklearn_with_ties(spark: SparkSession) -> None:
    rng = np.random.default_rng(11)
    y = rng.integers(0, 2, 500)
    p = np.round(rng.random(500) * 0.5 + y * 0.2, 2)  # rounded: many tied scores across classes
    df = spark.createDataFrame(pd.DataFrame({"y": y.astype("int32"), "p": p}))
    assert roc_auc(df, "y", "p") == pytest.approx(roc_auc_score(y, p), abs=1e-12)
    assert roc_auc(df.where("y = 1"), "y", "p") is None  # one class: undefined
