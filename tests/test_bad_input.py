"""The bad-input matrix: each kind of bad delivery lands where the README's table says.

Every kind is one day's delivery of the example's flights source, through the repository's own
source, silver spec and suite (``conf/``). All days are ingested in one bronze pass, which keeps
every line as it came (a malformed one as base64). Then each day runs alone under STRICT (it
publishes, or fails with the message the table gives: each failing day into a silver table of its
own, two side by side), and the whole window once under WARN (its rows land in silver or in
quarantine with their reasons).
"""

from __future__ import annotations

import base64
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import functions as F
from side_by_side import each
from synthetic_landing import flight, repo_flights

from sparkfs.core.errors import ValidationFailedError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.bronze import ingest
from sparkfs.features.expectations import ExpectationSpec
from sparkfs.features.silver import MALFORMED_REASON, ValidationPolicy, refine

pytestmark = pytest.mark.slow

TABLE = "bad_input"
_, _, SUITE = repo_flights(TABLE)


def label(type_: str, column: str | None = None) -> str:
    """The label a row of the repository's flights suite is quarantined with."""
    spec: ExpectationSpec = next(s for s in SUITE if s.type == type_ and s.kwargs.get("column", column) == column)
    return spec.label


NOT_NULL_CARRIER = label("expect_column_values_to_not_be_null", "carrier")
UNIQUE_KEY = label("expect_compound_columns_to_be_unique")
OTHER_DAY = "flight_date_is_the_delivery_day"


def between(column: str) -> str:
    return label("expect_column_values_to_be_between", column)


def day(n: int) -> date:
    return date(2013, 1, n)  # 2013-01-01 is a Tuesday; 2013-01-08 is the next one


def lines(*rows: dict[str, object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def good(d: date, number: int = 1, **changes: object) -> dict[str, object]:
    return {**flight(d, "AA", number, 600, 5), **changes}


@dataclass(frozen=True)
class Case:
    kind: str
    day: date
    content: bytes
    published: int = 0  # rows in silver for the day, under WARN
    quarantined: dict[str, int] = field(default_factory=dict)  # reason -> rows
    strict: str | None = None  # what a STRICT run of the day fails with; None: it publishes
    file_name: str = "flights.json"


HEADER = ",".join(good(day(10))).encode() + b"\n"
CASES = [
    Case("a good day (the next Tuesday's baseline)", day(1), lines(*(good(day(1), n) for n in (1, 2, 3))), published=3),
    Case("impossible values", day(2), lines(
        good(day(2)), good(day(2), 2, dep_time=9999), good(day(2), 3, arr_time=800, arr_delay=99999),
        good(day(2), 4, air_time=-30)),
        published=1, quarantined={between("dep_time"): 1, between("arr_delay"): 1, between("air_time"): 1},
        strict="3 of 4 rows rejected"),
    Case("a row of another day (2031) in the file", day(3), lines(good(day(3)), good(day(3), 2, year=2031)),
         published=1, quarantined={OTHER_DAY: 1}, strict="1 of 2 rows rejected"),
    Case("a null key and a key twice", day(4), lines(good(day(4)), good(day(4), 2, carrier=None),
                                                      good(day(4), 3), good(day(4), 3, dep_delay=9)),
         published=1, quarantined={NOT_NULL_CARRIER: 1, UNIQUE_KEY: 2}, strict="3 of 4 rows rejected"),
    Case("a value that does not parse", day(5), lines(good(day(5)), good(day(5), 2, dep_delay="late")),
         published=1, quarantined={"parse(dep_delay)": 1}, strict="1 of 2 rows rejected"),
    Case("a line that is not UTF-8", day(6), lines(good(day(6))) + b'{"carrier": "A\xff\xfe"}\n',
         published=1, quarantined={MALFORMED_REASON: 1}, strict="1 of 2 rows rejected"),
    Case("a truncated last line", day(7), lines(good(day(7))) + b'{"year": 2013, "month": 1, "da',
         published=1, quarantined={MALFORMED_REASON: 1}, strict="1 of 2 rows rejected"),
    Case("10x the usual rows", day(8), lines(*(good(day(8), n) for n in range(1, 31))),
         published=30, strict="volume outside its band: 2013-01-08 has 30 rows"),
    Case("an empty file", day(9), b"", strict="expect_table_row_count_to_be_between failed"),
    Case("a header-only file", day(10), HEADER, quarantined={MALFORMED_REASON: 1}, strict="1 of 1 rows rejected"),
    Case("another day's file", day(11), lines(good(day(10)), good(day(10), 2)),
         quarantined={OTHER_DAY: 2}, strict="2 of 2 rows rejected"),
    Case("a file name with spaces", day(12), lines(good(day(12))), published=1, file_name="flights 12 Jan (final).json"),
    Case("an unexpected extra column", day(13), lines(good(day(13), gate="B12")), published=1),
    Case("a missing optional column", day(14), lines({k: v for k, v in good(day(14)).items() if k != "air_time"}),
         published=1),
]


def land(landing: Path, source: str) -> None:
    for case in CASES:
        folder = landing / source / case.day.isoformat()
        folder.mkdir(parents=True)
        (folder / case.file_name).write_bytes(case.content)


def test_every_kind_of_bad_input_lands_where_the_readme_says(lake: Lakehouse, tmp_path: Path) -> None:
    source, spec, suite = repo_flights(TABLE)
    days = [case.day for case in CASES]
    land(tmp_path, source.name)

    ingest(lake, source, tmp_path, days, run_id="bronze")

    bronze = lake.read("bronze", source.name)
    kept = dict(bronze.groupBy("event_date").count().collect())
    for case in CASES:  # bronze keeps every line as it came
        assert kept.get(case.day, 0) == len(case.content.splitlines()), case.kind
    malformed = bronze.where(F.col("event_date") == day(6)).where(F.col("_malformed").isNotNull()).first()
    assert malformed is not None and base64.b64decode(malformed["_malformed"]) == b'{"carrier": "A\xff\xfe"}'
    assert bronze.where(F.col("event_date") == day(13)).first()["gate"] == "B12"  # type: ignore[index]

    strict = ValidationPolicy(policy="strict")

    def fails_strict(number: int, case: Case) -> None:
        """The day alone under STRICT, into a silver table (and quarantine) of its own."""
        alone = spec.model_copy(update={"name": f"{TABLE}_strict_{number}"})
        with pytest.raises(ValidationFailedError, match=re.escape(case.strict or "")):
            refine(lake, alone, suite, strict, [case.day], run_id="strict", validations=[])

    each(fails_strict, [(number, case) for number, case in enumerate(CASES) if case.strict])
    accepted = refine(lake, spec, suite, strict, [c.day for c in CASES if not c.strict], run_id="strict")
    assert accepted.rows_rejected == 0

    warned = refine(lake, spec, suite, ValidationPolicy(policy="warn"), days, run_id="warn")

    assert [v.day for v in warned.volumes if not v.ok] == [day(8), day(9)]  # 10x and empty
    published = Counter(r[0] for r in lake.read("silver", TABLE).select("flight_date").collect())
    reasons = lake.read("silver", f"{TABLE}_quarantine").select(
        "_delivery_date", F.explode("_failed_expectations")).collect()
    for case in CASES:
        assert published[case.day] == case.published, case.kind
        assert Counter(r[1] for r in reasons if r[0] == case.day) == Counter(case.quarantined), case.kind
    silver = lake.read("silver", TABLE)
    assert "gate" not in silver.columns
    assert silver.where(F.col("flight_date") == day(14)).first()["air_time"] is None  # type: ignore[index]
