"""Univariate drift of a chunk of rows (a day, a week) against a model's reference, in Spark.

Per numeric column: PSI on the reference's quantile bins, and the two-sample Kolmogorov-Smirnov
statistic with its asymptotic p-value (the same as ``scipy.stats.ks_2samp(method="asymp")``);
per categorical column: the Jensen-Shannon distance (base 2) of the value shares and the
chi-squared test of the 2 x k table of counts; for every column, the change in null share.

All counting is one Spark aggregation over the rows, grouped by (chunk, column): the rows in
each PSI bin (nulls apart), in each KS bucket of the reference (:mod:`sparkfs.monitoring.ks`:
the exact statistic without sorting the day) and per category. What is collected is bounded by
the reference (its bins, its distinct values, its categories), never by the day's rows, so a
day of 100M rows is one pass. Only the tests' final arithmetic on those counts runs in Python
(scipy's distributions for the p-values).

PSI = sum over bins of (current share - reference share) * ln(current share / reference share),
with shares clipped below at ``PSI_FLOOR`` so an empty bin adds a large but finite term.

**The reference's day-to-day spread.** The fixed levels assume a day's rows are independent draws.
A feature served per entity is not: in a 06:00 batch every flight of a carrier gets the carrier's
value as of 06:00, so a day holds ~16 distinct values of a carrier feature and 3 of an airport's
weather, and its histogram differs from the reference's every day, drift or not. When the
reference comes with :func:`day_to_day_highs` (each of its own days measured against the whole
of it), a level needs more than the fixed threshold: a warning needs a value (for KS and
chi-squared, an effect) above the highest any reference day reached, an alert that high times
``day_to_day_margin`` (:func:`limits_for`). A day is then flagged for being unlike every day the
model was tested on, not for being one day.

Example::

    profile = profile_reference(test_df, numeric=["distance"], categorical=["carrier"])
    highs = day_to_day_highs(test_df, profile, chunk_by="event_date")   # once, at training time
    metrics = drift(day_df, profile, reference=test_df, chunk_by="event_date", day_to_day=highs)
    [m for m in metrics if m.level == "alert"]
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pydantic import Field
from pyspark.ml.feature import Bucketizer
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, kstwo

from sparkfs.core.checks import require_columns
from sparkfs.core.config import StrictModel
from sparkfs.monitoring.ks import KsGrid
from sparkfs.monitoring.profile import (
    FEATURE,
    VALUE,
    ReferenceProfile,
    bin_index,
    long_numeric,
)

CHUNK = "chunk"
PSI_FLOOR = 1e-4


class DriftThresholds(StrictModel):
    """Levels from common practice: PSI 0.1 warn / 0.25 alert; KS (and chi-squared) p below 0.01
    alert when the difference is also material (KS statistic, or Cramer's V of the counts, at
    least ``min_effect``); a significant but immaterial difference is a warning. On big days
    every tiny difference is significant, and at p < 0.01 one test in a hundred is significant
    by chance: with a few columns that is a false alarm every month without the effect floor."""

    psi_warn: float = Field(0.1, gt=0)
    psi_alert: float = Field(0.25, gt=0)
    ks_p_alert: float = Field(0.01, gt=0, lt=1)
    min_effect: float = Field(0.1, ge=0, le=1)
    js_warn: float = Field(0.1, gt=0)
    js_alert: float = Field(0.2, gt=0)
    null_share_warn: float = Field(0.05, gt=0)
    null_share_alert: float = Field(0.2, gt=0)
    day_to_day: bool = True     # raise the levels to the reference's day-to-day spread, where it has one
    day_to_day_margin: float = Field(1.25, ge=1)


DayToDay = Mapping[str, Mapping[str, float]]
"""metric -> column -> the highest value (KS, chi-squared: effect) any reference day reached."""
CALIBRATED = ("psi", "js", "ks", "chi2")  # the null share is checked against the fixed levels only


@dataclass(frozen=True)
class DriftMetric:
    chunk: str
    feature: str
    metric: str            # psi, ks, js, chi2, null_share_change
    value: float
    p_value: float | None
    level: str             # ok, warn, alert
    rows: int              # the chunk's rows
    effect: float          # what the levels compare: the value; KS: the statistic; chi2: Cramer's V


def psi(reference_shares: Sequence[float], current_shares: Sequence[float]) -> float:
    total = 0.0
    for expected, actual in zip(reference_shares, current_shares, strict=True):
        e, a = max(expected, PSI_FLOOR), max(actual, PSI_FLOOR)
        total += (a - e) * math.log(a / e)
    return total


def drift(
    current: DataFrame,
    profile: ReferenceProfile,
    *,
    reference: DataFrame | None = None,
    chunk_by: str | None = None,
    thresholds: DriftThresholds | None = None,
    day_to_day: DayToDay | None = None,
) -> list[DriftMetric]:
    """Drift of every profiled column of ``current`` per chunk (``chunk_by``'s values, or one
    chunk "all"). KS needs the reference's rows (``reference``); without them it is skipped.
    ``day_to_day`` (from :func:`day_to_day_highs`) raises the levels, see the module docstring."""
    limits = _Limits(thresholds or DriftThresholds(), day_to_day or {})
    numeric, categorical = list(profile.numeric), list(profile.categorical)
    require_columns(current, [*numeric, *categorical, *([chunk_by] if chunk_by else [])], "the rows to check")
    grids = reference_grids(reference, numeric) if reference is not None and numeric else {}
    rows_df = current.withColumn(CHUNK, F.col(f"`{chunk_by}`").cast("string") if chunk_by else F.lit("all"))
    counts = _count(rows_df, profile, grids)
    if counts.empty:
        return []
    first = counts[counts[FEATURE] == (numeric or categorical)[0]]
    chunk_rows = {chunk: int(rows) for chunk, rows in first.groupby(CHUNK, dropna=False)["count"].sum().items()}
    by_column = dict(iter(counts.groupby([CHUNK, FEATURE], dropna=False)))
    metrics: list[DriftMetric] = []
    for (chunk, feature), column in by_column.items():
        if feature in profile.numeric:
            metrics += _numeric(chunk, feature, column, profile, chunk_rows[chunk], limits)
            if feature in grids:
                metrics += _ks(chunk, feature, column, grids[feature], chunk_rows[chunk], limits)
        else:
            metrics += _categorical(chunk, feature, column, profile, chunk_rows[chunk], limits)
    return sorted(metrics, key=lambda m: (m.chunk, m.feature, m.metric))


def day_to_day_highs(reference: DataFrame, profile: ReferenceProfile, *, chunk_by: str) -> dict[str, dict[str, float]]:
    """Each day (``chunk_by``) of the reference rows against the whole of them: per metric and
    column, the highest value (KS, chi-squared: effect) a day reached. Computed once, when the
    reference is made; :func:`drift` takes it as ``day_to_day``."""
    highs: dict[str, dict[str, float]] = defaultdict(dict)
    for m in drift(reference, profile, reference=reference, chunk_by=chunk_by):
        if m.metric in CALIBRATED and math.isfinite(m.effect):
            highs[m.metric][m.feature] = max(highs[m.metric].get(m.feature, 0.0), m.effect)
    return dict(highs)


def reference_grids(reference: DataFrame, numeric: list[str]) -> dict[str, KsGrid]:
    """Per numeric column with a non-null reference value, the KS buckets of the reference (its
    distinct values and their counts, collected: the reference is a model's test split, small)."""
    require_columns(reference, numeric, "the reference rows")
    values = (long_numeric(reference, numeric).where(F.col(VALUE).isNotNull() & ~F.isnan(VALUE))
              .groupBy(FEATURE, VALUE).count().toArrow().to_pandas())
    return {name: KsGrid.of(g[VALUE].to_numpy(), g["count"].to_numpy()) for name, g in values.groupby(FEATURE)}


def _count(rows_df: DataFrame, profile: ReferenceProfile, grids: Mapping[str, KsGrid]) -> pd.DataFrame:
    """One pass over the rows: per (chunk, column), the rows in each PSI bin (-1: null) and KS
    bucket of a numeric column, and per value of a categorical one (null: None)."""
    ks_columns = list(grids)
    inputs, buckets = [f"__ks_in{i}" for i in range(len(ks_columns))], [f"__ks{i}" for i in range(len(ks_columns))]
    if ks_columns:
        rows_df = rows_df.select("*", *(F.col(f"`{c}`").cast("double").alias(i) for c, i in zip(ks_columns, inputs, strict=True)))
        rows_df = Bucketizer(splitsArray=[grids[c].splits.tolist() for c in ks_columns], inputCols=inputs,
                             outputCols=buckets, handleInvalid="keep").transform(rows_df)
    bucket_of = dict(zip(ks_columns, buckets, strict=True))
    no_int, no_string = F.lit(None).cast("int"), F.lit(None).cast("string")
    entries = []
    for name, numeric in profile.numeric.items():
        value = F.col(f"`{name}`").cast("double")
        edges = F.array(*(F.lit(float(e)) for e in numeric.edges)).cast("array<double>")
        entries.append(F.struct(
            F.lit(name).alias(FEATURE), F.when(value.isNull(), F.lit(-1)).otherwise(bin_index(value, edges)).alias("bin"),
            F.col(bucket_of[name]).cast("int").alias("bucket") if name in bucket_of else no_int.alias("bucket"),
            no_string.alias(VALUE)))
    for name in profile.categorical:
        entries.append(F.struct(F.lit(name).alias(FEATURE), no_int.alias("bin"), no_int.alias("bucket"),
                                F.col(f"`{name}`").cast("string").alias(VALUE)))
    return (rows_df.select(CHUNK, F.explode(F.array(*entries)).alias("e")).select(CHUNK, "e.*")
            .groupBy(CHUNK, FEATURE, "bin", "bucket", VALUE).count().toArrow().to_pandas())


def limits_for(metric: str, feature: str, thresholds: DriftThresholds, day_to_day: DayToDay | None = None
               ) -> tuple[float, float]:
    """(warn, alert) for ``metric`` of ``feature``: the value's levels (PSI, JS, null share) or
    the effect a significant KS / chi-squared test needs (any to warn, ``min_effect`` to alert),
    raised to the reference's day-to-day high (warn) and that high x ``day_to_day_margin`` (alert)
    where there is one."""
    t = thresholds
    fixed = {"psi": (t.psi_warn, t.psi_alert), "js": (t.js_warn, t.js_alert),
             "null_share_change": (t.null_share_warn, t.null_share_alert)}
    warn, alert = fixed.get(metric, (0.0, t.min_effect))
    high = (day_to_day or {}).get(metric, {}).get(feature) if metric in CALIBRATED and t.day_to_day else None
    if high is None:
        return warn, alert
    return max(warn, high), max(alert, high * t.day_to_day_margin)


@dataclass(frozen=True)
class _Limits:
    thresholds: DriftThresholds
    day_to_day: DayToDay

    def level(self, metric: str, feature: str, effect: float, p_value: float | None = None) -> str:
        """A test (``p_value`` given) flags only below ``ks_p_alert``; then by its effect."""
        if p_value is not None and p_value >= self.thresholds.ks_p_alert:
            return "ok"
        warn, alert = limits_for(metric, feature, self.thresholds, self.day_to_day)
        return "alert" if effect >= alert else "warn" if effect >= warn else "ok"


def _null_change(chunk: str, feature: str, nulls: int, rows: int, reference_share: float,
                 limits: _Limits) -> DriftMetric:
    change = (nulls / rows if rows else 0.0) - reference_share
    level = limits.level("null_share_change", feature, abs(change))
    return DriftMetric(chunk, feature, "null_share_change", change, None, level, rows, abs(change))


def _numeric(chunk: str, feature: str, column: pd.DataFrame, profile: ReferenceProfile, rows: int,
             limits: _Limits) -> list[DriftMetric]:
    ref = profile.numeric[feature]
    by_bin = column.groupby("bin")["count"].sum()
    non_null = int(by_bin[by_bin.index >= 0].sum())
    shares = [int(by_bin.get(i, 0)) / non_null if non_null else 0.0 for i in range(len(ref.edges) + 1)]
    value = psi(ref.shares, shares)
    return [DriftMetric(chunk, feature, "psi", value, None, limits.level("psi", feature, value), rows, value),
            _null_change(chunk, feature, int(by_bin.get(-1, 0)), rows, ref.null_share, limits)]


def _ks(chunk: str, feature: str, column: pd.DataFrame, grid: KsGrid, rows: int, limits: _Limits) -> list[DriftMetric]:
    """A column with no non-null value in the chunk has no distribution to compare: the null
    share reports it, KS does not."""
    counted = column[(column["bin"] >= 0) & column["bucket"].notna()]
    bucket = counted["bucket"].to_numpy(dtype=np.int64)
    inside = bucket < grid.buckets          # NaN is counted past the last bucket
    current = np.bincount(bucket[inside], weights=counted["count"].to_numpy()[inside], minlength=grid.buckets)
    n = int(current.sum())
    if n == 0:
        return []
    d = grid.statistic(current)
    p_value = ks_p_value(d, grid.reference_rows, n)
    return [DriftMetric(chunk, feature, "ks", d, p_value, limits.level("ks", feature, d, p_value), rows, d)]


def _categorical(chunk: str, feature: str, column: pd.DataFrame, profile: ReferenceProfile, rows: int,
                 limits: _Limits) -> list[DriftMetric]:
    ref = profile.categorical[feature]
    by_value: dict[str | None, int] = defaultdict(int)
    for value, count in zip(column[VALUE], column["count"], strict=True):
        by_value[value if isinstance(value, str) else None] += int(count)
    values = sorted(set(ref.counts) | {v for v in by_value if v is not None})
    ref_counts = [ref.counts.get(v, 0) for v in values]
    cur_counts = [by_value.get(v, 0) for v in values]
    out = []
    if sum(cur_counts) and sum(ref_counts):
        distance = float(jensenshannon(ref_counts, cur_counts, base=2))
        out.append(DriftMetric(chunk, feature, "js", distance, None, limits.level("js", feature, distance), rows, distance))
        if len(values) > 1:
            result = chi2_contingency([ref_counts, cur_counts])
            cramers_v = math.sqrt(result.statistic / (sum(ref_counts) + sum(cur_counts)))  # 2 x k table
            level = limits.level("chi2", feature, cramers_v, float(result.pvalue))
            out.append(DriftMetric(chunk, feature, "chi2", float(result.statistic), float(result.pvalue),
                                   level, rows, cramers_v))
    out.append(_null_change(chunk, feature, by_value.get(None, 0), rows, ref.null_share, limits))
    return out


def ks_p_value(d: float, n: int, m: int) -> float:
    """Two-sided asymptotic p-value of a KS statistic ``d`` for samples of ``n`` and ``m`` rows."""
    if n == 0 or m == 0:
        return 1.0
    big, small = sorted((float(n), float(m)), reverse=True)
    return float(kstwo.sf(d, round(big * small / (big + small))))
