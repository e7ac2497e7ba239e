"""One duration type for every YAML file: ``Duration`` parses ``"30d"`` and ``"P30D"`` alike.

Accepted forms:

- a whole number and a unit: ``"90s"``, ``"15m"``, ``"3h"``, ``"30d"``, ``"2w"``
  (s = seconds, m = minutes, h = hours, d = days, w = weeks);
- ISO 8601 with weeks, days, hours, minutes and seconds: ``"P30D"``, ``"PT3H"``, ``"P1DT12H"``,
  ``"P2W"``, ``"PT0.5S"``. Years and months are refused: their length varies, and a feature
  window must be a fixed span of time;
- a :class:`~datetime.timedelta` (a config built in Python).

A bare number is refused rather than read as seconds: ``gap: 30`` is far more likely to mean
30 days than 30 seconds. :func:`format_duration` writes the largest whole unit of ``d``, ``h``,
``m``, ``s`` (weeks are written as days: ``"14d"`` reads better next to ``"30d"``), so
``parse_duration(format_duration(x)) == x`` for every non-negative duration.

Example::

    class Split(StrictModel):
        gap: Duration = timedelta(days=30)

    Split.model_validate({"gap": "2w"}).gap              # timedelta(days=14)
    Split(gap=timedelta(hours=36)).model_dump(mode="json")  # {"gap": "36h"}
"""

from __future__ import annotations

import re
from datetime import timedelta
from decimal import Decimal
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_SHORT = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_SHORT_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
# P[nW][nD][T[nH][nM][n[.f]S]], with at least one part, and at least one part after a T.
_ISO = re.compile(
    r"^\s*P(?!\s*$)(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+(?:\.\d{1,6})?)S)?)?\s*$",
    re.IGNORECASE,
)
_FORMAT_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60))

ACCEPTED = (
    "'30d', '3h', '15m', '90s', '2w' (a whole number and a unit: s, m, h, d, w) "
    "or ISO 8601 like 'P30D', 'PT3H', 'P1DT12H' (no years or months)"
)


def parse_duration(value: object) -> timedelta:
    """``"30d"``, ``"2w"``, ``"P30D"``, ``"PT3H"`` (or a timedelta) -> timedelta.

    Raises ValueError naming the accepted forms and the value found.
    """
    if isinstance(value, timedelta):
        return value
    if isinstance(value, str):
        short = _SHORT.match(value)
        if short:
            return timedelta(**{_SHORT_UNITS[short.group(2)]: int(short.group(1))})
        iso = _ISO.match(value)
        if iso:
            return timedelta(**{unit: float(n) for unit, n in iso.groupdict().items() if n is not None})
    hint = " (a number has no unit)" if isinstance(value, int | float) else ""
    raise ValueError(f"expected a duration like {ACCEPTED}; found {value!r}{hint}")


def format_duration(value: timedelta) -> str:
    """The largest whole unit of ``d``, ``h``, ``m``, ``s`` (``"30d"``, ``"36h"``, ``"90m"``);
    ISO 8601 seconds (``"PT0.5S"``) when the duration is not whole seconds."""
    if value < timedelta(0):
        return "-" + format_duration(-value)
    seconds = value.days * 86_400 + value.seconds
    if value.microseconds:
        exact = Decimal(seconds) + Decimal(value.microseconds) / 10**6
        return f"PT{exact.normalize():f}S"
    for unit, size in _FORMAT_UNITS:
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, when_used="json")
]
