"""A small synthetic training set shaped like the flights one (spine + features + label).

The label depends mostly on the departure hour and the wind at the origin, only a little on the
carrier, so a model can beat the per-carrier rate baseline; nulls and an unseen carrier are in it.
:func:`build_e2e` writes it as a small lakehouse (silver flights, two gold feature tables) with a
training config, for the end-to-end train/infer tests and the notebooks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.config import Settings, deep_merge
from sparkfs.core.lakehouse import EVENT_TIME_PROPERTY, KEYS_PROPERTY, Lakehouse
from sparkfs.jobs.context import JobContext
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.train import TrainingResult, train_model
from sparkfs.pit.spec import LookupSpec, SpineSource, TrainingSetSpec

START, END = date(2013, 1, 1), date(2013, 3, 31)
CARRIERS = ["AA", "B6", "DL", "UA"]
ORIGINS = ["EWR", "JFK", "LGA"]

SCHEMA = T.StructType(
    [
        T.StructField("flight_id", T.StringType()),
        T.StructField("sched_dep_ts", T.TimestampType()),
        T.StructField("carrier", T.StringType()),
        T.StructField("origin", T.StringType()),
        T.StructField("dep_hour", T.IntegerType()),
        T.StructField("wind_speed", T.DoubleType()),
        T.StructField("carrier_dep_delay_mean_7d", T.DoubleType()),
        T.StructField("is_arr_delayed", T.IntegerType()),
    ]
)


def synthetic_pandas(rows: int = 2400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    span = (END - START).days + 1
    minutes = np.sort(rng.integers(0, span * 24 * 60, rows))
    ts = [datetime.combine(START, datetime.min.time()) + timedelta(minutes=int(m)) for m in minutes]
    hour = np.array([t.hour for t in ts])
    wind = rng.gamma(2.0, 5.0, rows)
    carrier = rng.choice(CARRIERS, rows)
    carrier_effect = pd.Series(carrier).map({"AA": 0.1, "B6": 0.3, "DL": -0.1, "UA": 0.0}).to_numpy()
    logit = -2.2 + 0.16 * (hour - 5) + 0.09 * wind + carrier_effect + rng.normal(0, 0.5, rows)
    label = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(
        {
            "flight_id": [f"f{i:05d}" for i in range(rows)],
            "sched_dep_ts": ts,
            "carrier": carrier,
            "origin": rng.choice(ORIGINS, rows),
            "dep_hour": hour.astype("int32"),
            "wind_speed": wind,
            "carrier_dep_delay_mean_7d": rng.normal(10, 5, rows),
            "is_arr_delayed": label.astype("int32"),
        }
    )
    frame.loc[frame.index % 37 == 0, "wind_speed"] = np.nan  # missing weather
    frame.loc[frame.index % 101 == 0, "carrier"] = None  # null category
    frame.loc[frame.index % 53 == 0, "is_arr_delayed"] = None  # cancelled: no label
    frame.loc[frame.index[-3:], "carrier"] = "ZZ"  # a carrier never seen in training
    frame["is_arr_delayed"] = frame["is_arr_delayed"].astype("Int32")
    return frame


def _plain(value: object) -> object:
    if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.to_pydatetime()
    return value.item() if isinstance(value, np.generic) else value


def synthetic_df(spark: SparkSession, rows: int = 2400) -> DataFrame:
    records = [tuple(_plain(v) for v in row) for row in synthetic_pandas(rows).itertuples(index=False)]
    return spark.createDataFrame(records, SCHEMA)


SYNTHETIC_MODEL = "delay_synthetic"


@dataclass(frozen=True)
class SyntheticModel:
    """The model trained once per test run on the synthetic flights (``synthetic_model``)."""

    result: TrainingResult
    config: TrainingConfig


def train_synthetic_model(spark: SparkSession, settings: Settings) -> SyntheticModel:
    """Train and register :data:`SYNTHETIC_MODEL` as the train job does, with its monitoring
    reference; version 1, ``@champion``. Tests read it and never register another version of it."""
    from sparkfs.jobs.train import monitoring_reference

    config = synthetic_config(SYNTHETIC_MODEL)
    result = train_model(synthetic_df(spark), SPEC, config, settings, start=START, end=END,
                         on_test_split=monitoring_reference(spark, config))
    return SyntheticModel(result, config)


def synthetic_config(model_name: str, **overrides: object) -> TrainingConfig:
    """A small training config on the synthetic flights; ``overrides`` are merged key by key."""
    base: dict[str, object] = dict(
        model_name=model_name,
        experiment=f"test-{model_name}",
        keys=["flight_id"],
        timestamp="sched_dep_ts",
        label="is_arr_delayed",
        start=START,
        end=END,
        longest_feature_window="7d",
        features={
            "numeric": ["dep_hour", "wind_speed", "carrier_dep_delay_mean_7d"],
            "categorical": ["carrier", "origin"],
        },
        split={"validation": "18d", "test": "18d", "gap": "7d"},
        xgboost={"params": {"max_depth": 3, "eta": 0.2}, "num_boost_round": 60, "early_stopping_rounds": 10},
        baseline={"column": "carrier"},
        evaluation={"bootstrap": 40, "slice_bootstrap": 10, "seed": 7, "slices": ["carrier", "origin"]},
        gate={"metric": "roc_auc", "min_margin": 0.02, "slice_floor": 0.5, "min_slice_rows": 60},
        spine={"layer": "silver", "table": "flights", "label": {"column": "arr_delay", "above": 15}},
        # Features as of the row's own time: the synthetic features are already point-in-time.
        prediction_time={"mode": "lead"},
        inference={"table": "flight_delay_predictions", "context_columns": ["carrier", "origin"]},
    )
    return TrainingConfig.model_validate(deep_merge(base, overrides))


# What the synthetic training set would have been built from (logged as the run's lineage).
SPEC = TrainingSetSpec(
    spine=SpineSource(source="dataframe"),
    label="is_arr_delayed",
    rows=0,
    lookups=[
        LookupSpec(table="weather_hourly", version=4, lookup_key={"origin": "origin"},
                   timestamp_lookup_key="sched_dep_ts", event_time="time_hour", sequence=None,
                   known_at=None, features=["wind_speed"], outputs=["wind_speed"],
                   lookback_us=3 * 3600 * 10**6, prefix=None),
        LookupSpec(table="carrier_delay_stats", version=2, lookup_key={"carrier": "carrier"},
                   timestamp_lookup_key="sched_dep_ts", event_time="day_ts", sequence=None,
                   known_at=None, features=["dep_delay_mean_7d"], outputs=["carrier_dep_delay_mean_7d"],
                   lookback_us=None, prefix="carrier"),
    ],
)


def build_e2e(
    lake: Lakehouse, model_name: str, conf_dir: Path, prefix: str = "e2e", **overrides: object
) -> JobContext:
    """Silver ``<prefix>_flights`` (with ``arr_delay``), gold ``<prefix>_weather`` (hourly, per
    origin, some hours missing) and ``<prefix>_carrier_stats`` (daily, per carrier), and
    ``conf_dir/training.yaml`` training ``model_name`` on them, predicting into
    ``<prefix>_predictions`` (``overrides`` are merged into that config key by key); returns the
    job context with ``conf_dir`` as its config. Tests that
    change these tables pass their own ``prefix``, so no test depends on another's writes."""
    spark = lake.spark
    flights = synthetic_pandas()
    flights["arr_delay"] = flights["is_arr_delayed"].astype("float64") * 40 - 5  # 1 -> 35, 0 -> -5
    delays = flights[["flight_id"]].assign(
        arr_delay=flights["arr_delay"].astype(object).where(flights["arr_delay"].notna(), None))
    silver = synthetic_df(spark).join(spark.createDataFrame(delays), "flight_id").drop(
        "is_arr_delayed", "wind_speed", "carrier_dep_delay_mean_7d")
    lake.create("silver", f"{prefix}_flights", silver.schema)
    silver.write.format("delta").mode("append").saveAsTable(lake.name("silver", f"{prefix}_flights"))

    start = F.lit(datetime(2013, 1, 1)).cast("timestamp")
    hours = spark.range(0, 24 * 90).select(
        (start + F.make_interval(hours=F.col("id").cast("int"))).alias("obs_ts"))
    weather = hours.crossJoin(spark.createDataFrame([(o,) for o in ORIGINS], "origin string")).select(
        "origin", "obs_ts", (F.hash("origin", "obs_ts") % 200 / 10.0).cast("double").alias("wind_speed"),
    ).where(~((F.col("origin") == "LGA") & (F.hour("obs_ts") == 3)))  # missing observations
    lake.create("gold", f"{prefix}_weather", weather.schema,
                properties={KEYS_PROPERTY: "origin", EVENT_TIME_PROPERTY: "obs_ts"},
                comment="hourly wind at each origin airport",
                column_comments={"wind_speed": "wind speed (mph)"})
    weather.write.format("delta").mode("append").saveAsTable(lake.name("gold", f"{prefix}_weather"))

    days = spark.range(0, 90).select((start + F.make_interval(days=F.col("id").cast("int"))).alias("day_ts"))
    stats = days.crossJoin(spark.createDataFrame([(c,) for c in CARRIERS], "carrier string")).select(
        "carrier", "day_ts",
        (F.abs(F.hash("carrier", "day_ts")) % 300 / 10.0).cast("double").alias("dep_delay_mean_7d"),
    )
    lake.create("gold", f"{prefix}_carrier_stats", stats.schema,
                properties={KEYS_PROPERTY: "carrier", EVENT_TIME_PROPERTY: "day_ts"},
                comment="daily departure delay statistics per carrier")
    stats.write.format("delta").mode("append").saveAsTable(lake.name("gold", f"{prefix}_carrier_stats"))

    on_these_tables: dict[str, object] = dict(
        experiment=None,
        spine={"table": f"{prefix}_flights", "columns": ["carrier", "origin", "dep_hour"]},
        lookups=[
            {"table": f"{prefix}_weather", "lookup_key": ["origin"], "features": ["wind_speed"], "lookback": "3h"},
            {"table": f"{prefix}_carrier_stats", "lookup_key": ["carrier"], "features": ["dep_delay_mean_7d"],
             "prefix": "carrier", "lookback": "2d"},
        ],
        inference={"table": f"{prefix}_predictions", "skew_check": False, "skew_sample_rows": 150},
    )
    config = synthetic_config(model_name, **deep_merge(on_these_tables, overrides))
    data = config.model_dump(mode="json", exclude_none=True)
    (conf_dir / "training.yaml").write_text(yaml.safe_dump(data))
    return JobContext(lake.settings.model_copy(update={"conf_dir": str(conf_dir)}), spark, lake)
