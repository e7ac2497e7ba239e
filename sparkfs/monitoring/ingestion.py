"""Ingestion checks per table and day: is the day there, is its volume normal, did it land on time.

For a table with an event-date column (bronze daily sources: ``event_date``) and a landing time
(``_ingested_at``: when the file landed, see :mod:`sparkfs.features.bronze`), for day D:

- ``missing_day``: D has no rows at all -- an alert;
- ``volume``: D's rows against the same weekday of the ``weeks`` weeks before it (weekly
  seasonality: a Saturday is compared with Saturdays); below ``(1 - tolerance) x`` their
  minimum or above ``(1 + tolerance) x`` their maximum is a warning (no history: not judged);
- ``freshness``: how many hours after D ended its last file landed; more than
  ``max_delay_hours`` is an alert (late data: the run that needed it ran without it).

Measured on the landing times the rows carry, not on the wall clock, so checking a day again
(or a backfill of last year) gives the same rows. One aggregation over the days read.

Example::

    rows = ingestion_checks(lake.read("bronze", "flights"), "bronze.flights", date(2013, 6, 3), policy)
    [r for r in rows if r.level != "ok"]
"""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.monitoring.config import IngestionPolicy
from sparkfs.monitoring.tables import AlertRow, IngestionRow

EVENT_DATE, INGESTED_AT = "event_date", "_ingested_at"


def ingestion_checks(
    table_df: DataFrame,
    table_name: str,
    day: date,
    policy: IngestionPolicy,
    *,
    date_column: str = EVENT_DATE,
    ingested_column: str = INGESTED_AT,
) -> list[IngestionRow]:
    """The three checks of the module docstring for ``day`` of ``table_df``."""
    require_columns(table_df, [date_column, ingested_column], table_name)
    history = [day - timedelta(weeks=w) for w in range(1, policy.weeks + 1)]
    counts = {
        r["d"]: (r["rows"], r["landed"])
        for r in table_df.where(F.col(date_column).isin([day, *history]))
        .groupBy(F.col(date_column).alias("d"))
        .agg(F.count(F.lit(1)).alias("rows"), F.max(ingested_column).alias("landed"))
        .collect()
    }
    chunk = day.isoformat()
    rows, landed = counts.get(day, (0, None))
    if rows == 0:
        return [IngestionRow(table_name, "missing_day", chunk, 0.0, None, None, "alert",
                             f"{table_name} has no rows for {chunk}: the day is missing")]
    out = []
    past = [counts[d][0] for d in history if d in counts]
    if past:
        low, high = min(past) * (1 - policy.tolerance), max(past) * (1 + policy.tolerance)
        level = "ok" if low <= rows <= high else "warn"
        out.append(IngestionRow(
            table_name, "volume", chunk, float(rows), low, high, level,
            f"{table_name} has {rows} rows for {chunk}; the same weekday of the {len(past)} week(s) "
            f"before had {min(past)}..{max(past)} (expected {low:.0f}..{high:.0f})"))
    day_end = datetime.combine(day + timedelta(days=1), datetime.min.time())
    delay = (landed - day_end).total_seconds() / 3600 if landed is not None else float("nan")
    level = "alert" if delay > policy.max_delay_hours else "ok"
    out.append(IngestionRow(
        table_name, "freshness", chunk, delay, None, policy.max_delay_hours, level,
        f"the last rows of {chunk} in {table_name} landed {delay:.1f} h after the day ended "
        f"(at {landed}; expected within {policy.max_delay_hours:g} h)"))
    return out


def ingestion_alerts(rows: list[IngestionRow]) -> list[AlertRow]:
    """Alert rows for the checks that are not ok (no model: model name and version are empty)."""
    return [
        AlertRow("", "", r.check, r.table_name, r.chunk, r.level, "ingestion", r.value,
                 r.expected_high if r.expected_high is not None else 0.0, "", r.message)
        for r in rows if r.level != "ok"
    ]
