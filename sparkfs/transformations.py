"""DataFrame -> DataFrame transformations, each chainable with ``df.transform(f, ...)``.

Time rule (the same one the point-in-time join uses): a value computed for an event at time ``t``
sees the events of its entity with ``t - w < event_ts <= t``, written ``(t - w, t]`` -- the lower
edge is exclusive, the upper edge inclusive. Events that share the timestamp ``t`` see each other,
just as a point-in-time lookup at ``t`` matches feature rows with ``feature_ts <= t``.

Rows whose event time or any entity key is null are kept, never dropped: they get null features,
because they belong to no entity's timeline.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from functools import reduce
from typing import Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.errors import SchemaMismatchError
from sparkfs.merge import require_columns

AGGREGATES = ("count", "sum", "mean", "std", "min", "max")

_ONE_MICROSECOND = timedelta(microseconds=1)


def _aggregate(name: str, value: Column) -> Column:
    if name == "count":
        return F.count(value)
    if name == "sum":
        return F.sum(value)
    if name == "mean":
        return F.avg(value)
    if name == "std":
        return F.stddev_samp(value)
    if name == "min":
        return F.min(value)
    if name == "max":
        return F.max(value)
    raise ValueError(f"unknown aggregate {name!r}; expected one of {list(AGGREGATES)}")


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
    sorts once however many windows and aggregates are asked for.

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
    ordered = Window.partitionBy(*keys).orderBy(F.unix_micros(F.col(event_time)))
    upper = 0 if closed == "right" else -1
    on_timeline = _on_timeline(keys, event_time)
    value = F.col(value_col)
    columns = []
    for suffix, width in windows.items():
        frame = ordered.rangeBetween(-(width // _ONE_MICROSECOND) + 1, upper)
        for agg in aggs:
            aggregated = _aggregate(agg, value).over(frame)
            columns.append(F.when(on_timeline, aggregated).alias(f"{prefix}_{agg}_{suffix}"))
    return df.select("*", *columns)
