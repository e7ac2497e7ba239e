"""Silver: typing, latest delivery, GE validation, quarantine with reasons, STRICT policy, reruns."""

from __future__ import annotations

import base64
import json
import os
from datetime import date, datetime
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from synthetic_landing import repo_flights

from sparkfs.core.errors import ConfigError, SparkfsError, ValidationFailedError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.bronze import SourceSpec, ingest
from sparkfs.features.expectations import (
    Engine,
    ExpectationSpec,
    check_agreement,
    load_suites,
    run_suite,
    validate,
)
from sparkfs.features.silver import (
    SilverSpec,
    ValidationPolicy,
    latest_delivery,
    refine,
    typed,
    with_failures,
)
from sparkfs.features.volume import VolumeCheck, day_volumes

D1 = date(2013, 1, 1)
REPO = Path(__file__).resolve().parents[1]

SUITE = [
    ExpectationSpec(type="expect_table_row_count_to_be_between", kwargs={"min_value": 1}),
    ExpectationSpec(type="expect_column_values_to_not_be_null", kwargs={"column": "id"}),
    ExpectationSpec(type="expect_column_values_to_be_between", kwargs={"column": "value", "min_value": 0, "max_value": 100}),
    ExpectationSpec(type="expect_column_values_to_be_in_set", kwargs={"column": "carrier", "value_set": ["AA", "UA"]}),
    ExpectationSpec(type="expect_column_values_to_be_unique", kwargs={"column": "id"}),
]
NOT_NULL = "expect_column_values_to_not_be_null(id)"
BETWEEN = "expect_column_values_to_be_between(value)"
IN_SET = "expect_column_values_to_be_in_set(carrier)"
UNIQUE = "expect_column_values_to_be_unique(id)"

BAD_BATCH = [
    {"id": 1, "carrier": "AA", "value": 5},
    {"id": 2, "carrier": "UA", "value": 500},  # impossible value
    {"id": None, "carrier": "AA", "value": 1},  # null key
    {"id": 4, "carrier": "AA", "value": 1},  # duplicate key in one delivery ...
    {"id": 4, "carrier": "UA", "value": 2},  # ... both are rejected
    {"id": 6, "carrier": "AA", "value": "abc"},  # does not parse
    {"id": 7, "carrier": None, "value": None},  # nulls where allowed: good
    {"id": 8, "carrier": "XX", "value": 3},  # not an allowed value
]


def land(landing: Path, source: str, rows: list[dict[str, object]], name: str = "part.json") -> None:
    folder = landing / source / D1.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("".join(json.dumps(r) + "\n" for r in rows))


def silver_spec(name: str) -> SilverSpec:
    return SilverSpec.model_validate(
        {
            "name": name,
            "source": f"{name}_raw",
            "description": "test table",
            "schema": {"id": "int", "carrier": "string", "value": "double"},
            "keys": ["id"],
            "expectations": "test",
        }
    )


def bronze_with(lake: Lakehouse, landing: Path, name: str, rows: list[dict[str, object]]) -> SilverSpec:
    land(landing, f"{name}_raw", rows)
    source = SourceSpec(name=f"{name}_raw", description="test", required_columns=["id"])
    ingest(lake, source, landing, [D1], run_id="bronze-run")
    return silver_spec(name)


def reasons_df(lake: Lakehouse, rows: list[tuple[int | None, list[str]]]) -> DataFrame:
    return lake.spark.createDataFrame(rows, "id int, _failed_expectations array<string>")


@pytest.mark.slow
def test_bad_rows_go_to_quarantine_with_reasons_and_good_rows_publish(lake: Lakehouse, tmp_path: Path) -> None:
    spec = bronze_with(lake, tmp_path, "sv_warn", BAD_BATCH)
    policy = ValidationPolicy(policy="warn", max_reject_ratio=0.0)

    result = refine(lake, spec, SUITE, policy, [D1], run_id="run-1")

    assert (result.rows_in, result.rows_rejected, result.rows_out) == (8, 6, 2)
    assert result.rejects_by_expectation == {NOT_NULL: 1, BETWEEN: 1, IN_SET: 1, UNIQUE: 2, "parse(value)": 1}
    published = lake.read("silver", "sv_warn").select("id", "carrier", "value").orderBy("id")
    expected = lake.spark.createDataFrame([(1, "AA", 5.0), (7, None, None)], "id int, carrier string, value double")
    assert_df_equality(published, expected, ignore_nullable=True, ignore_metadata=True)

    quarantine = lake.read("silver", "sv_warn_quarantine")
    actual = quarantine.select("id", "_failed_expectations").orderBy("id", F.col("_failed_expectations").cast("string"))
    expected_reasons = reasons_df(
        lake,
        [(None, [NOT_NULL]), (2, [BETWEEN]), (4, [UNIQUE]), (4, [UNIQUE]), (6, ["parse(value)"]), (8, [IN_SET])],
    )
    assert_df_equality(actual, expected_reasons, ignore_nullable=True, ignore_metadata=True)
    assert {r[0] for r in quarantine.select("_run_id").collect()} == {"run-1"}
    raw = quarantine.where(F.col("id") == 6).select("_raw").first()
    assert raw is not None and json.loads(raw[0])["value"] == "abc"

    saved = lake.read("ops", "validation_results").where(F.col("table_name").contains("sv_warn"))
    row = saved.select("success", "rows_evaluated", "rows_rejected", "failed_expectations", "result").first()
    assert row is not None
    assert (row["success"], row["rows_evaluated"], row["rows_rejected"]) == (False, 8, 6)
    assert json.loads(row["failed_expectations"]) == {NOT_NULL: 1, BETWEEN: 1, IN_SET: 1, UNIQUE: 2}
    assert json.loads(row["result"])["success"] is False


@pytest.mark.slow
def test_rerun_changes_neither_silver_nor_quarantine(lake: Lakehouse, tmp_path: Path) -> None:
    spec = bronze_with(lake, tmp_path, "sv_rerun", BAD_BATCH)
    policy = ValidationPolicy(policy="warn", max_reject_ratio=0.0)
    refine(lake, spec, SUITE, policy, [D1], run_id="run-1")
    versions = lake.version("silver", "sv_rerun"), lake.version("silver", "sv_rerun_quarantine")

    # Nothing changed since (bronze, declarations, day): the refine is skipped, no commit at all.
    same = refine(lake, spec, SUITE, policy, [D1], run_id="run-2")
    assert same.skipped and same.merge is None
    assert (lake.version("silver", "sv_rerun"), lake.version("silver", "sv_rerun_quarantine")) == versions
    # Another policy: refined again, to the same rows.
    again = refine(lake, spec, SUITE, policy.model_copy(update={"max_reject_ratio": 0.9}), [D1], run_id="run-3")

    assert not again.skipped and again.merge is not None and again.quarantine is not None
    assert (again.merge.rows_inserted, again.merge.rows_updated) == (0, 0)
    assert (again.quarantine.rows_inserted, again.quarantine.rows_updated) == (0, 0)
    run_ids = {r[0] for r in lake.read("silver", "sv_rerun_quarantine").select("_run_id").collect()}
    assert run_ids == {"run-1"}


@pytest.mark.slow
def test_strict_policy_fails_above_the_threshold_after_quarantining(lake: Lakehouse, tmp_path: Path) -> None:
    spec = bronze_with(lake, tmp_path, "sv_strict", BAD_BATCH)
    policy = ValidationPolicy(policy="strict", max_reject_ratio=0.5)

    with pytest.raises(ValidationFailedError) as failure:
        refine(lake, spec, SUITE, policy, [D1], run_id="run-1")

    message = str(failure.value)
    assert "6 of 8 rows rejected (75.00%), above the limit max_reject_ratio=50.00%" in message
    assert f"{UNIQUE}: 2" in message and f"{NOT_NULL}: 1" in message
    assert lake.read("silver", "sv_strict_quarantine").count() == 6
    assert not lake.exists("silver", "sv_strict")  # nothing published: the first batch never created it


@pytest.mark.slow
def test_strict_policy_below_the_threshold_publishes(lake: Lakehouse, tmp_path: Path) -> None:
    rows = [{"id": i, "carrier": "AA", "value": i} for i in range(1, 20)] + [{"id": None, "carrier": "AA", "value": 1}]
    spec = bronze_with(lake, tmp_path, "sv_strict_ok", rows)

    result = refine(lake, spec, SUITE, ValidationPolicy(policy="strict", max_reject_ratio=0.05), [D1], "run-1")

    assert (result.rows_rejected, result.rows_out) == (1, 19)


def test_latest_delivery_supersedes_and_keeps_same_delivery_duplicates(lake: Lakehouse) -> None:
    t1, t2 = datetime(2013, 1, 2, 6), datetime(2013, 1, 3, 6)
    df = lake.spark.createDataFrame(
        [(1, 1.0, t1), (1, 2.0, t2), (2, 5.0, t1), (2, 6.0, t1), (None, 7.0, t1), (None, 8.0, t2)],
        "id int, value double, _ingested_at timestamp",
    )
    actual = latest_delivery(df, ["id"]).orderBy("id", "value")
    expected = lake.spark.createDataFrame(
        [(None, 7.0, t1), (None, 8.0, t2), (1, 2.0, t2), (2, 5.0, t1), (2, 6.0, t1)],
        "id int, value double, _ingested_at timestamp",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)


@pytest.mark.slow
def test_a_corrected_delivery_updates_silver(lake: Lakehouse, tmp_path: Path) -> None:
    spec = bronze_with(lake, tmp_path, "sv_fix", [{"id": 1, "carrier": "AA", "value": 5}])
    policy = ValidationPolicy(policy="strict", max_reject_ratio=0.0)
    refine(lake, spec, SUITE, policy, [D1], "run-1")
    land(tmp_path, "sv_fix_raw", [{"id": 1, "carrier": "AA", "value": 6}], name="correction.json")
    ingest(lake, SourceSpec(name="sv_fix_raw", description="t", required_columns=["id"]), tmp_path, [D1], "run-2")

    result = refine(lake, spec, SUITE, policy, [D1], "run-2")

    assert (result.rows_superseded, result.merge.rows_updated if result.merge else None) == (1, 1)
    assert [tuple(r) for r in lake.read("silver", "sv_fix").select("id", "value").collect()] == [(1, 6.0)]


def test_typed_flags_values_that_do_not_parse(lake: Lakehouse) -> None:
    raw = lake.spark.createDataFrame(
        [("1", "2.5", "r1"), ("x", None, "r2"), (None, "1e3", "r3")],
        "id string, value string, _record_id string",
    ).withColumns({"_ingested_at": F.current_timestamp(), "_source_file": F.lit("f.json")})

    actual = typed(raw, {"id": "int", "value": "double"}, "test").select("id", "value", "_record_id", "_parse_failures")
    expected = lake.spark.createDataFrame(
        [(1, 2.5, "r1", []), (None, None, "r2", ["parse(id)"]), (None, 1000.0, "r3", [])],
        "id int, value double, _record_id string, _parse_failures array<string>",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)


@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_an_empty_batch_fails_only_the_row_count_expectation(lake: Lakehouse, engine: Engine) -> None:
    empty = lake.spark.createDataFrame([], "id int, value double, carrier string")
    result = run_suite(empty, "empty_day", SUITE, engine)
    assert result.element_count == 0
    outcomes = {o.type: (o.success, o.unexpected_count) for o in result.outcomes}
    assert outcomes.pop("expect_table_row_count_to_be_between") == (False, None)
    assert set(outcomes.values()) == {(True, 0)}
    assert not result.success


@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_row_flags_agree_with_great_expectations(lake: Lakehouse, engine: Engine) -> None:
    suite = [
        ExpectationSpec(type="expect_compound_columns_to_be_unique", kwargs={"column_list": ["a", "b"]}),
        ExpectationSpec(type="expect_column_values_to_be_unique", kwargs={"column": "a"}),
        ExpectationSpec(type="expect_column_values_to_match_regex", kwargs={"column": "a", "regex": "^[a-z]$"}),
        ExpectationSpec(
            type="expect_column_values_to_be_between",
            kwargs={"column": "b", "min_value": 1, "max_value": 3, "strict_max": True},
        ),
        ExpectationSpec(type="expect_column_values_to_not_be_in_set", kwargs={"column": "b", "value_set": [2]}),
    ]
    df = lake.spark.createDataFrame(
        [(None, 1), (None, 1), (None, None), (None, None), ("a", 1), ("a", 1), ("b", 3), ("CC", 2), ("d", None)],
        "a string, b int",
    )
    result = run_suite(df, "agreement", suite, engine)
    flagged = with_failures(df.withColumn("_parse_failures", F.array().cast("array<string>")), suite)
    counts = {r[0]: r[1] for r in flagged.select(F.explode("_failed_expectations")).groupBy("col").count().collect()}

    check_agreement(result, counts)  # raises on any difference
    assert {o.label: o.unexpected_count for o in result.outcomes} == {
        "expect_compound_columns_to_be_unique(a,b)": 4,
        "expect_column_values_to_be_unique(a)": 2,
        "expect_column_values_to_match_regex(a)": 1,
        "expect_column_values_to_be_between(b)": 1,
        "expect_column_values_to_not_be_in_set(b)": 1,
    }


def test_suites_file_rejects_unsupported_expectations(tmp_path: Path) -> None:
    path = tmp_path / "expectations.yaml"
    path.write_text(
        "suites:\n  t:\n    - {type: expect_column_values_to_not_be_null, kwargs: {column: a, mostly: 0.9}}\n"
    )
    with pytest.raises(ConfigError, match="unknown kwargs \\['mostly'\\].*max_reject_ratio"):
        load_suites(path)
    path.write_text("suites:\n  t:\n    - {type: expect_column_kl_divergence_to_be_less_than, kwargs: {}}\n")
    with pytest.raises(ConfigError, match="is not supported"):
        load_suites(path)


def test_repo_suites_load() -> None:
    suites = load_suites(Path(__file__).resolve().parents[1] / "conf" / "expectations.yaml")
    assert {"flights", "weather", "planes", "airlines", "airports"} <= set(suites)


@pytest.mark.parametrize("engine", ["spark", "pandas"])
def test_pair_equality_flags_agree_with_great_expectations(lake: Lakehouse, engine: Engine) -> None:
    suite = [ExpectationSpec(
        type="expect_column_pair_values_to_be_equal", name="same_day",
        kwargs={"column_A": "a", "column_B": "b", "ignore_row_if": "either_value_is_missing"},
    )]
    df = lake.spark.createDataFrame(
        [(D1, D1), (D1, date(2031, 1, 1)), (None, D1), (D1, None), (None, None)], "a date, b date"
    )
    result = run_suite(df, "pairs", suite, engine)
    flagged = with_failures(df.withColumn("_parse_failures", F.array().cast("array<string>")), suite)
    counts = {r[0]: r[1] for r in flagged.select(F.explode("_failed_expectations")).groupBy("col").count().collect()}

    check_agreement(result, counts)
    assert counts == {"same_day": 1}


def test_a_small_batch_is_validated_on_pandas_and_again_in_spark_when_the_engines_disagree(lake: Lakehouse) -> None:
    suite = [ExpectationSpec(type="expect_column_values_to_not_be_null", kwargs={"column": "x"})]
    df = lake.spark.createDataFrame([(1.0,), (None,), (2.0,)], "x double")
    counts = {"expect_column_values_to_not_be_null(x)": 1}
    assert validate(df, "small", suite, counts, rows=3, pandas_max_rows=3).engine == "pandas"
    assert validate(df, "big", suite, counts, rows=3, pandas_max_rows=2).engine == "spark"
    assert validate(df.limit(0), "off", suite, {}, rows=0, pandas_max_rows=0).engine == "spark"

    # A double NaN is a value to Spark (and to the row flags) but null to pandas.
    with_nan = df.union(lake.spark.sql("SELECT double('NaN') AS x"))
    result = validate(with_nan, "nan", suite, counts, rows=4, pandas_max_rows=100)
    assert (result.engine, result.outcomes[0].unexpected_count) == ("spark", 1)
    assert json.loads(result.result_json)["sparkfs_engine"] == "spark"
    with pytest.raises(SparkfsError, match="disagree with Great Expectations.*counted 1, the row flags 3"):
        validate(with_nan, "nan", suite, {"expect_column_values_to_not_be_null(x)": 3}, rows=4, pandas_max_rows=100)


FLIGHT = {
    "year": 2013, "month": 1, "day": 1, "dep_time": 601, "sched_dep_time": 600, "dep_delay": 1, "arr_time": 700,
    "sched_arr_time": 705, "arr_delay": -5, "carrier": "AA", "flight": 1, "tailnum": "N1", "origin": "JFK",
    "dest": "BOS", "air_time": 40, "distance": 187, "hour": 6, "minute": 0, "time_hour": None,
}


def land_flights(landing: Path, source: str, rows: list[dict[str, object]]) -> Path:
    land(landing, source, rows)
    return landing / source / D1.isoformat() / "part.json"


@pytest.mark.slow
def test_the_flights_suite_rejects_impossible_values_and_rows_of_another_day(lake: Lakehouse, tmp_path: Path) -> None:
    source, spec, suite = repo_flights("sv_domain")
    land(tmp_path, source.name, [
        FLIGHT,
        {**FLIGHT, "flight": 2, "dep_time": 9999},
        {**FLIGHT, "flight": 3, "arr_delay": 99999},
        {**FLIGHT, "flight": 4, "air_time": -30},
        {**FLIGHT, "flight": 5, "year": 2031},  # inside the 2013-01-01 delivery
        {**FLIGHT, "flight": 6, "dep_time": 2400, "arr_time": None, "arr_delay": None, "air_time": None},  # midnight; no arrival
    ])
    ingest(lake, source, tmp_path, [D1], run_id="bronze-run")

    result = refine(lake, spec, suite, ValidationPolicy(policy="warn"), [D1], run_id="run-1")

    reasons = lake.read("silver", "sv_domain_quarantine").select("flight", "_failed_expectations").orderBy("flight")
    assert [(r[0], r[1]) for r in reasons.collect()] == [
        (2, ["expect_column_values_to_be_between(dep_time)"]),
        (3, ["expect_column_values_to_be_between(arr_delay)"]),
        (4, ["expect_column_values_to_be_between(air_time)"]),
        (5, ["flight_date_is_the_delivery_day"]),
    ]
    assert (result.rows_rejected, result.rows_out) == (4, 2)
    assert "_delivery_date" not in lake.read("silver", "sv_domain").columns


@pytest.mark.slow
def test_a_malformed_line_is_quarantined_once_with_its_raw_bytes(lake: Lakehouse, tmp_path: Path) -> None:
    folder = tmp_path / "sv_bytes_raw" / D1.isoformat()
    folder.mkdir(parents=True)
    bad_line = b'{"id": 2, "carrier": "A\xff\xfe", "value": 1}'  # not UTF-8
    (folder / "part.json").write_bytes(b'{"id": 1, "carrier": "AA", "value": 5}\n' + bad_line + b"\n")
    ingest(lake, SourceSpec(name="sv_bytes_raw", description="test", required_columns=["id"]), tmp_path, [D1], run_id="b")

    bronze_rows = lake.read("bronze", "sv_bytes_raw").select("id", "_malformed").orderBy("id").collect()
    assert [r[0] for r in bronze_rows] == [None, "1"]
    assert base64.b64decode(bronze_rows[0][1]) == bad_line and bronze_rows[1][1] is None
    assert "_corrupt_record" not in lake.read("bronze", "sv_bytes_raw").columns

    refine(lake, silver_spec("sv_bytes"), SUITE, ValidationPolicy(policy="warn"), [D1], run_id="run-1")

    quarantined = lake.read("silver", "sv_bytes_quarantine").select("_failed_expectations", "_raw").collect()
    assert [r[0] for r in quarantined] == [["malformed record"]]
    assert base64.b64decode(json.loads(quarantined[0][1])["_malformed_base64"]) == bad_line
    assert [r[0] for r in lake.read("silver", "sv_bytes").select("id").collect()] == [1]


@pytest.mark.slow
def test_a_redelivered_day_replaces_the_bad_delivery_as_a_whole(lake: Lakehouse, tmp_path: Path) -> None:
    source, spec, suite = repo_flights("sv_repair")
    policy = ValidationPolicy(policy="strict", max_reject_ratio=0.0)
    bad = land_flights(tmp_path, source.name, [
        FLIGHT, {**FLIGHT, "flight": 2}, {**FLIGHT, "flight": 3, "carrier": None},  # a null key
    ])
    ingest(lake, source, tmp_path, [D1], run_id="bronze-1")
    with pytest.raises(ValidationFailedError):
        refine(lake, spec, suite, policy, [D1], run_id="run-1")
    # The fix: flight 3 with its carrier, flight 2 no longer delivered (it did not fly).
    bad.write_text("".join(json.dumps(r) + "\n" for r in [FLIGHT, {**FLIGHT, "flight": 3}]))
    os.utime(bad, (bad.stat().st_mtime + 60, bad.stat().st_mtime + 60))
    ingest(lake, source, tmp_path, [D1], run_id="bronze-2")

    result = refine(lake, spec, suite, policy, [D1], run_id="run-2")

    assert (result.rows_rejected, result.rows_superseded) == (0, 3)
    assert sorted(r[0] for r in lake.read("silver", "sv_repair").select("flight").collect()) == [1, 3]
    statuses = lake.read("silver", "sv_repair_quarantine").select("flight", "_status").collect()
    assert [tuple(r) for r in statuses] == [(3, "superseded")]


@pytest.mark.slow
def test_rows_a_new_delivery_no_longer_holds_are_retracted_from_silver(lake: Lakehouse, tmp_path: Path) -> None:
    source, spec, suite = repo_flights("sv_retract")
    path = land_flights(tmp_path, source.name, [FLIGHT, {**FLIGHT, "flight": 2}])
    ingest(lake, source, tmp_path, [D1], run_id="bronze-1")
    refine(lake, spec, suite, ValidationPolicy(), [D1], run_id="run-1")
    path.write_text(json.dumps({**FLIGHT, "dep_delay": 7}) + "\n")
    os.utime(path, (path.stat().st_mtime + 60, path.stat().st_mtime + 60))
    ingest(lake, source, tmp_path, [D1], run_id="bronze-2")

    result = refine(lake, spec, suite, ValidationPolicy(), [D1], run_id="run-2")

    assert result.merge is not None and (result.merge.rows_updated, result.merge.rows_deleted) == (1, 1)
    rows = lake.read("silver", "sv_retract").select("flight", "dep_delay").collect()
    assert [tuple(r) for r in rows] == [(1, 7.0)]


def test_a_days_volume_is_judged_against_the_same_weekday_before_it(lake: Lakehouse) -> None:
    tue, wed = date(2013, 1, 1), date(2013, 1, 2)
    week = datetime(2013, 1, 8) - datetime(2013, 1, 1)
    counts = {tue: 3, tue + week: 30, wed: 2}
    delivered = lake.spark.createDataFrame([(d,) for d, n in counts.items() for _ in range(n)], "d date")

    volumes = day_volumes(delivered, "d", [tue + week, wed, wed + week], VolumeCheck(weeks=4, factor=3))

    assert [(v.day, v.rows, v.past, v.ok) for v in volumes] == [
        (tue + week, 30, (3,), False), (wed, 2, (), True), (wed + week, 0, (2,), False)]
    assert volumes[0].describe() == ("2013-01-08 has 30 rows; the same weekday of the 1 week(s) before had 3..3 "
                                     "(expected 1..9)")
