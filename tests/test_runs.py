"""Run records that survive a crash: started rows before the work, the end after it, abandoned runs found."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.runs import ABANDONED, RUN_STAGE, current_records, recent_runs, record_run

# Every run record is a few Delta commits (the started rows, the final append): seconds per test.
pytestmark = pytest.mark.slow


def statuses(lake: Lakehouse, run_id: str) -> list[tuple[int, str, str]]:
    rows = current_records(lake.read("ops", "run_records")).where(F.col("run_id") == run_id).select("seq", "stage", "status")
    return sorted((r[0], r[1], r[2]) for r in rows.collect())


def test_a_run_is_recorded_as_started_before_its_work_and_ended_after(lake: Lakehouse) -> None:
    with record_run(lake, "rr_job", {"date": "2013-01-02"}) as run:
        assert statuses(lake, run.run_id) == [(0, RUN_STAGE, "started")]
        with run.stage("first"):
            pass
        with run.stage("first"):  # a stage name may repeat in a run (the daily job's two pipelines)
            run.flush()  # the stages' 'started' rows are written on a thread, while they work
            during = statuses(lake, run.run_id)
    assert during == [(0, RUN_STAGE, "started"), (1, "first", "started"), (2, "first", "started")]
    assert statuses(lake, run.run_id) == [(0, RUN_STAGE, "succeeded"), (1, "first", "succeeded"), (2, "first", "succeeded")]


def test_a_failed_run_records_where_it_failed(lake: Lakehouse) -> None:
    with pytest.raises(ValueError), record_run(lake, "rr_fail", {}) as run, run.stage("load"):
        raise ValueError("bad input")
    assert statuses(lake, run.run_id) == [(0, RUN_STAGE, "failed"), (1, "load", "failed")]
    summary = next(r for r in recent_runs(lake, 50) if r.run_id == run.run_id)
    assert (summary.status, summary.last_stage, summary.error) == ("failed", "load", "ValueError: bad input")


def test_a_run_whose_process_died_is_reported_abandoned_by_the_next_run(
    lake: Lakehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A process id that no longer exists on this host: a child that has exited.
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(child.stdout)
    monkeypatch.setattr(os, "getpid", lambda: dead_pid)
    crashed = record_run(lake, "rr_killed", {"date": "2013-01-03"})
    run = crashed.__enter__()  # the run starts and enters a stage; then its process is "killed":
    run.stage("gold.carrier_delays").__enter__()  # neither ever exits, as after kill -9
    run.flush()  # the stage ran long enough for its 'started' row to land
    monkeypatch.undo()
    assert statuses(lake, run.run_id) == [(0, RUN_STAGE, "started"), (1, "gold.carrier_delays", "started")]
    listed = next(r for r in recent_runs(lake, 50) if r.run_id == run.run_id)
    assert (listed.status, listed.last_stage, listed.pid) == (ABANDONED, "gold.carrier_delays", dead_pid)

    with record_run(lake, "rr_next", {}) as following:
        pass

    assert [r.run_id for r in following.abandoned] == [run.run_id]
    assert statuses(lake, run.run_id) == [(0, RUN_STAGE, ABANDONED), (1, "gold.carrier_delays", ABANDONED)]
    with record_run(lake, "rr_after", {}) as later:  # reported once, not by every run after
        pass
    assert later.abandoned == []


def test_a_live_run_is_not_abandoned(lake: Lakehouse) -> None:
    with record_run(lake, "rr_outer", {}) as outer:
        with record_run(lake, "rr_inner", {}) as inner:  # another run while this process lives
            pass
        assert outer.run_id not in [r.run_id for r in inner.abandoned]
        assert next(r for r in recent_runs(lake, 50) if r.run_id == outer.run_id).status == "started"


def test_a_stage_that_found_its_input_already_done_logs_only_for_verbose(
    lake: Lakehouse, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="sparkfs.core.runs"), record_run(lake, "rr_quiet", {}) as run:
        with run.stage("bronze.planes") as st:  # its file was ingested by an earlier run
            st.rows_out, st.details["files_skipped"] = 0, 1
        with run.stage("bronze.flights") as st:  # nothing landed: worth a line
            st.rows_out, st.details["files_skipped"] = 0, 0
        with run.stage("bronze.weather") as st:  # an empty file landed: worth a line
            st.rows_out, st.details["files_skipped"], st.details["files_new"] = 0, 3, 1
        with run.stage("silver.planes") as st:
            st.rows_out, st.details["skipped_up_to_date"] = 0, True
        with run.stage("silver.flights") as st:
            st.rows_out, st.details["skipped_up_to_date"] = 5, False
    levels = {r.getMessage().split(":")[0]: r.levelname for r in caplog.records if r.getMessage().startswith("[rr_quiet] ")}
    assert levels == {"[rr_quiet] bronze.planes": "DEBUG", "[rr_quiet] bronze.flights": "INFO",
                      "[rr_quiet] bronze.weather": "INFO",
                      "[rr_quiet] silver.planes": "DEBUG", "[rr_quiet] silver.flights": "INFO"}
