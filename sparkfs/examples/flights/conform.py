"""Silver conformers of the example: typed raw rows -> conformed rows (New York local times -> UTC)."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

NEW_YORK = "America/New_York"



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


def conform_schedules(schedules_df: DataFrame) -> DataFrame:
    """Add ``flight_date`` (local) and ``sched_dep_ts`` (the scheduled departure, a UTC instant).

    Example: 2013-01-01, sched_dep_time 515 -> flight_date 2013-01-01, sched_dep_ts 10:15 UTC.
    """
    return (
        schedules_df.withColumn("flight_date", local_date("year", "month", "day"))
        .withColumn("sched_dep_ts", local_hhmm_instant("year", "month", "day", "sched_dep_time"))
    )


def conform_flights(flights_df: DataFrame) -> DataFrame:
    """As :func:`conform_schedules`, plus ``dep_ts`` (UTC instant) and ``is_cancelled``.

    Example: 2013-01-01, sched_dep_time 515, dep_delay 2 -> sched_dep_ts 2013-01-01 10:15 UTC,
    dep_ts 10:17 UTC. A flight without ``dep_time`` was cancelled: ``dep_ts`` is null.
    """
    return (
        conform_schedules(flights_df)
        .withColumn("is_cancelled", F.col("dep_time").isNull())
        .withColumn("dep_ts", F.when(~F.col("is_cancelled"), plus_minutes("sched_dep_ts", "dep_delay")))
    )


def conform_weather(weather_df: DataFrame) -> DataFrame:
    """Add ``weather_date``, the local date of the observation (the partition column)."""
    return weather_df.withColumn("weather_date", local_date("year", "month", "day"))
