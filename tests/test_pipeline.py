"""The features job end to end on a tiny synthetic landing zone, and the flights conforming rules."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import pytest
from chispa import assert_df_equality
from e2e_lakehouse import SharedLakehouse
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from synthetic_landing import D1, D2, land_synthetic, private_conf, trim_conf

from sparkfs.catalog.lineage import upstream
from sparkfs.core.config import Settings, StorageSettings
from sparkfs.core.errors import ConfigError, SparkfsError
from sparkfs.core.lakehouse import EVENT_TIME_PROPERTY, KEYS_PROPERTY, Lakehouse, checksum
from sparkfs.core.runs import RunWindow, current_records, record_run
from sparkfs.examples.flights.conform import conform_flights
from sparkfs.examples.flights.delivery import SCHEDULE_COLUMNS, deliver
from sparkfs.features.feature_tables import FeatureTableSpec
from sparkfs.features.pipeline import in_parallel, load_pipeline, run_pipeline
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.features import features_job

REPO = Path(__file__).resolve().parents[1]
GOLD = ("planes", "weather_hourly", "carrier_delays", "route_delays")
OUT_OF_ORDER_GOLD = ("weather_hourly", "carrier_delays", "route_delays")


@pytest.fixture(scope="module")
def pipeline_ctx(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobContext]:
    """A private lakehouse (own schemas) and a conf folder whose pipeline reads a synthetic landing
    zone: flights and weather, and the gold tables built from them."""
    root = tmp_path_factory.mktemp("pipeline")
    # The sources and gold tables the out-of-order test compares (each features run costs seconds per table).
    conf = trim_conf(private_conf(root / "conf", root / "landing"), ("flights", "weather"), OUT_OF_ORDER_GOLD)
    land_synthetic(root / "landing")
    schemas = {layer: f"pipe_{layer}" for layer in ("bronze", "silver", "gold", "ml", "ops")}
    private = settings.model_copy(
        update={"conf_dir": str(conf), "storage": StorageSettings(data_dir=str(root / "data"), schemas=schemas)}
    )
    yield JobContext(private, spark, Lakehouse(spark, private))


@pytest.fixture(scope="module")
def featured(e2e_lakehouse: SharedLakehouse) -> JobContext:
    """The shared lakehouse (``e2e_lakehouse.py``): the features job run once for D1, then once
    for D2 (two daily runs) on ``land_synthetic``'s files, for every test here that reads what
    it wrote."""
    return e2e_lakehouse.ctx


@pytest.mark.e2e
def test_features_job_end_to_end_and_rerun_changes_nothing(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path
) -> None:
    # The rerun writes (run records, maybe a version): on a copy of what the two daily runs wrote.
    shared = e2e_lakehouse.lake
    written = [(layer, t) for layer in ("bronze", "silver", "gold", "ops") for t in shared.tables(layer)]
    pipeline_ctx = e2e_lakehouse.clone(tmp_path, "rerun", written)
    lake = pipeline_ctx.lake
    before = {t: checksum(lake.read("gold", t)) for t in GOLD}
    versions = {t: lake.version("gold", t) for t in GOLD}

    features_job(pipeline_ctx, RunWindow(D2, D2))

    assert {t: checksum(lake.read("gold", t)) for t in GOLD} == before
    for table in GOLD:
        last = lake.table("gold", table).history(1).select("version", "operation", "operationMetrics").first()
        assert last is not None
        if last["version"] > versions[table]:  # a MERGE ran: it inserted and updated nothing
            assert last["operation"] == "MERGE"
            assert (last["operationMetrics"]["numTargetRowsInserted"], last["operationMetrics"]["numTargetRowsUpdated"]) == ("0", "0")
    assert lake.read("bronze", "flights").count() == 6  # bronze did not grow on the rerun

    records = current_records(lake.read("ops", "run_records")).where(F.col("job") == "features")
    assert records.select("run_id").distinct().count() == 3
    stages = {r["stage"] for r in records.select("stage").collect()}
    assert {"bronze.flights", "silver.flights", "gold.carrier_delays", "gold.planes"} <= stages
    assert records.where(F.col("status") != "succeeded").count() == 0


@pytest.mark.e2e
def test_a_static_feature_table_is_rebuilt_only_when_what_it_reads_changed(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path
) -> None:
    written = [("bronze", "planes"), ("silver", "planes"), ("gold", "planes")]
    ctx = e2e_lakehouse.clone(tmp_path, "static", written)
    lake, full = ctx.lake, load_pipeline(ctx.settings.conf_dir, ctx.settings.data_path)
    config = full.config.model_copy(update={
        "upstream": None, "sources": [full.source("planes")],
        "silver": [t for t in full.config.silver if t.name == "planes"]})
    planes_only = dataclasses.replace(full, config=config,
                                      feature_tables=[t for t in full.feature_tables if t.name == "planes"])

    def gold_stage() -> tuple[bool, int]:
        with record_run(lake, "features", {"date": D2}) as run:
            run_pipeline(lake, planes_only, RunWindow(D2, D2), run)
        stage = current_records(lake.read("ops", "run_records")).where(
            (F.col("run_id") == run.run_id) & (F.col("stage") == "gold.planes")).first()
        assert stage is not None and stage["status"] == "succeeded"
        return "skipped_up_to_date" in (stage["details"] or ""), lake.version("gold", "planes")

    version = lake.version("gold", "planes")
    assert gold_stage() == (True, version)  # built by the shared lakehouse's runs from this silver
    tailnum, seats = lake.read("silver", "planes").where(F.col("seats").isNotNull()).select("tailnum", "seats").first()
    lake.spark.sql(f"UPDATE {lake.name('silver', 'planes')} SET seats = seats + 1 WHERE tailnum = '{tailnum}'")
    skipped, rebuilt = gold_stage()
    assert not skipped and rebuilt > version
    assert lake.read("gold", "planes").where(F.col("tailnum") == tailnum).first()["seats"] == seats + 1
    assert gold_stage() == (True, rebuilt)


def plane_makers(lake: Lakehouse, span: object) -> DataFrame:
    """A feature table built from another one (gold.planes): planes per manufacturer."""
    return lake.read("gold", "planes").groupBy("manufacturer").agg(F.count("*").alias("planes"))


@pytest.mark.e2e
def test_a_feature_table_built_from_another_reads_it_as_this_run_wrote_it(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path
) -> None:
    # Gold tables are built side by side; one whose builder reads a table declared before it
    # waits for that table. Here gold.planes does not exist before the run: without the wait the
    # builder would find no table.
    ctx = e2e_lakehouse.clone(tmp_path, "derived", [("bronze", "planes"), ("silver", "planes")])
    lake, full = ctx.lake, load_pipeline(ctx.settings.conf_dir, ctx.settings.data_path)
    makers = FeatureTableSpec.model_validate({
        "name": "plane_makers", "description": "planes per manufacturer", "owner": "tests",
        "keys": ["manufacturer"], "build": f"{__name__}:plane_makers",
        "columns": {"manufacturer": "aircraft manufacturer", "planes": "planes it built"}})
    config = full.config.model_copy(update={
        "upstream": None, "sources": [full.source("planes")], "parallel_stages": 2,
        "silver": [t for t in full.config.silver if t.name == "planes"]})
    planes = [t for t in full.feature_tables if t.name == "planes"]
    pipeline = dataclasses.replace(full, config=config, feature_tables=[*planes, makers])
    assert not lake.exists("gold", "planes")

    with record_run(lake, "features", {"date": D2}) as run:
        run_pipeline(lake, pipeline, RunWindow(D2, D2), run)

    expected = lake.read("gold", "planes").groupBy("manufacturer").agg(F.count("*").alias("planes"))
    got = lake.read("gold", "plane_makers")
    assert got.count() == expected.count()
    assert got.agg(F.sum("planes")).first()[0] == lake.read("gold", "planes").count() > 0
    assert got.select("manufacturer", "planes").exceptAll(expected).isEmpty()


def test_stages_side_by_side_all_run_and_the_first_failure_is_raised() -> None:
    def task(ran: list[str], name: str, fail: bool = False) -> None:
        time.sleep(0.05)
        ran.append(name)
        if fail:
            raise ValueError(name)

    for threads in (1, 3):
        ran: list[str] = []
        tasks = [partial(task, ran, "a"), partial(task, ran, "b", True), partial(task, ran, "c", True),
                 partial(task, ran, "d")]
        with pytest.raises(ValueError, match="^b$"):
            in_parallel(threads, tasks)
        assert sorted(ran) == ["a", "b", "c", "d"], threads


@pytest.mark.e2e
def test_days_run_out_of_order_build_the_same_gold_rows(pipeline_ctx: JobContext, featured: JobContext) -> None:
    # D1's delivery holds an hour of D2 in UTC (23:00 New York): run after D2, D1 still builds it.
    features_job(pipeline_ctx, RunWindow(D2, D2))
    features_job(pipeline_ctx, RunWindow(D1, D1))

    lake, in_order = pipeline_ctx.lake, featured.lake
    assert sorted(lake.tables("gold")) == sorted(OUT_OF_ORDER_GOLD)
    for table in OUT_OF_ORDER_GOLD:
        properties = lake.properties("gold", table)
        keys = [*properties[KEYS_PROPERTY].split(","), properties[EVENT_TIME_PROPERTY]]
        got, expected = lake.read("gold", table).select(*keys), in_order.read("gold", table).select(*keys)
        assert got.count() == got.distinct().count() == expected.count(), table
        assert got.exceptAll(expected).isEmpty(), table
    late_hour = datetime(2013, 1, 2, 4, tzinfo=timezone.utc)  # D1 23:00 in New York
    assert lake.read("gold", "weather_hourly").where(F.col("time_hour") == late_hour).count() == 1


@pytest.mark.e2e
def test_every_write_records_its_lineage_down_to_the_landed_files(featured: JobContext) -> None:
    lake = featured.lake
    graph = upstream(lake, "gold.carrier_delays")
    by_target: dict[str, set[str]] = {}
    for source, target in graph.edges:
        by_target.setdefault(target.name, set()).add(source.name)

    # The newest recorded write is the newest commit that wrote rows (a rerun's MERGE that changed
    # nothing may commit a version of its own, with nothing to record).
    assert graph.root.version == last_write(lake, "gold", "carrier_delays")
    assert by_target["gold.carrier_delays"] == {"silver.flights"}  # what its builder read
    assert by_target["silver.flights"] == {"bronze.flights"}
    assert {Path(f).parent.as_posix() for f in by_target["bronze.flights"]} == {f"flights/{D2}"}  # the run's files
    # The silver version the builder read holds the last write's rows: that write, or a later
    # commit that set only properties (the refine's ``sparkfs.refined_from``).
    silver = next(s for s, t in graph.edges if t.name == "gold.carrier_delays")
    written = last_write(lake, "silver", "flights")
    assert silver.version is not None and silver.version >= written
    since = lake.table("silver", "flights").history().where(F.col("version") > written)
    assert {r[0] for r in since.where(F.col("version") <= silver.version).select("operation").collect()} <= {
        "SET TBLPROPERTIES"}
    # A rerun (the test above, if it ran first) wrote no rows, so it recorded nothing new.
    edges = lake.read("ops", "lineage").where(F.col("target") == "gold.carrier_delays")
    assert edges.select("target_version").distinct().count() == 2  # D1's write and D2's


def last_write(lake: Lakehouse, layer: str, table: str) -> int:
    """The newest version of a table whose MERGE inserted or updated rows."""
    wrote = (lake.table(layer, table).history().where(F.col("operation") == "MERGE")
             .where((F.col("operationMetrics.numTargetRowsInserted") != "0")
                    | (F.col("operationMetrics.numTargetRowsUpdated") != "0")))
    return int(wrote.agg(F.max("version")).first()[0])


@pytest.mark.e2e
def test_carrier_features_count_only_departed_flights(featured: JobContext) -> None:
    lake = featured.lake
    carrier = lake.read("gold", "carrier_delays").where(F.col("carrier") == "UA")
    actual = carrier.select("event_ts", "carrier_dep_delay_count_1d", "carrier_dep_delay_mean_1d",
                            "carrier_is_cancelled_sum_1d").orderBy("event_ts")
    expected = lake.spark.createDataFrame(
        [
            # 09:00 EST cancelled flight: event at its scheduled departure, no delay observed
            (datetime(2013, 1, 1, 14, 0), 0, None, 1),
            # 23:30 EST + 45 min = 00:15 EST on Jan 2 = 05:15 UTC
            (datetime(2013, 1, 2, 5, 15), 1, 45.0, 1),
            # 07:00 EST + 120 min = 14:00 UTC on Jan 2: (13:00 UTC Jan 1, 14:00 Jan 2]; the 14:00 cancellation is out
            (datetime(2013, 1, 2, 14, 0), 2, 82.5, 0),
        ],
        "event_ts timestamp, carrier_dep_delay_count_1d long, carrier_dep_delay_mean_1d double, carrier_is_cancelled_sum_1d long",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)
    # Two AA flights departing at one instant are one gold row that counts both.
    aa = lake.read("gold", "carrier_delays").where((F.col("carrier") == "AA") & (F.col("event_ts") == datetime(2013, 1, 1, 11, 10)))
    assert [tuple(r) for r in aa.select("carrier_dep_delay_count_1h").collect()] == [(2,)]


@pytest.mark.e2e
def test_gold_tables_are_documented(featured: JobContext) -> None:
    lake = featured.lake
    for table in GOLD:
        fields = lake.read("gold", table).schema.fields
        assert all(f.metadata.get("comment") for f in fields), table
        assert lake.properties("gold", table)["sparkfs.owner"] == "flights-data-team"


def test_conform_flights_makes_utc_instants(spark: SparkSession) -> None:
    raw = spark.createDataFrame(
        [
            (2013, 1, 1, 515, 517, 2.0),  # EST: UTC-5
            (2013, 7, 1, 2359, 2, 3.0),  # EDT: UTC-4; departs after local midnight
            (2013, 1, 1, 900, None, None),  # cancelled
            (2013, 13, 1, 900, 900, 0.0),  # not a date
        ],
        "year int, month int, day int, sched_dep_time int, dep_time int, dep_delay double",
    )
    actual = conform_flights(raw).select("flight_date", "sched_dep_ts", "dep_ts", "is_cancelled")
    expected = spark.createDataFrame(
        [
            (date(2013, 1, 1), datetime(2013, 1, 1, 10, 15), datetime(2013, 1, 1, 10, 17), False),
            (date(2013, 7, 1), datetime(2013, 7, 2, 3, 59), datetime(2013, 7, 2, 4, 2), False),
            (date(2013, 1, 1), datetime(2013, 1, 1, 14, 0), None, True),
            (None, None, None, False),
        ],
        "flight_date date, sched_dep_ts timestamp, dep_ts timestamp, is_cancelled boolean",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)


def test_features_job_needs_a_window(pipeline_ctx: JobContext) -> None:
    with pytest.raises(SparkfsError, match="needs --date"):
        features_job(pipeline_ctx, None)


def test_repo_pipeline_conf_loads(tmp_path: Path) -> None:
    pipeline = load_pipeline(REPO / "conf", tmp_path)
    assert [s.name for s in pipeline.config.silver] == [
        "schedules", "flights", "weather", "planes", "airlines", "airports"]
    assert pipeline.landing_dir == tmp_path / "landing"


def test_deliver_writes_a_day_once_stamped_with_when_it_lands(tmp_path: Path) -> None:
    assert deliver(tmp_path, [date(2013, 2, 1)], sources=["schedules"]) == 1  # the evening before
    assert not (tmp_path / "flights").exists()
    assert deliver(tmp_path, [date(2013, 2, 1)]) == 5  # + flights and weather of the day, 3 dimensions
    day = tmp_path / "flights" / "2013-02-01" / "flights.json"
    first = json.loads(day.read_text().splitlines()[0])
    assert (first["year"], first["month"], first["day"]) == (2013, 2, 1)
    assert isinstance(first["dep_time"], int | None)
    schedule = json.loads((tmp_path / "schedules" / "2013-02-01" / "schedules.json").read_text().splitlines()[0])
    assert sorted(schedule) == sorted(SCHEDULE_COLUMNS)  # no dep_time, dep_delay, arr_delay, ...
    landed = {p.relative_to(tmp_path).as_posix(): datetime.fromtimestamp(p.stat().st_mtime, timezone.utc)
              for p in tmp_path.rglob("*.json")}
    utc = timezone.utc
    assert landed == {
        "schedules/2013-02-01/schedules.json": datetime(2013, 1, 31, 18, 0, tzinfo=utc),
        "flights/2013-02-01/flights.json": datetime(2013, 2, 2, 5, 30, tzinfo=utc),
        "weather/2013-02-01/weather.json": datetime(2013, 2, 2, 5, 30, tzinfo=utc),
        **{f"{d}/{d}.json": datetime(2012, 12, 31, 18, 0, tzinfo=utc) for d in ("planes", "airlines", "airports")},
    }
    assert deliver(tmp_path, [date(2013, 2, 1)]) == 0


@pytest.mark.e2e
def test_schedules_reach_silver_validated_and_stamped_with_their_landing_time(featured: JobContext) -> None:
    lake = featured.lake
    schedules = lake.read("silver", "schedules")
    assert not {"dep_time", "dep_delay", "arr_time", "arr_delay", "air_time"} & set(schedules.columns)
    got = sorted(tuple(r) for r in schedules.select(
        "flight_date", "carrier", "flight", "sched_dep_ts", "_ingested_at").collect())
    evening_before_d1, evening_before_d2 = datetime(2012, 12, 31, 18, 0), datetime(2013, 1, 1, 18, 0)
    assert got == [
        (D1, "AA", 1, datetime(2013, 1, 1, 11, 0), evening_before_d1),
        (D1, "AA", 2, datetime(2013, 1, 1, 11, 0), evening_before_d1),
        (D1, "UA", 3, datetime(2013, 1, 2, 4, 30), evening_before_d1),
        (D1, "UA", 4, datetime(2013, 1, 1, 14, 0), evening_before_d1),
        (D2, "AA", 1, datetime(2013, 1, 2, 11, 0), evening_before_d2),
        (D2, "UA", 3, datetime(2013, 1, 2, 12, 0), evening_before_d2),
    ]
    # Outcomes carry the time they landed (after the day), not when the test ran.
    landed = {r[0] for r in lake.read("bronze", "flights").select("_ingested_at").distinct().collect()}
    assert landed == {datetime(2013, 1, 2, 5, 30), datetime(2013, 1, 3, 5, 30)}
    validated = lake.read("ops", "validation_results").where(F.col("suite") == "schedules")
    assert {(r.window_start, r.success, r.rows_evaluated) for r in validated.collect()} == {
        (D1, True, 4), (D2, True, 2)}


def test_pipeline_names_the_raw_source_of_a_silver_table(tmp_path: Path) -> None:
    pipeline = load_pipeline(REPO / "conf", tmp_path)
    assert pipeline.source_of("schedules") == "schedules"
    with pytest.raises(ConfigError, match=r"declares no silver table 'schedule'; it has \['airlines'"):
        pipeline.source_of("schedule")


def test_features_summary_gives_each_layers_rows_in_one_line() -> None:
    from sparkfs.core.runs import StageRecord
    from sparkfs.jobs.features import summary

    def at(seconds: float) -> datetime:
        return datetime(2013, 1, 2) + timedelta(seconds=seconds)

    stages = [  # a layer's stages side by side: its seconds run from the first start to the last end
        StageRecord("upstream", at(0), rows_out=4, duration_s=1.0),
        StageRecord("bronze.flights", at(1), rows_out=6, duration_s=2.0),
        StageRecord("bronze.planes", at(1.2), rows_out=0, duration_s=0.5),
        StageRecord("silver.flights", at(3), rows_in=6, rows_out=5, rows_rejected=1, duration_s=3.0),
        StageRecord("gold.carrier_delays", at(6), rows_in=5, rows_out=5, duration_s=4.3),
    ]
    assert summary(stages, RunWindow(D1, D2), "abc").splitlines() == [
        "features 2013-01-01..2013-01-02 (run abc) in 10.3s; rows out per layer:",
        "  upstream 4 (1.0s) -> bronze 6 (2 tables, 2.0s) -> silver 5 (1 table, 1 rejected, 3.0s)"
        " -> gold 5 (1 table, 4.3s)",
    ]
