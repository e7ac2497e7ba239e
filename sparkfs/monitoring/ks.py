"""The exact two-sample Kolmogorov-Smirnov statistic of a big sample against a small reference,
from counts: the big sample is never sorted, only counted into the reference's own buckets.

Both empirical CDFs are step functions, so their largest gap lies at a value of one sample or
the other. Cut the number line at each distinct reference value ``r`` and just above it (the
next double, ``nextafter(r, inf)``): every bucket is then either one reference value ``[r, r]``
or the open stretch between two neighbouring reference values. On each bucket the reference's
CDF is constant (its rows at or below the bucket's start), and the current sample's CDF, taken
at the bucket's last value, is its rows in this bucket and all below (a cumulative sum of the
bucket counts). The largest difference of the two over the buckets is the statistic, exactly:
inside an open stretch the current CDF only grows, so its extremes there are its value at the
stretch's last row and its value at the reference point just below, which is the previous
bucket's.

A day of any size is thus one counting pass (Spark's ``Bucketizer``: a binary search per value,
then a grouped count) and ``2 x distinct reference values + 1`` numbers per column in the
driver. Above ``MAX_REFERENCE_VALUES`` distinct reference values per column, the cuts are thinned
to that many reference values evenly spaced by rank; the statistic is then approximate (off by
at most the largest share of either sample between two kept values) and the grid says so.

Example::

    grid = KsGrid.of(np.array([1.0, 2.0, 2.0, 5.0]))
    bucket = np.searchsorted(grid.splits, current, side="right") - 1   # what Spark's Bucketizer does
    d = grid.statistic(np.bincount(bucket, minlength=grid.buckets))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_REFERENCE_VALUES = 100_000


@dataclass(frozen=True)
class KsGrid:
    """The buckets of one column's reference: ``splits`` (from -inf to +inf, increasing; bucket
    ``b`` is ``[splits[b], splits[b+1])``, the last one closed) and the reference rows at or
    below each bucket's start."""

    splits: np.ndarray
    reference_below: np.ndarray
    reference_rows: int
    exact: bool

    @classmethod
    def of(cls, values: np.ndarray, counts: np.ndarray | None = None) -> KsGrid:
        """The grid of a reference's non-null values (or its distinct ``values`` with ``counts``)."""
        values = np.asarray(values, dtype=float)
        if counts is None:
            values, counts = np.unique(values, return_counts=True)
        else:
            order = np.argsort(values, kind="stable")
            values, counts = values[order], np.asarray(counts, dtype=np.int64)[order]
        keep = ~np.isnan(values)
        values, counts = values[keep], counts[keep]
        exact = len(values) <= MAX_REFERENCE_VALUES
        cuts = values if exact else values[np.unique(np.linspace(0, len(values) - 1, MAX_REFERENCE_VALUES).round().astype(int))]
        splits = np.unique(np.concatenate([[-np.inf, np.inf], cuts, np.nextafter(cuts, np.inf)]))
        cumulative = np.concatenate([[0], np.cumsum(counts)])
        below = cumulative[np.searchsorted(values, splits[:-1], side="right")]
        return cls(splits, below, int(cumulative[-1]), exact)

    @property
    def buckets(self) -> int:
        return len(self.splits) - 1

    def statistic(self, current_counts: np.ndarray) -> float:
        """The KS statistic of the current sample given its row count per bucket."""
        rows = current_counts.sum()
        if rows == 0 or self.reference_rows == 0:
            return float("nan")
        current_below = np.cumsum(current_counts)
        return float(np.max(np.abs(current_below / rows - self.reference_below / self.reference_rows)))
