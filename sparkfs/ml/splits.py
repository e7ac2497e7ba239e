"""Time-based train / validation / test split with a gap, as a Spark column or three DataFrames.

The training window is whole UTC days ``[start, end + 1 day)``. Validation and test are
durations counted back from its end, each preceded by a gap at least as long as the longest
feature window. Inside the window the cuts follow the time rule ``(t - w, t]``: a validation row
at ``t > train_end + gap`` has its feature window ``(t - w, t]``, ``w <= gap``, entirely after
the last training timestamp, so no window straddles a split.

Example::

    b = split_boundaries(date(2013, 1, 1), date(2013, 11, 30), config.split, timedelta(days=30))
    parts = time_split(training_df, "sched_dep_ts", b)   # parts.train / .validation / .test
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.durations import format_duration
from sparkfs.core.errors import ConfigError
from sparkfs.features.feature_tables import FeatureTableSpec
from sparkfs.ml.config import SplitConfig, TrainingConfig

log = logging.getLogger(__name__)

SPLIT = "split"
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SplitBoundaries:
    """Instants that cut the training window ``[start, end)`` (whole UTC days).

    Inside the window the cuts follow the time rule ``(lower, upper]``: train is
    ``start <= ts <= train_end``, validation ``validation_start < ts <= validation_end``, test
    ``test_start < ts < end``.
    """

    start: datetime
    train_end: datetime
    validation_start: datetime
    validation_end: datetime
    test_start: datetime
    end: datetime

    def intervals(self) -> dict[str, tuple[datetime, datetime]]:
        return {
            "train": (self.start, self.train_end),
            "validation": (self.validation_start, self.validation_end),
            "test": (self.test_start, self.end),
        }

    def as_params(self) -> dict[str, str]:
        return {f"split_{k}": v.isoformat() for k, v in self.__dict__.items()}


def effective_feature_window(config: TrainingConfig, feature_tables: Sequence[FeatureTableSpec]) -> timedelta:
    """The longest feature window, the split gap's lower bound (see :func:`split_boundaries`).

    The longest of: each lookup's ``lookback``, the longest rolling window of each feature table
    a lookup reads (from ``feature_tables``, e.g. ``declared_feature_tables(settings)``; a table
    not declared there has no known windows), and ``config.longest_feature_window`` when set --
    configuration can raise the derived value, never lower it (a lower one is logged and
    ignored).

    Example: a lookup with ``lookback: 30d`` and ``longest_feature_window: 7d`` give 30 days.
    """
    declared = {t.name: t for t in feature_tables}
    reaches = [(lk.lookback, f"lookback of the {lk.table!r} lookup") for lk in config.lookups if lk.lookback]
    reaches += [
        (declared[lk.table].history, f"longest window of feature table {lk.table!r}")
        for lk in config.lookups
        if lk.table in declared
    ]
    derived, source = max(reaches, key=lambda r: r[0], default=(timedelta(0), "no lookup"))
    configured = config.longest_feature_window
    if configured is None:
        return derived
    if configured < derived:
        log.info(
            "longest_feature_window %s in the training config is shorter than the %s: using %s",
            format_duration(configured), source, format_duration(derived),
        )
    return max(configured, derived)


def split_boundaries(
    start: date, end: date, split: SplitConfig, longest_feature_window: timedelta
) -> SplitBoundaries:
    """Cut ``[start, end]`` (whole days, UTC) into train | gap | validation | gap | test.

    The window runs from ``start`` 00:00 to ``end + 1 day`` 00:00; test and validation are the
    configured durations counted back from its end, each preceded by ``gap``. Raises
    :class:`ConfigError` when the gap is shorter than the longest feature window or nothing is
    left for training.
    """
    if split.gap < longest_feature_window:
        raise ConfigError(
            f"split.gap is {format_duration(split.gap)}, shorter than the longest feature window "
            f"{format_duration(longest_feature_window)}: a validation row's window would reach "
            "into the train split"
        )
    lower = datetime.combine(start, time())
    upper = datetime.combine(end + timedelta(days=1), time())
    test_start = upper - split.test
    validation_end = test_start - split.gap
    validation_start = validation_end - split.validation
    train_end = validation_start - split.gap
    if train_end <= lower:
        raise ConfigError(
            f"window {start}..{end} is too short for validation {format_duration(split.validation)}"
            f" + test {format_duration(split.test)} + 2 gaps of {format_duration(split.gap)}: the "
            f"train split would end at {train_end:%Y-%m-%d %H:%M}, before the window starts; "
            "widen the window (--start/--end) or shorten split: in the training config"
        )
    return SplitBoundaries(lower, train_end, validation_start, validation_end, test_start, upper)


def split_column(ts: Column, boundaries: SplitBoundaries) -> Column:
    """``"train"`` / ``"validation"`` / ``"test"``, or null for rows in a gap, outside the window,
    or with a null timestamp (see :class:`SplitBoundaries` for the interval edges)."""
    b = {k: _instant(v) for k, v in boundaries.__dict__.items()}
    return (
        F.when((ts >= b["start"]) & (ts <= b["train_end"]), F.lit("train"))
        .when((ts > b["validation_start"]) & (ts <= b["validation_end"]), F.lit("validation"))
        .when((ts > b["test_start"]) & (ts < b["end"]), F.lit("test"))
    )


def _instant(value: datetime) -> Column:
    """A timestamp literal for a naive UTC datetime, independent of the machine's time zone."""
    return F.lit(value.replace(tzinfo=timezone.utc))


def assign_split(df: DataFrame, timestamp: str, boundaries: SplitBoundaries) -> DataFrame:
    """Add the ``split`` column (see :func:`split_column`); chainable with ``df.transform``."""
    require_columns(df, [timestamp], "the training set")
    return df.withColumn(SPLIT, split_column(F.col(timestamp), boundaries))


@dataclass(frozen=True)
class TimeSplit:
    train: DataFrame
    validation: DataFrame
    test: DataFrame


def time_split(df: DataFrame, timestamp: str, boundaries: SplitBoundaries) -> TimeSplit:
    """The three splits as DataFrames (rows in the gaps belong to none of them)."""
    labelled = assign_split(df, timestamp, boundaries)
    parts = {name: labelled.where(F.col(SPLIT) == name).drop(SPLIT) for name in SPLITS}
    return TimeSplit(**parts)
