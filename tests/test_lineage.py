"""Lineage: reads are logged as they happen, edges are recorded once (MERGE), and the graph is
walked upstream by version down to the landed files and downstream by name to models and
predictions (a real ops.lineage Delta table)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyspark.sql import functions as F

from sparkfs.catalog.lineage import downstream, impact, upstream
from sparkfs.catalog.usage import ModelUse
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.lineage import LINEAGE_TABLE, LineageEdge, edges_from_reads, record_lineage
from sparkfs.jobs.cli import build_parser

# A history: bronze v1 (two files) -> silver v3 -> gold v5 -> model v2 -> predictions v7; later
# bronze v2 -> silver v4 -> gold v6, which no model has read.
B, S, G, M, P = "bronze.lt_src", "silver.lt_src", "gold.lt_feat", "model:lt_model", "ml.lt_pred"
EDGES = [
    LineageEdge(B, 1, "file", "lt_src/2013-01-01/a.json"), LineageEdge(B, 1, "file", "lt_src/2013-01-01/b.json"),
    LineageEdge(B, 2, "file", "lt_src/2013-01-02/a.json"),
    LineageEdge(S, 3, "table", B, 1), LineageEdge(S, 4, "table", B, 2),
    LineageEdge(G, 5, "table", S, 3), LineageEdge(G, 6, "table", S, 4),
    LineageEdge(M, 2, "table", G, 5),
    LineageEdge(P, 7, "model", M, 2), LineageEdge(P, 7, "table", G, 5),
]


@pytest.fixture(scope="module")
def recorded(lake: Lakehouse) -> Lakehouse:
    record_lineage(lake, EDGES, job="test", run_id="r1")
    return lake


def test_an_edge_is_recorded_once(recorded: Lakehouse) -> None:
    again = record_lineage(recorded, EDGES[:3], job="test", run_id="r2")

    assert again is not None and (again.rows_inserted, again.rows_updated) == (0, 0)
    rows = recorded.read(*LINEAGE_TABLE).where(F.col("target") == B).select("run_id").collect()
    assert [r["run_id"] for r in rows] == ["r1"] * 3  # the first record is kept


def test_reads_are_logged_with_their_version_and_become_edges(lake: Lakehouse) -> None:
    lake.spark.createDataFrame([(1,)], "x int").write.format("delta").save(f"{lake.warehouse}/sparkfs_silver/lt_read")
    with lake.track_reads() as reads:
        lake.read("silver", "lt_read")
        lake.read("silver", "lt_read", version=0)
    lake.read("silver", "lt_read")  # outside the block: not logged

    assert reads == [("silver", "lt_read", None), ("silver", "lt_read", 0)]
    assert edges_from_reads(lake, "gold.lt_x", 9, reads) == [LineageEdge("gold.lt_x", 9, "table", "silver.lt_read", 0)]
    assert edges_from_reads(lake, "silver.lt_read", 1, reads) == []  # a table is not its own source


@pytest.mark.slow
def test_upstream_follows_versions_down_to_the_files(recorded: Lakehouse, tmp_path: Path) -> None:
    graph = upstream(recorded, P)

    assert graph.root.label == f"{P} v7"
    assert graph.lines() == [
        f"{P} v7",
        f"  <- {M} v2",
        f"    <- {G} v5",
        f"      <- {S} v3",
        f"        <- {B} v1",
        "          <- file lt_src/2013-01-01/a.json",
        "          <- file lt_src/2013-01-01/b.json",
        f"  <- {G} v5 (see above)",
    ]
    # A version no recorded write made (an OPTIMIZE, say) comes from the newest write before it.
    assert upstream(recorded, G, 9).lines()[1] == f"  <- {S} v4"
    picture = graph.mermaid()
    assert picture.startswith("flowchart LR\n") and picture.count("-->") == 6  # two files fold into one folder
    assert '[/"lt_src/2013-01-01/"/]' in picture


def test_downstream_and_impact_name_the_model_versions_and_aliases(recorded: Lakehouse) -> None:
    uses = [ModelUse("lt_model", "2", ("champion",), "run1", {"lt_feat": 5}, {"lt_feat": ("f1",)}),
            ModelUse("lt_model", "1", (), "run0", {"lt_feat": 4}, {"lt_feat": ("f2",)})]

    graph = downstream(recorded, G, uses=uses)

    assert graph.lines() == [G, f"  -> {P} v7", f"  -> {M} v2 @champion", f"    -> {P} v7 (see above)"]
    assert downstream(recorded, S, 4).lines() == [f"{S} v4", f"  -> {G} v6"]  # from v4 on: no model yet
    lines = impact(recorded, "lt_feat", "f1", uses).lines()
    assert lines[:2] == ["changing gold.lt_feat.f1 affects:",
                         "  lt_model v2 @champion: its training set read lt_feat v5 (run run1)"]
    assert "lt_model v1" not in "\n".join(lines)  # v1 did not read f1


def test_the_command_line_takes_a_direction() -> None:
    args = build_parser().parse_args(["lineage", "sparkfs_ml.flight_delay_predictions", "--upstream"])
    assert (args.name, args.upstream, args.downstream) == ("sparkfs_ml.flight_delay_predictions", True, False)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["lineage", "x", "--upstream", "--downstream"])
