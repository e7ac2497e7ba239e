"""Every count a chunk's drift needs, in one pass over its rows, by one of two engines.

:func:`day_counts` reads the rows once; what comes back to the driver is counts, never rows.

- **JVM** (where the session's driver has sparkfs's jar, :mod:`sparkfs.core.jvm`: a local
  session, a classic cluster given the jar): one Spark aggregate, ``DayCountsAggregate.java``
  next to this module, counts each row in the task that scans it (grouped by the chunk when there
  are chunks) and returns one binary value per chunk. No Python worker, no copy of the rows to
  Arrow: at 10M rows it costs about twice a plain scan, the Python engine about four times
  (``benchmarks/monitoring.py``; figures in ``docs/benchmarks.md``).
- **Python** (everywhere else: Spark Connect, Databricks): ``mapInArrow``, each partition counts
  its own rows with numpy on whole Arrow columns and sends one row per (chunk, kind, column)
  holding its counts as arrays; the driver adds the partitions' arrays up.

Both count the same buckets with the same arithmetic (the tests compare them bucket for
bucket). Per chunk (and column), a :class:`DayCounts` holds:

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

A numeric NaN counts as a null. In the Python engine a partition sends the non-empty buckets of
each array (int32 bucket indexes and int64 counts, as bytes), so what it sends is bounded by the
grids and the profile's bins, not by the chunk's rows; and there is no shuffle: the driver gets a
few rows per partition. The JVM engine's partial counts (per task, the same size bound) meet in
one shuffle. Without ``chunk_by`` the rows are one chunk, :data:`ALL`: no chunk column is sent,
and the JVM engine aggregates without a grouping key.

Example::

    grids = ks_grids(reference_pdf, ["distance"])
    counts = day_counts(day_df, None, {"distance": edges}, grids, ["carrier"])   # engine="auto"
    counts.bins[("all", "distance")]       # nulls, then rows per bin
    grids["distance"].statistic(counts.ks[("all", "distance")])
"""

from __future__ import annotations

import struct
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from py4j.java_gateway import JavaClass
from pyspark import Broadcast
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

T = TypeVar("T")
ALL = "all"  # the one chunk of rows counted without ``chunk_by``
NULL_CHUNK = "(null)"  # the chunk of rows whose chunk value is null
EXACT_KS_VALUES = 10_000
KS_CELLS = 10_000
ARROW = "spark.sql.execution.arrow.pyspark.enabled"
ENGINES = ("auto", "jvm", "python")
JVM_CLASS = "sparkfs.monitoring.DayCountsAggregate"
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
    *,
    engine: str = "auto",
) -> DayCounts:
    """The counts of ``rows_df`` (see the module docstring) per value of its column ``chunk_by``
    (null is :data:`NULL_CHUNK`), or as one chunk :data:`ALL`; KS buckets for the numeric columns
    that have a grid. ``engine``: ``"jvm"``, ``"python"``, or ``"auto"`` (the JVM's where the
    session has it)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}; got {engine!r}")
    aggregate = _jvm_aggregate(rows_df) if engine != "python" else None
    if engine == "jvm" and aggregate is None:
        raise RuntimeError(f"the JVM engine needs {JVM_CLASS} on the driver's classpath (sparkfs.core.jvm "
                           f"builds it; get_spark loads it); this session has not got it: use engine='python'")
    if aggregate is not None:
        return _jvm_counts(aggregate, rows_df, chunk_by, edges, grids, categorical)
    return _python_counts(rows_df, chunk_by, edges, grids, categorical)


def _python_counts(rows_df: DataFrame, chunk_by: str | None, edges: Mapping[str, Sequence[float]],
                   grids: Mapping[str, KsGrid], categorical: Sequence[str]) -> DayCounts:
    """The Python engine: each partition's rows as Arrow batches, counted with numpy."""
    numeric = list(edges)
    chunked = [_chunk(chunk_by)] if chunk_by else []
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


def _chunk(chunk_by: str) -> Column:
    """The chunk of each row, as both engines read it: ``chunk_by`` as a string, null as :data:`NULL_CHUNK`."""
    return F.coalesce(F.col(f"`{chunk_by}`").cast("string"), F.lit(NULL_CHUNK)).alias("c")


def _jvm_aggregate(rows_df: DataFrame) -> Any | None:
    """The JVM engine's class, where the session's driver can load it (py4j), else None."""
    try:
        jvm = rows_df.sparkSession.sparkContext._jvm  # Spark Connect has no SparkContext: raises
        found = jvm.sparkfs.monitoring.DayCountsAggregate if jvm is not None else None
    except Exception:  # pyspark raises its own error types for a missing context or gateway
        return None
    return found if isinstance(found, JavaClass) else None  # an unknown name is a JavaPackage


def _jvm_counts(aggregate: Any, rows_df: DataFrame, chunk_by: str | None, edges: Mapping[str, Sequence[float]],
                grids: Mapping[str, KsGrid], categorical: Sequence[str]) -> DayCounts:
    """The JVM engine: one aggregate (``DayCountsAggregate.java``) per chunk, one binary result each."""
    numeric = list(edges)
    spark = rows_df.sparkSession
    name = f"sparkfs_day_counts_{uuid.uuid4().hex}"
    inputs = [*(F.col(f"`{n}`").cast("double") for n in numeric), *(F.col(f"`{c}`").cast("string") for c in categorical)]
    selected = rows_df.select(
        _chunk(chunk_by) if chunk_by else F.lit(ALL).alias("c"),
        *(column.alias(f"v{i}") for i, column in enumerate(inputs)),
    )
    counted = F.call_function(name, *(F.col(f"v{i}") for i in range(len(inputs)))).alias("counts")
    aggregate.register(spark._jsparkSession, name, bytearray(_grid_bytes(numeric, edges, grids, len(categorical))))
    try:
        # Without chunks, one global aggregate: no grouping key to hash for every row.
        found = (selected.groupBy("c").agg(counted).collect() if chunk_by
                 else [(ALL, r["counts"]) for r in selected.agg(counted).collect()])
    finally:
        aggregate.drop(spark._jsparkSession, name)
    rows: dict[str, int] = {}
    bins: dict[Key, np.ndarray] = {}
    ks: dict[Key, np.ndarray] = {}
    categories: dict[Key, dict[str | None, int]] = {}
    for label, blob in found:
        reader = _Reader(bytes(blob))
        chunk_rows = reader.longs(1)[0]
        if not chunk_rows:
            continue  # a global aggregate of no rows: the Python engine sends no chunk then
        rows[label] = int(chunk_rows)
        for n in numeric:
            bins[(label, n)] = reader.longs(len(edges[n]) + 2)
            if n in grids:
                ks[(label, n)] = reader.longs(len(grids[n].reference))
        for c in categorical:
            nulls, values = int(reader.longs(1)[0]), reader.integer()
            by_value: dict[str | None, int] = {None: nulls} if nulls else {}
            for _ in range(values):
                value = reader.text()
                by_value[value] = int(reader.longs(1)[0])
            categories[(label, c)] = by_value
    return DayCounts(rows=rows, bins=bins, ks=ks, categories=categories)


def _grid_bytes(numeric: list[str], edges: Mapping[str, Sequence[float]], grids: Mapping[str, KsGrid],
                categorical: int) -> bytes:
    """What the JVM engine counts against, as ``DayCountsAggregate.Grids.parse`` reads it: per numeric
    column its bin edges and its grid (0: none; 1: the exact grid's values; 2: the cells' edges,
    ``np.linspace``'s, the ones ``np.histogram`` compares with)."""
    def doubles(values: np.ndarray | Sequence[float]) -> bytes:
        array = np.asarray(values, dtype="<f8")
        return struct.pack("<i", len(array)) + array.tobytes()

    out = [struct.pack("<ii", len(numeric), categorical)]
    for name in numeric:
        out.append(doubles(edges[name]))
        grid = grids.get(name)
        if grid is None:
            out.append(struct.pack("<i", 0))
        elif grid.values is not None:
            out.append(struct.pack("<i", 1) + doubles(grid.values))
        else:
            out.append(struct.pack("<i", 2) + doubles(np.linspace(grid.low, grid.high, grid.cells + 1)))
    return b"".join(out)


class _Reader:
    """Reads the JVM engine's little-endian result in order."""

    def __init__(self, blob: bytes) -> None:
        self.blob, self.at = blob, 0

    def longs(self, n: int) -> np.ndarray:
        found = np.frombuffer(self.blob, dtype="<i8", count=n, offset=self.at).astype(np.int64)
        self.at += 8 * n
        return found

    def integer(self) -> int:
        (value,) = struct.unpack_from("<i", self.blob, self.at)
        self.at += 4
        return int(value)

    def text(self) -> str:
        size = self.integer()
        self.at += size
        return self.blob[self.at - size:self.at].decode("utf-8")


def _broadcast(rows_df: DataFrame, payload: T) -> Broadcast[T] | Callable[[], T]:
    """``payload`` broadcast once per executor (a reference's values can be MiBs: not in every
    task's closure), or, where the session has no SparkContext (Spark Connect), in the closure."""
    try:
        return rows_df.sparkSession.sparkContext.broadcast(payload)
    except Exception:  # pyspark raises its own error types for a missing context: any means none here
        return lambda: payload
