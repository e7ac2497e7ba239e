"""Point-in-time training sets on real Delta feature tables: semantics, errors, reproducibility."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from side_by_side import each

from sparkfs.core.errors import (
    ColumnNameClashError,
    DuplicateKeyError,
    LeakageError,
    LookupKeyError,
    SchemaMismatchError,
    SparkfsError,
)
from sparkfs.core.lakehouse import (
    EVENT_DATE_PROPERTY,
    EVENT_TIME_PROPERTY,
    KEYS_PROPERTY,
    KNOWN_AT_PROPERTY,
    SEQUENCE_PROPERTY,
    Lakehouse,
)
from sparkfs.core.merge import merge_upsert
from sparkfs.pit import (
    FeatureLookup,
    SpineSource,
    TrainingSetSpec,
    as_of_join,
    create_training_set,
    planner,
    rebuild_training_set,
)
from sparkfs.pit.provenance import audit_feature_times

UTC = timezone.utc
T0 = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


PLANS = ("union", "union-wide", "intervals")  # each plan checked side by side: side_by_side.each


FEATURES = T.StructType([
    T.StructField("carrier", T.StringType()),
    T.StructField("origin", T.StringType()),
    T.StructField("ts", T.TimestampType()),
    T.StructField("delay", T.DoubleType()),
    T.StructField("flights", T.LongType()),
])
SPINE = T.StructType([
    T.StructField("carrier", T.StringType()),
    T.StructField("origin", T.StringType()),
    T.StructField("at", T.TimestampType()),
    T.StructField("label", T.LongType()),
])


def feature_table(lake: Lakehouse, name: str, rows: list[tuple], schema: T.StructType = FEATURES,
                  keys: str = "carrier,origin", event_time: str = "ts",
                  sequence: str | None = None) -> None:
    props = {KEYS_PROPERTY: keys, EVENT_TIME_PROPERTY: event_time}
    if sequence:
        props[SEQUENCE_PROPERTY] = sequence
    lake.create("gold", name, schema, properties=props)
    merge_keys = [k for k in keys.split(",") if k] + ([event_time] if event_time else [])
    merge_keys += [sequence] if sequence else []
    merge_upsert(lake, "gold", name, lake.spark.createDataFrame(rows, schema), merge_keys)


def result(df: DataFrame, order: list[str]) -> list[tuple]:
    return [tuple(r) for r in df.orderBy(*order).collect()]


@pytest.mark.slow
def test_latest_whole_row_wins_with_edges_nulls_and_duplicate_spine_rows(lake: Lakehouse) -> None:
    feature_table(lake, "pit_delays", [
        ("AA", "JFK", at(0), 1.0, 10),
        ("AA", "JFK", at(10), None, 20),   # latest row has a null delay: no back-fill from at(0)
        ("AA", "LGA", at(5), 5.0, 50),
        ("1", "23", at(0), 123.0, 1),      # Feast's key concatenation would collide these two
        ("12", "3", at(0), 1203.0, 2),
        (None, "JFK", at(0), 99.0, 9),     # a null key matches nothing, not a null spine key
    ])
    spine = lake.spark.createDataFrame([
        ("AA", "JFK", at(10), 1),   # equal timestamps: the row at(10) counts (feature_ts <= spine_ts)
        ("AA", "JFK", at(10), 1),   # exact duplicate spine row: both come out
        ("AA", "JFK", at(9.99), 0),  # just before: the row at(0)
        ("AA", "JFK", at(-1), 0),   # before any feature row
        ("AA", "LGA", at(65), 0),   # 60 minutes after at(5): outside the lookback (t - 60min, t]
        ("AA", "LGA", at(64.9), 1),  # inside
        ("1", "23", at(1), 0),
        ("12", "3", at(1), 0),
        (None, "JFK", at(1), 0),
        ("AA", "JFK", None, 1),
    ], SPINE)
    lookups = [FeatureLookup("pit_delays", ["carrier", "origin"], "at", lookback=timedelta(minutes=60), prefix="c")]
    union = create_training_set(lake, spine, lookups, label="label", plan="union")
    ts = create_training_set(lake, spine, lookups, label="label", plan="intervals")
    assert_df_equality(union.df, ts.df, ignore_row_order=True)
    assert ts.df.columns == ["carrier", "origin", "at", "label", "c_delay", "c_flights"]
    expected = lake.spark.createDataFrame([
        ("AA", "JFK", at(10), 1, None, 20),
        ("AA", "JFK", at(10), 1, None, 20),
        ("AA", "JFK", at(9.99), 0, 1.0, 10),
        ("AA", "JFK", at(-1), 0, None, None),
        ("AA", "LGA", at(65), 0, None, None),
        ("AA", "LGA", at(64.9), 1, 5.0, 50),
        ("1", "23", at(1), 0, 123.0, 1),
        ("12", "3", at(1), 0, 1203.0, 2),
        (None, "JFK", at(1), 0, None, None),
        ("AA", "JFK", None, 1, None, None),
    ], "carrier string, origin string, at timestamp, label long, c_delay double, c_flights long")
    assert_df_equality(ts.df, expected, ignore_row_order=True, ignore_nullable=True)
    assert ts.checks["rows"] == ts.checks["spine_rows"] == 10
    assert ts.checks["pit_delays.matched"] == 6
    assert ts.checks["pit_delays.after_spine"] == ts.checks["pit_delays.before_lookback"] == 0


@pytest.mark.slow
def test_lookback_edge_is_exclusive_at_exactly_t_minus_w(lake: Lakehouse) -> None:
    feature_table(lake, "pit_edge", [("AA", "JFK", at(0), 1.0, 1)])
    spine = lake.spark.createDataFrame([
        ("AA", "JFK", at(30), 0),                                   # exactly t - w: excluded
        ("AA", "JFK", at(30) - timedelta(microseconds=1), 0),       # 1 µs inside: included
    ], SPINE)
    out = create_training_set(lake, spine, [FeatureLookup(
        "pit_edge", ["carrier", "origin"], "at", ["delay"], lookback=timedelta(minutes=30))]).df
    assert result(out.select("at", "delay"), ["at"]) == [
        (at(30).replace(tzinfo=None) - timedelta(microseconds=1), 1.0),
        (at(30).replace(tzinfo=None), None),
    ]


@pytest.mark.slow
def test_mixed_time_zones_are_compared_as_instants(lake: Lakehouse) -> None:
    paris = timezone(timedelta(hours=1))
    feature_table(lake, "pit_tz", [("AA", "JFK", datetime(2024, 3, 1, 13, 0, tzinfo=paris), 7.0, 1)])
    spine = lake.spark.createDataFrame([
        ("AA", "JFK", datetime(2024, 3, 1, 12, 0, tzinfo=UTC), 0),                        # same instant
        ("AA", "JFK", datetime(2024, 3, 1, 6, 59, tzinfo=timezone(timedelta(hours=-5))), 0),  # 1 min before
    ], SPINE)
    out = create_training_set(lake, spine, [FeatureLookup("pit_tz", ["carrier", "origin"], "at", ["delay"])]).df
    got = {r["at"].minute: r["delay"] for r in out.collect()}
    assert got == {0: 7.0, 59: None}


@pytest.mark.slow
def test_several_lookups_static_table_and_key_mapping(lake: Lakehouse) -> None:
    feature_table(lake, "pit_carrier", [("AA", "JFK", at(0), 2.0, 3), ("AA", "JFK", at(5), 4.0, 6)])
    planes = T.StructType([T.StructField("tailnum", T.StringType()), T.StructField("seats", T.LongType())])
    feature_table(lake, "pit_planes", [("N1", 100), ("N2", None)], planes, keys="tailnum", event_time="")
    spine = lake.spark.createDataFrame(
        [("AA", "JFK", "N1", at(6)), ("AA", "JFK", "N3", at(1)), ("AA", "JFK", None, None)],
        "airline string, origin string, plane string, at timestamp")
    ts = create_training_set(lake, spine, [
        FeatureLookup("pit_carrier", {"carrier": "airline", "origin": "origin"}, features=["delay"]),
        FeatureLookup("pit_planes", {"tailnum": "plane"}, prefix="plane"),
    ], timestamp_key="at")
    assert result(ts.df, ["plane"]) == [
        ("AA", "JFK", None, None, None, None),
        ("AA", "JFK", "N1", at(6).replace(tzinfo=None), 4.0, 100),
        ("AA", "JFK", "N3", at(1).replace(tzinfo=None), 2.0, None),
    ]
    assert [lk.version for lk in ts.spec.lookups] == [1, 1]
    assert ts.spec.lookups[1].event_time is None


@pytest.mark.slow
def test_sequence_column_breaks_ties_and_ties_without_one_fail(lake: Lakehouse) -> None:
    seq_schema = T.StructType([*FEATURES.fields, T.StructField("seq", T.LongType())])
    feature_table(lake, "pit_seq", [
        ("AA", "JFK", at(0), 1.0, 1, 1), ("AA", "JFK", at(0), 2.0, 2, 2), ("AA", "JFK", at(0), 0.5, 0, None),
    ], seq_schema, sequence="seq")
    spine = lake.spark.createDataFrame([("AA", "JFK", at(1), 0), ("AA", "JFK", at(0), 1)], SPINE)
    def sequenced(plan: str) -> None:
        out = create_training_set(lake, spine, [FeatureLookup("pit_seq", ["carrier", "origin"], "at")], plan=plan).df
        assert result(out.select("label", "delay", "flights"), ["label"]) == [(0, 2.0, 2), (1, 2.0, 2)], plan

    each(sequenced, PLANS)

    # A table declared unique on (keys, ts) that holds a tie anyway (written around the MERGE writer).
    lake.create("gold", "pit_tie", FEATURES, properties={KEYS_PROPERTY: "carrier,origin", EVENT_TIME_PROPERTY: "ts"})
    lake.spark.createDataFrame([("AA", "JFK", at(0), 1.0, 1), ("AA", "JFK", at(0), 2.0, 2)], FEATURES) \
        .write.format("delta").mode("append").saveAsTable(lake.name("gold", "pit_tie"))
    def tied(plan: str) -> None:
        with pytest.raises(DuplicateKeyError, match=r"more than one row per \(keys, ts\).*'carrier': 'AA'"):
            create_training_set(lake, spine, [FeatureLookup("pit_tie", ["carrier", "origin"], "at")], plan=plan)

    each(tied, PLANS)


@pytest.mark.slow
def test_as_known_at_ignores_rows_written_after_the_spine_time(lake: Lakehouse) -> None:
    schema = T.StructType([*FEATURES.fields, T.StructField("ingested", T.TimestampType())])
    feature_table(lake, "pit_known", [
        ("AA", "JFK", at(0), 1.0, 1, at(0)),
        ("AA", "JFK", at(5), 5.0, 5, at(5)),
        ("AA", "JFK", at(3), 3.0, 3, at(20)),   # late arrival: event at 3, known at 20
        ("AA", "JFK", at(8), 8.0, 8, at(30)),   # late arrival that is the latest event
        ("AA", "JFK", at(9), 9.0, 9, None),     # never known: does not count
    ], schema)
    spine = lake.spark.createDataFrame(
        [("AA", "JFK", at(m), 0) for m in (4, 6, 25, 30, 40)], SPINE)
    known_ts = create_training_set(lake, spine, [FeatureLookup(
        "pit_known", ["carrier", "origin"], "at", ["delay"], known_at="ingested")])
    assert [p.split(":")[0] for p in known_ts.plans.values()] == ["intervals"]
    known = known_ts.df
    naive = create_training_set(lake, spine, [FeatureLookup("pit_known", ["carrier", "origin"], "at", ["delay"])]).df
    minute = (F.col("at").cast("long") - int(T0.timestamp())) / 60
    assert result(known.select(minute, "delay"), ["at"]) == [(4, 1.0), (6, 5.0), (25, 5.0), (30, 8.0), (40, 8.0)]
    assert result(naive.select(minute, "delay"), ["at"]) == [(4, 3.0), (6, 5.0), (25, 9.0), (30, 9.0), (40, 9.0)]


@pytest.mark.slow
def test_feature_times_record_the_rows_used_and_the_audit_catches_rows_not_yet_landed(lake: Lakehouse) -> None:
    schema = T.StructType([*FEATURES.fields, T.StructField("ingested", T.TimestampType())])
    feature_table(lake, "pit_audit", [
        ("AA", "JFK", at(0), 1.0, 1, at(0)),
        ("AA", "JFK", at(3), 3.0, 3, at(20)),   # event at 3, landed at 20
        ("AA", "JFK", at(5), 5.0, 5, at(5)),
        ("AA", "JFK", at(9), 9.0, 9, None),     # landing unknown
    ], schema)
    lake.spark.sql(f"ALTER TABLE {lake.name('gold', 'pit_audit')} SET TBLPROPERTIES ('{KNOWN_AT_PROPERTY}' = 'ingested')")
    spine = lake.spark.createDataFrame([("AA", "JFK", at(m), 0) for m in (4, 6, 25)] + [("UA", "JFK", at(4), 0)], SPINE)

    def minutes(c: Column) -> Column:
        return (c.cast("long") - int(T0.timestamp())) / 60

    def used(ts: DataFrame) -> list[tuple]:  # (carrier, spine minute, matched event minute, its landing minute)
        row = F.col("times")["pit_audit"]
        return result(ts.select("carrier", minutes(F.col("at")).alias("m"), minutes(row["event_ts"]),
                                minutes(row["known_at"])), ["carrier", "m"])

    # By event time alone, on every plan: the row of minute 3 is used at minute 4 before it landed.
    def by_event_time(plan: str) -> None:
        naive = create_training_set(lake, spine, [FeatureLookup("pit_audit", ["carrier", "origin"], "at", ["delay"])],
                                    plan=plan, feature_times="times")
        assert naive.df.columns == [*SPINE.fieldNames(), "delay", "times"]
        assert used(naive.df) == [("AA", 4, 3, 20), ("AA", 6, 5, 5), ("AA", 25, 9, None), ("UA", 4, None, None)], plan
        audit = audit_feature_times(naive.df, "times", "at")
        assert audit.counts == {"pit_audit": {"used": 3, "after_cutoff": 0, "landed_after": 1, "unproven": 1}}, plan
        with pytest.raises(LeakageError, match=r"pit_audit.*'landed_after': 1"):
            audit.raise_on_violation("the test spine")

    each(by_event_time, PLANS)
    # As known at the spine time: only landed rows are used, and the audit proves it.
    known = create_training_set(lake, spine, [FeatureLookup("pit_audit", ["carrier", "origin"], "at", ["delay"],
                                                            known_at="ingested")], feature_times="times")
    assert used(known.df) == [("AA", 4, 0, 0), ("AA", 6, 5, 5), ("AA", 25, 5, 5), ("UA", 4, None, None)]
    assert audit_feature_times(known.df, "times", "at").violations == 0
    # A spine at one instant (a daily batch): "auto" takes the instant plan; the same rows and times.
    batch = spine.withColumn("at", F.lit(at(6)))
    by_plan = {plan: create_training_set(lake, batch, [FeatureLookup("pit_audit", ["carrier", "origin"], "at", ["delay"],
                                                                     known_at="ingested")], plan=plan, feature_times="times")
               for plan in ("auto", "intervals")}
    assert [p.split(":")[0] for p in by_plan["auto"].plans.values()] == ["instant"]
    assert used(by_plan["auto"].df) == used(by_plan["intervals"].df) == [("AA", 6, 5, 5)] * 3 + [("UA", 6, None, None)]
    # The audit checks event times too (the join never breaks that rule; a hand-made frame can).
    forged = known.df.withColumn("at", F.col("at") - F.expr("INTERVAL 2 MINUTES"))
    assert audit_feature_times(forged, "times", "at").counts["pit_audit"]["after_cutoff"] == 1


@pytest.mark.slow
def test_a_small_spine_reads_only_the_event_date_partitions_its_lookback_can_reach(lake: Lakehouse) -> None:
    schema = T.StructType([*FEATURES.fields, T.StructField("event_date", T.DateType())])
    props = {KEYS_PROPERTY: "carrier,origin", EVENT_TIME_PROPERTY: "ts", EVENT_DATE_PROPERTY: "event_date"}
    lake.create("gold", "pit_pruned", schema, partition_by=["event_date"], properties=props)
    old, recent = T0 - timedelta(days=30), T0 - timedelta(hours=2)
    rows = [("AA", "JFK", t, v, 1, t.date()) for t, v in ((old, 1.0), (recent, 2.0))]
    merge_upsert(lake, "gold", "pit_pruned", lake.spark.createDataFrame(rows, schema), ["carrier", "origin", "ts"],
                 partition_by="event_date")
    # Remove the old partition's files behind Delta's back: a read that touches it fails.
    location = lake.location("gold", "pit_pruned")
    assert location is not None
    [old_partition] = Path(location.removeprefix("file:")).glob(f"event_date={old.date()}")
    shutil.rmtree(old_partition)
    spine = lake.spark.createDataFrame([("AA", "JFK", T0, 0)], SPINE)

    def lookup(lookback: timedelta | None) -> list[tuple]:
        ts = create_training_set(lake, spine, [FeatureLookup("pit_pruned", ["carrier", "origin"], "at", ["delay"],
                                                             lookback=lookback)])
        return result(ts.df.select("delay"), ["delay"])

    assert lookup(timedelta(days=1)) == [(2.0,)]  # pruned to the dates (T0 - 1d, T0], +- a day
    with pytest.raises(Exception, match=r"(?i)not exist|FileNotFound|FILE_NOT_EXIST"):
        lookup(None)  # without a lookback the whole history can match, so the old partition is read


@pytest.mark.slow
def test_rebuild_from_spec_after_later_merges_gives_identical_rows(lake: Lakehouse) -> None:
    feature_table(lake, "pit_repro", [("AA", "JFK", at(0), 1.0, 1), ("AA", "LGA", at(0), 2.0, 2)])
    lake.create("ml", "pit_spine", SPINE)
    merge_upsert(lake, "ml", "pit_spine", lake.spark.createDataFrame(
        [("AA", "JFK", at(5), 1), ("AA", "LGA", at(5), 0), ("AA", "JFK", None, 1)], SPINE),
        ["carrier", "origin", "at"])
    lookups = [FeatureLookup("pit_repro", ["carrier", "origin"], "at", lookback=timedelta(hours=1))]
    first = create_training_set(lake, "ml.pit_spine", lookups, label="label")
    before = first.df.collect()
    spec = TrainingSetSpec.from_json(first.spec_json())  # the JSON round trip loses nothing
    assert spec == first.spec
    assert spec.spine == SpineSource(source="table", layer="ml", table="pit_spine", version=1)
    assert spec.lookups[0].version == 1 and spec.lookups[0].lookback_us == 3_600_000_000

    # Later: a correction of an existing row, a backfilled row before the spine times, a new spine row.
    merge_upsert(lake, "gold", "pit_repro", lake.spark.createDataFrame(
        [("AA", "JFK", at(0), 100.0, 1), ("AA", "LGA", at(4), 40.0, 4)], FEATURES), ["carrier", "origin", "ts"])
    merge_upsert(lake, "ml", "pit_spine", lake.spark.createDataFrame([("AA", "JFK", at(9), 0)], SPINE),
                 ["carrier", "origin", "at"])
    now = create_training_set(lake, "ml.pit_spine", lookups, label="label")
    assert now.checks["rows"] == 4 and sorted(r["delay"] or 0 for r in now.df.collect()) == [0, 40.0, 100.0, 100.0]

    rebuilt = rebuild_training_set(lake, spec)
    assert_df_equality(rebuilt.df, lake.spark.createDataFrame(before, rebuilt.df.schema), ignore_row_order=True)
    assert rebuilt.spec == first.spec


@pytest.mark.slow
def test_rebuild_of_a_dataframe_spine_needs_the_spine_again(lake: Lakehouse) -> None:
    feature_table(lake, "pit_dfspine", [("AA", "JFK", at(0), 1.0, 1)])
    spine = lake.spark.createDataFrame([("AA", "JFK", at(5), 1)], SPINE)
    ts = create_training_set(lake, spine, [FeatureLookup("pit_dfspine", ["carrier", "origin"], "at")])
    assert ts.spec.spine == SpineSource(source="dataframe")
    with pytest.raises(SparkfsError, match="pass it again"):
        rebuild_training_set(lake, ts.spec)
    assert rebuild_training_set(lake, ts.spec, spine=spine).df.collect() == ts.df.collect()


@pytest.mark.slow
def test_clear_errors_for_bad_lookups(lake: Lakehouse) -> None:
    feature_table(lake, "pit_errors", [("AA", "JFK", at(0), 1.0, 1)])
    spine = lake.spark.createDataFrame([("AA", "JFK", at(5), 1)], SPINE)

    def build(lookup: FeatureLookup, spine_df: DataFrame = spine) -> None:
        create_training_set(lake, spine_df, [lookup])

    with pytest.raises(LookupKeyError, match=r"lookup key \['carrier'\] is not the key of .*pit_errors.*\['carrier', 'origin'\]"):
        build(FeatureLookup("pit_errors", ["carrier"], "at"))
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['nope'\] in .*pit_errors"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"], "at", ["nope"]))
    with pytest.raises(SchemaMismatchError, match=r"missing columns \['when'\] in the spine"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"], "when"))
    with pytest.raises(SchemaMismatchError, match=r"key column types differ: spine 'origin' is bigint, .* 'origin' is string"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"], "at"), spine.withColumn("origin", F.lit(1).cast("long")))
    with pytest.raises(SchemaMismatchError, match=r"'at' in the spine is timestamp_ntz.*instants"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"], "at"), spine.withColumn("at", F.col("at").cast("timestamp_ntz")))
    with pytest.raises(ColumnNameClashError, match=r"\['delay'\].*set a prefix"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"], "at"), spine.withColumn("delay", F.lit(0.0)))
    with pytest.raises(ColumnNameClashError, match=r"\['delay', 'flights'\]"):
        create_training_set(lake, spine, [FeatureLookup("pit_errors", ["carrier", "origin"], "at")] * 2)
    with pytest.raises(SchemaMismatchError, match="set timestamp_lookup_key"):
        build(FeatureLookup("pit_errors", ["carrier", "origin"]))


@pytest.mark.slow
def test_as_of_join_on_dataframes_uses_the_same_join(spark, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    prices = spark.createDataFrame(
        [("X", at(0), 1.0), ("X", at(2), 2.0), ("Y", at(1), 10.0)], "ticker string, ts timestamp, price double")
    ticks = spark.createDataFrame(
        [("X", at(1)), ("X", at(2)), ("Y", at(7)), ("Z", at(1))], "ticker string, ts timestamp")
    runs = [("auto", None), ("intervals", None), ("intervals", timedelta(seconds=1)),  # keys-only path
            ("intervals", timedelta(days=1)), ("union", None), ("union-wide", None),  # fine path
            ("union", "no broadcast"), ("intervals", "no broadcast")]  # a big spine's fetch: no semi-join
    for plan, bin_size in runs:
        if bin_size == "no broadcast":
            monkeypatch.setattr(planner, "BROADCAST_MATCH_ROWS", 0)
            bin_size = None
        out = as_of_join(ticks, prices, ["ticker"], spine_time="ts", event_time="ts",
                         lookback=timedelta(minutes=5), prefix="last", plan=plan, bin_size=bin_size)
        assert result(out, ["ticker", "ts"]) == [
            ("X", at(1).replace(tzinfo=None), 1.0), ("X", at(2).replace(tzinfo=None), 2.0),
            ("Y", at(7).replace(tzinfo=None), None), ("Z", at(1).replace(tzinfo=None), None),
        ]


@pytest.mark.slow
def test_auto_plan_splits_a_hot_key_only_where_tasks_run_in_parallel(spark, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    prices = spark.createDataFrame(
        [("HOT", at(m), float(m)) for m in range(0, 40, 2)] + [("X", at(1), -1.0), ("Y", at(3), -3.0)],
        "ticker string, ts timestamp, price double")
    ticks = spark.createDataFrame(
        [("HOT", at(m + 1)) for m in range(0, 40, 5)] + [("X", at(2)), ("Y", at(2))], "ticker string, ts timestamp")

    def plan_and_rows() -> tuple[str, list[tuple]]:
        caplog.clear()
        with caplog.at_level("DEBUG", logger="sparkfs.pit.api"):
            out = as_of_join(ticks, prices, ["ticker"], spine_time="ts", event_time="ts")
        chosen = [r.getMessage() for r in caplog.records if "plan" in r.getMessage()]
        return chosen[-1].split("plan ")[1].split(":")[0], result(out, ["ticker", "ts"])

    # local[2]: no key can hold over 2 tasks' share of 2 cores, so the table is not sampled.
    plan, rows = plan_and_rows()
    assert plan == "union"
    # A wider machine (limit 25% of the rows): "HOT" holds 20 of 22 rows, so intervals split it.
    monkeypatch.setattr(planner, "HOT_KEY_TASKS", 0.5)
    hot_plan, hot_rows = plan_and_rows()
    assert hot_plan == "intervals"
    assert hot_rows == rows
    assert rows[:2] == [("HOT", at(1).replace(tzinfo=None), 0.0), ("HOT", at(6).replace(tzinfo=None), 6.0)]


# ---------------------------------------------------------------------------------------------
# Edges found with adversarial inputs (issue #13, item 8)
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_column_names_with_dots_work_on_every_plan(lake: Lakehouse) -> None:
    schema = T.StructType([
        T.StructField("meta.src", T.StringType()),
        T.StructField("t.s", T.TimestampType()),
        T.StructField("s.q", T.LongType()),
        T.StructField("v.x", T.DoubleType()),
    ])
    lake.create("gold", "pit_dots", schema, properties={
        KEYS_PROPERTY: "meta.src", EVENT_TIME_PROPERTY: "t.s", SEQUENCE_PROPERTY: "s.q"})
    lake.spark.createDataFrame([
        ("a", at(0), 1, 1.5), ("a", at(0), 2, 2.5), ("a", at(5), 1, None), ("b", at(0), 1, 9.0),
        (None, at(0), 1, 7.0),
    ], schema).write.format("delta").mode("append").saveAsTable(lake.name("gold", "pit_dots"))
    spine = lake.spark.createDataFrame(
        [("a", at(1), 1), ("a", at(5), 0), ("b", at(20), 1), (None, at(1), 0), ("a", None, 1)],
        "`meta.src` string, `at.time` timestamp, `y.label` long")
    expected = lake.spark.createDataFrame(
        [("a", at(1), 1, 2.5), ("a", at(5), 0, None), ("b", at(20), 1, None), (None, at(1), 0, None),
         ("a", None, 1, None)],
        "`meta.src` string, `at.time` timestamp, `y.label` long, `f_v.x` double")
    order = [F.col(f"`{c}`") for c in ("meta.src", "at.time")]   # chispa's own sort would not quote
    lookup = FeatureLookup("pit_dots", ["meta.src"], "at.time", lookback=timedelta(minutes=10), prefix="f")
    def dotted(plan: str) -> None:
        ts = create_training_set(lake, spine, [lookup], label="y.label", plan=plan)
        assert [p.split(":")[0] for p in ts.plans.values()] == [plan]
        assert_df_equality(ts.df.orderBy(*order), expected.orderBy(*order), ignore_nullable=True)

    each(dotted, PLANS)


@pytest.mark.slow
def test_names_that_differ_only_by_case_clash_unless_spark_is_case_sensitive(spark, lake: Lakehouse) -> None:  # type: ignore[no-untyped-def]
    spine = spark.createDataFrame([("a", at(1), 1.0), (None, at(1), None)], "k string, ts timestamp, V double")
    prices = spark.createDataFrame([("a", at(0), 2.0), ("a", at(2), None)], "k string, ts timestamp, v double")
    with pytest.raises(ColumnNameClashError, match=r"\['v'\] from the feature DataFrame clash.*'v' vs 'V'.*case-insensitive"):
        as_of_join(spine, prices, ["k"], spine_time="ts", event_time="ts")
    feature_table(lake, "pit_case", [("AA", "JFK", at(0), 1.0, 1)])
    lake_spine = lake.spark.createDataFrame([("AA", "JFK", at(1), 1), ("AA", "JFK", None, 0)], SPINE)
    with pytest.raises(ColumnNameClashError, match=r"\['C_delay', 'C_flights'\].*'C_delay' vs 'c_delay'"):
        create_training_set(lake, lake_spine, [
            FeatureLookup("pit_case", ["carrier", "origin"], "at", prefix="c"),
            FeatureLookup("pit_case", ["carrier", "origin"], "at", prefix="C"),
        ])

    spark.conf.set("spark.sql.caseSensitive", "true")
    try:
        out = as_of_join(spine, prices, ["k"], spine_time="ts", event_time="ts")
        assert result(out.select("k", "V", "v"), ["k"]) == [(None, None, None), ("a", 1.0, 2.0)]
    finally:
        spark.conf.unset("spark.sql.caseSensitive")


def test_feature_or_spine_columns_with_the_internal_prefix_are_a_clash_not_dropped(spark) -> None:  # type: ignore[no-untyped-def]
    prices = spark.createDataFrame([("X", at(0), 1.0), ("X", at(5), None)], "ticker string, ts timestamp, __pit_x double")
    ticks = spark.createDataFrame([("X", at(1)), ("X", None)], "ticker string, ts timestamp")
    with pytest.raises(ColumnNameClashError, match=r"feature columns \['__pit_x'\].*reserved prefix '__pit'"):
        as_of_join(ticks, prices, ["ticker"], spine_time="ts", event_time="ts")
    with pytest.raises(ColumnNameClashError, match=r"spine columns \['__PIT0_ts'\].*reserved prefix"):
        as_of_join(ticks.withColumn("__PIT0_ts", F.lit(1)), prices, ["ticker"], spine_time="ts", event_time="ts")
    out = as_of_join(ticks, prices, ["ticker"], spine_time="ts", event_time="ts", prefix="p")
    assert out.columns == ["ticker", "ts", "p___pit_x"]
    assert result(out.select("p___pit_x"), ["p___pit_x"]) == [(None,), (1.0,)]


@pytest.mark.slow
def test_a_lookback_too_long_to_matter_is_no_lookback_and_nothing_overflows(spark) -> None:  # type: ignore[no-untyped-def]
    first, last = datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)
    prices = spark.createDataFrame(
        [("X", at(0), 1.0), ("W", first, 0.5), ("Y", last, 9.0)], "ticker string, ts timestamp, price double")
    ticks = spark.createDataFrame(
        [("X", at(1)), ("W", last), ("Y", last), ("Y", at(0)), ("Z", at(0)), ("X", None)], "ticker string, ts timestamp")
    # A row from year 1 seen from year 9999: only no lookback at all keeps it.
    expected = [("W", 0.5), ("X", None), ("X", 1.0), ("Y", None), ("Y", 9.0), ("Z", None)]
    def joined(lookback: timedelta, plan: str) -> None:
        out = as_of_join(ticks, prices, ["ticker"], spine_time="ts", event_time="ts", lookback=lookback, plan=plan)
        assert result(out.select("ticker", "price"), ["ticker", "price"]) == expected, (lookback, plan)

    each(joined, [(lookback, plan) for lookback in (timedelta.max, timedelta(days=106_000_000),
                                                     datetime.max - datetime.min) for plan in PLANS])


@pytest.mark.slow
def test_duplicate_key_error_counts_spine_rows_behind_a_tie_and_names_the_sequence(lake: Lakehouse) -> None:
    seq_schema = T.StructType([*FEATURES.fields, T.StructField("seq", T.LongType())])
    lake.create("gold", "pit_tie3", FEATURES, properties={KEYS_PROPERTY: "carrier,origin", EVENT_TIME_PROPERTY: "ts"})
    lake.create("gold", "pit_tie_seq", seq_schema, properties={
        KEYS_PROPERTY: "carrier,origin", EVENT_TIME_PROPERTY: "ts", SEQUENCE_PROPERTY: "seq"})
    # Written around the MERGE writer: three rows tie on (keys, ts), and on (keys, ts, seq).
    lake.spark.createDataFrame([("AA", "JFK", at(0), float(i), i, 1) for i in range(3)]
                               + [("AA", "JFK", at(0), 9.0, 9, 0), ("AA", "LGA", at(0), 5.0, 5, 1)], seq_schema) \
        .write.format("delta").mode("append").saveAsTable(lake.name("gold", "pit_tie_seq"))
    lake.read("gold", "pit_tie_seq").where(F.col("seq") == 1).drop("seq") \
        .write.format("delta").mode("append").saveAsTable(lake.name("gold", "pit_tie3"))
    spine = lake.spark.createDataFrame([
        ("AA", "JFK", at(1), 0), ("AA", "JFK", at(1), 0), ("AA", "JFK", at(2), 1),  # three spine rows behind the tie
        ("AA", "LGA", at(1), 1), ("AA", "JFK", at(-1), 0), (None, "JFK", at(1), 0), ("AA", "JFK", None, 1),
    ], SPINE)
    def tied(plan: str) -> None:
        with pytest.raises(DuplicateKeyError) as no_sequence:
            create_training_set(lake, spine, [FeatureLookup("pit_tie3", ["carrier", "origin"], "at")], plan=plan)
        assert "more than one row per (keys, ts) behind 3 spine rows, and no sequence column decides" \
            in str(no_sequence.value), plan
        with pytest.raises(DuplicateKeyError) as with_sequence:
            create_training_set(lake, spine, [FeatureLookup("pit_tie_seq", ["carrier", "origin"], "at")], plan=plan)
        message = str(with_sequence.value)
        assert "more than one row per (keys, ts, seq) behind 3 spine rows: the rows tie on the " \
            "sequence column 'seq' too" in message, plan
        assert "no sequence column" not in message, plan

    each(tied, PLANS)


@pytest.mark.slow
def test_plans_show_every_lookup_also_two_on_one_table(lake: Lakehouse) -> None:
    feature_table(lake, "pit_twice", [("AA", "JFK", at(0), 1.0, 1), ("AA", "JFK", at(5), 5.0, 5)])
    spine = lake.spark.createDataFrame([("AA", "JFK", at(1), 1), ("AA", "JFK", at(5.25), 0), (None, "JFK", None, 0)], SPINE)
    ts = create_training_set(lake, spine, [
        FeatureLookup("pit_twice", ["carrier", "origin"], "at", ["delay"], prefix="now"),
        FeatureLookup("pit_twice", ["carrier", "origin"], "at", ["delay"], lookback=timedelta(seconds=30), prefix="fresh"),
    ], plan="union")
    # Checks and plans follow one rule: the table, then "<table>#2" for a second lookup on it.
    assert list(ts.plans) == ["pit_twice", "pit_twice#2"]
    assert {k: v for k, v in ts.checks.items() if k.startswith("pit_twice")} == {
        "pit_twice.matched": 2, "pit_twice.after_spine": 0, "pit_twice.ties": 0,
        "pit_twice#2.matched": 1, "pit_twice#2.after_spine": 0, "pit_twice#2.before_lookback": 0,
        "pit_twice#2.ties": 0,
    }
    assert result(ts.df.select("at", "now_delay", "fresh_delay"), ["at"]) == [
        (None, None, None), (at(1).replace(tzinfo=None), 1.0, None), (at(5.25).replace(tzinfo=None), 5.0, 5.0)]


@pytest.mark.slow
def test_rebuild_uses_the_recorded_keys_event_time_and_sequence_not_the_current_properties(lake: Lakehouse) -> None:
    schema = T.StructType([*FEATURES.fields, T.StructField("ts2", T.TimestampType())])
    feature_table(lake, "pit_layout", [
        ("AA", "JFK", at(0), 1.0, 1, at(2)),
        ("AA", "JFK", at(0), 2.0, 2, at(0)),   # same event time: the sequence (flights) decides
        ("AA", "LGA", at(1), 3.0, 1, at(5)),
    ], schema, sequence="flights")
    spine = lake.spark.createDataFrame(
        [("AA", "JFK", at(1), 1), ("AA", "LGA", at(3), 0), ("AA", "JFK", None, 1)], SPINE)
    first = create_training_set(
        lake, spine, [FeatureLookup("pit_layout", ["carrier", "origin"], "at", ["delay"])], label="label")
    before = result(first.df.select("origin", "at", "delay"), ["origin", "at"])
    assert before == [("JFK", None, None), ("JFK", at(1).replace(tzinfo=None), 2.0),
                      ("LGA", at(3).replace(tzinfo=None), 3.0)]
    recorded = first.spec.lookups[0]
    assert (recorded.event_time, recorded.sequence, recorded.lookup_key) == (
        "ts", "flights", {"carrier": "carrier", "origin": "origin"})

    # Every layout property changes; each change alone would change the rebuild's answer
    # (other rows, a tie on (keys, ts), a lookup key that no longer fits).
    lake.spark.sql(
        f"ALTER TABLE {lake.name('gold', 'pit_layout')} SET TBLPROPERTIES "
        f"('{EVENT_TIME_PROPERTY}' = 'ts2', '{SEQUENCE_PROPERTY}' = '', '{KEYS_PROPERTY}' = 'carrier')")
    now = create_training_set(
        lake, spine, [FeatureLookup("pit_layout", ["carrier"], "at", ["delay"])], label="label")
    assert result(now.df.select("origin", "at", "delay"), ["origin", "at"]) == [
        ("JFK", None, None), ("JFK", at(1).replace(tzinfo=None), 2.0), ("LGA", at(3).replace(tzinfo=None), 1.0)]

    rebuilt = rebuild_training_set(lake, TrainingSetSpec.from_json(first.spec_json()), spine=spine)
    assert result(rebuilt.df.select("origin", "at", "delay"), ["origin", "at"]) == before
    assert rebuilt.spec == first.spec


@pytest.mark.slow
def test_rebuild_takes_a_plan_and_a_bin_size(lake: Lakehouse) -> None:
    feature_table(lake, "pit_rebuild_plan", [("AA", "JFK", at(0), 1.0, 1), ("AA", "JFK", at(5), 5.0, 5)])
    spine = lake.spark.createDataFrame([("AA", "JFK", at(1), 1), ("AA", "JFK", at(6), 0), ("AA", "JFK", None, 0)], SPINE)
    first = create_training_set(lake, spine, [FeatureLookup("pit_rebuild_plan", ["carrier", "origin"], "at", ["delay"])])
    assert [p.split(":")[0] for p in first.plans.values()] == ["union"]
    rebuilt = rebuild_training_set(lake, first.spec, spine, plan="intervals", bin_size=timedelta(minutes=1))
    assert list(rebuilt.plans.values()) == ["intervals"]
    assert result(rebuilt.df.select("at", "delay"), ["at"]) == [
        (None, None), (at(1).replace(tzinfo=None), 1.0), (at(6).replace(tzinfo=None), 5.0)]


@pytest.mark.slow
def test_databricks_feature_engineering_names_are_accepted(lake: Lakehouse) -> None:
    feature_table(lake, "pit_fe", [("AA", "JFK", at(0), 1.0, 1), ("AA", "JFK", at(5), 5.0, 5)])
    spine = lake.spark.createDataFrame([("AA", "JFK", at(1), 1), ("AA", "JFK", at(7), 0)], SPINE)
    ours = FeatureLookup("pit_fe", ["carrier", "origin"], "at", ["delay"], lookback=timedelta(minutes=2))
    fe = FeatureLookup(table_name="pit_fe", lookup_key=["carrier", "origin"], timestamp_lookup_key="at",
                       feature_names=["delay"], lookback_window=timedelta(minutes=2))
    assert fe == ours
    ts = create_training_set(lake, spine, [fe], label="label")
    assert result(ts.load_df().select("at", "delay"), ["at"]) == [
        (at(1).replace(tzinfo=None), 1.0), (at(7).replace(tzinfo=None), None)]
    assert ts.load_df() is ts.df
    with pytest.raises(SparkfsError, match=r"both features= and feature_names="):
        FeatureLookup("pit_fe", ["carrier"], features=["delay"], feature_names=["delay"])
    with pytest.raises(SparkfsError, match=r"needs a table"):
        FeatureLookup(lookup_key=["carrier"])
    with pytest.raises(SparkfsError, match=r"needs a lookup_key"):
        FeatureLookup(table_name="pit_fe")


def test_a_plan_that_cannot_join_the_lookup_is_refused(spark: SparkSession) -> None:
    features = spark.createDataFrame([("AA", "JFK", at(0), 1.0, 1, at(0))],
                                     T.StructType([*FEATURES.fields, T.StructField("known", T.TimestampType())]))
    two_times = spark.createDataFrame([("AA", "JFK", at(1), 0), ("AA", "JFK", at(2), 0)], SPINE)

    def join(spine: DataFrame, plan: str, known_at: str | None = None) -> DataFrame:
        return as_of_join(spine, features, ["carrier", "origin"], spine_time="at", event_time="ts",
                          features=["delay"], known_at=known_at, plan=plan)

    with pytest.raises(SparkfsError, match=r"plan 'instant' needs every spine time to be one instant.*use 'auto'"):
        join(two_times, "instant")
    with pytest.raises(SparkfsError, match=r"plan 'union' does not support known_at"):
        join(two_times, "union", known_at="known")
    with pytest.raises(SparkfsError, match=r"unknown plan 'fastest': expected one of \('auto', 'instant'"):
        join(two_times, "fastest")
    one_time = two_times.where(F.col("at") == F.lit(at(1)))
    assert [r["delay"] for r in join(one_time, "instant", known_at="known").collect()] == [1.0]
