"""Gold feature tables: specs from conf, rolling features over (t - w, t], documented Delta, MERGE writes."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pydantic import ValidationError
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.errors import DuplicateKeyError, SchemaMismatchError
from sparkfs.core.lakehouse import EVENT_TIME_PROPERTY, KEYS_PROPERTY, KNOWN_AT_PROPERTY, Lakehouse
from sparkfs.features.feature_tables import (
    FeatureSpan,
    FeatureTableSpec,
    compute,
    ensure_feature_table,
    load_feature_tables,
    write_feature_table,
)

D = date(2013, 1, 2)
EVENTS_SCHEMA = "carrier string, ts timestamp, delay double, _ingested_at timestamp"
EVENTS = [  # the last column: when the event's row landed (silver's _ingested_at)
    ("AA", datetime(2013, 1, 1, 0, 0), 5.0, datetime(2013, 1, 1, 1)),  # before the history start: never read
    ("AA", datetime(2013, 1, 1, 23, 30), 10.0, datetime(2013, 1, 2, 0)),  # history only
    ("AA", datetime(2013, 1, 2, 0, 0), 20.0, datetime(2013, 1, 2, 1)),  # at the span's start: written
    ("AA", datetime(2013, 1, 2, 0, 30), 30.0, datetime(2013, 1, 2, 1)),  # two events at one instant ...
    ("AA", datetime(2013, 1, 2, 0, 30), None, datetime(2013, 1, 2, 9)),  # ... one without a value, landed late
    ("AA", datetime(2013, 1, 2, 1, 30), 40.0, datetime(2013, 1, 2, 2)),  # exactly 1h after 00:30: those are out of its 1h window
    ("AA", datetime(2013, 1, 3, 0, 0), 50.0, datetime(2013, 1, 3, 1)),  # at the span's end: not written
    ("UA", datetime(2013, 1, 2, 0, 30), None, datetime(2013, 1, 2, 3)),
]


def events_builder(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """The test builder (referenced from the spec as ``test_feature_tables:events_builder``)."""
    return lake.spark.createDataFrame(EVENTS, EVENTS_SCHEMA)


def unlanded_builder(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    return lake.spark.createDataFrame(EVENTS, EVENTS_SCHEMA).drop("_ingested_at")


def static_builder(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    return lake.spark.createDataFrame([("N1", 180), ("N2", None)], "tailnum string, seats int")


def rolling_spec(name: str, **changes: object) -> FeatureTableSpec:
    data: dict[str, object] = {
        "name": name,
        "description": "delays per carrier",
        "owner": "tests",
        "tags": ["flights", "rolling"],
        "keys": ["carrier"],
        "event_time": "ts",
        "partition_by": "event_date",
        "build": "test_feature_tables:events_builder",
        "columns": {"carrier": "carrier code", "ts": "departure instant"},
        "rolling": {
            "prefix": "carrier",
            "windows": {"1h": "1h", "1d": "1d"},
            "aggregates": [{"value": "delay", "aggs": ["count", "mean"], "description": "departure delay"}],
        },
    }
    data.update(changes)
    return FeatureTableSpec.model_validate(data)


def static_spec(name: str) -> FeatureTableSpec:
    return FeatureTableSpec.model_validate(
        {
            "name": name,
            "description": "planes",
            "owner": "tests",
            "keys": ["tailnum"],
            "build": "test_feature_tables:static_builder",
            "columns": {"tailnum": "tail number", "seats": "number of seats"},
        }
    )


def test_compute_rolling_window_edges_equal_timestamps_and_none(lake: Lakehouse) -> None:
    actual = compute(lake, rolling_spec("ft_compute"), D, D).orderBy("carrier", "ts")

    expected = lake.spark.createDataFrame(
        [
            # (23:00, 00:00] and (01-01 00:00, 01-02 00:00]: the 23:30 event and itself; known
            # when the later of the two had landed
            ("AA", datetime(2013, 1, 2, 0, 0), D, 2, 15.0, 2, 15.0, datetime(2013, 1, 2, 1)),
            # both 00:30 events become one row; the None is not counted, but its late landing is
            ("AA", datetime(2013, 1, 2, 0, 30), D, 2, 25.0, 3, 20.0, datetime(2013, 1, 2, 9)),
            # 1h window (00:30, 01:30]: the events exactly 1h earlier are out; known_at is the
            # entity's running maximum, so the late 00:30 row still counts (conservative)
            ("AA", datetime(2013, 1, 2, 1, 30), D, 1, 40.0, 4, 25.0, datetime(2013, 1, 2, 9)),
            ("UA", datetime(2013, 1, 2, 0, 30), D, 0, None, 0, None, datetime(2013, 1, 2, 3)),
        ],
        "carrier string, ts timestamp, event_date date, carrier_delay_count_1h long, carrier_delay_mean_1h double, "
        "carrier_delay_count_1d long, carrier_delay_mean_1d double, known_at timestamp",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)


def test_a_builder_without_landing_times_is_a_clear_error(lake: Lakehouse) -> None:
    spec = rolling_spec("ft_unlanded", build="test_feature_tables:unlanded_builder")
    with pytest.raises(SchemaMismatchError, match=r"must keep '_ingested_at'.*'known_at'"):
        compute(lake, spec, D, D)


@pytest.mark.slow
def test_write_creates_a_documented_table_and_a_rerun_changes_nothing(lake: Lakehouse) -> None:
    spec = rolling_spec("ft_write")
    first = write_feature_table(lake, spec, compute(lake, spec, D, D))
    again = write_feature_table(lake, spec, compute(lake, spec, D, D))

    assert (first.rows_inserted, again.rows_inserted, again.rows_updated) == (4, 0, 0)
    props = lake.properties("gold", "ft_write")
    assert props[KEYS_PROPERTY] == "carrier" and props[EVENT_TIME_PROPERTY] == "ts"
    assert props[KNOWN_AT_PROPERTY] == "known_at"
    assert (props["sparkfs.owner"], props["sparkfs.tags"]) == ("tests", "flights,rolling")
    comments = {f.name: f.metadata.get("comment") for f in lake.read("gold", "ft_write").schema.fields}
    assert comments["ts"] == "departure instant"
    assert comments["carrier_delay_mean_1h"] == (
        "mean of departure delay, over the trailing 1h window (t - 1h, t] ending at the row's event time"
    )
    assert comments["event_date"] == "UTC date of ts (the partition column)"
    # The MERGE condition names the batch's partitions, so Delta prunes the others.
    predicate = lake.table("gold", "ft_write").history(1).select("operationParameters.predicate").first()
    assert predicate is not None and "event_date" in predicate[0] and "2013-01-02" in predicate[0]


@pytest.mark.slow
def test_static_table_has_no_event_time(lake: Lakehouse) -> None:
    spec = static_spec("ft_static")
    result = write_feature_table(lake, spec, compute(lake, spec, D, D))

    assert result.rows_inserted == 2
    assert lake.properties("gold", "ft_static")[EVENT_TIME_PROPERTY] == ""
    expected = lake.spark.createDataFrame([("N1", 180), ("N2", None)], "tailnum string, seats int")
    assert_df_equality(lake.read("gold", "ft_static").orderBy("tailnum"), expected, ignore_nullable=True, ignore_metadata=True)


def test_duplicate_keys_in_a_batch_are_rejected(lake: Lakehouse) -> None:
    spec = static_spec("ft_dupes")
    batch = lake.spark.createDataFrame([("N1", 180), ("N1", 150)], "tailnum string, seats int")
    with pytest.raises(DuplicateKeyError, match=r"tailnum.*'N1'"):
        write_feature_table(lake, spec, batch)


def test_undocumented_builder_column_is_an_error(lake: Lakehouse) -> None:
    spec = static_spec("ft_undoc").model_copy(update={"columns": {"tailnum": "tail number"}})
    with pytest.raises(SchemaMismatchError, match=r"makes columns \['seats'\] that conf/feature_tables.yaml does not document"):
        compute(lake, spec, D, D)


@pytest.mark.slow
def test_metadata_follows_the_spec_and_new_features_are_added(lake: Lakehouse) -> None:
    spec = static_spec("ft_evolve")
    write_feature_table(lake, spec, compute(lake, spec, D, D))
    changed = spec.model_copy(
        update={"description": "aircraft", "columns": {"tailnum": "registration", "seats": "seats", "engines": "engines"}}
    )
    schema = T.StructType([*lake.read("gold", "ft_evolve").schema.fields, T.StructField("engines", T.IntegerType())])

    ensure_feature_table(lake, changed, schema)

    table = lake.read("gold", "ft_evolve")
    assert table.columns == ["tailnum", "seats", "engines"]
    assert {f.name: f.metadata.get("comment") for f in table.schema.fields}["tailnum"] == "registration"
    assert lake.properties("gold", "ft_evolve")["sparkfs.description"] == "aircraft"
    version = lake.version("gold", "ft_evolve")
    ensure_feature_table(lake, changed, schema)
    assert lake.version("gold", "ft_evolve") == version  # nothing to change: no commit


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="static table"):
        rolling_spec("x", event_time=None)
    with pytest.raises(ValidationError, match=r"\['carrier'\] \(keys / event time\) need a description"):
        rolling_spec("x", columns={"ts": "t"})
    with pytest.raises(ValidationError, match=r"uses windows \['7d'\]"):
        rolling_spec(
            "x",
            rolling={"windows": {"1h": "1h"}, "aggregates": [{"value": "d", "aggs": ["max"], "windows": ["7d"], "description": "d"}]},
        )


def test_feature_span_reads_the_longest_window_of_history() -> None:
    span = FeatureSpan.for_dates(date(2013, 4, 1), date(2013, 4, 1), timedelta(days=30))
    assert (span.start, span.end, span.history_start) == (
        datetime(2013, 4, 1), datetime(2013, 4, 2), datetime(2013, 3, 2)
    )
    assert span.dates(timedelta(days=2)) == (date(2013, 2, 28), date(2013, 4, 4))


def test_repo_feature_tables_are_documented() -> None:
    tables = {t.name: t for t in load_feature_tables(Path(__file__).resolve().parents[1] / "conf" / "feature_tables.yaml")}
    assert set(tables) >= {"planes", "weather_hourly", "carrier_delays", "route_delays"}
    assert tables["planes"].event_time is None
    assert tables["carrier_delays"].history == timedelta(days=30)
    assert "carrier_dep_delay_mean_7d" in tables["carrier_delays"].documented_columns()
    assert all(text for t in tables.values() for text in t.documented_columns().values())


def test_compute_filters_nothing_else(lake: Lakehouse) -> None:
    """Every event inside the span comes out: the count of rows equals the distinct (key, ts) in the span."""
    rows = compute(lake, rolling_spec("ft_count"), D, D)
    assert rows.where(F.col("ts") < F.lit(datetime(2013, 1, 2))).count() == 0
    assert rows.count() == 4
