"""Column -> Column helpers: built-in Spark expressions only, no Python UDFs.

Each helper takes columns (a :class:`~pyspark.sql.Column` or a column name) and returns a Column,
so it composes inside ``select`` / ``withColumn`` and in the transformations of
:mod:`sparkfs.features.transformations`. Nulls pass through: a null input gives a null output.

Timestamps are Spark ``TIMESTAMP`` values, i.e. instants; sparkfs sessions run in UTC, so
calendar parts are UTC parts unless you first convert with :func:`local_time`.
"""

from __future__ import annotations

import zoneinfo

from pyspark.sql import Column
from pyspark.sql import functions as F

ColumnOrName = Column | str


def _col(column: ColumnOrName) -> Column:
    return F.col(column) if isinstance(column, str) else column


def safe_ratio(numerator: ColumnOrName, denominator: ColumnOrName) -> Column:
    """``numerator / denominator`` as a double; null when the denominator is 0 or either side is null.

    Never raises on division by zero, also under ANSI mode (Spark 4's default).

    Example: ``safe_ratio("dep_delay_sum_7d", "dep_delay_count_7d")``.
    """
    return F.try_divide(_col(numerator).cast("double"), _col(denominator).cast("double"))


def clip(column: ColumnOrName, lower: float | None = None, upper: float | None = None) -> Column:
    """Values below ``lower`` become ``lower``, values above ``upper`` become ``upper``.

    Either bound may be None (no bound on that side); both bounds are inclusive. Null stays null
    (unlike ``least``/``greatest``, which skip nulls and would turn a null into a bound).

    Example: ``clip("dep_delay", -30, 600)``.
    """
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"clip: lower bound {lower} is above upper bound {upper}")
    c = _col(column)
    clipped = c
    if upper is not None:
        clipped = F.when(c > upper, F.lit(upper)).otherwise(clipped)
    if lower is not None:
        clipped = F.when(c < lower, F.lit(lower)).otherwise(clipped)
    return clipped


def seconds_between(end: ColumnOrName, start: ColumnOrName) -> Column:
    """``end - start`` in seconds (double, microsecond precision); negative when end is earlier.

    Example: ``seconds_between("arr_ts", "dep_ts")``.
    """
    return (F.unix_micros(_col(end)) - F.unix_micros(_col(start))) / 1_000_000


def local_time(ts: ColumnOrName, tz: str) -> Column:
    """The wall-clock time of instant ``ts`` in time zone ``tz`` (an IANA name), as TIMESTAMP_NTZ.

    Use it before calendar parts when local time matters (a 7 pm departure from New York is
    23:00 or 00:00 UTC). Exact whatever the session time zone is, except inside the repeated
    hour of a daylight-saving change of a non-UTC session time zone (sparkfs sessions are UTC).

    Example: ``hour_of_day(local_time("dep_ts", "America/New_York"))``.
    """
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {tz!r}; expected an IANA name such as 'Europe/Paris'") from exc
    return F.convert_timezone(F.current_timezone(), F.lit(tz), _col(ts).cast("timestamp_ntz"))


def hour_of_day(ts: ColumnOrName) -> Column:
    """Hour 0-23 of a timestamp."""
    return F.hour(_col(ts))


def day_of_week(ts: ColumnOrName) -> Column:
    """ISO day of week: 1 = Monday ... 7 = Sunday (Spark's ``dayofweek`` starts on Sunday)."""
    return F.weekday(_col(ts)) + 1


def is_weekend(ts: ColumnOrName) -> Column:
    """True on Saturday and Sunday."""
    return F.weekday(_col(ts)) >= 5


def day_of_month(ts: ColumnOrName) -> Column:
    """Day 1-31 of the month."""
    return F.dayofmonth(_col(ts))


def day_of_year(ts: ColumnOrName) -> Column:
    """Day 1-366 of the year."""
    return F.dayofyear(_col(ts))


def month(ts: ColumnOrName) -> Column:
    """Month 1-12."""
    return F.month(_col(ts))
