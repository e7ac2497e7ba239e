"""Column -> Column helpers: each compared row by row with hand-written expected values."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from chispa import assert_column_equality, assert_df_equality
from pyspark.sql import SparkSession

from sparkfs.features.functions import (
    clip,
    day_of_month,
    day_of_week,
    day_of_year,
    hour_of_day,
    is_weekend,
    local_time,
    month,
    safe_ratio,
    seconds_between,
)


def test_safe_ratio_is_null_on_zero_and_null(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(6.0, 3.0, 2.0), (-1.0, 4.0, -0.25), (1.0, 0.0, None), (0.0, 0.0, None),
         (None, 2.0, None), (2.0, None, None)],
        "num double, den double, expected double",
    )
    assert_column_equality(df.withColumn("result", safe_ratio("num", "den")), "result", "expected")


def test_safe_ratio_of_integers_is_a_double(spark: SparkSession) -> None:
    df = spark.createDataFrame([(7, 2, 3.5), (7, 0, None)], "num int, den int, expected double")
    result = df.withColumn("result", safe_ratio(df["num"], df["den"]))
    assert_column_equality(result, "result", "expected")


def test_clip_keeps_nulls_and_inclusive_bounds(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(-5, 0, -5), (0, 0, 0), (5, 5, 5), (10, 10, 10), (11, 10, 11), (None, None, None)],
        "value int, both int, lower_only int",
    )
    result = df.select(
        clip("value", 0, 10).alias("result_both"), "both",
        clip("value", lower=-10).alias("result_lower_only"), "lower_only",
    )
    assert_column_equality(result, "result_both", "both")
    assert_column_equality(result, "result_lower_only", "lower_only")


def test_clip_rejects_crossed_bounds() -> None:
    with pytest.raises(ValueError, match="lower bound 5 is above upper bound 1"):
        clip("value", 5, 1)


def test_seconds_between(spark: SparkSession) -> None:
    t = datetime(2024, 3, 1, 12, 0)
    later = t + timedelta(seconds=90, microseconds=500_000)
    df = spark.createDataFrame(
        [(later, t, 90.5), (t, later, -90.5), (t, t, 0.0), (None, t, None)],
        "end timestamp, start timestamp, expected double",
    )
    assert_column_equality(df.withColumn("result", seconds_between("end", "start")), "result", "expected")


def test_local_time_follows_daylight_saving(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (datetime(2024, 1, 15, 12, 0), datetime(2024, 1, 15, 7, 0)),  # EST, UTC-5
            (datetime(2024, 7, 1, 12, 0), datetime(2024, 7, 1, 8, 0)),  # EDT, UTC-4
            # the spring-forward edge: 06:59:59 UTC is 01:59:59 EST, one second later 03:00 EDT
            (datetime(2024, 3, 10, 6, 59, 59), datetime(2024, 3, 10, 1, 59, 59)),
            (datetime(2024, 3, 10, 7, 0, 0), datetime(2024, 3, 10, 3, 0, 0)),
            (None, None),
        ],
        "ts timestamp, expected timestamp_ntz",
    )
    result = df.withColumn("result", local_time("ts", "America/New_York"))
    assert_column_equality(result, "result", "expected")


def test_local_time_rejects_unknown_zone() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        local_time("ts", "Mars/Olympus")


def test_calendar_parts(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (datetime(2024, 3, 2, 23, 30),),  # Saturday, leap year
            (datetime(2024, 3, 3, 12, 0),),  # Sunday
            (datetime(2024, 3, 4, 0, 0),),  # Monday midnight
            (None,),
        ],
        "ts timestamp",
    )
    result = df.select(
        "ts",
        hour_of_day("ts").alias("hour"),
        day_of_week("ts").alias("dow"),
        is_weekend("ts").alias("weekend"),
        day_of_month("ts").alias("dom"),
        day_of_year("ts").alias("doy"),
        month("ts").alias("month"),
    )
    expected = spark.createDataFrame(
        [
            (datetime(2024, 3, 2, 23, 30), 23, 6, True, 2, 62, 3),
            (datetime(2024, 3, 3, 12, 0), 12, 7, True, 3, 63, 3),
            (datetime(2024, 3, 4, 0, 0), 0, 1, False, 4, 64, 3),
            (None, None, None, None, None, None, None),
        ],
        "ts timestamp, hour int, dow int, weekend boolean, dom int, doy int, month int",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)
