"""Silver's volume check: is a day's delivery about as big as the same weekday's before it?

A daily delivery of 10x or 0.1x the usual rows passes every row-level expectation, yet it is
almost always an upstream fault (a file delivered many times over, a truncated export). For each
day of a run, the rows of the day's newest delivery in bronze (what silver refines, rejected
rows included) are compared with the same weekday of the ``weeks`` weeks before (weekly
seasonality: a Saturday with Saturdays): below ``min / factor`` or above ``max x factor`` fails.
A day without such history (the start of a backfill) is not judged.

The band is wide on purpose: a failure stops a STRICT run. On the 2013 New York data, no day
leaves ``[0.66, 1.16] x`` its band's extremes (Thanksgiving is the low one), so the default factor
of 3 never fires on real days. The monitoring job's ingestion checks (``conf/monitoring.yaml``)
warn on a narrower band, after the fact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from pydantic import Field
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.config import StrictModel


class VolumeCheck(StrictModel):
    """``validation.volume`` in ``conf/pipeline.yaml``."""

    weeks: int = Field(4, ge=1)
    factor: float = Field(3.0, gt=1.0)


@dataclass(frozen=True)
class DayVolume:
    day: date
    rows: int
    past: tuple[int, ...]  # the same weekday's rows, the weeks before (those that have any)
    low: float
    high: float

    @property
    def ok(self) -> bool:
        return not self.past or self.low <= self.rows <= self.high

    def describe(self) -> str:
        return (f"{self.day} has {self.rows} rows; the same weekday of the {len(self.past)} week(s) before "
                f"had {min(self.past)}..{max(self.past)} (expected {self.low:.0f}..{self.high:.0f})")


def history_days(days: Sequence[date], check: VolumeCheck) -> list[date]:
    """The days ``days`` are compared with, and ``days`` themselves."""
    return sorted({d - timedelta(weeks=w) for d in days for w in range(0, check.weeks + 1)})


def day_volumes(delivered_df: DataFrame, date_column: str, days: Sequence[date], check: VolumeCheck) -> list[DayVolume]:
    """Each of ``days`` against its band; ``delivered_df`` holds the newest delivery of each of
    :func:`history_days` (one aggregation)."""
    counts = {r["d"]: int(r["n"]) for r in delivered_df.groupBy(F.col(date_column).alias("d"))
              .agg(F.count(F.lit(1)).alias("n")).collect()}
    volumes = []
    for day in days:
        past = tuple(counts[d] for w in range(1, check.weeks + 1) if (d := day - timedelta(weeks=w)) in counts)
        low, high = (min(past) / check.factor, max(past) * check.factor) if past else (0.0, 0.0)
        volumes.append(DayVolume(day, counts.get(day, 0), past, low, high))
    return volumes
