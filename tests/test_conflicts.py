"""Concurrent writers: a MERGE that loses a commit race is retried; retries are bounded and end in a clear error."""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import pytest
from delta.exceptions import ConcurrentAppendException
from pyspark.sql import types as T

from sparkfs.core.conflicts import is_write_conflict, retry_on_conflict
from sparkfs.core.errors import WriteConflictError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.jobs.console import report_error

SCHEMA = T.StructType(
    [
        T.StructField("id", T.IntegerType()),
        T.StructField("day", T.DateType()),
        T.StructField("value", T.DoubleType()),
    ]
)
DAY = date(2013, 1, 2)


@pytest.mark.slow  # two cold MERGEs at once: seconds on a free machine, a minute on a busy one
def test_concurrent_merges_of_one_partition_both_commit_without_duplicates(lake: Lakehouse) -> None:
    lake.create("gold", "conflict_merge", SCHEMA, partition_by=["day"])
    merge_upsert(lake, "gold", "conflict_merge", lake.spark.createDataFrame([(0, DAY, 0.0)], SCHEMA),
                 keys=["id", "day"], partition_by="day")
    batches = [
        lake.spark.createDataFrame([(1, DAY, 1.0), (2, DAY, None)], SCHEMA),  # None: a null value
        lake.spark.createDataFrame([(2, DAY, None), (3, DAY, 3.0)], SCHEMA),  # id 2 in both batches
    ]
    barrier = threading.Barrier(len(batches))

    def one(i: int) -> MergeResult | Exception:
        barrier.wait()
        try:
            return merge_upsert(lake, "gold", "conflict_merge", batches[i], keys=["id", "day"], partition_by="day")
        except Exception as exc:  # returned, so the assertion names it
            return exc

    with ThreadPoolExecutor(max_workers=len(batches)) as pool:
        results = list(pool.map(one, range(len(batches))))

    assert not [r for r in results if isinstance(r, Exception)], results
    rows = sorted(tuple(r) for r in lake.read("gold", "conflict_merge").collect())
    assert rows == [(0, DAY, 0.0), (1, DAY, 1.0), (2, DAY, None), (3, DAY, 3.0)]


@pytest.mark.slow
def test_a_table_another_process_is_creating_is_waited_for_not_failed(lake: Lakehouse) -> None:
    location = lake.location("gold", "conflict_create")
    assert location is not None
    (Path(location) / "_delta_log").mkdir(parents=True)  # the other creator's folder, no commit yet
    other = threading.Timer(1.0, lambda: lake.spark.createDataFrame([], SCHEMA).write.format("delta").save(location))
    other.start()

    lake.create("gold", "conflict_create", SCHEMA)  # failed at once with a non-empty location before

    other.join()
    assert lake.read("gold", "conflict_create").columns == ["id", "day", "value"]


def conflict() -> ConcurrentAppendException:
    return ConcurrentAppendException("[DELTA_CONCURRENT_APPEND] Files were added to partition [day=2013-01-02] by a concurrent update.")


def test_a_conflict_is_retried_with_growing_bounded_waits_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    waits: list[float] = []
    outcomes: list[Exception | str] = [conflict(), conflict(), "committed"]

    def action() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    with caplog.at_level(logging.WARNING, logger="sparkfs.core.conflicts"):
        assert retry_on_conflict(action, "`sparkfs_gold`.`t`", "MERGE", sleep=waits.append) == "committed"

    assert len(waits) == 2 and 0.25 <= waits[0] <= 0.5 and 0.5 <= waits[1] <= 1.0
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["MERGE into sparkfs_gold.t: another writer committed first"] * 2


def test_the_last_conflict_is_a_sparkfs_error_naming_the_table_and_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise conflict()

    with pytest.raises(WriteConflictError) as failure:
        retry_on_conflict(action, "`sparkfs_gold`.`t`", "MERGE", attempts=3, sleep=lambda s: None)

    assert len(calls) == 3
    assert report_error(failure.value) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: MERGE into sparkfs_gold.t lost 3 commit races in a row to other writers (ConcurrentAppendException")
    assert "Re-run the job once the other runs on this table have finished" in err and err.count("\n") == 1


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def action() -> None:
        calls.append(1)
        raise ValueError("not a conflict")

    with pytest.raises(ValueError):
        retry_on_conflict(action, "t", "MERGE", sleep=lambda s: None)
    assert calls == [1]
    assert is_write_conflict(RuntimeError("io.delta.exceptions.ConcurrentAppendException: Files were added"))
    assert not is_write_conflict(RuntimeError("Files were added"))
