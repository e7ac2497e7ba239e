from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from datetime import date

import pytest
from chispa import assert_df_equality
from pyspark.sql import types as T
from spark_settings import SHORT_LIVED_JAVA_OPTIONS, SPARK_CONF

from sparkfs.core.errors import (
    ConfigError,
    DuplicateKeyError,
    SchemaMismatchError,
    TableNotFoundError,
)
from sparkfs.core.lakehouse import Commit, Lakehouse
from sparkfs.core.merge import merge_upsert
from sparkfs.jobs.smoke import SMOKE_TABLE, run_smoke

SCHEMA = T.StructType(
    [
        T.StructField("id", T.LongType(), True),
        T.StructField("day", T.DateType(), True),
        T.StructField("value", T.DoubleType(), True),
        T.StructField("seq", T.LongType(), True),
    ]
)
D1, D2 = date(2013, 1, 1), date(2013, 1, 2)


def fresh_table(lake: Lakehouse, name: str) -> None:
    lake.create("silver", name, SCHEMA, partition_by=["day"], comment="test table")


@pytest.mark.slow
def test_smoke_merge_rerun_changes_nothing(lake: Lakehouse) -> None:
    first = run_smoke(lake, D1)
    before = lake.read(*SMOKE_TABLE).orderBy("event_id")
    rows_before = before.collect()
    second = run_smoke(lake, D1)
    after = lake.read(*SMOKE_TABLE).orderBy("event_id")
    assert first.rows_inserted == 4
    assert (second.rows_inserted, second.rows_updated) == (0, 0)
    assert after.collect() == rows_before
    history = lake.history(*lake.resolve("sparkfs_ops.smoke_events")).collect()
    assert [r["operation"] for r in history].count("MERGE") == 2
    newest, first_merge = history[0], [r for r in history if r["operation"] == "MERGE"][-1]
    assert (newest["rows_inserted"], newest["rows_updated"]) == ("0", "0")
    assert first_merge["rows_inserted"] == "4"


def test_resolve_accepts_layer_or_schema_and_names_what_is_valid(lake: Lakehouse) -> None:
    assert lake.resolve("gold.planes") == lake.resolve("sparkfs_gold.planes") == ("gold", "planes")
    with pytest.raises(ConfigError, match="cannot resolve table 'nowhere.planes'.*'gold'"):
        lake.resolve("nowhere.planes")


@pytest.mark.slow
def test_merge_upserts_changed_rows_and_keeps_null_keys_unique(lake: Lakehouse) -> None:
    fresh_table(lake, "upserts")
    spark = lake.spark
    merge_upsert(lake, "silver", "upserts", spark.createDataFrame(
        [(1, D1, 1.0, 1), (2, D1, None, 1), (None, D1, 5.0, 1)], SCHEMA), ["id", "day"], partition_by="day")
    result = merge_upsert(lake, "silver", "upserts", spark.createDataFrame(
        [(1, D1, 1.5, 2), (2, D1, None, 1), (None, D1, 5.0, 1), (3, D2, 3.0, 1)], SCHEMA),
        ["id", "day"], partition_by="day")
    assert (result.rows_inserted, result.rows_updated) == (1, 1)
    expected = spark.createDataFrame(
        [(None, D1, 5.0, 1), (1, D1, 1.5, 2), (2, D1, None, 1), (3, D2, 3.0, 1)], SCHEMA)
    assert_df_equality(lake.read("silver", "upserts"), expected, ignore_row_order=True, ignore_nullable=True)


@pytest.mark.slow
def test_merge_condition_prunes_to_the_batch_partitions(lake: Lakehouse) -> None:
    fresh_table(lake, "pruned")
    spark = lake.spark
    merge_upsert(lake, "silver", "pruned", spark.createDataFrame(
        [(1, D1, 1.0, 1), (1, D2, 2.0, 1)], SCHEMA), ["id", "day"], partition_by="day")
    merge_upsert(lake, "silver", "pruned", spark.createDataFrame([(1, D2, 9.0, 2)], SCHEMA),
                 ["id", "day"], partition_by="day")
    last = lake.table("silver", "pruned").history(1).first()
    assert last is not None
    predicate = last["operationParameters"]["predicate"]
    assert "2013-01-02" in predicate and "2013-01-01" not in predicate
    # Files of the untouched partition were not rewritten: only one partition's file was removed.
    assert int(last["operationMetrics"]["numTargetFilesRemoved"]) == 1


@pytest.mark.slow
def test_a_retracting_merge_deletes_only_the_missing_rows_of_its_partitions(lake: Lakehouse) -> None:
    fresh_table(lake, "retracting")
    spark = lake.spark
    D3 = date(2013, 1, 3)
    merge_upsert(lake, "silver", "retracting", spark.createDataFrame(
        [(1, D1, 1.0, 1), (2, D1, 2.0, 1), (None, D1, 0.0, 1), (1, D2, 1.0, 1), (2, D2, 2.0, 1), (1, D3, 1.0, 1)],
        SCHEMA), ["id", "day"], partition_by="day")
    # D1 delivered again without id 2 and the null id, with id 1 changed and a new id 3; D2 is
    # retracted as a whole (no rows in the batch); D3 is not named, so nothing there is touched.
    result = merge_upsert(lake, "silver", "retracting", spark.createDataFrame(
        [(1, D1, 1.5, 2), (3, D1, 3.0, 1)], SCHEMA), ["id", "day"], partition_by="day",
        retract_partitions=[D1, D2])
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (1, 1, 4)
    expected = spark.createDataFrame([(1, D1, 1.5, 2), (3, D1, 3.0, 1), (1, D3, 1.0, 1)], SCHEMA)
    assert_df_equality(lake.read("silver", "retracting"), expected, ignore_row_order=True, ignore_nullable=True)
    last = lake.last_commit("silver", "retracting")
    assert last.operation == "MERGE"
    # The MERGE rewrote only the named days' files (one each), never D3's.
    assert last.metric("numTargetFilesRemoved") == 2

    again = merge_upsert(lake, "silver", "retracting", spark.createDataFrame(
        [(1, D1, 1.5, 2), (3, D1, 3.0, 1)], SCHEMA), ["id", "day"], partition_by="day",
        retract_partitions=[D1, D2])
    assert (again.rows_inserted, again.rows_updated, again.rows_deleted) == (0, 0, 0)


@pytest.mark.slow
def test_a_batch_of_many_partition_values_prunes_to_their_range_and_the_retracted_ones(
    lake: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the listed-values limit (1 here, 1000 in use) the MERGE prunes to the range of the
    batch's partition values, widened to the partitions it retracts."""
    for module in ("sparkfs.core.checks", "sparkfs.core.merge"):
        monkeypatch.setattr(f"{module}.MAX_LISTED_VALUES", 1)
    fresh_table(lake, "ranged")
    spark = lake.spark
    D3, D5 = date(2013, 1, 3), date(2013, 1, 5)
    merge_upsert(lake, "silver", "ranged", spark.createDataFrame(
        [(1, D1, 1.0, 1), (1, D2, 1.0, 1), (1, D3, 1.0, 1), (1, D5, 1.0, 1)], SCHEMA), ["id", "day"], partition_by="day")
    result = merge_upsert(lake, "silver", "ranged", spark.createDataFrame(
        [(1, D2, 9.0, 2), (1, D3, 9.0, 2)], SCHEMA), ["id", "day"], partition_by="day", retract_partitions=[D1])
    assert (result.rows_inserted, result.rows_updated, result.rows_deleted) == (0, 2, 1)
    expected = spark.createDataFrame([(1, D2, 9.0, 2), (1, D3, 9.0, 2), (1, D5, 1.0, 1)], SCHEMA)
    assert_df_equality(lake.read("silver", "ranged"), expected, ignore_row_order=True, ignore_nullable=True)
    last = lake.table("silver", "ranged").history(1).first()
    assert last is not None
    predicate = last["operationParameters"]["predicate"]
    assert "2013-01-01" in predicate and "2013-01-03" in predicate and "2013-01-05" not in predicate
    assert int(last["operationMetrics"]["numTargetFilesRemoved"]) == 3  # D1, D2, D3; never D5


@pytest.mark.slow
def test_duplicate_keys_in_a_batch_are_rejected_or_resolved_by_sequence(lake: Lakehouse) -> None:
    fresh_table(lake, "dupes")
    spark = lake.spark
    batch = spark.createDataFrame([(7, D1, 1.0, 1), (7, D1, 2.0, 2)], SCHEMA)
    with pytest.raises(DuplicateKeyError, match=r"more than one row per key \['id', 'day'\].*'id': 7"):
        merge_upsert(lake, "silver", "dupes", batch, ["id", "day"])
    merge_upsert(lake, "silver", "dupes", batch, ["id", "day"], sequence_by="seq")
    assert [r["value"] for r in lake.read("silver", "dupes").collect()] == [2.0]
    tie = spark.createDataFrame([(8, D1, 1.0, 5), (8, D1, 2.0, 5)], SCHEMA)
    with pytest.raises(DuplicateKeyError, match="tie on 'seq'"):
        merge_upsert(lake, "silver", "dupes", tie, ["id", "day"], sequence_by="seq")


def test_merge_rejects_a_batch_with_other_columns(lake: Lakehouse) -> None:
    fresh_table(lake, "shape")
    batch = lake.spark.createDataFrame([(1, D1, 1.0)], "id long, day date, other double")
    with pytest.raises(SchemaMismatchError, match=r"extra columns \['other'\], missing columns \['seq', 'value'\]"):
        merge_upsert(lake, "silver", "shape", batch, ["id", "day"])


def test_reading_a_missing_table_names_it(lake: Lakehouse) -> None:
    with pytest.raises(TableNotFoundError, match="sparkfs_gold.*no_such_table"):
        lake.read("gold", "no_such_table")


@pytest.mark.slow
def test_time_travel_reads_an_old_version(lake: Lakehouse) -> None:
    fresh_table(lake, "travel")
    spark = lake.spark
    v1 = merge_upsert(lake, "silver", "travel", spark.createDataFrame([(1, D1, 1.0, 1)], SCHEMA), ["id", "day"])
    merge_upsert(lake, "silver", "travel", spark.createDataFrame([(1, D1, 2.0, 2)], SCHEMA), ["id", "day"])
    assert lake.read("silver", "travel", version=v1.version).first()["value"] == 1.0  # type: ignore[index]
    assert lake.read("silver", "travel").first()["value"] == 2.0  # type: ignore[index]


@pytest.mark.slow
def test_a_table_written_here_is_read_by_name_in_another_process(lake: Lakehouse) -> None:
    fresh_table(lake, "shared")
    merge_upsert(lake, "silver", "shared", lake.spark.createDataFrame(
        [(1, D1, 1.0, 1), (2, D1, 2.0, 1), (3, D2, 3.0, 1)], SCHEMA), ["id", "day"])
    settings = lake.settings
    script = textwrap.dedent(
        f"""\
        from sparkfs.core.config import Settings, SparkSettings, StorageSettings
        from sparkfs.core.lakehouse import open_lakehouse
        from sparkfs.core.session import get_spark
        s = Settings(conf_dir={settings.conf_dir!r}, storage=StorageSettings(data_dir={settings.storage.data_dir!r}),
                     spark=SparkSettings(master="local[1]", shuffle_partitions=1,
                                         java_options={SHORT_LIVED_JAVA_OPTIONS!r}, conf={SPARK_CONF!r}))
        spark = get_spark(s)
        open_lakehouse(spark, s)
        print("ROWS", spark.table("sparkfs_silver.shared").count())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert "ROWS 3" in out.stdout, out.stdout + out.stderr[-3000:]


def test_table_properties_are_readable(lake: Lakehouse) -> None:
    lake.create("gold", "props", SCHEMA, properties={"sparkfs.keys": "id", "sparkfs.event_time": "day"})
    props = lake.properties("gold", "props")
    assert (props["sparkfs.keys"], props["sparkfs.event_time"]) == ("id", "day")


def test_checksum_ignores_row_order_and_sees_any_changed_value(spark) -> None:
    from sparkfs.core.lakehouse import checksum

    rows = [(1, "a", 2**62), (2, "b", 2**62), (3, None, 2**62)]  # a plain long sum would overflow
    base = checksum(spark.createDataFrame(rows, "id int, s string, big long"))
    shuffled = checksum(spark.createDataFrame(rows[::-1], "id int, s string, big long"))
    changed = checksum(spark.createDataFrame([*rows[:2], (3, "c", 2**62)], "id int, s string, big long"))
    assert base == shuffled
    assert base[0] == changed[0] == 3 and base[1] != changed[1]


def test_require_unique_names_duplicate_keys_with_nulls_as_a_key(spark) -> None:
    from sparkfs.core.checks import require_unique

    schema = "id long, count long, v string"  # a key column called "count" must not confuse it
    require_unique(spark.createDataFrame([(1, 1, "a"), (1, 2, "b"), (None, 1, "c")], schema), ["id", "count"])
    null_twice = spark.createDataFrame([(None, 1, "a"), (None, 1, "b"), (2, 1, "c")], schema)
    with pytest.raises(
        DuplicateKeyError,
        match=r"^the dims has more than one row per key \['id', 'count'\] and it is joined; "
        r"examples: \[\{'id': None, 'count': 1, 'rows': 2\}\]$",
    ):
        require_unique(null_twice, ["id", "count"], "the dims", hint="it is joined")
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['nope'\] in the dims"):
        require_unique(null_twice, ["nope"], "the dims")


@pytest.mark.slow
def test_an_empty_batch_merges_nothing_and_reports_no_one_elses_numbers(lake: Lakehouse) -> None:
    fresh_table(lake, "empty_batch")
    spark = lake.spark
    batch = spark.createDataFrame([(1, D1, 1.0, 1), (2, D1, None, 1), (None, D1, 3.0, 1)], SCHEMA)
    first = merge_upsert(lake, "silver", "empty_batch", batch, ["id", "day"], partition_by="day")
    assert (first.source_rows, first.rows_inserted, first.rows_updated) == (3, 3, 0)

    empty = merge_upsert(lake, "silver", "empty_batch", spark.createDataFrame([], SCHEMA), ["id", "day"],
                         partition_by="day")
    assert (empty.source_rows, empty.rows_inserted, empty.rows_updated) == (0, 0, 0)
    assert empty.version == first.version == lake.version("silver", "empty_batch")

    rerun = merge_upsert(lake, "silver", "empty_batch", batch, ["id", "day"], partition_by="day")
    assert (rerun.source_rows, rerun.rows_inserted, rerun.rows_updated) == (3, 0, 0)
    last = lake.last_commit("silver", "empty_batch")
    assert (rerun.version, last.operation) == (last.version, "MERGE")


@pytest.mark.slow
def test_last_commit_and_commit_after_read_typed_commits(lake: Lakehouse) -> None:
    fresh_table(lake, "commits")
    spark = lake.spark
    created = lake.last_commit("silver", "commits")
    assert (created.version, created.operation) == (0, "CREATE TABLE")
    merged = merge_upsert(lake, "silver", "commits", spark.createDataFrame([(1, D1, 1.0, 1)], SCHEMA), ["id", "day"])
    spark.sql(f"ALTER TABLE {lake.name('silver', 'commits')} SET TBLPROPERTIES ('sparkfs.note' = 'x')")

    last = lake.last_commit("silver", "commits")
    assert last.version == merged.version + 1 and last.operation == "SET TBLPROPERTIES"
    merge_commit = lake.commit_after("silver", "commits", created.version, "MERGE")
    assert merge_commit is not None
    assert (merge_commit.version, merge_commit.metric("numTargetRowsInserted")) == (merged.version, 1)
    assert merge_commit.metric("no_such_metric") == 0 and merge_commit.timestamp <= last.timestamp
    assert lake.commit_after("silver", "commits", merged.version, "MERGE") is None

    # An append of no rows makes no commit: nothing after the last version is a WRITE.
    spark.createDataFrame([], SCHEMA).write.format("delta").mode("append").saveAsTable(lake.name("silver", "commits"))
    assert lake.commit_after("silver", "commits", last.version, "WRITE") is None
    spark.createDataFrame([(2, D2, 2.0, 1)], SCHEMA).write.format("delta").mode("append").saveAsTable(
        lake.name("silver", "commits"))
    write = lake.commit_after("silver", "commits", last.version, "WRITE")
    assert write is not None and (write.version, write.metric("numOutputRows")) == (last.version + 1, 1)

    # Locally the commits are read from the _delta_log files: the same as Delta's own history.
    history = lake.table("silver", "commits").history().collect()
    expected = [Commit.from_history(row) for row in history]
    read = lake.commits("silver", "commits", len(history))
    assert [(c.version, c.operation, dict(c.metrics)) for c in read] == [
        (c.version, c.operation, dict(c.metrics)) for c in expected
    ]
    assert [c.timestamp for c in read] == [c.timestamp for c in expected]

def test_connect_opens_the_lakehouse_of_a_conf_folder_and_data_folder(lake: Lakehouse, tmp_path) -> None:
    import sparkfs

    folder = tmp_path / "data"
    written = folder / "warehouse" / "sparkfs_silver" / "connect_probe"  # as a job in another process would
    lake.spark.createDataFrame([(1, D1, 1.0, 1), (2, D2, None, None)], SCHEMA).write.format("delta").save(str(written))

    connected = sparkfs.connect("local", lake.settings.conf_dir, data_dir=folder)

    assert connected.spark is lake.spark  # the running session, not a second one
    assert (connected.settings.env, connected.settings.data_path) == ("local", folder.resolve())
    assert connected.name("silver", "connect_probe") == "`sparkfs_silver`.`connect_probe`"
    assert connected.read("silver", "connect_probe").count() == 2  # registered by name on connect
    with pytest.raises(ConfigError, match="unknown environment 'nowhere'"):
        sparkfs.connect("nowhere", lake.settings.conf_dir)
