"""The run-record: every job logs and records what each stage read, wrote and how long it took.

Records live in the Delta table ``<ops schema>.run_records``, an append-only log of the run itself
(stage ``run``) and of each stage, keyed by (run_id, seq). A run's row is appended as ``started``
before any work, each stage's row as ``started`` soon after the stage starts (on a writer thread,
while the stages work, at most one append per :data:`STARTED_ROWS_EVERY`: the rows of the stages
that started meanwhile go in one append), and when the run ends one append gives every row its final status
(``succeeded`` / ``failed``), counts and duration. The newest row of a key (``updated_at``) is
its state: :func:`current_records`. Every write is a blind append, so runs at the same time never
conflict over their records (a MERGE at the end of a run lost the commit race to the other runs'
appends again and again). So a run killed by ``kill -9`` or the out-of-memory killer still
leaves its ``started`` rows, with the host and process id that ran it.

A run still ``started`` whose process is gone is **abandoned**: the next run (any job) finds such
runs, logs them and appends their ``abandoned`` rows, and ``sparkfs runs`` shows them. "Gone"
is known for certain on the same host (no process with that id); a run started on another host
(a Databricks job cluster) counts as abandoned once it is older than :data:`STALE_AFTER`.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import APPEND_LOG_PROPERTIES, Lakehouse
from sparkfs.core.merge import append_rows
from sparkfs.core.rows import latest_rows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunWindow:
    """Inclusive range of event dates a run processes: one day daily, many in a backfill.

    Example::

        window = RunWindow(date(2013, 1, 1), date(2013, 1, 31))
        list(window.days())[:2], str(window)     # [date(2013, 1, 1), date(2013, 1, 2)], '2013-01-01..2013-01-31'
    """

    start: date
    end: date

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise SparkfsError(f"run window ends ({self.end}) before it starts ({self.start})")

    def days(self) -> Iterator[date]:
        day = self.start
        while day <= self.end:
            yield day
            day += timedelta(days=1)

    def __str__(self) -> str:
        return str(self.start) if self.start == self.end else f"{self.start}..{self.end}"


RUN_TABLE = ("ops", "run_records")

RUN_SCHEMA = T.StructType(
    [
        T.StructField("run_id", T.StringType(), False),
        T.StructField("job", T.StringType(), False),
        T.StructField("env", T.StringType(), True),
        T.StructField("params", T.StringType(), True),
        T.StructField("stage", T.StringType(), False),
        T.StructField("status", T.StringType(), False),
        T.StructField("table_name", T.StringType(), True),
        T.StructField("table_version", T.LongType(), True),
        T.StructField("rows_in", T.LongType(), True),
        T.StructField("rows_out", T.LongType(), True),
        T.StructField("rows_rejected", T.LongType(), True),
        T.StructField("started_at", T.TimestampType(), False),
        T.StructField("duration_s", T.DoubleType(), False),
        T.StructField("error", T.StringType(), True),
        T.StructField("details", T.StringType(), True),
        T.StructField("seq", T.IntegerType(), True),
        T.StructField("host", T.StringType(), True),
        T.StructField("pid", T.LongType(), True),
        T.StructField("updated_at", T.TimestampType(), True),
    ]
)
RUN_KEYS = ["run_id", "seq"]  # seq: 0 the run's own row, then the stages in order (a name may repeat)
RUN_STAGE = "run"  # the stage name of a run's own row
STARTED, SUCCEEDED, FAILED, ABANDONED = "started", "succeeded", "failed", "abandoned"
# A run started on another host cannot be checked for a live process: after this long it is abandoned.
STALE_AFTER = timedelta(hours=24)
# Seconds between two appends of ``started`` rows: each append is a Delta commit, and the next one
# reads a new snapshot of the log (about 1-2 s of Spark work each). A process killed in between
# loses at most this long of ``started`` stage rows; its run row is written before any work.
STARTED_ROWS_EVERY = 20.0


@dataclass
class StageRecord:
    """What one stage did; the stage body fills in the counts it knows."""

    stage: str
    started_at: datetime
    table_name: str | None = None
    table_version: int | None = None
    rows_in: int | None = None
    rows_out: int | None = None
    rows_rejected: int | None = None
    status: str = STARTED
    duration_s: float = 0.0
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def describe_stage(record: StageRecord) -> str:
    """``succeeded in 3.2s; rows in 4, out 4; sparkfs_ops.smoke_events v1`` (what is unknown is left out)."""
    counts = [f"{label} {value:,}" for label, value in
              (("in", record.rows_in), ("out", record.rows_out), ("rejected", record.rows_rejected))
              if value is not None]
    parts = [f"{record.status} in {record.duration_s:.1f}s"]
    if counts:
        parts.append("rows " + ", ".join(counts))
    if record.table_name:
        version = "" if record.table_version is None else f" v{record.table_version}"
        parts.append(f"{record.table_name.replace('`', '')}{version}")
    return "; ".join(parts)


@dataclass(frozen=True)
class RunSummary:
    """One run as ``run_records`` holds it: its own row, and the stage it reached or failed in.

    ``status`` is ``started`` (still running), ``succeeded``, ``failed`` or ``abandoned`` (its
    process is gone without recording an end).
    """

    run_id: str
    job: str
    params: str
    status: str
    started_at: datetime
    duration_s: float | None
    host: str | None
    pid: int | None
    last_stage: str | None
    error: str | None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "started_at": self.started_at.isoformat()}


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def process_is_gone(host: str | None, pid: int | None, started_at: datetime, *, now: datetime | None = None) -> bool:
    """Whether the process that started a run has ended: certain on this host, by age elsewhere."""
    if host == socket.gethostname() and pid is not None:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:  # alive, someone else's
            return False
        return False
    return (now or _now()) - started_at > STALE_AFTER


def ensure_run_table(lake: Lakehouse) -> None:
    """Create ``ops.run_records``, or bring a table from an earlier sparkfs up to date (its
    columns, and the small-file compaction an append-only log needs)."""
    layer, table = RUN_TABLE
    if not lake.exists(layer, table):
        lake.create(layer, table, RUN_SCHEMA, properties=APPEND_LOG_PROPERTIES,
                    comment="One row per run and per stage of every sparkfs job run")
        return
    lake.add_columns(layer, table, RUN_SCHEMA)
    lake.ensure_properties(layer, table, APPEND_LOG_PROPERTIES)


def current_records(records: DataFrame) -> DataFrame:
    """The state of each run and stage: the newest row of each (run_id, seq) of ``run_records``
    (a final status wins over ``started`` written in the same microsecond).

    Example: ``current_records(lake.read("ops", "run_records")).where("status = 'failed'")``.
    """
    final = F.col("status") != STARTED
    newest = latest_rows(records.withColumn("_final", final), RUN_KEYS, ["updated_at", "_final"], ties="keep",
                         what="run records")
    return newest.dropDuplicates(RUN_KEYS).drop("_final")


def recent_runs(lake: Lakehouse, limit: int = 20) -> list[RunSummary]:
    """The newest ``limit`` runs, newest first; a run ``started`` whose process is gone shows as ``abandoned``.

    Example: ``[(r.job, r.status) for r in recent_runs(lake, 5)]``.
    """
    layer, table = RUN_TABLE
    if not lake.exists(layer, table):
        return []
    records = lake.read(layer, table)
    if "seq" not in records.columns:  # a table from before run rows: nothing to list yet
        return []
    records = current_records(records)
    runs = records.where(F.col("stage") == RUN_STAGE).orderBy(F.col("started_at").desc()).limit(limit).collect()
    return _summaries(records, runs)


def mark_abandoned(lake: Lakehouse) -> list[RunSummary]:
    """Find the runs left ``started`` by a process that is gone; mark them (and their started
    stages) ``abandoned``; return them. Called when a run starts."""
    layer, table = RUN_TABLE
    records = current_records(lake.read(layer, table)).persist()
    try:
        open_runs = records.where((F.col("stage") == RUN_STAGE) & (F.col("status") == STARTED)).collect()
        gone = _summaries(records, [r for r in open_runs if process_is_gone(r["host"], r["pid"], r["started_at"])])
        if not gone:
            return []
        rows = records.where(F.col("run_id").isin([g.run_id for g in gone]) & (F.col("status") == STARTED)).collect()
    finally:
        records.unpersist()
    marked = {"status": ABANDONED, "updated_at": _now(),
              "error": "abandoned: its process ended without recording an end (killed?)"}
    append_rows(lake, layer, table, [r.asDict() | marked for r in rows], RUN_SCHEMA)
    for run in gone:
        log.warning("run %s of %s (%s) was abandoned in stage %s: its process %s on %s is gone",
                    run.run_id, run.job, run.params, run.last_stage or "(none)", run.pid, run.host)
    return gone


def _summaries(records: DataFrame, runs: list[Row]) -> list[RunSummary]:
    """A summary of each run row, with the newest stage it reached (one query for them all)."""
    if not runs:
        return []
    ids = [r["run_id"] for r in runs]
    last: dict[str, Row] = {}
    stage_rows = records.where(F.col("run_id").isin(ids) & (F.col("seq") > 0)).select(
        "run_id", "seq", "stage", "error").collect()
    for row in stage_rows:
        if row["run_id"] not in last or row["seq"] > last[row["run_id"]]["seq"]:
            last[row["run_id"]] = row
    summaries = []
    for r in runs:
        status = r["status"]
        if status == STARTED and process_is_gone(r["host"], r["pid"], r["started_at"]):
            status = ABANDONED
        stage = last.get(r["run_id"])
        summaries.append(RunSummary(
            run_id=r["run_id"], job=r["job"], params=r["params"] or "", status=status,
            started_at=r["started_at"], duration_s=None if r["status"] == STARTED else r["duration_s"],
            host=r["host"], pid=r["pid"], last_stage=stage["stage"] if stage else None,
            error=r["error"] or (stage["error"] if stage else None),
        ))
    return summaries


@dataclass
class RunRecorder:
    """Records a run's stages in ``ops.run_records`` as they start and end (see the module doc)."""

    lake: Lakehouse
    job: str
    params: dict[str, Any]
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    stages: list[StageRecord] = field(default_factory=list)
    abandoned: list[RunSummary] = field(default_factory=list)  # earlier runs found abandoned at start
    run_record: StageRecord = field(default_factory=lambda: StageRecord(stage=RUN_STAGE, started_at=_now()))

    _pending: list[Future[None]] = field(default_factory=list, repr=False)
    _writer: ThreadPoolExecutor | None = field(default=None, repr=False)
    _queued: list[dict[str, Any]] = field(default_factory=list, repr=False)  # started rows not yet appended
    _queue_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _scheduled: bool = field(default=False, repr=False)  # an append is waiting to take the queue
    _last_append: float = field(default=0.0, repr=False)  # time.monotonic() of the last append
    _now: threading.Event = field(default_factory=threading.Event, repr=False)  # flush: append without waiting

    @contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(stage=name, started_at=_now())
        with self._queue_lock:  # stages may start side by side (one thread each)
            self.stages.append(record)
            seq = len(self.stages)
        self._append_started_in_background(seq)
        start = time.perf_counter()
        log.debug("[%s] %s: started", self.job, name)
        try:
            yield record
            record.status = SUCCEEDED
        except BaseException as exc:
            record.status = FAILED
            record.error = f"{type(exc).__name__}: {exc}"[:4000]
            raise
        finally:
            record.duration_s = round(time.perf_counter() - start, 3)
            # A stage whose input was all processed before (files already ingested, a silver table
            # up to date) wrote nothing: its line is for `-v`, its record is kept like any other.
            details = record.details
            already_done = (details.get("files_skipped") and not details.get("files_new")) or details.get(
                "skipped_up_to_date")
            idle = record.status == SUCCEEDED and not record.rows_out and already_done
            log.log(logging.DEBUG if idle else logging.INFO, "[%s] %s: %s", self.job, name, describe_stage(record))

    def _rows(self) -> list[dict[str, Any]]:
        common = {"run_id": self.run_id, "job": self.job, "env": self.lake.settings.env,
                  "params": json.dumps(self.params, default=str, sort_keys=True), "host": socket.gethostname(),
                  "pid": os.getpid(), "updated_at": _now()}
        return [{**{k: v for k, v in asdict(s).items() if k != "details"}, **common, "seq": seq,
                 "details": json.dumps(s.details, default=str, sort_keys=True)}
                for seq, s in enumerate([self.run_record, *self.stages])]

    def _append_started(self, seq: int) -> None:
        """Record that the run (seq 0) or its stage ``seq`` started: a blind append, cheap and
        never in conflict with other runs' records."""
        append_rows(self.lake, *RUN_TABLE, [self._rows()[seq]], RUN_SCHEMA)
        self._last_append = time.monotonic()

    def _append_started_in_background(self, seq: int) -> None:
        """Queue stage ``seq``'s ``started`` row for the writer thread, which appends while the
        stages work.

        One thread appends, at most once per :data:`STARTED_ROWS_EVERY`, and each append takes
        every row queued until then: an append costs a second or two of Spark work, and a daily
        run's 30 stages would otherwise make as many commits to the log. :meth:`flush` and
        :meth:`save` append what is queued without waiting.
        """
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sparkfs-run-record")
        with self._queue_lock:
            self._queued.append(self._rows()[seq])
            if self._scheduled:  # the waiting append will take this row too
                return
            self._scheduled = True
        self._pending.append(self._writer.submit(self._append_queued))

    def _append_queued(self) -> None:
        self._now.wait(max(0.0, self._last_append + STARTED_ROWS_EVERY - time.monotonic()))
        with self._queue_lock:
            rows, self._queued, self._scheduled = self._queued, [], False
        if rows:
            append_rows(self.lake, *RUN_TABLE, rows, RUN_SCHEMA)
            self._last_append = time.monotonic()

    def flush(self) -> None:
        """Append every queued ``started`` row now and wait until it is written (the writer thread
        stops; the next stage starts another)."""
        self._now.set()
        for future in self._pending:
            try:
                future.result()
            except Exception as exc:  # the run's final append (save) writes the row anyway
                log.warning("run %s: a stage's 'started' row was not appended (%s); the run's end "
                            "records every stage", self.run_id, exc)
        self._pending.clear()
        self._now.clear()
        if self._writer is not None:
            self._writer.shutdown()
            self._writer = None

    def save(self) -> None:
        """Append the run's row and every stage's row as they are now (the end of the run)."""
        with self._queue_lock:
            self._queued = []  # their started rows: this append gives the same rows their end
        self.flush()
        append_rows(self.lake, *RUN_TABLE, self._rows(), RUN_SCHEMA)


@contextmanager
def record_run(lake: Lakehouse, job: str, params: dict[str, Any]) -> Iterator[RunRecorder]:
    """Time and record a job run: ``started`` rows before any work, the end when it ends (failed too).

    Runs that an earlier process left ``started`` and never ended are marked ``abandoned`` first
    (``run.abandoned`` lists them).

    Example::

        with record_run(lake, "my_job", {"date": day}) as run:
            with run.stage("gold.my_table") as stage:
                result = merge_upsert(lake, "gold", "my_table", rows_df, keys=["id", "ts"])
                stage.rows_out, stage.table_version = result.rows_inserted, result.version
    """
    ensure_run_table(lake)
    recorder = RunRecorder(lake, job, params)
    recorder.abandoned = mark_abandoned(lake)
    log.info("%s run %s: %s", job, recorder.run_id, ", ".join(f"{k}={v}" for k, v in params.items()))
    recorder._append_started(0)
    start = time.perf_counter()
    try:
        yield recorder
        recorder.run_record.status = SUCCEEDED
    except BaseException as exc:
        recorder.run_record.status = FAILED
        recorder.run_record.error = f"{type(exc).__name__}: {exc}"[:4000]
        raise
    finally:
        recorder.run_record.duration_s = round(time.perf_counter() - start, 3)
        recorder.save()
