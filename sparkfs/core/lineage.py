"""Lineage recorded at write time: which sources, at which versions, made each table version.

Every write that commits a new version records its edges in ``<ops schema>.lineage``, one row per
source, through the one MERGE writer (keys: target, target version, source kind, source), so a
rerun that commits nothing records nothing and a repeated record changes nothing:

- bronze ``vN`` <- the landed ``file``\\ s it appended;
- silver ``vN`` <- the bronze ``table`` version it read; gold ``vN`` <- the silver versions its
  builder read (from :meth:`Lakehouse.track_reads`, so what is recorded is what was read);
- a registered ``model`` version <- the tables its training set read (the spec's versions);
- a predictions table ``vN`` <- the model version that scored it and the feature tables' versions.

The same edges go out as OpenLineage events (:mod:`sparkfs.core.openlineage`), with the column
lineage a writer knows (:mod:`sparkfs.core.column_lineage`); ``ops.lineage`` holds table versions.

Nodes are named ``layer.table`` for tables, ``model:<name>`` for registered models, and the path
under the landing folder for files.

Example::

    edges = edges_from_reads(lake, "gold.carrier_delays", 12, reads)
    record_lineage(lake, edges, run_id="abc", job="features")
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from pyspark.sql import types as T

from sparkfs.core.column_lineage import ColumnLineage
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, insert_new
from sparkfs.core.openlineage import emit_lineage

LINEAGE_TABLE = ("ops", "lineage")
KEYS = ["target", "target_version", "source_kind", "source"]
SCHEMA = T.StructType([
    T.StructField("target", T.StringType(), False),
    T.StructField("target_version", T.LongType(), False),
    T.StructField("source_kind", T.StringType(), False),
    T.StructField("source", T.StringType(), False),
    T.StructField("source_version", T.LongType(), True),
    T.StructField("job", T.StringType(), True),
    T.StructField("run_id", T.StringType(), True),
    T.StructField("recorded_at", T.TimestampType(), True),
])
COMMENTS = {
    "target": "what was written: layer.table, or model:<name> for a registered model",
    "target_version": "its Delta version (a registered model: its model version)",
    "source_kind": "table, file, or model",
    "source": "what it was made from: layer.table, model:<name>, or a path under the landing folder",
    "source_version": "the source's Delta (or model) version read; null for a file",
    "job": "the sparkfs job that wrote it",
    "run_id": "the run record (ops.run_records) of that job",
    "recorded_at": "when the edge was first recorded (UTC)",
}


@dataclass(frozen=True)
class LineageEdge:
    """``target`` at ``target_version`` was made from ``source`` (at ``source_version``)."""

    target: str
    target_version: int
    source_kind: str
    source: str
    source_version: int | None = None


def table_node(layer: str, table: str) -> str:
    return f"{layer}.{table}"


def model_node(name: str) -> str:
    return f"model:{name}"


def edges_from_reads(
    lake: Lakehouse, target: str, target_version: int, reads: Iterable[tuple[str, str, int | None]]
) -> list[LineageEdge]:
    """Edges from a read log (:meth:`Lakehouse.track_reads`): one per table read other than the
    target itself and the ops layer (run records, validation results), at the version read (the
    current version, asked now, where the read took the current one)."""
    found: dict[str, int] = {}
    for layer, table, version in reads:
        node = table_node(layer, table)
        if node == target or layer == "ops":
            continue
        read = version if version is not None else lake.version(layer, table)
        found[node] = max(found.get(node, read), read)
    return [LineageEdge(target, target_version, "table", node, v) for node, v in sorted(found.items())]


def record_lineage(
    lake: Lakehouse, edges: Sequence[LineageEdge], *, job: str, run_id: str,
    columns: Mapping[tuple[str, int], ColumnLineage] | None = None,
) -> MergeResult | None:
    """MERGE ``edges`` into ``ops.lineage`` (created on first use) and send them as OpenLineage
    events; None when there are none. An edge recorded before keeps its first job, run and time,
    and when every edge was recorded before (a rerun that wrote nothing new) no event is sent.

    ``columns`` is the column lineage of the versions written that the writer knows, by (target,
    target version): it goes out with the events only (see :mod:`sparkfs.core.column_lineage`);
    ``ops.lineage`` keeps table versions."""
    if not edges:
        return None
    layer, table = LINEAGE_TABLE
    if not lake.exists(layer, table):
        lake.create(layer, table, SCHEMA, comment="Lineage: which source versions made each table version",
                    column_comments=COMMENTS)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows = [(e.target, e.target_version, e.source_kind, e.source, e.source_version, job, run_id, now)
            for e in dict.fromkeys(edges)]
    batch = lake.spark.createDataFrame(rows, SCHEMA)
    result = insert_new(lake, layer, table, batch, KEYS)
    if result.rows_inserted:  # a rerun that made no new version has no new edge: nothing to send again
        emit_lineage(lake.settings, lake, edges, job=job, run_id=run_id, columns=columns)
    return result
