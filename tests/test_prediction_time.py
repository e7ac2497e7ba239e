"""The prediction-time rule: typed in conf/training.yaml, applied in one place (the spine), shared
by training and inference, recorded with the model."""

from __future__ import annotations

import contextlib
import io
import json
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import mlflow
import pytest
from chispa import assert_df_equality
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from synthetic_flights import build_e2e, synthetic_config

from sparkfs.core.config import Settings, load_settings
from sparkfs.core.errors import ConfigError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.examples.flights.delivery import landing_time
from sparkfs.ml.assembly import (
    PREDICTION_TIME_TAG,
    SPEC_ARTIFACT,
    SPINE_ARTIFACT,
    build_features,
    build_spine,
    with_model_rule,
)
from sparkfs.ml.config import PredictionTimeConfig, load_training_config
from sparkfs.pit.api import as_of_join

REPO = Path(__file__).resolve().parents[1]
BATCH = {"mode": "batch", "cutoff": "06:00", "timezone": "UTC"}
DAY = date(2013, 5, 1)

SPINE_SCHEMA = T.StructType([
    T.StructField("flight_id", T.StringType()), T.StructField("flight_date", T.DateType()),
    T.StructField("sched_dep_ts", T.TimestampType()), T.StructField("arr_delay", T.DoubleType()),
])
SPINE_ROWS = [
    ("early", DAY, datetime(2013, 5, 1, 5, 59), 20.0),  # leaves before the batch starts
    ("at_cutoff", DAY, datetime(2013, 5, 1, 6, 0), 20.0),  # leaves as it starts: too late too
    ("after", DAY, datetime(2013, 5, 1, 6, 1), 0.0),
    ("night", DAY, datetime(2013, 5, 2, 3, 30), 0.0),  # 23:30 in New York on May 1: May 1's batch
    ("no_time", DAY, None, None),  # stays in the spine (the PIT join gives it null features)
    ("next_day", date(2013, 5, 2), datetime(2013, 5, 2, 12, 0), 30.0),
]


@pytest.fixture(scope="module")
def spine_table(spark: SparkSession, lake: Lakehouse) -> str:
    lake.create("silver", "ptime_flights", SPINE_SCHEMA)
    spark.createDataFrame(SPINE_ROWS, SPINE_SCHEMA).write.format("delta").mode("overwrite").saveAsTable(
        lake.name("silver", "ptime_flights"))
    return "ptime_flights"


def spine_times(lake: Lakehouse, spine_table: str, rule: dict[str, object], end: date = DAY) -> list[tuple]:
    config = synthetic_config("ptime", prediction_time=rule,
                              spine={"table": spine_table, "date_column": "flight_date"})
    spine_df = build_spine(lake, config, DAY, end, labelled=False)
    assert spine_df.columns == ["flight_id", "sched_dep_ts", "prediction_ts"]
    return sorted((r.flight_id, r.prediction_ts) for r in spine_df.collect())


def test_batch_mode_looks_every_flight_of_the_day_up_at_its_cutoff(lake: Lakehouse, spine_table: str) -> None:
    assert spine_times(lake, spine_table, BATCH, end=date(2013, 5, 2)) == [
        ("after", datetime(2013, 5, 1, 6, 0)),
        ("next_day", datetime(2013, 5, 2, 6, 0)),
        ("night", datetime(2013, 5, 1, 6, 0)),  # by its day (flight_date), not its UTC date
        ("no_time", datetime(2013, 5, 1, 6, 0)),
    ]  # early and at_cutoff had left when the batch started: in no spine


def test_batch_cutoff_in_a_local_time_zone_follows_daylight_saving(lake: Lakehouse, spine_table: str) -> None:
    new_york = {"mode": "batch", "cutoff": "06:00", "timezone": "America/New_York"}
    assert spine_times(lake, spine_table, new_york) == [
        ("night", datetime(2013, 5, 1, 10, 0)),  # 06:00 EDT; the others leave before it
        ("no_time", datetime(2013, 5, 1, 10, 0)),
    ]


def test_lead_mode_looks_each_flight_up_before_its_own_departure(lake: Lakehouse, spine_table: str) -> None:
    assert spine_times(lake, spine_table, {"mode": "lead", "lead": "90m"}) == [
        ("after", datetime(2013, 5, 1, 4, 31)),
        ("at_cutoff", datetime(2013, 5, 1, 4, 30)),
        ("early", datetime(2013, 5, 1, 4, 29)),
        ("night", datetime(2013, 5, 2, 2, 0)),
        ("no_time", None),
    ]
    config = synthetic_config("ptime", spine={"table": spine_table})  # lead 0: the timestamp itself
    assert config.lookup_timestamp == "sched_dep_ts"
    assert build_spine(lake, config, DAY, DAY, labelled=False).columns == ["flight_id", "sched_dep_ts"]


def test_the_daily_batch_sees_the_previous_days_last_weather_hour(spark: SparkSession, settings: Settings) -> None:
    """The repository's weather lookup, as known at the batch cutoff, with the example's landing
    times: D-1's weather lands at D 05:30 UTC, so at D's 06:00 batch the newest hour is 23:00 New
    York on D-1 (04:00 UTC in winter, 03:00 UTC in summer time) and the lookback must reach it."""
    config = load_training_config(settings, REPO / "conf" / "training.yaml")
    weather = next(lk for lk in config.lookups if lk.table == "weather_hourly")
    rule = config.prediction_time
    days = [date(2013, 1, 15), date(2013, 7, 15)]  # winter, summer time
    new_york, utc = ZoneInfo("America/New_York"), ZoneInfo("UTC")
    weather_df = spark.createDataFrame(  # every hour of D-1 and D, known when its day's file lands
        [("JFK", datetime.combine(local, time(h), new_york).astimezone(utc).replace(tzinfo=None),
          landing_time("weather", local).replace(tzinfo=None), float(100 * local.day + h))
         for day in days for local in (day - timedelta(days=1), day) for h in range(24)],
        "origin string, time_hour timestamp, known_at timestamp, temp double")
    spine_df = spark.createDataFrame([("JFK", datetime.combine(day, rule.cutoff)) for day in days],
                                     "origin string, prediction_ts timestamp")

    found = as_of_join(spine_df, weather_df, weather.lookup_key, spine_time="prediction_ts", event_time="time_hour",
                       features=["temp"], lookback=weather.lookback, known_at=weather.known_at)

    assert (rule.mode, rule.timezone) == ("batch", "UTC")
    assert sorted((r.prediction_ts.month, r.temp) for r in found.collect()) == [(1, 1423.0), (7, 1423.0)]  # 14th, 23:00


def test_the_rule_is_typed_and_checked_where_it_is_read(tmp_path: Path) -> None:
    rule = PredictionTimeConfig.model_validate(BATCH)
    assert (rule.cutoff, rule.timezone, rule.describe()) == (time(6, 0), "UTC", "batch at 06:00 UTC")
    assert PredictionTimeConfig.model_validate({"mode": "lead", "lead": "1h"}).lead == timedelta(hours=1)
    round_trip = PredictionTimeConfig.model_validate(rule.model_dump(mode="json"))
    assert round_trip == rule

    bad = {
        "cutoff: 6:00": ("quote it", "prediction_time.cutoff"),  # YAML reads it as 360
        "timezone: Mars/Olympus": ("unknown time zone 'Mars/Olympus'", "prediction_time"),
        "lead: 1h": ("mode 'batch' does not take ['lead']", "prediction_time"),
        "mode: daily": ("'batch' or 'lead'", "prediction_time.mode"),
    }
    repo_conf = (REPO / "conf" / "training.yaml").read_text()
    line = 'prediction_time: {mode: batch, cutoff: "06:00", timezone: UTC}'
    assert line in repo_conf
    for text, (message, key) in bad.items():
        field, value = text.split(": ")
        fields = {"mode": "batch", "cutoff": '"06:00"', "timezone": "UTC", field: value}
        (tmp_path / "training.yaml").write_text(repo_conf.replace(
            line, "prediction_time: {" + ", ".join(f"{k}: {v}" for k, v in fields.items()) + "}"))
        with pytest.raises(ConfigError, match=key) as info:
            load_training_config(load_settings(REPO / "conf"), tmp_path / "training.yaml")
        assert message in str(info.value)
    (tmp_path / "training.yaml").write_text(repo_conf.replace(line, ""))
    with pytest.raises(ConfigError, match="prediction_time"):
        load_training_config(load_settings(REPO / "conf"), tmp_path / "training.yaml")
    assert load_training_config(load_settings(REPO / "conf")).prediction_time == rule


def test_scoring_takes_the_rule_the_model_was_trained_with() -> None:
    config = synthetic_config("ptime")  # mode lead in its conf
    tags = {PREDICTION_TIME_TAG: json.dumps(BATCH)}
    served = with_model_rule(config, tags)
    assert served.prediction_time == PredictionTimeConfig.model_validate(BATCH)
    assert served.lookup_timestamp == "prediction_ts"
    assert with_model_rule(config, {}) is config  # a model from before the rule was recorded


@pytest.mark.e2e
def test_training_in_batch_mode_and_inference_build_identical_features(
    lake: Lakehouse, settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Training with ``mode: batch`` and the inference path, for one day inside the training window,
    give every flight the same feature vector, looked up at that day's cutoff."""
    from sparkfs.jobs.train import train_job
    from sparkfs.ml.score import load_scoring_model
    from sparkfs.ml.skew import compare_features, skew_check
    from sparkfs.pit.api import rebuild_training_set

    ctx = build_e2e(lake, "batch_delay", tmp_path_factory.mktemp("batch_conf"), prefix="batch",
                    prediction_time=BATCH, gate={"min_margin": -1.0, "slice_floor": 0.0})
    with contextlib.redirect_stdout(io.StringIO()):
        train_job(ctx, None)
    config = load_training_config(ctx.settings)
    model = load_scoring_model(ctx.settings, "batch_delay", "champion")
    model_rule = json.loads(model.tags[PREDICTION_TIME_TAG])
    assert model_rule == {**BATCH, "cutoff": "06:00:00", "lead": "0s"}

    day = date(2013, 2, 14)  # inside the training window (2013-01-01..03-31)
    spec = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPEC_ARTIFACT}")
    spine = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPINE_ARTIFACT}")
    assert spine["prediction_time"] == model_rule
    training_spine = build_spine(lake, config, config.start, config.end, labelled=True,
                                 version=spine["version"])
    trained = rebuild_training_set(lake, spec, spine=training_spine).df.where(
        F.to_date("sched_dep_ts") == F.lit(day))
    inference_spine = build_spine(lake, config, day, day, labelled=False)
    served = build_features(lake, config, inference_spine, label=None).df
    keys = ["flight_id", "sched_dep_ts"]
    assert {r.prediction_ts for r in served.select("prediction_ts").distinct().collect()} == {
        datetime(2013, 2, 14, 6, 0)}
    assert served.where(F.col("sched_dep_ts") <= F.col("prediction_ts")).isEmpty()
    report = compare_features(trained, served, keys, [*model.input_columns, "prediction_ts"])
    assert report.identical, report.describe()
    assert report.rows_compared == served.count() >= 15
    assert_df_equality(trained.select(*keys).orderBy(*keys), served.select(*keys).orderBy(*keys))
    # The skew check (what `infer` runs with skew_check on) agrees on its own sample.
    sampled = skew_check(lake, config, model, 100)
    assert sampled.identical and sampled.rows_compared == 100, sampled.describe()
