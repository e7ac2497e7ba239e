"""Univariate drift of a chunk of rows (a day, a week) against a model's reference, in Spark.

Per numeric column: PSI on the reference's quantile bins, and the two-sample Kolmogorov-Smirnov
statistic with its asymptotic p-value (the same as ``scipy.stats.ks_2samp(method="asymp")``);
per categorical column: the Jensen-Shannon distance (base 2) of the value shares and the
chi-squared test of the 2 x k table of counts; for every column, the change in null share.

All counting is one pass over the chunk's rows (:mod:`sparkfs.monitoring.day_counts`): each
partition counts bins, nulls, categories and each value's bucket on the column's KS grid, and
the driver adds the partitions' count arrays up; no row reaches the driver, so a day of 100M
rows works. The KS statistic is exact for a reference of up to 10,000 distinct values and,
above that, NannyML's estimate on 10,000 equal-width cells (see
:mod:`~sparkfs.monitoring.day_counts`). Only that sum and the tests' arithmetic on the counts
run on the driver (scipy's distributions for the p-values).

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
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, kstwo

from sparkfs.core.checks import require_columns
from sparkfs.core.config import StrictModel
from sparkfs.monitoring.day_counts import Key, KsGrid, day_counts, ks_grids
from sparkfs.monitoring.profile import (
    FEATURE,
    VALUE,
    ReferenceProfile,
    long_numeric,
)

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
    reference: DataFrame | pd.DataFrame | None = None,
    chunk_by: str | None = None,
    thresholds: DriftThresholds | None = None,
    day_to_day: DayToDay | None = None,
    engine: str = "auto",
) -> list[DriftMetric]:
    """Drift of every profiled column of ``current`` per chunk (``chunk_by``'s values, "(null)"
    for its nulls, or one chunk "all"). KS needs the reference's rows (``reference``: a model's bounded reference rows,
    in Spark or pandas); without them it is skipped. ``day_to_day`` (from
    :func:`day_to_day_highs`) raises the levels, see the module docstring. ``engine`` counts the
    rows in the JVM or in Python workers (:func:`~sparkfs.monitoring.day_counts.day_counts`)."""
    limits = _Limits(thresholds or DriftThresholds(), day_to_day or {})
    numeric, categorical = list(profile.numeric), list(profile.categorical)
    require_columns(current, [*numeric, *categorical, *([chunk_by] if chunk_by else [])], "the rows to check")
    grids = ks_grids(_reference_rows(reference, numeric), numeric) if reference is not None and numeric else {}
    counts = day_counts(current, chunk_by, {n: profile.numeric[n].edges for n in numeric}, grids, categorical,
                        engine=engine)
    return sorted(
        [*_numeric(counts.bins, profile, counts.rows, limits), *_ks(counts.ks, grids, counts.rows, limits),
         *_categorical(counts.categories, profile, counts.rows, limits)],
        key=lambda m: (m.chunk, m.feature, m.metric),
    )


def _reference_rows(reference: DataFrame | pd.DataFrame, numeric: list[str]) -> pd.DataFrame:
    if isinstance(reference, pd.DataFrame):
        return reference[numeric]
    require_columns(reference, numeric, "the reference rows")
    return reference.select(*(F.col(f"`{n}`").cast("double") for n in numeric)).toPandas()


def day_to_day_highs(reference: DataFrame, profile: ReferenceProfile, *, chunk_by: str) -> dict[str, dict[str, float]]:
    """Each day (``chunk_by``) of the reference rows against the whole of them: per metric and
    column, the highest value (KS, chi-squared: effect) a day reached. Computed once, when the
    reference is made; :func:`drift` takes it as ``day_to_day``."""
    highs: dict[str, dict[str, float]] = defaultdict(dict)
    for m in drift(reference, profile, chunk_by=chunk_by):  # PSI, JS, chi-squared; KS below
        if m.metric in CALIBRATED and math.isfinite(m.effect):
            highs[m.metric][m.feature] = max(highs[m.metric].get(m.feature, 0.0), m.effect)
    if profile.numeric:
        highs["ks"] = _ks_of_parts(reference, list(profile.numeric), chunk_by)
    return dict(highs)


def _ks_of_parts(rows_df: DataFrame, numeric: list[str], part: str) -> dict[str, float]:
    """Per column, the largest KS statistic of one ``part`` of the rows against all of them. A
    part's values are among the whole's, so both empirical CDFs are known at each of the part's
    values (one sorted pass each, joined on the value), and between two of them the part's CDF
    is flat: the largest gap lies at a part's value or just below it. No cross join with the
    whole per part, which :func:`drift`'s KS for an unrelated chunk needs."""
    counts = (long_numeric(rows_df, numeric, part).where(F.col(VALUE).isNotNull())
              .groupBy(part, FEATURE, VALUE).agg(F.count(F.lit(1)).alias("c")).persist())
    try:
        upto = Window.rowsBetween(Window.unboundedPreceding, 0)
        whole = (counts.groupBy(FEATURE, VALUE).agg(F.sum("c").alias("r"))
                 .withColumn("cum_r", F.sum("r").over(upto.partitionBy(FEATURE).orderBy(VALUE)))
                 .withColumn("m", F.sum("r").over(Window.partitionBy(FEATURE))))
        parts = (counts.withColumn("cum_c", F.sum("c").over(upto.partitionBy(part, FEATURE).orderBy(VALUE)))
                 .withColumn("n", F.sum("c").over(Window.partitionBy(part, FEATURE))))
        at = F.abs(F.col("cum_c") / F.col("n") - F.col("cum_r") / F.col("m"))
        below = F.abs((F.col("cum_c") - F.col("c")) / F.col("n") - (F.col("cum_r") - F.col("r")) / F.col("m"))
        rows = (parts.join(whole, [FEATURE, VALUE]).groupBy(FEATURE)
                .agg(F.max(F.greatest(at, below)).alias("d")).collect())
    finally:
        counts.unpersist()
    return {r[FEATURE]: float(r["d"]) for r in rows}


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


def _numeric(bins: Mapping[Key, np.ndarray], profile: ReferenceProfile, chunk_rows: Mapping[str, int],
             limits: _Limits) -> list[DriftMetric]:
    out = []
    for (chunk, feature), per_bucket in sorted(bins.items()):
        ref = profile.numeric[feature]
        nulls, per_bin = int(per_bucket[0]), per_bucket[1:]  # day_counts' bins: the nulls first
        non_null = int(per_bin.sum())
        shares = (per_bin / non_null).tolist() if non_null else [0.0] * len(per_bin)
        value = psi(ref.shares, shares)
        out.append(DriftMetric(chunk, feature, "psi", value, None, limits.level("psi", feature, value),
                               chunk_rows[chunk], value))
        out.append(_null_change(chunk, feature, nulls, chunk_rows[chunk], ref.null_share, limits))
    return out


def _categorical(categories: Mapping[Key, Mapping[str | None, int]], profile: ReferenceProfile,
                 chunk_rows: Mapping[str, int], limits: _Limits) -> list[DriftMetric]:
    out = []
    for (chunk, feature), by_value in sorted(categories.items()):
        ref = profile.categorical[feature]
        values = sorted(set(ref.counts) | {str(v) for v in by_value if v is not None})
        ref_counts = [ref.counts.get(v, 0) for v in values]
        cur_counts = [by_value.get(v, 0) for v in values]
        if sum(cur_counts) and sum(ref_counts):
            distance = float(jensenshannon(ref_counts, cur_counts, base=2))
            out.append(DriftMetric(chunk, feature, "js", distance, None, limits.level("js", feature, distance),
                                   chunk_rows[chunk], distance))
            if len(values) > 1:
                result = chi2_contingency([ref_counts, cur_counts])
                cramers_v = math.sqrt(result.statistic / (sum(ref_counts) + sum(cur_counts)))  # 2 x k table
                level = limits.level("chi2", feature, cramers_v, float(result.pvalue))
                out.append(DriftMetric(chunk, feature, "chi2", float(result.statistic), float(result.pvalue),
                                       level, chunk_rows[chunk], cramers_v))
        out.append(_null_change(chunk, feature, by_value.get(None, 0), chunk_rows[chunk], ref.null_share, limits))
    return out


def _ks(per_chunk: Mapping[Key, np.ndarray], grids: Mapping[str, KsGrid], chunk_rows: Mapping[str, int],
        limits: _Limits) -> list[DriftMetric]:
    """Two-sample KS statistic per (chunk, column), from the chunk's rows per bucket of the
    column's grid (:meth:`~sparkfs.monitoring.day_counts.KsGrid.statistic`). A column with no
    non-null value on one side has no distribution to compare there: the null-share metric
    reports it, KS does not."""
    out = []
    for (chunk, feature), per_bucket in sorted(per_chunk.items()):
        grid = grids[feature]
        n, m = int(per_bucket.sum()), int(grid.reference.sum())
        if not n or not m:
            continue
        d = grid.statistic(per_bucket)
        p_value = ks_p_value(d, n, m)
        out.append(DriftMetric(chunk, feature, "ks", d, p_value, limits.level("ks", feature, d, p_value),
                               chunk_rows[chunk], d))
    return out


def ks_p_value(d: float, n: int, m: int) -> float:
    """Two-sided asymptotic p-value of a KS statistic ``d`` for samples of ``n`` and ``m`` rows."""
    if n == 0 or m == 0:
        return 1.0
    big, small = sorted((float(n), float(m)), reverse=True)
    return float(kstwo.sf(d, round(big * small / (big + small))))
