"""The smoke job: proves the local lakehouse works end to end (create, MERGE, read back, history)."""

from __future__ import annotations

from datetime import date

from pyspark.sql import DataFrame
from pyspark.sql import types as T

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.tables import format_history, history_rows

SMOKE_TABLE = ("ops", "smoke_events")
SMOKE_SCHEMA = T.StructType(
    [
        T.StructField("event_id", T.LongType(), False),
        T.StructField("event_date", T.DateType(), False),
        T.StructField("carrier", T.StringType(), True),
        T.StructField("dep_delay", T.DoubleType(), True),
    ]
)


def smoke_batch(lake: Lakehouse, day: date) -> DataFrame:
    rows = [
        (1, day, "UA", 2.0),
        (2, day, "AA", -4.0),
        (3, day, "B6", None),
        (4, day, "DL", 31.5),
    ]
    return lake.spark.createDataFrame(rows, SMOKE_SCHEMA)


def run_smoke(lake: Lakehouse, day: date) -> MergeResult:
    """Create the smoke table if needed and MERGE one deterministic batch into it."""
    layer, table = SMOKE_TABLE
    lake.create(layer, table, SMOKE_SCHEMA, partition_by=["event_date"], comment="sparkfs smoke test")
    return merge_upsert(
        lake, layer, table, smoke_batch(lake, day), keys=["event_id", "event_date"], partition_by="event_date"
    )


def smoke_job(ctx: JobContext, window: RunWindow | None) -> None:
    day = window.start if window else date(2013, 1, 1)
    lake = ctx.lake
    with record_run(lake, "smoke", {"date": day}) as run:
        with run.stage("merge") as stage:
            result = run_smoke(lake, day)
            stage.table_name, stage.table_version = result.table, result.version
            stage.rows_in, stage.rows_out = result.source_rows, result.rows_inserted
        layer, table = SMOKE_TABLE
        rows = lake.read(layer, table).count()
    history = history_rows(lake, layer, table, limit=5)
    name = result.table.replace("`", "")
    print(f"\n{name}: {rows} rows; this MERGE inserted {result.rows_inserted}, "
          f"updated {result.rows_updated} (version {result.version})")
    print(f"Delta history, newest first (at most 5; 'sparkfs history {layer}.{table}' shows more):")
    print("\n".join(format_history(history)))
