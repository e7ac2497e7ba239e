"""Upkeep: OPTIMIZE + VACUUM after a few daily MERGEs keeps every row, and keeps a pinned
training set rebuildable; a VACUUM that would break the pin is refused (real Delta tables)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from pyspark.sql import DataFrame

from sparkfs.catalog.upkeep import (
    PinnedVersionError,
    maintain,
    pins_of_spec,
    required_retention,
    zorder_columns,
)
from sparkfs.core.config import Settings
from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import (
    FILE_RETENTION_PROPERTY,
    Lakehouse,
    checksum,
    parse_delta_interval,
)
from sparkfs.core.merge import merge_upsert
from sparkfs.features.feature_tables import FeatureTableSpec, write_feature_table
from sparkfs.pit.api import FeatureLookup, create_training_set, rebuild_training_set

TABLE = "upkeep_daily"
START = date(2013, 1, 1)
ENTITIES = ["a", "b", "c", None]
SLACK = timedelta(seconds=1)  # a null key is a row like any other
# Daily MERGEs after the pin: each adds a file to its day and one to the day before, so OPTIMIZE
# has at least two files per day to compact, whatever the count (each MERGE costs a commit). With
# 5, VACUUM's own commits cross Delta's checkpoint (every 10th version): a parquet file in the
# log that is not a data file.
DAYS = 5


def spec() -> FeatureTableSpec:
    return FeatureTableSpec.model_validate({
        "name": TABLE, "description": "a value per entity and day", "owner": "tests", "keys": ["entity"],
        "event_time": "ts", "partition_by": "event_date", "build": "test_upkeep:unused",
        "columns": {"entity": "the entity", "ts": "event time", "value": "the value"},
    })


def day_rows(lake: Lakehouse, day: date, value: float, hour: int = 12) -> DataFrame:
    """One row per entity at ``hour`` of ``day``, and late rows for the day before (at 18:00, new
    keys: an insert into yesterday's partition, which adds a file there)."""
    rows = [(e, datetime.combine(d, datetime.min.time()) + timedelta(hours=h), d, v)
            for d, h, v in ((day, hour, value), (day - timedelta(days=1), 18, value + 0.5)) if d >= START
            for e in ENTITIES]
    return lake.spark.createDataFrame(rows, "entity string, ts timestamp, event_date date, value double")


@pytest.mark.slow  # several MERGEs
def test_maintain_compacts_keeps_rows_and_pins_and_refuses_to_break_a_pin(lake: Lakehouse, settings: Settings) -> None:
    # A lakehouse whose new tables keep removed files for 0 s, so VACUUM can act within the test.
    storage = settings.storage.model_copy(update={"deleted_file_retention": timedelta(0)})
    lake = Lakehouse(lake.spark, settings.model_copy(update={"storage": storage}))
    write_feature_table(lake, spec(), day_rows(lake, START, 1.0))
    write_feature_table(lake, spec(), day_rows(lake, START, 2.0))  # a correction, before the pin
    spine_df = lake.spark.createDataFrame(
        [("a", datetime(2013, 1, 1, 13)), ("b", datetime(2013, 1, 20)), (None, datetime(2013, 1, 1, 12))],
        "entity string, at timestamp")
    pinned = create_training_set(lake, spine_df, [FeatureLookup(TABLE, ["entity"], "at")])
    expected = sorted(pinned.df.collect(), key=repr)  # three rows
    for i in range(1, DAYS + 1):  # daily MERGEs (the one writer), each adding late rows to the day before
        merge_upsert(lake, "gold", TABLE, day_rows(lake, START + timedelta(days=i), float(i)),
                     spec().merge_keys, partition_by="event_date")
    current = lake.read("gold", TABLE)
    rows_before, sum_before = checksum(current)
    version_before = lake.version("gold", TABLE)
    pins = pins_of_spec(pinned.spec, "the test's training set")
    needed = required_retention(lake, "gold", TABLE, pins[0].version, datetime.utcnow())

    with pytest.raises(PinnedVersionError, match=rf"files of v{pins[0].version}, pinned by the test's training set"):
        maintain(lake, [("gold", TABLE)], pins, retain=timedelta(0), slack=SLACK, margin=timedelta(0))
    assert lake.version("gold", TABLE) == version_before  # refused before anything was written

    [result] = maintain(lake, [("gold", TABLE)], pins, slack=SLACK, margin=timedelta(0))

    assert result.files_before >= 2 * DAYS and result.files_after == DAYS + 1  # one file per day
    assert result.oldest_pin == pins[0].version and result.zorder_by == ("entity", "ts")
    # The pin is minutes old: an hour (VACUUM counts whole hours) keeps every file it reads.
    assert timedelta(hours=result.retention_hours) == timedelta(hours=1) >= needed
    assert result.files_deleted == 0
    # The table keeps the pin for every VACUUM, not only this one (e.g. predictive optimization's).
    kept = parse_delta_interval(lake.properties("gold", TABLE)[FILE_RETENTION_PROPERTY])
    assert kept == timedelta(hours=1)
    assert checksum(lake.read("gold", TABLE)) == (rows_before, sum_before) == ((DAYS + 1) * 4 + DAYS * 4, sum_before)
    rebuilt = rebuild_training_set(lake, pinned.spec, spine=spine_df).df
    assert sorted(rebuilt.collect(), key=repr) == expected
    assert rebuilt.where("entity = 'a'").select("value").first() == (2.0,)  # the corrected value as pinned

    # Without the pin, a VACUUM at the table's floor (0 here) takes the pinned version's files away.
    [unpinned] = maintain(lake, [("gold", TABLE)], [], retain=timedelta(0))
    assert unpinned.files_deleted > 0 and checksum(lake.read("gold", TABLE)) == (rows_before, sum_before)
    with pytest.raises(Exception, match="(?i)file|not exist|not found"):
        rebuild_training_set(lake, pinned.spec, spine=spine_df).df.collect()


def test_a_retention_below_the_tables_floor_is_refused(lake: Lakehouse) -> None:
    spec_ = spec().model_copy(update={"name": "upkeep_floor"})
    write_feature_table(lake, spec_, day_rows(lake, START, 1.0))  # 7 days' floor, from the settings

    with pytest.raises(SparkfsError, match="shorter than the table's delta.deletedFileRetentionDuration"):
        maintain(lake, [("gold", "upkeep_floor")], [], retain=timedelta(hours=1))
    assert zorder_columns(lake, "gold", "upkeep_floor") == ["entity", "ts"]  # not the partition column
