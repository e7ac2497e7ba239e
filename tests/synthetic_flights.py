"""A small synthetic training set shaped like the flights one (spine + features + label).

The label depends mostly on the departure hour and the wind at the origin, only a little on the
carrier, so a model can beat the per-carrier rate baseline; nulls and an unseen carrier are in it.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

from sparkfs.training_config import TrainingConfig

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


def synthetic_config(model_name: str, **overrides: object) -> TrainingConfig:
    base: dict[str, object] = dict(
        model_name=model_name,
        experiment=f"test-{model_name}",
        start=START,
        end=END,
        longest_feature_window="7d",
        features={
            "numeric": ["dep_hour", "wind_speed", "carrier_dep_delay_mean_7d"],
            "categorical": ["carrier", "origin"],
        },
        split={"validation": "18d", "test": "18d", "gap": "7d"},
        xgboost={"params": {"max_depth": 3, "eta": 0.2}, "num_boost_round": 60, "early_stopping_rounds": 10},
        evaluation={"bootstrap": 40, "slice_bootstrap": 10, "seed": 7},
        gate={"metric": "roc_auc", "min_margin": 0.02, "slice_floor": 0.5, "min_slice_rows": 60},
    )
    base.update(overrides)
    return TrainingConfig.model_validate(base)


SPEC = {
    "spine": {"columns": ["flight_id", "sched_dep_ts", "carrier", "origin", "dep_hour", "is_arr_delayed"]},
    "lookups": [
        {"table": "weather_hourly", "version": 4, "features": ["wind_speed"]},
        {"table": "carrier_delay_stats", "version": 2, "features": ["carrier_dep_delay_mean_7d"]},
    ],
}
