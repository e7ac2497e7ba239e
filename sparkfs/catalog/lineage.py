"""The lineage graph, read from what every write recorded (``ops.lineage``, see
:mod:`sparkfs.core.lineage`), upstream or downstream of a table, a feature or a model.

Upstream follows versions: a node ``gold.carrier_delays v40`` was made by the write that
committed v40 (or, for a version no sparkfs write made, such as an OPTIMIZE, the newest recorded
write before it), from the sources at the versions that write read, and so on down to the landed
files. Downstream follows names: every table or model recorded as made from the node (at its
version or later), with the range of versions. :func:`impact` adds what the registry knows: the
model versions (and their aliases) whose training set read a feature.

Example::

    graph = upstream(lake, "ml.flight_delay_predictions")
    print("\\n".join(graph.lines())); Path("lineage.mmd").write_text(graph.mermaid())
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pyspark.sql import functions as F

from sparkfs.catalog.usage import ModelUse
from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.lineage import LINEAGE_TABLE, model_node

MAX_FILES_SHOWN = 3  # per node, in text; the Mermaid picture folds files into one node per folder


@dataclass(frozen=True)
class Node:
    """A table version (``gold.planes`` v3), a model version (``model:flight_delay`` v2), a file,
    or on the downstream side a name with the range of versions made from the root."""

    name: str
    version: int | None = None
    last_version: int | None = None  # downstream: the newest version made from the root
    kind: str = "table"
    note: str = ""  # e.g. a model version's aliases

    @property
    def label(self) -> str:
        if self.version is None:
            return self.name
        versions = f"v{self.version}" + (f"..v{self.last_version}" if self.last_version not in (None, self.version) else "")
        return f"{self.name} {versions}" + (f" {self.note}" if self.note else "")


@dataclass(frozen=True)
class LineageGraph:
    """Edges ``(source, target)`` found from ``root``, walking ``direction``."""

    root: Node
    direction: Literal["upstream", "downstream"]
    edges: tuple[tuple[Node, Node], ...] = field(default_factory=tuple)

    def children(self, node: Node) -> list[Node]:
        if self.direction == "upstream":
            return [s for s, t in self.edges if t == node]
        return [t for s, t in self.edges if s == node]

    def lines(self) -> list[str]:
        """The graph as an indented tree from the root (a node met twice is shown once)."""
        out = [self.root.label]
        seen = {self.root}
        arrow = "<-" if self.direction == "upstream" else "->"

        def walk(node: Node, depth: int) -> None:
            children = self.children(node)
            files = [c for c in children if c.kind == "file"]
            for child in [c for c in children if c.kind != "file"]:
                again = " (see above)" if child in seen else ""
                out.append(f"{'  ' * depth}{arrow} {child.label}{again}")
                if not again:
                    seen.add(child)
                    walk(child, depth + 1)
            for f in files[:MAX_FILES_SHOWN]:
                out.append(f"{'  ' * depth}{arrow} file {f.name}")
            if len(files) > MAX_FILES_SHOWN:
                out.append(f"{'  ' * depth}   ... and {len(files) - MAX_FILES_SHOWN} more files")

        walk(self.root, 1)
        return out

    def mermaid(self) -> str:
        """A Mermaid flowchart (sources on the left); files are folded into their folder."""
        def shown(node: Node) -> Node:
            return Node(node.name.rsplit("/", 1)[0] + "/", kind="file") if node.kind == "file" else node

        edges = sorted({(shown(s), shown(t)) for s, t in self.edges}, key=lambda e: (e[0].label, e[1].label))
        nodes = sorted({n for e in edges for n in e} | {self.root}, key=lambda n: n.label)
        ids = {n: f"n{i}" for i, n in enumerate(nodes)}
        lines = ["flowchart LR"]
        for n in nodes:
            text = re.sub(r'["<>]', "", n.label)
            lines.append(f'    {ids[n]}["{text}"]' if n.kind != "file" else f'    {ids[n]}[/"{text}"/]')
        lines += [f"    {ids[s]} --> {ids[t]}" for s, t in edges]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        def node(n: Node) -> dict[str, Any]:
            return {"name": n.name, "version": n.version, "last_version": n.last_version, "kind": n.kind}
        return {"root": node(self.root), "direction": self.direction,
                "edges": [{"source": node(s), "target": node(t)} for s, t in self.edges]}


def _lineage_df(lake: Lakehouse) -> Any:
    layer, table = LINEAGE_TABLE
    if not lake.exists(layer, table):
        raise SparkfsError(f"no lineage recorded yet ({lake.name(layer, table)} does not exist): "
                           "lineage is recorded by the features, train and infer jobs")
    return lake.read(layer, table)


def latest_recorded(lake: Lakehouse, name: str) -> int | None:
    """The newest version of ``name`` a write recorded lineage for."""
    row = _lineage_df(lake).where(F.col("target") == name).agg(F.max("target_version")).first()
    return None if row is None or row[0] is None else int(row[0])


def upstream(lake: Lakehouse, name: str, version: int | None = None, *, max_depth: int = 12) -> LineageGraph:
    """Everything ``name`` at ``version`` (default: its newest recorded) was made from, down to files."""
    lineage_df = _lineage_df(lake)
    version = latest_recorded(lake, name) if version is None else version
    kind = "model" if name.startswith("model:") else "table"
    root = Node(name, version, kind=kind)
    edges: list[tuple[Node, Node]] = []
    frontier, seen = [root], {root}
    for _ in range(max_depth):
        following = []
        for node in frontier:
            if node.kind == "file" or node.version is None:
                continue
            made = lineage_df.where((F.col("target") == node.name) & (F.col("target_version") <= node.version))
            write = made.agg(F.max("target_version")).first()
            if write is None or write[0] is None:
                continue
            # The sources of one write: a few tables, or the files of one backfill.
            rows = made.where(F.col("target_version") == write[0]).select(
                "source_kind", "source", "source_version").collect()
            for r in sorted(rows, key=lambda r: (r["source_kind"], r["source"])):
                source = Node(r["source"], r["source_version"], kind=r["source_kind"])
                edges.append((source, node))
                if source not in seen:
                    seen.add(source)
                    following.append(source)
        frontier = following
    return LineageGraph(root, "upstream", tuple(edges))


def downstream(lake: Lakehouse, name: str, version: int | None = None, *, max_depth: int = 12,
               uses: Sequence[ModelUse] = ()) -> LineageGraph:
    """Everything recorded as made from ``name`` (at ``version`` or later; default: any version),
    by name with the range of versions; model versions carry their aliases from ``uses``."""
    lineage_df = _lineage_df(lake)
    aliases = {(model_node(u.model), int(u.version)): " ".join(f"@{a}" for a in u.aliases) for u in uses}
    root = Node(name, version, kind="model" if name.startswith("model:") else "table")
    edges: list[tuple[Node, Node]] = []
    frontier: list[tuple[Node, int | None]] = [(root, version)]
    seen = {name}
    for _ in range(max_depth):
        following: list[tuple[Node, int | None]] = []
        for node, since in frontier:
            made = lineage_df.where(F.col("source") == node.name)
            if since is not None:
                made = made.where(F.col("source_version") >= since)
            rows = made.groupBy("target").agg(F.min("target_version").alias("first"),
                                               F.max("target_version").alias("last")).collect()
            for r in sorted(rows, key=lambda r: r["target"]):
                kind = "model" if r["target"].startswith("model:") else "table"
                note = aliases.get((r["target"], int(r["last"])), "") if kind == "model" else ""
                target = Node(r["target"], int(r["first"]), int(r["last"]), kind=kind, note=note)
                edges.append((node, target))
                if r["target"] not in seen:
                    seen.add(r["target"])
                    following.append((target, int(r["first"])))
        frontier = following
    return LineageGraph(root, "downstream", tuple(edges))


@dataclass(frozen=True)
class Impact:
    """What changing a gold table (or one of its features) affects: the registered model versions
    whose training set read it, with their aliases, and the tables written downstream."""

    table: str
    feature: str | None
    model_versions: tuple[ModelUse, ...]
    downstream: LineageGraph | None

    def lines(self) -> list[str]:
        what = f"gold.{self.table}" + (f".{self.feature}" if self.feature else "")
        out = [f"changing {what} affects:"]
        if not self.model_versions:
            out.append("  no registered model version (none trained on it)")
        for use in self.model_versions:
            version = use.table_versions.get(self.table)
            out.append(f"  {use.label}: its training set read {self.table}"
                       + (f" v{version}" if version is not None else "") + (f" (run {use.run_id})" if use.run_id else ""))
        if self.downstream is not None and self.downstream.edges:
            out += ["and, downstream in the lakehouse:", *self.downstream.lines()[1:]]
        return out


def impact(lake: Lakehouse, table: str, feature: str | None, uses: Sequence[ModelUse]) -> Impact:
    """The model versions (and aliases) trained on ``gold.<table>`` (or that ``feature`` of it),
    and the tables and models recorded downstream of it."""
    using = tuple(u for u in uses if (u.uses_feature(table, feature) if feature else u.uses_table(table)))
    try:
        graph: LineageGraph | None = downstream(lake, f"gold.{table}", uses=uses)
    except SparkfsError:  # no lineage recorded yet: the registry still answers
        graph = None
    return Impact(table, feature, using, graph)
