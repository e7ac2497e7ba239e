"""The one latest-per-key rule (core.rows.latest_rows) and its options."""

from __future__ import annotations

from datetime import datetime

import pytest
from chispa import assert_df_equality
from pyspark.errors import SparkRuntimeException
from pyspark.sql import SparkSession

from sparkfs.core.errors import SchemaMismatchError
from sparkfs.core.rows import latest_rows

T1, T2 = datetime(2024, 3, 1, 9), datetime(2024, 3, 1, 10)
SCHEMA = "id int, key string, ts timestamp"
ROWS = [
    (1, "a", T1),
    (2, "a", T2),
    (3, "a", T2),  # ties with 2 for the latest of "a"
    (4, "b", None),  # a null order value ranks lowest
    (5, "b", T1),
    (6, None, T1),  # null keys
    (7, None, T2),
    (8, "c", None),  # the only row of its key, with a null order value
]


def test_keep_ties_keeps_every_tied_winner_and_groups_null_keys(spark: SparkSession) -> None:
    df = spark.createDataFrame(ROWS, SCHEMA)
    result = latest_rows(df, ["key"], ["ts"], ties="keep")
    expected = spark.createDataFrame([(2, "a", T2), (3, "a", T2), (5, "b", T1), (7, None, T2), (8, "c", None)], SCHEMA)
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


def test_null_keys_keep_leaves_rows_without_a_key_alone(spark: SparkSession) -> None:
    df = spark.createDataFrame(ROWS, SCHEMA)
    result = latest_rows(df, ["key"], ["ts"], ties="keep", null_keys="keep")
    expected = spark.createDataFrame(
        [(2, "a", T2), (3, "a", T2), (5, "b", T1), (6, None, T1), (7, None, T2), (8, "c", None)], SCHEMA
    )
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)


def test_fail_on_ties_picks_one_row_and_fails_only_when_the_winner_ties(spark: SparkSession) -> None:
    df = spark.createDataFrame(ROWS, SCHEMA)
    no_winner_tie = df.where("id != 3")
    result = latest_rows(no_winner_tie, ["key"], ["ts"], ties="fail")
    expected = spark.createDataFrame([(2, "a", T2), (5, "b", T1), (7, None, T2), (8, "c", None)], SCHEMA)
    assert_df_equality(result, expected, ignore_nullable=True, ignore_row_order=True)
    by_id = latest_rows(df, ["key"], ["ts", "id"], ties="fail")  # a second column breaks the tie
    assert sorted(r["id"] for r in by_id.collect()) == [3, 5, 7, 8]
    with pytest.raises(SparkRuntimeException, match=r"DuplicateKeyError: t: two rows tie on \(key=a, ts=2024-03-01 10:00:00\); say which"):
        latest_rows(df, ["key"], ["ts"], ties="fail", what="t", tie_hint="say which").collect()


def test_bad_options_and_reserved_column_are_errors(spark: SparkSession) -> None:
    df = spark.createDataFrame(ROWS, SCHEMA)
    with pytest.raises(ValueError, match="ties must be 'fail' or 'keep'.*got ties='first'"):
        latest_rows(df, ["key"], ["ts"], ties="first")  # type: ignore[arg-type]
    with pytest.raises(SchemaMismatchError, match="'_sparkfs_is_latest' is reserved"):
        latest_rows(df.withColumnRenamed("id", "_sparkfs_is_latest"), ["key"], ["ts"], ties="keep")
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['seq'\]"):
        latest_rows(df, ["key"], ["seq"], ties="keep")
