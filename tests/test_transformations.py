"""DataFrame -> DataFrame transformations: window edges, equal timestamps, None rows."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.errors import SparkRuntimeException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkfs.core.errors import DimensionTooLargeError, DuplicateKeyError, SchemaMismatchError
from sparkfs.features.transformations import (
    broadcast_join,
    clip_outliers,
    impute,
    latest_per_key,
    quantile_bounds,
    with_calendar_features,
    with_lags,
    with_ratios,
    with_time_since_last,
    with_trailing_aggregates,
)

HOUR = timedelta(hours=1)


def _ts(hh: int, mm: int = 0) -> datetime:
    return datetime(2024, 3, 1, hh, mm)


# id, key, event time, value. Key "a" has: an event exactly 1h before 10:00 (09:00, out of the
# 10:00 rows' 1h window), a null value (09:30), two events at the same 10:00 (peers).
EVENTS = [
    (1, "a", _ts(9), 1.0),
    (2, "a", _ts(9, 30), None),
    (3, "a", _ts(10), 2.0),
    (4, "a", _ts(10), 4.0),
    (5, "b", _ts(10), 5.0),
    (6, "a", None, 7.0),
    (7, None, _ts(10), 8.0),
]
EVENTS_SCHEMA = "id int, key string, ts timestamp, value double"


@pytest.fixture(scope="module")
def events_df(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(EVENTS, EVENTS_SCHEMA)


def test_trailing_aggregates_edges_ties_and_nulls(spark: SparkSession, events_df: DataFrame) -> None:
    result = events_df.transform(
        with_trailing_aggregates, ["key"], "ts", "value", {"1h": HOUR, "1d": timedelta(days=1)}
    )
    std_24 = math.sqrt(2.0)  # sample std of {2, 4}
    std_124 = math.sqrt(7.0 / 3.0)  # sample std of {1, 2, 4}
    expected = spark.createDataFrame(
        [
            # 1h window: count, sum, mean, std, min, max; then the same for 1d
            (1, 1, 1.0, 1.0, None, 1.0, 1.0, 1, 1.0, 1.0, None, 1.0, 1.0),
            (2, 1, 1.0, 1.0, None, 1.0, 1.0, 1, 1.0, 1.0, None, 1.0, 1.0),
            # 09:00 is exactly 1h before: out of 1h, in 1d; the peer at 10:00 is in
            (3, 2, 6.0, 3.0, std_24, 2.0, 4.0, 3, 7.0, 7.0 / 3, std_124, 1.0, 4.0),
            (4, 2, 6.0, 3.0, std_24, 2.0, 4.0, 3, 7.0, 7.0 / 3, std_124, 1.0, 4.0),
            (5, 1, 5.0, 5.0, None, 5.0, 5.0, 1, 5.0, 5.0, None, 5.0, 5.0),
            (6, None, None, None, None, None, None, None, None, None, None, None, None),
            (7, None, None, None, None, None, None, None, None, None, None, None, None),
        ],
        "id int, "
        + ", ".join(
            f"value_count_{w} long, value_sum_{w} double, value_mean_{w} double, "
            f"value_std_{w} double, value_min_{w} double, value_max_{w} double"
            for w in ("1h", "1d")
        ),
    )
    assert_approx_df_equality(
        result.drop("key", "ts", "value"),
        expected,
        precision=1e-9,
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_trailing_aggregates_closed_neither_excludes_events_at_t(
    spark: SparkSession, events_df: DataFrame
) -> None:
    result = events_df.transform(
        with_trailing_aggregates, ["key"], "ts", "value", {"1h": HOUR},
        aggs=["count", "sum"], prefix="prior", closed="neither",
    )
    expected = spark.createDataFrame(
        [
            (1, 0, None),  # nothing before the first event
            (2, 1, 1.0),  # 09:00 is strictly before 09:30
            (3, 0, None),  # (09:00, 10:00): only the null value at 09:30, not the peer at 10:00
            (4, 0, None),
            (5, 0, None),
            (6, None, None),
            (7, None, None),
        ],
        "id int, prior_count_1h long, prior_sum_1h double",
    )
    assert_df_equality(
        result.select("id", "prior_count_1h", "prior_sum_1h"),
        expected,
        ignore_nullable=True,
        ignore_row_order=True,
    )


def test_trailing_aggregates_edge_is_exact_to_the_microsecond(spark: SparkSession) -> None:
    t = _ts(12)
    df = spark.createDataFrame(
        [
            (1, "k", t - HOUR, 1),  # exactly w before t: out
            (2, "k", t - HOUR + timedelta(microseconds=1), 10),  # 1 us inside: in
            (3, "k", t, 100),
        ],
        "id int, key string, ts timestamp, value int",
    )
    result = df.transform(with_trailing_aggregates, ["key"], "ts", "value", {"1h": HOUR}, aggs=["sum"])
    expected = spark.createDataFrame(
        [(1, 1), (2, 11), (3, 110)], "id int, value_sum_1h long"
    )
    assert_df_equality(
        result.select("id", "value_sum_1h"), expected, ignore_nullable=True, ignore_row_order=True
    )


def test_trailing_aggregates_stay_exact_after_a_large_history(spark: SparkSession) -> None:
    t = _ts(12)
    df = spark.createDataFrame(
        [(1, "k", t - timedelta(days=2), 1e12), (2, "k", t - timedelta(days=1), 3e12),
         (3, "k", t - timedelta(minutes=5), 5.0), (4, "k", t, 5.0)],
        EVENTS_SCHEMA,
    )
    result = df.transform(with_trailing_aggregates, ["key"], "ts", "value", {"1h": HOUR})
    expected = spark.createDataFrame(
        [(3, 1, 5.0, 5.0, None, 5.0, 5.0), (4, 2, 10.0, 5.0, 0.0, 5.0, 5.0)],
        "id int, value_count_1h long, value_sum_1h double, value_mean_1h double, "
        "value_std_1h double, value_min_1h double, value_max_1h double",
    )
    assert_df_equality(
        result.where("id >= 3").drop("key", "ts", "value"), expected,
        ignore_nullable=True, ignore_row_order=True,
    )


def test_trailing_aggregates_share_one_shuffle(events_df: DataFrame) -> None:
    result = events_df.transform(
        with_trailing_aggregates, ["key"], "ts", "value",
        {"1h": HOUR, "1d": timedelta(days=1), "7d": timedelta(days=7)},
    )
    plan = result._jdf.queryExecution().executedPlan().toString()
    assert plan.count("Exchange hashpartitioning") == 1, plan
    assert plan.count("Sort [") == 1, plan


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"event_time": "value"}, SchemaMismatchError, "must be of type timestamp; found double"),
        ({"value_col": "missing"}, SchemaMismatchError, "missing columns \\['missing'\\]"),
        ({"aggs": ["median"]}, ValueError, "unknown aggregates \\['median'\\]"),
        ({"keys": []}, ValueError, "at least one entity key"),
        ({"windows": {"0s": timedelta(0)}}, ValueError, "window '0s' must be a timedelta"),
        ({"prefix": "id", "aggs": ["count"], "windows": {"x": HOUR}}, None, None),
    ],
)
def test_trailing_aggregates_rejects_bad_input(
    events_df: DataFrame, kwargs: dict, error: type[Exception] | None, message: str | None
) -> None:
    args = {"keys": ["key"], "event_time": "ts", "value_col": "value", "windows": {"1h": HOUR}}
    args |= kwargs
    if error is None:  # a valid call that only names a new column
        assert "id_count_x" in with_trailing_aggregates(events_df, **args).columns
        return
    with pytest.raises(error, match=message):
        with_trailing_aggregates(events_df, **args)


def test_trailing_aggregates_refuses_to_overwrite_columns(events_df: DataFrame) -> None:
    df = events_df.withColumnRenamed("id", "value_sum_1h")
    with pytest.raises(SchemaMismatchError, match="overwrite existing columns \\['value_sum_1h'\\]"):
        with_trailing_aggregates(df, ["key"], "ts", "value", {"1h": HOUR}, aggs=["sum"])


# --- lags and time since last -------------------------------------------------------------------


def test_lags_follow_event_order_with_tiebreak(spark: SparkSession, events_df: DataFrame) -> None:
    result = events_df.transform(with_lags, ["key"], "ts", ["value"], [1, 2], tiebreak="id")
    expected = spark.createDataFrame(
        [
            (1, None, None),
            (2, 1.0, None),
            (3, None, 1.0),  # the previous event (09:30) has a null value: the lag is null
            (4, 2.0, None),  # same 10:00 as id 3, ranked after it by the tiebreak
            (5, None, None),
            (6, None, None),  # null event time: no lags, and nobody's previous event
            (7, None, None),  # null key
        ],
        "id int, value_lag_1 double, value_lag_2 double",
    )
    assert_df_equality(
        result.select("id", "value_lag_1", "value_lag_2"), expected,
        ignore_nullable=True, ignore_row_order=True,
    )


def test_lags_fail_on_equal_timestamps_without_tiebreak(events_df: DataFrame) -> None:
    result = events_df.transform(with_lags, ["key"], "ts", ["value"])
    with pytest.raises(SparkRuntimeException, match="DuplicateKeyError: with_lags: two rows tie on \\(key=a, ts=2024-03-01 10:00:00\\)"):
        result.collect()


def test_lags_reject_bad_lag(events_df: DataFrame) -> None:
    with pytest.raises(ValueError, match="lags must be positive integers; got \\[0\\]"):
        with_lags(events_df, ["key"], "ts", ["value"], [0])


def test_time_since_last_is_strictly_earlier(spark: SparkSession, events_df: DataFrame) -> None:
    result = events_df.transform(with_time_since_last, ["key"], "ts", "key_seconds_since_last")
    expected = spark.createDataFrame(
        [(1, None), (2, 1800.0), (3, 1800.0), (4, 1800.0), (5, None), (6, None), (7, None)],
        "id int, key_seconds_since_last double",
    )
    assert_df_equality(
        result.select("id", "key_seconds_since_last"), expected,
        ignore_nullable=True, ignore_row_order=True,
    )


def test_ratios(spark: SparkSession) -> None:
    df = spark.createDataFrame([(1, 3, 2), (2, 1, 0), (3, None, 4)], "id int, late int, flights int")
    result = df.transform(with_ratios, {"late_share": ("late", "flights")})
    expected = spark.createDataFrame(
        [(1, 3, 2, 1.5), (2, 1, 0, None), (3, None, 4, None)],
        "id int, late int, flights int, late_share double",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


# --- calendar -----------------------------------------------------------------------------------


def test_calendar_features_in_a_time_zone(spark: SparkSession) -> None:
    # 03:30 UTC on Saturday 2 March is 22:30 on Friday 1 March in New York
    df = spark.createDataFrame([(1, datetime(2024, 3, 2, 3, 30)), (2, None)], "id int, dep_ts timestamp")
    local = df.transform(with_calendar_features, "dep_ts", tz="America/New_York", prefix="dep")
    utc = df.transform(with_calendar_features, "dep_ts", ["hour", "is_weekend"])
    expected_local = spark.createDataFrame(
        [(1, 22, 5, False, 3), (2, None, None, None, None)],
        "id int, dep_hour int, dep_day_of_week int, dep_is_weekend boolean, dep_month int",
    )
    expected_utc = spark.createDataFrame(
        [(1, 3, True), (2, None, None)], "id int, dep_ts_hour int, dep_ts_is_weekend boolean"
    )
    assert_df_equality(local.drop("dep_ts"), expected_local, ignore_nullable=True, ignore_row_order=True)
    assert_df_equality(utc.drop("dep_ts"), expected_utc, ignore_nullable=True, ignore_row_order=True)


def test_calendar_features_of_a_date(spark: SparkSession) -> None:
    df = spark.createDataFrame([(date(2024, 12, 31),), (None,)], "day date")
    result = df.transform(with_calendar_features, "day", ["day_of_year", "day_of_week"])
    expected = spark.createDataFrame(
        [(date(2024, 12, 31), 366, 2), (None, None, None)],
        "day date, day_day_of_year int, day_day_of_week int",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)
    with pytest.raises(SchemaMismatchError, match="'day' is a date, it has no 'hour'"):
        with_calendar_features(df, "day", ["hour"])
    with pytest.raises(SchemaMismatchError, match="no time zone to convert from"):
        with_calendar_features(df, "day", ["month"], tz="UTC")


# --- imputation and outliers --------------------------------------------------------------------


def test_impute_fills_null_and_nan_and_keeps_types(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(1, 1.5, 3, "x", 9.0), (2, None, None, None, 8.0), (3, float("nan"), 4, "y", 7.0)],
        "id int, delay double, seats int, tailnum string, fallback double",
    )
    result = df.transform(
        impute, {"delay": F.col("fallback"), "seats": -1, "tailnum": "UNKNOWN"}, indicators=True
    )
    expected = spark.createDataFrame(
        [
            (1, 1.5, 3, "x", 9.0, False, False, False),
            (2, 8.0, -1, "UNKNOWN", 8.0, True, True, True),
            (3, 7.0, 4, "y", 7.0, True, False, False),
        ],
        "id int, delay double, seats int, tailnum string, fallback double, "
        "delay_is_missing boolean, seats_is_missing boolean, tailnum_is_missing boolean",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"seats": 1.5}, "column 'seats' is int; the fill value 1.5 \\(float\\) does not fit it"),
        ({"tailnum": 0}, "column 'tailnum' is string; the fill value 0 \\(int\\) does not fit it"),
        ({"seats": True}, "column 'seats' is int; the fill value True \\(bool\\)"),
    ],
)
def test_impute_rejects_values_of_the_wrong_type(spark: SparkSession, values: dict, message: str) -> None:
    df = spark.createDataFrame([(None, None)], "seats int, tailnum string")
    with pytest.raises(SchemaMismatchError, match=message):
        impute(df, values)


def test_quantile_bounds_then_clip(spark: SparkSession) -> None:
    df = spark.createDataFrame([(v,) for v in range(1, 101)] + [(None,)], "v int")
    bounds = quantile_bounds(df, ["v"], 0.05, 0.95, relative_error=0.0)
    assert bounds == {"v": (5.0, 95.0)}
    clipped = df.transform(clip_outliers, bounds)
    edges = clipped.where(F.col("v").isNull() | (F.col("v") < 7) | (F.col("v") > 93))
    # 1..5 -> 5, 6 and 94 stay, 95..100 -> 95, None stays
    expected = spark.createDataFrame([(5,)] * 5 + [(6,), (94,)] + [(95,)] * 6 + [(None,)], "v int")
    assert_df_equality(edges, expected, ignore_nullable=True, ignore_row_order=True)
    assert clipped.count() == 101


def test_clip_outliers_rounds_bounds_inward_for_integers(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [(-100, -100.0), (3, 3.0), (1000, 1000.0), (None, None)], "n long, x double"
    )
    result = df.transform(clip_outliers, {"n": (-2.5, 9.5), "x": (-2.5, None)})
    expected = spark.createDataFrame(
        [(-2, -2.5), (3, 3.0), (9, 1000.0), (None, None)], "n long, x double"
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


def test_quantile_bounds_of_an_all_null_column(spark: SparkSession) -> None:
    df = spark.createDataFrame([(None,), (None,)], "v double")
    with pytest.raises(ValueError, match="columns \\['v'\\] have no non-null values"):
        quantile_bounds(df, ["v"])


# --- latest per key -----------------------------------------------------------------------------

T1, T2 = datetime(2024, 3, 1, 9), datetime(2024, 3, 1, 10)
UPDATES_SCHEMA = "id int, key string, updated_at timestamp, seq int"


def test_latest_per_key(spark: SparkSession) -> None:
    df = spark.createDataFrame(
        [
            (1, "a", T1, 1),
            (2, "a", T2, 1),
            (3, "a", T2, 2),  # ties with 2 on updated_at; the tiebreak picks it
            (4, "b", None, 9),  # a null order value ranks lowest
            (5, "b", T1, 1),
            (6, None, T1, 1),  # null keys are one group
            (7, None, T2, 1),
            (8, "c", None, None),  # the only row of its key wins even with nulls
        ],
        UPDATES_SCHEMA,
    )
    result = df.transform(latest_per_key, ["key"], "updated_at", tiebreak="seq")
    expected = spark.createDataFrame(
        [(3, "a", T2, 2), (5, "b", T1, 1), (7, None, T2, 1), (8, "c", None, None)], UPDATES_SCHEMA
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


def test_latest_per_key_fails_only_when_the_winner_ties(spark: SparkSession) -> None:
    older_tie = spark.createDataFrame(
        [(1, "a", T1, 0), (2, "a", T1, 0), (3, "a", T2, 0)], UPDATES_SCHEMA
    )
    result = older_tie.transform(latest_per_key, ["key"], "updated_at")
    assert_df_equality(
        result, spark.createDataFrame([(3, "a", T2, 0)], UPDATES_SCHEMA), ignore_nullable=True
    )
    winner_tie = spark.createDataFrame([(1, "a", T2, 0), (2, "a", T2, 0)], UPDATES_SCHEMA)
    with pytest.raises(
        SparkRuntimeException,
        match="DuplicateKeyError: latest_per_key: two rows tie on \\(key=a, updated_at=2024-03-01 10:00:00\\)",
    ):
        winner_tie.transform(latest_per_key, ["key"], "updated_at").collect()
    with pytest.raises(SparkRuntimeException, match="the tiebreak column does not tell them apart"):
        winner_tie.transform(latest_per_key, ["key"], "updated_at", tiebreak="seq").collect()


# --- broadcast join -----------------------------------------------------------------------------


@pytest.fixture()
def no_auto_broadcast(spark: SparkSession) -> Iterator[None]:
    """Turn Spark's automatic broadcast off, so a broadcast in the plan is ours."""
    key = "spark.sql.autoBroadcastJoinThreshold"
    before = spark.conf.get(key)
    spark.conf.set(key, "-1")
    yield
    spark.conf.set(key, before)


@pytest.fixture(scope="module")
def airports_df(spark: SparkSession) -> DataFrame:
    return spark.createDataFrame(
        [("JFK", "New York"), ("EWR", "Newark"), (None, "nowhere")], "origin string, city string"
    )


def test_broadcast_join_left_keeps_every_row(
    spark: SparkSession, airports_df: DataFrame, no_auto_broadcast: None
) -> None:
    flights_df = spark.createDataFrame(
        [(1, "JFK"), (2, "EWR"), (3, "LGA"), (4, None), (5, "JFK")], "id int, origin string"
    )
    result = flights_df.transform(broadcast_join, airports_df, ["origin"])
    assert "BroadcastHashJoin" in result._jdf.queryExecution().executedPlan().toString()
    expected = spark.createDataFrame(
        [("JFK", 1, "New York"), ("EWR", 2, "Newark"), ("LGA", 3, None), (None, 4, None),
         ("JFK", 5, "New York")],
        "origin string, id int, city string",
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


def test_broadcast_join_refuses_large_or_duplicated_dimensions(
    spark: SparkSession, airports_df: DataFrame
) -> None:
    flights_df = spark.createDataFrame([(1, "JFK")], "id int, origin string")
    with pytest.raises(DimensionTooLargeError, match="more than 2 rows, the broadcast limit"):
        broadcast_join(flights_df, airports_df, ["origin"], max_rows=2)
    twice_df = airports_df.unionByName(airports_df)
    with pytest.raises(DuplicateKeyError, match="examples: \\[{'origin': '(JFK|EWR)', 'rows': 2}"):
        broadcast_join(flights_df, twice_df, ["origin"])
    with pytest.raises(SchemaMismatchError, match="columns \\['id'\\] are on both sides"):
        broadcast_join(flights_df, airports_df.withColumn("id", F.lit(0)), ["origin"])
    with pytest.raises(ValueError, match="how must be 'left'"):
        broadcast_join(flights_df, airports_df, ["origin"], how="right")  # type: ignore[arg-type]
