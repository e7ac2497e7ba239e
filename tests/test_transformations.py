"""DataFrame -> DataFrame transformations: window edges, equal timestamps, None rows."""

from __future__ import annotations

import math
from datetime import datetime, timedelta

import pytest
from chispa import assert_approx_df_equality, assert_df_equality
from pyspark.sql import DataFrame, SparkSession

from sparkfs.errors import SchemaMismatchError
from sparkfs.transformations import with_trailing_aggregates

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
