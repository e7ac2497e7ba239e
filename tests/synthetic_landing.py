"""A tiny synthetic landing zone shaped like the example's upstream: flights, weather and
dimensions as newline-delimited JSON files, each stamped with the time it lands."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import yaml

from sparkfs.examples.flights.delivery import SCHEDULE_COLUMNS, landing_time
from sparkfs.features.bronze import SourceSpec
from sparkfs.features.expectations import ExpectationSpec
from sparkfs.features.pipeline import load_pipeline
from sparkfs.features.silver import SilverSpec

REPO = Path(__file__).resolve().parents[1]
D1, D2 = date(2013, 1, 1), date(2013, 1, 2)


def clock(hhmm: int, minutes: int) -> int:
    """The local clock time ``minutes`` after ``hhmm``, as the source writes it (hhmm, 0-2359)."""
    total = (hhmm // 100 * 60 + hhmm % 100 + minutes) % 1440
    return total // 60 * 100 + total % 60


def flight(day: date, carrier: str, number: int, sched: int, delay: int | None, origin: str = "JFK", dest: str = "BOS") -> dict[str, object]:
    return {
        "year": day.year, "month": day.month, "day": day.day, "dep_time": None if delay is None else clock(sched, delay),
        "sched_dep_time": sched, "dep_delay": delay, "arr_time": None, "sched_arr_time": sched + 100,
        "arr_delay": None, "carrier": carrier, "flight": number, "tailnum": "N1", "origin": origin, "dest": dest,
        "air_time": 40, "distance": 187, "hour": sched // 100, "minute": sched % 100, "time_hour": None,
    }


def weather(day: date, hour: int, precip: float) -> dict[str, object]:
    utc = datetime(day.year, day.month, day.day) + timedelta(hours=hour + 5)
    return {
        "origin": "JFK", "year": day.year, "month": day.month, "day": day.day, "hour": hour, "temp": 30.0,
        "dewp": 20.0, "humid": 60.0, "wind_dir": 270, "wind_speed": 10.0, "wind_gust": None, "precip": precip,
        "pressure": 1012.0, "visib": 10.0, "time_hour": utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def write_lines(path: Path, rows: list[dict[str, object]], landed: datetime | None = None) -> None:
    """Newline-delimited JSON, stamped with its landing time (``landed``, UTC) when given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if landed is not None:
        stamp = landed.replace(tzinfo=timezone.utc).timestamp()
        os.utime(path, (stamp, stamp))


def land_day(landing: Path, day: date, flights: list[dict[str, object]], hours: dict[int, float]) -> None:
    """One local date as the upstream delivers it: its schedule (the flights without outcomes) the
    evening before, its flights and weather after the day (times from the example's upstream)."""
    folder = day.isoformat()
    schedule = [{k: v for k, v in f.items() if k in SCHEDULE_COLUMNS} for f in flights]
    write_lines(landing / "schedules" / folder / "schedules.json", schedule, landing_time("schedules", day))
    write_lines(landing / "flights" / folder / "flights.json", flights, landing_time("flights", day))
    write_lines(landing / "weather" / folder / "weather.json", [weather(day, h, p) for h, p in hours.items()],
                landing_time("weather", day))


def land_synthetic(landing: Path) -> None:
    """Two days of a few flights and weather hours, and tiny dimensions (the upstream's job)."""
    land_day(landing, D1, [
        flight(D1, "AA", 1, 600, 10),
        flight(D1, "AA", 2, 600, 10, dest="MIA"),  # same carrier, same departure instant
        flight(D1, "UA", 3, 2330, 45),  # departs after midnight, local and UTC
        flight(D1, "UA", 4, 900, None),  # cancelled
    ], {0: 0.1, 12: 0.1, 23: 0.1})
    land_day(landing, D2, [
        flight(D2, "AA", 1, 600, -5),
        flight(D2, "UA", 3, 700, 120),
    ], {0: 0.0, 12: 0.0})
    dims_landed = datetime(2012, 12, 31, 18, 0)  # before the first day: two landings of this zone are alike
    write_lines(landing / "planes" / "planes.json", [
        {"tailnum": "N1", "year": 2004, "type": "Fixed wing multi engine", "manufacturer": "EMBRAER",
         "model": "EMB-145XR", "engines": 2, "seats": 55, "speed": None, "engine": "Turbo-fan"},
    ], dims_landed)
    write_lines(landing / "airlines" / "airlines.json", [{"carrier": "AA", "name": "American"},
                                                         {"carrier": "UA", "name": "United"}], dims_landed)
    write_lines(landing / "airports" / "airports.json", [
        {"faa": "JFK", "name": "John F Kennedy Intl", "lat": 40.6, "lon": -73.8, "alt": 13, "tz": -5, "dst": "A",
         "tzone": "America/New_York"},
    ], dims_landed)


def private_conf(conf: Path, landing: Path) -> Path:
    """A copy of the repository's conf folder whose pipeline reads ``landing`` (no upstream)."""
    shutil.copytree(REPO / "conf", conf)
    text = (conf / "pipeline.yaml").read_text()
    text = text.replace("upstream: sparkfs.examples.flights.delivery:deliver", "upstream: null")
    (conf / "pipeline.yaml").write_text(text.replace("${SPARKFS_LANDING_DIR:-landing}", str(landing)))
    return conf


def trim_conf(conf: Path, sources: Sequence[str], gold: Sequence[str]) -> Path:
    """Keep only ``sources`` (with their silver tables) and the ``gold`` feature tables in ``conf``:
    the same code paths on fewer tables, for tests that run the features job many times."""
    pipeline = yaml.safe_load((conf / "pipeline.yaml").read_text())
    pipeline["sources"] = [s for s in pipeline["sources"] if s["name"] in sources]
    pipeline["silver"] = [s for s in pipeline["silver"] if s["source"] in sources]
    (conf / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    tables = yaml.safe_load((conf / "feature_tables.yaml").read_text())
    tables["tables"] = [t for t in tables["tables"] if t["name"] in gold]
    (conf / "feature_tables.yaml").write_text(yaml.safe_dump(tables, sort_keys=False))
    return conf


def repo_flights(name: str) -> tuple[SourceSpec, SilverSpec, list[ExpectationSpec]]:
    """The example's flights source, silver spec and suite (conf/), under a table name of a test."""
    pipeline = load_pipeline(REPO / "conf", Path("."))
    source = pipeline.source("flights").model_copy(update={"name": f"{name}_raw"})
    spec = next(s for s in pipeline.config.silver if s.name == "flights")
    return source, spec.model_copy(update={"name": name, "source": f"{name}_raw"}), pipeline.suites["flights"]
