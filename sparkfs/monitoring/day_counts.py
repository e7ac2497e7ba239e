"""Every count a chunk's drift needs, in one pass over its rows.

:func:`day_counts` reads the rows once (``mapInArrow``: each partition counts its own rows with
numpy on whole Arrow columns) and sends one row per (chunk, kind, column) holding that
partition's counts as arrays; the driver adds the partitions' arrays up. What comes back to the
driver is counts, never rows. Per chunk (and column), a :class:`DayCounts` holds:

- ``rows``: the chunk's rows;
- ``bins``: numeric rows per bucket: index 0 the nulls, index ``b + 1`` bin ``b`` of the
  profile's edges (right-closed, as :func:`~sparkfs.monitoring.profile.bin_index`);
- ``ks``: numeric rows per bucket of the column's :class:`KsGrid`, from which the KS statistic
  follows (:meth:`KsGrid.statistic`);
- ``categories``: categorical rows per value (``None`` for nulls).

**KS, exact or on a grid.** A reference with at most :data:`EXACT_KS_VALUES` distinct values
gets an exact KS: its grid is those values ``u_0 < ... < u_k-1`` (bucket ``2j + 1`` holds the rows
equal to ``u_j``, bucket ``2j`` those strictly between ``u_j-1`` and ``u_j``, bucket ``2k`` those
above the last), so both empirical CDFs are known at every value either sample holds. Above
that, as NannyML's KS does for references of 10,000 rows or more, the grid is
:data:`KS_CELLS` equal-width cells between the reference's minimum and maximum (``np.histogram``'s
cells, plus one bucket below and one above), and the CDFs are compared at the cells' edges: a
per-row lookup among 50,000 reference values costs more than the pass to Python itself. The
statistic then equals NannyML's, except that the edge below the minimum is compared too (the
rows below the reference's minimum are a gap NannyML leaves out).

A numeric NaN counts as a null. A partition sends the non-empty buckets of each array (int32
bucket indexes and int64 counts, as bytes), so what it sends is bounded by the grids and the
profile's bins, not by the chunk's rows; and there is no shuffle: the driver gets a few rows per
partition. Without ``chunk_by`` the rows are one chunk, :data:`ALL`, and no chunk column is sent.

Example::

    grids = ks_grids(reference_pdf, ["distance"])
    counts = day_counts(day_df, None, {"distance": edges}, grids, ["carrier"])
    counts.bins[("all", "distance")]       # nulls, then rows per bin
    grids["distance"].statistic(counts.ks[("all", "distance")])
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import Broadcast
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

T = TypeVar("T")
ALL = "all"  # the one chunk of rows counted without ``chunk_by``
NULL_CHUNK = "(null)"  # the chunk of rows whose chunk value is null
EXACT_KS_VALUES = 10_000
KS_CELLS = 10_000
ARROW = "spark.sql.execution.arrow.pyspark.enabled"
SCHEMA = "chunk string, kind string, feature int, buckets binary, counts binary, values array<string>"
WIRE = pa.schema([("chunk", pa.string()), ("kind", pa.string()), ("feature", pa.int32()), ("buckets", pa.binary()),
                  ("counts", pa.binary()), ("values", pa.list_(pa.string()))])
Key = tuple[str, str]  # (chunk, column)


@dataclass(frozen=True)
class KsGrid:
    """Where a numeric column's KS compares the two empirical CDFs: the reference's distinct
    ``values`` (exact), or ``cells`` equal-width cells from ``low`` to ``high``; ``reference`` is
    the reference's non-null rows per bucket (see the module docstring)."""

    reference: np.ndarray
    values: np.ndarray | None = None
    low: float = 0.0
    high: float = 0.0
    cells: int = 0

    def count(self, present: np.ndarray) -> np.ndarray:
        """Non-null ``present`` values per bucket."""
        if self.values is not None:
            u = self.values
            left = np.searchsorted(u, present, side="left")
            equal = (left < len(u)) & (u[np.minimum(left, len(u) - 1)] == present)
            return np.bincount(2 * left + equal, minlength=2 * len(u) + 1)
        return _on_cells(present, self.low, self.high, self.cells)

    def statistic(self, day_per_bucket: np.ndarray) -> float:
        """The largest gap between the two empirical CDFs at the buckets' upper ends."""
        ref, day = np.cumsum(self.reference), np.cumsum(day_per_bucket)
        return float(np.max(np.abs(day / day[-1] - ref / ref[-1])))


@dataclass(frozen=True)
class DayCounts:
    """What :func:`day_counts` found, per chunk (``rows``) or per (chunk, column); see the module docstring."""

    rows: dict[str, int]
    bins: dict[Key, np.ndarray]
    ks: dict[Key, np.ndarray]
    categories: dict[Key, dict[str | None, int]]


def ks_grids(reference: pd.DataFrame, numeric: Sequence[str]) -> dict[str, KsGrid]:
    """Each numeric column's :class:`KsGrid` from ``reference`` (a model's reference rows: bounded,
    on the driver); a column with no non-null value there has none."""
    grids = {}
    for name in numeric:
        values = pd.to_numeric(reference[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        distinct, counts = np.unique(values[~np.isnan(values)], return_counts=True)
        if not len(distinct):
            continue
        if len(distinct) <= EXACT_KS_VALUES:
            per_bucket = np.zeros(2 * len(distinct) + 1, dtype=np.int64)
            per_bucket[1::2] = counts
            grids[name] = KsGrid(per_bucket, values=distinct)
        else:
            low, high = float(distinct[0]), float(distinct[-1])
            reference_cells = _on_cells(values[~np.isnan(values)], low, high, KS_CELLS)
            grids[name] = KsGrid(reference_cells, low=low, high=high, cells=KS_CELLS)
    return grids


def _on_cells(present: np.ndarray, low: float, high: float, cells: int) -> np.ndarray:
    """Values per bucket: below ``low``, each of ``cells`` equal-width cells (``np.histogram``'s:
    right-open, the last closed), above ``high``."""
    inside = np.histogram(present, bins=cells, range=(low, high))[0]
    return np.concatenate([[np.count_nonzero(present < low)], inside, [np.count_nonzero(present > high)]])


def day_counts(
    rows_df: DataFrame,
    chunk_by: str | None,
    edges: Mapping[str, Sequence[float]],
    grids: Mapping[str, KsGrid],
    categorical: Sequence[str],
) -> DayCounts:
    """The counts of ``rows_df`` (see the module docstring) per value of its column ``chunk_by``
    (null is :data:`NULL_CHUNK`), or as one chunk :data:`ALL`; KS buckets for the numeric columns
    that have a grid."""
    numeric = list(edges)
    chunked = [F.coalesce(F.col(f"`{chunk_by}`").cast("string"), F.lit(NULL_CHUNK)).alias("c")] if chunk_by else []
    selected = rows_df.select(
        *chunked,
        *(F.col(f"`{n}`").cast("double").alias(f"n{i}") for i, n in enumerate(numeric)),
        *(F.col(f"`{c}`").cast("string").alias(f"s{i}") for i, c in enumerate(categorical)),
    )
    bin_edges = [np.asarray(edges[n], dtype=np.float64) for n in numeric]
    shared = _broadcast(rows_df, (bin_edges, [grids.get(n) for n in numeric]))

    def count(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        tally = _Tally(*(shared() if callable(shared) else shared.value), len(categorical))
        for batch in batches:
            for label, part in (_by_chunk(batch) if chunk_by else [(ALL, batch)]):
                tally.add(label, part, 1 if chunk_by else 0)
        yield tally.to_batch()

    spark = rows_df.sparkSession
    arrow_was = spark.conf.get(ARROW, "false")
    spark.conf.set(ARROW, "true")  # the counts come back as Arrow batches, not one Python Row each
    try:
        sent = selected.mapInArrow(count, SCHEMA).toPandas()
    finally:
        spark.conf.set(ARROW, arrow_was or "false")
        if not callable(shared):
            shared.unpersist()
    sizes = {"rows": [1], "bin": [len(e) + 2 for e in bin_edges],
             "ks": [len(grids[n].reference) if n in grids else 0 for n in numeric]}
    return _add_up(sent, sizes, numeric, categorical)


class _Tally:
    """One partition's counts, dense per (kind, chunk, column index), categories per value."""

    def __init__(self, bin_edges: list[np.ndarray], grids: list[KsGrid | None], categorical: int) -> None:
        self.bin_edges, self.grids, self.categorical = bin_edges, grids, categorical
        self.dense: dict[tuple[str, str, int], np.ndarray] = {}
        self.categories: dict[tuple[str, int], Counter[str | None]] = defaultdict(Counter)

    def add(self, label: str, part: pa.RecordBatch, first: int) -> None:
        """``part``'s rows, all of chunk ``label``: from column ``first`` on, the numeric columns,
        then the categorical ones (as :func:`day_counts` selects them)."""
        columns = part.columns[first:]
        self._add(("rows", label, 0), np.array([part.num_rows]))
        for i, edges in enumerate(self.bin_edges):
            values = columns[i].to_numpy(zero_copy_only=False)  # nulls are NaN
            present = values[~np.isnan(values)]
            bins = np.bincount(np.searchsorted(edges, present, side="left") + 1, minlength=len(edges) + 2)
            bins[0] = len(values) - len(present)
            self._add(("bin", label, i), bins)
            grid = self.grids[i]
            if grid is not None:
                self._add(("ks", label, i), grid.count(present))
        for i in range(self.categorical):
            found = pc.value_counts(columns[len(self.bin_edges) + i])  # nulls included, as null
            self.categories[(label, i)].update(dict(zip(found.field("values").to_pylist(),
                                                        found.field("counts").to_pylist(), strict=True)))

    def _add(self, key: tuple[str, str, int], counts: np.ndarray) -> None:
        if key in self.dense:
            self.dense[key] += counts
        else:
            self.dense[key] = counts.astype(np.int64)

    def to_batch(self) -> pa.RecordBatch:
        """One row per (chunk, kind, column): the non-empty buckets' indexes and counts."""
        rows: list[tuple[str, str, int, bytes | None, bytes, list[str | None] | None]] = []
        for (kind, label, i), counts in self.dense.items():
            present = np.flatnonzero(counts)
            rows.append((label, kind, i, present.astype(np.int32).tobytes(), counts[present].tobytes(), None))
        for (label, i), by_value in self.categories.items():
            rows.append((label, "category", i, None, np.fromiter(by_value.values(), np.int64).tobytes(),
                         list(by_value)))
        columns = list(zip(*rows, strict=True)) if rows else [()] * len(WIRE)
        return pa.RecordBatch.from_arrays([pa.array(c, f.type) for c, f in zip(columns, WIRE, strict=True)],
                                          schema=WIRE)


def _by_chunk(batch: pa.RecordBatch) -> Iterator[tuple[str, pa.RecordBatch]]:
    """``batch``'s rows per chunk (column 0): the whole batch when it holds one chunk, as a day does."""
    encoded = batch.column(0).dictionary_encode()
    labels = encoded.dictionary.to_pylist()
    if len(labels) == 1:
        yield labels[0], batch
        return
    codes = encoded.indices.to_numpy()
    for code, label in enumerate(labels):
        yield label, batch.filter(pa.array(codes == code))


def _add_up(sent: pd.DataFrame, sizes: Mapping[str, list[int]], numeric: list[str],
            categorical: Sequence[str]) -> DayCounts:
    """The partitions' rows (:meth:`_Tally.to_batch`) added up into dense arrays, per chunk and column."""
    dense: dict[tuple[str, str, int], np.ndarray] = {}
    categories: dict[Key, Counter[str | None]] = defaultdict(Counter)
    for label, kind, i, buckets, counts, values in sent.itertuples(index=False, name=None):
        found = np.frombuffer(counts, dtype=np.int64)
        if kind == "category":
            categories[(label, categorical[i])].update(dict(zip(values, found.tolist(), strict=True)))
            continue
        key = (kind, label, int(i))
        if key not in dense:
            dense[key] = np.zeros(sizes[kind][i], dtype=np.int64)
        dense[key][np.frombuffer(buckets, dtype=np.int32)] += found  # a partition's buckets are distinct
    by_kind: dict[str, dict[Key, np.ndarray]] = defaultdict(dict)
    for (kind, label, i), counts in dense.items():
        by_kind[kind][(label, numeric[i] if kind != "rows" else "")] = counts
    return DayCounts(rows={label: int(n[0]) for (label, _), n in by_kind["rows"].items()}, bins=by_kind["bin"],
                     ks=by_kind["ks"], categories={k: dict(v) for k, v in categories.items()})


def _broadcast(rows_df: DataFrame, payload: T) -> Broadcast[T] | Callable[[], T]:
    """``payload`` broadcast once per executor (a reference's values can be MiBs: not in every
    task's closure), or, where the session has no SparkContext (Spark Connect), in the closure."""
    try:
        return rows_df.sparkSession.sparkContext.broadcast(payload)
    except Exception:  # pyspark raises its own error types for a missing context: any means none here
        return lambda: payload
