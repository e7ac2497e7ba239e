"""Gold builders of the example: each reads silver and returns the rows of one feature table.

Builders of tables with an event time keep silver's landing time (``LANDED_AT``), from which each
gold row's ``known_at`` is derived."""

from __future__ import annotations

from datetime import timedelta

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.feature_tables import LANDED_AT, FeatureSpan

# Silver flights and weather are partitioned by the local (New York) date; an instant can lie a
# calendar day off its local date (UTC offset), and a departure up to a day after its scheduled
# date (dep_delay <= 1440 min is an expectation). Reads widen their partition range by this much.
PARTITION_SLACK = timedelta(days=2)



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
                "wind_gust", "precip", "pressure", "visib", LANDED_AT)
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
            LANDED_AT,
        )
    )


def carrier_departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Departure events per carrier (rolled up by the carrier_delays table's ``rolling`` spec)."""
    return _departures(lake, span).drop("origin", "dest")


def route_departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """Departure events per route (origin, dest) (rolled up by route_delays' ``rolling`` spec)."""
    return _departures(lake, span).drop("carrier")
