"""Bronze ingestion: raw rows appended once per file, with metadata, schema evolution and clear errors."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime, timezone
from pathlib import Path

import pytest
from chispa import assert_df_equality
from pyspark.sql import functions as F

from sparkfs.core.errors import MissingSourceDataError, SchemaMismatchError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.bronze import IngestResult, SourceSpec, ingest

D1, D2 = date(2013, 1, 1), date(2013, 1, 2)


def land(landing: Path, source: str, day: date | None, rows: list[dict[str, object]], name: str = "part.json") -> Path:
    folder = landing / source / day.isoformat() if day else landing / source
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def spec(name: str, arrival: str = "daily") -> SourceSpec:
    return SourceSpec(name=name, description="test source", arrival=arrival, required_columns=["id", "value"])


@pytest.mark.slow
def test_ingest_appends_raw_strings_with_metadata_partitioned_by_event_date(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_basic", D1, [{"id": 1, "value": 2.5}, {"id": 2, "value": None}])
    land(tmp_path, "bz_basic", D2, [{"id": 3, "value": "oops"}])

    result = ingest(lake, spec("bz_basic"), tmp_path, [D1, D2], run_id="run-a")

    assert (result.files_new, result.files_skipped, result.rows_written) == (2, 0, 3)
    table = lake.read("bronze", "bz_basic")
    actual = table.select("id", "value", "event_date", "_run_id", "_source_file").orderBy("id")
    expected = lake.spark.createDataFrame(
        [
            ("1", "2.5", D1, "run-a", "bz_basic/2013-01-01/part.json"),
            ("2", None, D1, "run-a", "bz_basic/2013-01-01/part.json"),
            ("3", "oops", D2, "run-a", "bz_basic/2013-01-02/part.json"),
        ],
        "id string, value string, event_date date, _run_id string, _source_file string",
    )
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)
    assert table.select("_record_id").distinct().count() == 3
    assert table.where(F.col("_ingested_at").isNull() | F.col("_source_modified").isNull()).count() == 0
    detail = lake.table("bronze", "bz_basic").detail().select("partitionColumns").first()
    assert detail is not None and detail[0] == ["event_date"]


@pytest.mark.slow
def test_rerun_ingests_nothing_and_a_new_file_is_appended(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_rerun", D1, [{"id": 1, "value": 1}])
    first = ingest(lake, spec("bz_rerun"), tmp_path, [D1], run_id="r1")

    again = ingest(lake, spec("bz_rerun"), tmp_path, [D1], run_id="r2")
    assert (again.files_new, again.files_skipped, again.version) == (0, 1, None)
    assert lake.version("bronze", "bz_rerun") == first.version

    land(tmp_path, "bz_rerun", D1, [{"id": 1, "value": 9}], name="correction.json")
    third = ingest(lake, spec("bz_rerun"), tmp_path, [D1], run_id="r3")
    assert (third.files_new, third.files_skipped) == (1, 1)
    runs = [r[0] for r in lake.read("bronze", "bz_rerun").orderBy("_run_id").select("_run_id").collect()]
    assert runs == ["r1", "r3"]


@pytest.mark.slow
def test_new_upstream_column_is_kept(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_evolve", D1, [{"id": 1, "value": 1}])
    land(tmp_path, "bz_evolve", D2, [{"id": 2, "value": 2, "gate": "B12"}])
    ingest(lake, spec("bz_evolve"), tmp_path, [D1], run_id="r1")
    ingest(lake, spec("bz_evolve"), tmp_path, [D2], run_id="r2")

    actual = lake.read("bronze", "bz_evolve").select("id", "gate").orderBy("id")
    expected = lake.spark.createDataFrame([("1", None), ("2", "B12")], "id string, gate string")
    assert_df_equality(actual, expected, ignore_nullable=True, ignore_metadata=True)


@pytest.mark.slow
def test_missing_required_column_stops_before_writing(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_missing", D1, [{"id": 1, "value": 1}])
    ingest(lake, spec("bz_missing"), tmp_path, [D1], run_id="r1")
    version = lake.version("bronze", "bz_missing")
    land(tmp_path, "bz_missing", D2, [{"id": 2, "amount": 5}])

    with pytest.raises(SchemaMismatchError, match=r"lack required columns \['value'\]; they have \['amount', 'id'\]"):
        ingest(lake, spec("bz_missing"), tmp_path, [D2], run_id="r2")
    assert lake.version("bronze", "bz_missing") == version


def test_a_day_without_files_is_an_error(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_gap", D1, [{"id": 1, "value": 1}])
    with pytest.raises(MissingSourceDataError, match=r"no 'bz_gap' files for \['2013-01-02'\]"):
        ingest(lake, spec("bz_gap"), tmp_path, [D1, D2], run_id="r1")


@pytest.mark.slow
def test_an_empty_delivery_covers_its_day_and_appends_nothing(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_empty", D1, [{"id": 1, "value": 2.5}])
    land(tmp_path, "bz_empty", D2, [])  # the upstream had no rows that day

    result = ingest(lake, spec("bz_empty"), tmp_path, [D1, D2], run_id="run-a")
    again = ingest(lake, spec("bz_empty"), tmp_path, [D2], run_id="run-b")

    assert (result.files_new, result.rows_written) == (1, 1)
    assert (again.files_new, again.rows_written) == (0, 0)
    assert lake.read("bronze", "bz_empty").count() == 1


@pytest.mark.slow
def test_once_source_is_not_partitioned_and_ingested_once(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_dim", None, [{"id": "a", "value": 1}, {"id": "b", "value": None}], name="dim.json")
    first = ingest(lake, spec("bz_dim", "once"), tmp_path, [D1], run_id="r1")
    second = ingest(lake, spec("bz_dim", "once"), tmp_path, [D2], run_id="r2")

    assert (first.rows_written, second.files_new) == (2, 0)
    table = lake.read("bronze", "bz_dim")
    assert "event_date" not in table.columns
    assert [r[0] for r in table.select("_source_file").distinct().collect()] == ["bz_dim/dim.json"]


@pytest.mark.slow
def test_ingested_at_is_when_the_file_landed_not_when_the_run_read_it(lake: Lakehouse, tmp_path: Path) -> None:
    path = land(tmp_path, "bz_landed", D1, [{"id": 1, "value": 1}])
    landed = datetime(2013, 1, 2, 5, 30, tzinfo=timezone.utc).timestamp()  # as the delivery stamped it
    os.utime(path, (landed, landed))

    ingest(lake, spec("bz_landed"), tmp_path, [D1], run_id="r1")

    row = lake.read("bronze", "bz_landed").select("_ingested_at", "_source_modified").first()
    assert row is not None and tuple(row) == (datetime(2013, 1, 2, 5, 30), datetime(2013, 1, 2, 5, 30))


def _ingest_concurrently(lake: Lakehouse, source: SourceSpec, landing: Path, day: date, runs: int) -> list[object]:
    """``runs`` ingestions of ``day`` started at once on the shared session (threads); their results or errors."""
    barrier = threading.Barrier(runs)

    def one(i: int) -> object:
        barrier.wait()
        try:
            return ingest(lake, source, landing, [day], run_id=f"concurrent-{i}")
        except Exception as exc:  # returned, so the test can say what failed
            return exc

    with ThreadPoolExecutor(max_workers=runs) as pool:
        return list(pool.map(one, range(runs)))


@pytest.mark.slow  # two cold MERGEs at once
def test_two_concurrent_ingestions_of_a_day_load_each_file_once(lake: Lakehouse, tmp_path: Path) -> None:
    source = spec("bz_race")
    land(tmp_path, "bz_race", D1, [{"id": 0, "value": 0}])
    ingest(lake, source, tmp_path, [D1], run_id="first")  # the table exists; the race is on day 2
    land(tmp_path, "bz_race", D2, [{"id": i, "value": i} for i in range(5)])

    results = _ingest_concurrently(lake, source, tmp_path, D2, runs=2)

    assert not [r for r in results if isinstance(r, Exception)], results
    day = lake.read("bronze", "bz_race").where(F.col("event_date") == D2)
    assert day.count() == 5
    assert day.select("id").distinct().count() == 5
    assert sorted(r.rows_written for r in results if isinstance(r, IngestResult)) == [0, 5]


@pytest.mark.slow
def test_a_file_replaced_in_place_is_a_new_delivery(lake: Lakehouse, tmp_path: Path) -> None:
    source = spec("bz_replaced")
    path = land(tmp_path, "bz_replaced", D1, [{"id": 1, "value": 1}, {"id": 2, "value": 2}])
    ingest(lake, source, tmp_path, [D1], run_id="r1")
    land(tmp_path, "bz_replaced", D1, [{"id": 1, "value": 10}])  # same name, corrected content
    later = datetime(2013, 1, 3, tzinfo=timezone.utc).timestamp()
    os.utime(path, (later, later))

    again = ingest(lake, source, tmp_path, [D1], run_id="r2")

    assert (again.files_new, again.files_replaced, again.rows_written) == (1, 1, 1)
    rows = lake.read("bronze", "bz_replaced").select("_run_id", "id", "value", "_source_hash")
    assert sorted((r[0], r[1], r[2]) for r in rows.collect()) == [("r1", "1", "1"), ("r1", "2", "2"), ("r2", "1", "10")]
    assert rows.select("_source_hash").distinct().count() == 2
    assert ingest(lake, source, tmp_path, [D1], run_id="r3").files_new == 0


@pytest.mark.slow
def test_a_file_name_with_spaces_is_ingested_once(lake: Lakehouse, tmp_path: Path) -> None:
    land(tmp_path, "bz_spaces", D1, [{"id": 1, "value": 1}], name="late delivery+fix.json")
    ingest(lake, spec("bz_spaces"), tmp_path, [D1], run_id="r1")

    again = ingest(lake, spec("bz_spaces"), tmp_path, [D1], run_id="r2")

    assert again.files_new == 0
    files = [r[0] for r in lake.read("bronze", "bz_spaces").select("_source_file").distinct().collect()]
    assert files == ["bz_spaces/2013-01-01/late delivery+fix.json"]
