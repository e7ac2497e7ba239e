"""Every count a chunk's drift needs, in one pass over its rows.

:func:`day_counts` reads the rows once (``mapInPandas``: each partition counts its own rows
with numpy, and Spark adds the partitions' counts up by key); what comes back to the driver is
counts, never rows. Per chunk and column:

- ``rows``: the chunk's rows;
- ``bin``: numeric rows per bin of the profile's edges (right-closed, as
  :func:`~sparkfs.monitoring.profile.bin_index`), bucket -1 for nulls;
- ``support``: numeric rows per position among the reference's sorted distinct values
  ``u_0 < u_1 < ... < u_k-1``: bucket ``2j + 1`` holds the rows equal to ``u_j``, bucket ``2j``
  the rows strictly between ``u_j-1`` and ``u_j`` (bucket ``2k`` those above the last). Both
  empirical CDFs are then known at every value either sample holds, which is all an exact
  two-sample KS statistic needs (:func:`ks_statistic`);
- ``category``: categorical rows per value (``value``; null for nulls).

A numeric NaN counts as a null. Each partition sends one row per non-empty bucket: what a
partition sends is bounded by the reference's distinct values, not by the chunk's rows.

Example::

    support = ks_support(reference_pdf, ["distance"])
    counts = day_counts(day_df.withColumn("chunk", F.lit("all")), "chunk", {"distance": edges}, support, ["carrier"])
    counts[counts.kind == "bin"]        # chunk, feature, kind, bucket, value, count
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

T = TypeVar("T")
SCHEMA = "chunk string, feature string, kind string, bucket int, value string, count long"
ARROW = "spark.sql.execution.arrow.pyspark.enabled"
COLUMNS = ["chunk", "feature", "kind", "bucket", "value", "count"]


@dataclass(frozen=True)
class Support:
    """A numeric column's reference: its sorted distinct non-null values and how many rows hold each."""

    values: np.ndarray
    counts: np.ndarray

    def cumulative(self) -> np.ndarray:
        """The reference's rows per ``support`` bucket (none between values), cumulated."""
        per_bucket = np.zeros(2 * len(self.values) + 1, dtype=np.int64)
        per_bucket[1::2] = self.counts
        return np.cumsum(per_bucket)


def ks_support(reference: pd.DataFrame, numeric: Sequence[str]) -> dict[str, Support]:
    """Each numeric column's :class:`Support` in ``reference`` (a model's reference rows: bounded, on the driver)."""
    supports = {}
    for name in numeric:
        values = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        distinct, counts = np.unique(values[~np.isnan(values)], return_counts=True)
        supports[name] = Support(distinct, counts.astype(np.int64))
    return supports


def ks_statistic(support: Support, day_per_bucket: np.ndarray) -> float:
    """The largest gap between the two empirical CDFs, from the chunk's rows per ``support`` bucket."""
    ref = support.cumulative()
    day = np.cumsum(day_per_bucket)
    return float(np.max(np.abs(day / day[-1] - ref / ref[-1])))


def day_counts(
    rows_df: DataFrame,
    chunk: str,
    edges: Mapping[str, Sequence[float]],
    supports: Mapping[str, Support],
    categorical: Sequence[str],
) -> pd.DataFrame:
    """The counts of ``rows_df`` (see the module docstring) per its ``chunk`` column's values."""
    numeric = list(edges)
    selected = rows_df.select(
        F.col(f"`{chunk}`").cast("string").alias("c"),
        *(F.col(f"`{n}`").cast("double").alias(f"n{i}") for i, n in enumerate(numeric)),
        *(F.col(f"`{c}`").cast("string").alias(f"s{i}") for i, c in enumerate(categorical)),
    )
    payload = ([np.asarray(edges[n], dtype=np.float64) for n in numeric],
               [supports[n].values if n in supports and len(supports[n].values) else None for n in numeric])
    shared = _broadcast(rows_df, payload)

    def count(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        bin_edges, support_values = shared() if callable(shared) else shared.value
        dense: dict[tuple[str | None, str, int], np.ndarray] = {}
        categories: Counter[tuple[str | None, int, str | None]] = Counter()
        for batch in batches:
            for c, part in batch.groupby("c", dropna=False, sort=False):
                key = None if pd.isna(c) else str(c)
                _add(dense, (key, "rows", -1), np.array([len(part)]))
                for i in range(len(numeric)):
                    values = part[f"n{i}"].to_numpy(dtype=np.float64, na_value=np.nan)
                    present = values[~np.isnan(values)]
                    bins = np.searchsorted(bin_edges[i], present, side="left")
                    _add(dense, (key, "bin", i), np.bincount(bins + 1, minlength=len(bin_edges[i]) + 2))
                    dense[(key, "bin", i)][0] += len(values) - len(present)  # bucket -1: nulls
                    u = support_values[i]
                    if u is not None:
                        left = np.searchsorted(u, present, side="left")
                        equal = (left < len(u)) & (u[np.minimum(left, len(u) - 1)] == present)
                        _add(dense, (key, "support", i), np.bincount(2 * left + equal, minlength=2 * len(u) + 1))
                for i in range(len(categorical)):
                    for value, n in part[f"s{i}"].value_counts(dropna=False).items():
                        categories[(key, i, None if pd.isna(value) else str(value))] += int(n)
        frames = []
        for (key, kind, i), counts in dense.items():
            present = np.flatnonzero(counts)
            frames.append(pd.DataFrame({
                "chunk": key, "feature": "" if kind == "rows" else numeric[i], "kind": kind,
                "bucket": (present - (1 if kind == "bin" else 0)).astype(np.int32), "value": None,
                "count": counts[present]}))
        if categories:
            frames.append(pd.DataFrame([(key, categorical[i], "category", 0, value, n)
                                        for (key, i, value), n in categories.items()], columns=COLUMNS))
        yield pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=COLUMNS)

    keys = COLUMNS[:-1]
    spark = rows_df.sparkSession
    arrow_was = spark.conf.get(ARROW, "false")
    spark.conf.set(ARROW, "true")  # the counts come back as Arrow batches, not one Python Row each
    try:
        return selected.mapInPandas(count, SCHEMA).groupBy(*keys).agg(F.sum("count").alias("count")).toPandas()
    finally:
        spark.conf.set(ARROW, arrow_was or "false")
        if not callable(shared):
            shared.unpersist()


def _broadcast(rows_df: DataFrame, payload: T) -> Broadcast[T] | Callable[[], T]:
    """``payload`` broadcast once per executor (a reference's values can be MiBs: not in every
    task's closure), or, where the session has no SparkContext (Spark Connect), in the closure."""
    try:
        return rows_df.sparkSession.sparkContext.broadcast(payload)
    except Exception:  # pyspark raises its own error types for a missing context: any means none here
        return lambda: payload


def _add(dense: dict[tuple[str | None, str, int], np.ndarray], key: tuple[str | None, str, int],
         counts: np.ndarray) -> None:
    if key in dense:
        dense[key] += counts
    else:
        dense[key] = counts.astype(np.int64)
