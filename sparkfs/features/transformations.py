"""DataFrame -> DataFrame transformations, each chainable with ``df.transform(f, ...)``.

Time rule (the same one the point-in-time join uses): a value computed for an event at time ``t``
sees the events of its entity with ``t - w < event_ts <= t``, written ``(t - w, t]`` -- the lower
edge is exclusive, the upper edge inclusive. Events that share the timestamp ``t`` see each other,
just as a point-in-time lookup at ``t`` matches feature rows with ``feature_ts <= t``.

Rows whose event time or any entity key is null are kept, never dropped: they get null features,
because they belong to no entity's timeline.

Why this module is long: it is the transformation library's one public page (windows, lags,
ratios, calendar features, imputation, clipping, latest-per-key, broadcast joins), so a user
finds every DataFrame -> DataFrame step in one place, as in quinn's ``transformations.py``; each
function is short and stands alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import reduce
from typing import Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.checks import require_columns, require_unique
from sparkfs.core.errors import DimensionTooLargeError, SchemaMismatchError
from sparkfs.core.rows import latest_rows, tie_message
from sparkfs.features import functions
from sparkfs.features.functions import safe_ratio

AGGREGATES = ("count", "sum", "mean", "std", "min", "max")

_ONE_MICROSECOND = timedelta(microseconds=1)


def _require_keys(keys: Sequence[str], what: str) -> list[str]:
    if isinstance(keys, str):
        return [keys]
    if not keys:
        raise ValueError(
            f"{what} needs at least one entity key; one global partition would put every row on "
            "one executor"
        )
    return list(keys)


def _require_type(df: DataFrame, column: str, expected: tuple[type[T.DataType], ...], what: str) -> None:
    found = df.schema[column].dataType
    if not isinstance(found, expected):
        names = [t.__name__.removesuffix("Type").lower() for t in expected]
        raise SchemaMismatchError(
            f"{what}: column {column!r} must be of type {' or '.join(names)}; "
            f"found {found.simpleString()}"
        )


def _require_new_columns(df: DataFrame, names: Sequence[str], what: str) -> None:
    clashes = [n for n in names if n in df.columns]
    if clashes:
        raise SchemaMismatchError(
            f"{what} would overwrite existing columns {clashes}; rename them or pick another prefix"
        )


def _on_timeline(keys: Sequence[str], event_time: str) -> Column:
    """True when the row has an event time and all its keys: it belongs to an entity's timeline."""
    return reduce(lambda acc, c: acc & c, [F.col(k).isNotNull() for k in keys], F.col(event_time).isNotNull())


def with_trailing_aggregates(
    df: DataFrame,
    keys: Sequence[str],
    event_time: str,
    value_col: str,
    windows: Mapping[str, timedelta],
    aggs: Sequence[str] = AGGREGATES,
    prefix: str | None = None,
    *,
    closed: Literal["right", "neither"] = "right",
) -> DataFrame:
    """Add trailing time-window aggregates of ``value_col`` per entity, one column per (agg, window).

    For each row with event time ``t``, a window of length ``w`` covers the rows of the same
    ``keys`` with ``t - w < event_ts <= t`` -- ``(t - w, t]``: an event exactly ``w`` before ``t``
    is out, an event exactly at ``t`` is in, and rows sharing the timestamp ``t`` all see each
    other (they are peers in a range frame). This is the point-in-time rule: a feature at ``t``
    sees what a lookup at ``t`` (``feature_ts <= t``) would see. ``closed="neither"`` gives
    ``(t - w, t)`` instead: only events strictly before ``t`` count, so a row never sees its own
    value (nor those of other events at ``t``) -- use it when the value of an event is not yet
    known at its own event time.

    Aggregates: ``count`` (non-null values), ``sum``, ``mean``, ``std`` (sample standard
    deviation, null for fewer than two values), ``min``, ``max``. Null values are ignored; a window
    holding no non-null value gives count 0 and null for the rest. Rows whose event time or any
    key is null are kept and get null for every aggregate (count included).

    Output columns are ``<prefix>_<agg>_<suffix>`` (``prefix`` defaults to ``value_col``), in the
    order windows x aggs. All windows share one partitioning and ordering, so Spark shuffles and
    sorts once however many windows and aggregates are asked for. ``count``, ``sum`` and
    ``mean`` cost O(rows) per window (running totals); ``std``, ``min`` and ``max`` use sliding
    frames, whose cost grows with the number of events inside a window.

    Example::

        flights_df.transform(
            with_trailing_aggregates, ["carrier"], "dep_ts", "dep_delay",
            {"1h": timedelta(hours=1), "7d": timedelta(days=7)}, aggs=["mean", "count"],
        )
        # adds dep_delay_mean_1h, dep_delay_count_1h, dep_delay_mean_7d, dep_delay_count_7d
    """
    what = "with_trailing_aggregates"
    keys = _require_keys(keys, what)
    require_columns(df, [*keys, event_time, value_col], f"the input of {what}")
    _require_type(df, event_time, (T.TimestampType,), what)
    _require_type(df, value_col, (T.NumericType,), what)
    if not windows:
        raise ValueError(f"{what} needs at least one window, e.g. {{'7d': timedelta(days=7)}}")
    if not aggs:
        raise ValueError(f"{what} needs at least one aggregate from {list(AGGREGATES)}")
    unknown = [a for a in aggs if a not in AGGREGATES]
    if unknown:
        raise ValueError(f"unknown aggregates {unknown}; expected some of {list(AGGREGATES)}")
    if closed not in ("right", "neither"):
        raise ValueError(f"closed must be 'right' ((t - w, t]) or 'neither' ((t - w, t)); got {closed!r}")
    for suffix, width in windows.items():
        if not isinstance(width, timedelta) or width < 2 * _ONE_MICROSECOND:
            raise ValueError(
                f"window {suffix!r} must be a timedelta of at least 2 microseconds; got {width!r}"
            )
    prefix = value_col if prefix is None else prefix
    names = [f"{prefix}_{agg}_{suffix}" for suffix in windows for agg in aggs]
    _require_new_columns(df, names, what)

    # Event time as epoch microseconds: a range frame of exact integers, so the edges are exact.
    # Nulls last: a row without event time is never inside another row's frame. The order column
    # is materialized once so every window below shares one sort.
    tmp = _TempColumns(df, "_sparkfs_trailing_")
    event_us = tmp("event_us")
    ordered = Window.partitionBy(*keys).orderBy(F.col(event_us).asc_nulls_last())
    upper = 0 if closed == "right" else -1
    through_t = ordered.rangeBetween(Window.unboundedPreceding, upper)
    value = F.col(value_col)

    # Stage 1: each window expression once. count and sum come from running totals, (through t)
    # minus (through t - w): frames that grow from the partition start, which Spark evaluates
    # incrementally, O(rows). A sliding frame re-aggregates its whole content at every row,
    # O(rows x rows per window); only std, min and max use one (running sums of squares would
    # cancel catastrophically after a long history).
    running: dict[str, Column] = {}
    if {"count", "sum", "mean"} & set(aggs):
        running["count"] = F.count(value)
    if {"sum", "mean"} & set(aggs):
        running["sum"] = F.sum(value)
    sliding_aggs = {"std": F.stddev_samp, "min": F.min, "max": F.max}
    stage1 = {tmp(f"{n}_t"): agg.over(through_t) for n, agg in running.items()}
    for i, width in enumerate(windows.values()):
        w_us = width // _ONE_MICROSECOND
        through_start = ordered.rangeBetween(Window.unboundedPreceding, -w_us)
        stage1 |= {tmp(f"{n}_{i}"): agg.over(through_start) for n, agg in running.items()}
        sliding = ordered.rangeBetween(-w_us + 1, upper)
        stage1 |= {tmp(f"{a}_{i}"): f(value).over(sliding) for a, f in sliding_aggs.items() if a in aggs}
    staged = df.withColumn(event_us, F.unix_micros(F.col(event_time)))
    staged = staged.select("*", *[c.alias(n) for n, c in stage1.items()])

    # Stage 2: the features from the stage-1 columns. Counts and integer/decimal sums are exact;
    # a double sum, as a difference of running sums, can differ from a direct sum by the
    # rounding of the running sum (~1e-16 of the entity's running total).
    def total(name: str, i: int) -> Column:
        return F.col(tmp(f"{name}_t")) - F.coalesce(F.col(tmp(f"{name}_{i}")), F.lit(0))

    on_timeline = _on_timeline(keys, event_time)
    features: dict[str, Column] = {}
    for i, suffix in enumerate(windows):
        for agg in aggs:
            if agg == "count":
                feature = total("count", i)
            elif agg == "sum":
                feature = F.when(total("count", i) > 0, total("sum", i))
            elif agg == "mean":
                feature = F.try_divide(total("sum", i).cast("double"), total("count", i))
            else:
                feature = F.col(tmp(f"{agg}_{i}"))
            features[f"{prefix}_{agg}_{suffix}"] = F.when(on_timeline, feature)
    return staged.select(*df.columns, *[c.alias(n) for n, c in features.items()])


class _TempColumns:
    """Names for intermediate columns that cannot collide with the DataFrame's own columns."""

    def __init__(self, df: DataFrame, prefix: str) -> None:
        self.prefix = prefix
        clashes = [c for c in df.columns if c.startswith(prefix)]
        if clashes:
            raise SchemaMismatchError(f"columns {clashes} use the reserved prefix {prefix!r}; rename them")

    def __call__(self, name: str) -> str:
        return self.prefix + name


def _same(a: Column, b: Column) -> Column:
    return a.eqNullSafe(b)


def with_lags(
    df: DataFrame,
    keys: Sequence[str],
    order_by: str,
    columns: Sequence[str],
    lags: Sequence[int] = (1,),
    *,
    tiebreak: str | None = None,
) -> DataFrame:
    """Add ``<column>_lag_<n>``: the value ``n`` events earlier for the same entity.

    Events are ordered by ``order_by`` (usually the event time), then by ``tiebreak``. Two rows of
    one entity with the same ``(order_by, tiebreak)`` make "the previous event" ambiguous, so the
    query then fails at execution with a Spark runtime error whose message starts with
    ``DuplicateKeyError`` and names the tied values -- no arbitrary pick. Time rule: a lag at
    ``t`` only reads events ordered at or before the row, so it never sees the future; with a
    tiebreak, an earlier-ranked event at the same ``t`` counts as previous.

    Rows whose ``order_by`` or any key is null are kept, get null lags, and are nobody's previous
    event. A lag reaching before the entity's first event is null.

    Example::

        flights_df.transform(with_lags, ["tailnum"], "dep_ts", ["dep_delay"], [1, 2], tiebreak="flight_id")
        # adds dep_delay_lag_1, dep_delay_lag_2
    """
    what = "with_lags"
    keys = _require_keys(keys, what)
    tiebreak_cols = [tiebreak] if tiebreak is not None else []
    require_columns(df, [*keys, order_by, *tiebreak_cols, *columns], f"the input of {what}")
    if not columns:
        raise ValueError(f"{what} needs at least one column to lag")
    if not lags or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in lags):
        raise ValueError(f"{what}: lags must be positive integers; got {list(lags)}")
    names = [f"{c}_lag_{n}" for c in columns for n in lags]
    _require_new_columns(df, names, what)

    # Nulls last: a row with a null order value is never the "previous" of a real event.
    ordered = Window.partitionBy(*keys).orderBy(
        F.col(order_by).asc_nulls_last(), *[F.col(c).asc_nulls_last() for c in tiebreak_cols]
    )
    on_timeline = _on_timeline(keys, order_by)
    ties_previous = reduce(
        lambda acc, c: acc & _same(F.lag(F.col(c), 1).over(ordered), F.col(c)),
        [order_by, *tiebreak_cols],
        F.lag(F.lit(True), 1).over(ordered).isNotNull(),
    )
    hint = "pass a tiebreak column that orders events with equal " + repr(order_by)
    error = F.raise_error(tie_message(what, [*keys, order_by, *tiebreak_cols], hint))
    lagged = [
        F.when(on_timeline & ties_previous, error)
        .when(on_timeline, F.lag(F.col(c), n).over(ordered))
        .alias(f"{c}_lag_{n}")
        for c in columns
        for n in lags
    ]
    return df.select("*", *lagged)


def with_time_since_last(
    df: DataFrame,
    keys: Sequence[str],
    event_time: str,
    name: str = "seconds_since_last_event",
) -> DataFrame:
    """Add ``name``: seconds (double) from the entity's latest earlier event to this one.

    "Earlier" is strictly before ``t``: events sharing the timestamp ``t`` are not each other's
    last event, so ties need no tiebreak and all rows at ``t`` get the same value. Null for the
    entity's first timestamp, and for rows whose event time or any key is null.

    Example::

        flights_df.transform(with_time_since_last, ["tailnum"], "dep_ts", "tailnum_seconds_since_last")
    """
    what = "with_time_since_last"
    keys = _require_keys(keys, what)
    require_columns(df, [*keys, event_time], f"the input of {what}")
    _require_type(df, event_time, (T.TimestampType,), what)
    _require_new_columns(df, [name], what)
    micros = F.unix_micros(F.col(event_time))
    before = Window.partitionBy(*keys).orderBy(micros).rangeBetween(Window.unboundedPreceding, -1)
    last_micros = F.max(micros).over(before)
    seconds = (micros - last_micros) / 1_000_000
    return df.withColumn(name, F.when(_on_timeline(keys, event_time), seconds))


def with_ratios(df: DataFrame, ratios: Mapping[str, tuple[str, str]]) -> DataFrame:
    """Add one double column per ``name: (numerator, denominator)``, null when dividing by 0 or null.

    Example: ``df.transform(with_ratios, {"dep_delay_mean_7d": ("dep_delay_sum_7d", "dep_delay_count_7d")})``.
    """
    what = "with_ratios"
    require_columns(df, [c for pair in ratios.values() for c in pair], f"the input of {what}")
    _require_new_columns(df, list(ratios), what)
    return df.withColumns({name: safe_ratio(num, den) for name, (num, den) in ratios.items()})


CALENDAR_PARTS: dict[str, Callable[[Column], Column]] = {
    "hour": functions.hour_of_day,
    "day_of_week": functions.day_of_week,
    "is_weekend": functions.is_weekend,
    "day_of_month": functions.day_of_month,
    "day_of_year": functions.day_of_year,
    "month": functions.month,
}


def with_calendar_features(
    df: DataFrame,
    ts_col: str,
    parts: Sequence[str] = ("hour", "day_of_week", "is_weekend", "month"),
    *,
    tz: str | None = None,
    prefix: str | None = None,
) -> DataFrame:
    """Add calendar parts of ``ts_col`` as ``<prefix>_<part>`` (``prefix`` defaults to ``ts_col``).

    Parts: ``hour`` (0-23), ``day_of_week`` (ISO, 1 = Monday), ``is_weekend``, ``day_of_month``,
    ``day_of_year``, ``month``. ``ts_col`` is a TIMESTAMP (an instant: parts are taken in ``tz``,
    an IANA zone name, or in the session time zone -- UTC in sparkfs -- when ``tz`` is None), a
    TIMESTAMP_NTZ (already wall-clock time) or a DATE (no ``hour``). Null gives null.

    Example::

        flights_df.transform(with_calendar_features, "dep_ts", tz="America/New_York")
        # adds dep_ts_hour, dep_ts_day_of_week, dep_ts_is_weekend, dep_ts_month
    """
    what = "with_calendar_features"
    require_columns(df, [ts_col], f"the input of {what}")
    _require_type(df, ts_col, (T.TimestampType, T.TimestampNTZType, T.DateType), what)
    unknown = [p for p in parts if p not in CALENDAR_PARTS]
    if unknown or not parts:
        raise ValueError(f"{what}: unknown parts {unknown}; expected some of {list(CALENDAR_PARTS)}")
    dtype = df.schema[ts_col].dataType
    if isinstance(dtype, T.DateType) and "hour" in parts:
        raise SchemaMismatchError(f"{what}: column {ts_col!r} is a date, it has no 'hour'")
    if tz is not None and not isinstance(dtype, T.TimestampType):
        raise SchemaMismatchError(
            f"{what}: tz={tz!r} converts an instant (timestamp); {ts_col!r} is {dtype.simpleString()}, "
            "which has no time zone to convert from"
        )
    prefix = ts_col if prefix is None else prefix
    _require_new_columns(df, [f"{prefix}_{p}" for p in parts], what)
    ts = functions.local_time(ts_col, tz) if tz is not None else F.col(ts_col)
    return df.withColumns({f"{prefix}_{p}": CALENDAR_PARTS[p](ts) for p in parts})


def _check_fill_value(column: str, dtype: T.DataType, value: object) -> None:
    if isinstance(value, Column):
        return
    if isinstance(dtype, T.BooleanType):
        ok = isinstance(value, bool)
    elif isinstance(dtype, T.IntegralType):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(dtype, T.NumericType):
        ok = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
    elif isinstance(dtype, T.StringType):
        ok = isinstance(value, str)
    elif isinstance(dtype, T.TimestampType | T.TimestampNTZType):
        ok = isinstance(value, datetime)
    elif isinstance(dtype, T.DateType):
        ok = isinstance(value, date) and not isinstance(value, datetime)
    else:
        ok = False
    if not ok:
        raise SchemaMismatchError(
            f"impute: column {column!r} is {dtype.simpleString()}; the fill value {value!r} "
            f"({type(value).__name__}) does not fit it"
        )


def impute(
    df: DataFrame,
    values: Mapping[str, object],
    *,
    indicators: bool = False,
) -> DataFrame:
    """Replace missing values with given ones: ``{column: constant or Column}``.

    Missing means null, and also NaN in float/double columns. A fill value is a constant of the
    column's type (an int for integer columns -- no silent truncation) or a Column expression,
    e.g. another column. The column keeps its type. With ``indicators=True`` a boolean
    ``<column>_is_missing`` is added per column, computed before filling.

    This is stateless: statistics learned from training data (a train-set median, say) are
    computed by the training code and passed in here as constants, so inference fills with the
    same numbers.

    Example: ``df.transform(impute, {"dep_delay": 0.0, "tailnum": "UNKNOWN"}, indicators=True)``.
    """
    what = "impute"
    require_columns(df, list(values), f"the input of {what}")
    schema = {f.name: f.dataType for f in df.schema.fields}
    for column, value in values.items():
        _check_fill_value(column, schema[column], value)
    if indicators:
        _require_new_columns(df, [f"{c}_is_missing" for c in values], what)

    def is_missing(column: str) -> Column:
        if isinstance(schema[column], T.FloatType | T.DoubleType):
            return F.col(column).isNull() | F.isnan(F.col(column))
        return F.col(column).isNull()

    missing_flags = {f"{c}_is_missing": is_missing(c) for c in values} if indicators else {}
    filled = {
        c: F.when(is_missing(c), v if isinstance(v, Column) else F.lit(v))
        .otherwise(F.col(c))
        .cast(schema[c])
        for c, v in values.items()
    }
    return df.withColumns({**missing_flags, **filled})


def quantile_bounds(
    df: DataFrame,
    columns: Sequence[str],
    lower: float = 0.01,
    upper: float = 0.99,
    relative_error: float = 0.001,
) -> dict[str, tuple[float, float]]:
    """Approximate ``lower`` and ``upper`` quantiles of numeric columns, for :func:`clip_outliers`.

    One pass over ``df`` (Spark's Greenwald-Khanna ``approxQuantile``, nulls and NaN ignored);
    only the bounds come back to the driver. Compute them on training data and keep them, so
    inference clips with the same bounds.

    Example: ``df.transform(clip_outliers, quantile_bounds(train_df, ["dep_delay"]))``.
    """
    what = "quantile_bounds"
    require_columns(df, columns, f"the input of {what}")
    for c in columns:
        _require_type(df, c, (T.NumericType,), what)
    if not 0.0 <= lower < upper <= 1.0:
        raise ValueError(f"{what}: need 0 <= lower < upper <= 1; got lower={lower}, upper={upper}")
    quantiles = df.approxQuantile(list(columns), [lower, upper], relative_error)
    empty = [c for c, q in zip(columns, quantiles, strict=True) if len(q) < 2]
    if empty:
        raise ValueError(f"{what}: columns {empty} have no non-null values to take quantiles of")
    return {c: (q[0], q[1]) for c, q in zip(columns, quantiles, strict=True)}


def clip_outliers(
    df: DataFrame, bounds: Mapping[str, tuple[float | None, float | None]]
) -> DataFrame:
    """Clip numeric columns in place to ``{column: (lower, upper)}`` (inclusive; None = unbounded).

    Columns keep their type: an integer column clips to ``ceil(lower)`` and ``floor(upper)``.
    Nulls stay null. Bounds are explicit, or come from :func:`quantile_bounds`.

    Example: ``df.transform(clip_outliers, {"dep_delay": (-30, 600)})``.
    """
    what = "clip_outliers"
    require_columns(df, list(bounds), f"the input of {what}")
    clipped = {}
    for column, (lo, hi) in bounds.items():
        _require_type(df, column, (T.NumericType,), what)
        dtype = df.schema[column].dataType
        if isinstance(dtype, T.IntegralType):
            lo = None if lo is None else math.ceil(lo)
            hi = None if hi is None else math.floor(hi)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"{what}: column {column!r} has lower bound {lo} above upper bound {hi}")
        clipped[column] = functions.clip(column, lo, hi).cast(dtype)
    return df.withColumns(clipped)


def latest_per_key(
    df: DataFrame,
    keys: Sequence[str],
    order_by: str,
    *,
    tiebreak: str | None = None,
) -> DataFrame:
    """Keep one row per key: the one with the highest ``order_by``, then the highest ``tiebreak``.

    Null ``order_by`` (and ``tiebreak``) values rank lowest. Null keys are a key like any other
    (all rows with null keys form one group), matching the null-safe key match of the MERGE
    writer. When the two best rows of a key tie on ``(order_by, tiebreak)`` there is no right
    answer, so the query fails at execution with a Spark runtime error whose message starts with
    ``DuplicateKeyError`` and names the key -- no arbitrary pick. Ties among older rows are fine.

    Example: ``updates_df.transform(latest_per_key, ["tailnum"], "updated_at", tiebreak="ingest_id")``.
    """
    what = "latest_per_key"
    keys = _require_keys(keys, what)
    order_cols = [order_by, *([tiebreak] if tiebreak is not None else [])]
    hint = (
        "the latest row is ambiguous; pass a tiebreak column"
        if tiebreak is None
        else "the tiebreak column does not tell them apart"
    )
    return latest_rows(df, keys, order_cols, ties="fail", what=what, tie_hint=hint)


BROADCAST_MAX_ROWS = 100_000


def broadcast_join(
    df: DataFrame,
    dim_df: DataFrame,
    on: Sequence[str],
    how: Literal["left", "inner", "left_semi", "left_anti"] = "left",
    *,
    max_rows: int = BROADCAST_MAX_ROWS,
) -> DataFrame:
    """Join a small dimension onto ``df`` with an explicit broadcast of ``dim_df``.

    Rule: broadcast a dimension of at most ``max_rows`` rows (default 100,000: about Spark's
    10 MB auto-broadcast threshold at ~100 bytes a row; a broadcast copies the whole table to
    every executor, so past that a plain shuffle join, ``df.join(dim_df, on)``, is the better
    plan). The size is measured cheaply as ``dim_df.limit(max_rows + 1).count()``, which stops
    reading after ``max_rows + 1`` rows; a larger dimension raises
    :class:`~sparkfs.core.errors.DimensionTooLargeError`. The dimension must be unique on ``on``
    (null keys aside, which match nothing): duplicates would multiply ``df``'s rows and raise
    :class:`~sparkfs.core.errors.DuplicateKeyError`. Non-key columns present on both sides are an
    error rather than an ambiguous result.

    ``how`` keeps every row of ``df`` (``left``), or filters it (``inner``, ``left_semi``,
    ``left_anti``); right and full outer joins cannot broadcast the right side. Rows of ``df``
    with null keys match nothing.

    Example: ``flights_df.transform(broadcast_join, airports_df, ["origin"])``.
    """
    what = "broadcast_join"
    on = _require_keys(on, what)
    if how not in ("left", "inner", "left_semi", "left_anti"):
        raise ValueError(f"{what}: how must be 'left', 'inner', 'left_semi' or 'left_anti'; got {how!r}")
    require_columns(df, on, f"the input of {what}")
    require_columns(dim_df, on, f"the dimension of {what}")
    shared = sorted((set(df.columns) & set(dim_df.columns)) - set(on))
    if shared and how in ("left", "inner"):
        raise SchemaMismatchError(
            f"{what}: columns {shared} are on both sides besides the keys {on}; drop or rename them"
        )
    rows = dim_df.limit(max_rows + 1).count()
    if rows > max_rows:
        raise DimensionTooLargeError(
            f"{what}: the dimension has more than {max_rows} rows, the broadcast limit; "
            "join it with a plain (shuffle) join instead, or raise max_rows if it is narrow"
        )
    # Null keys match nothing in the join, so their duplicates cannot multiply rows.
    with_keys = dim_df.where(reduce(lambda acc, k: acc & F.col(k).isNotNull(), on, F.lit(True)))
    require_unique(with_keys, on, f"{what}: the dimension")
    return df.join(F.broadcast(dim_df), on=on, how=how)
