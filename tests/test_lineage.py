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
    from pyspark.sql.types import DoubleType, StringType, StructField, StructType

    schema = StructType([StructField("entity", StringType()), StructField("feat", DoubleType())])
    lake.create("gold", "lt_feat", schema, column_comments={"feat": "a feature, documented"})
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


# --- OpenLineage ---------------------------------------------------------------------------------

SPEC_DIR = Path(__file__).parent / "openlineage_spec"  # the OpenLineage spec's JSON schemas (see README there)


def spec_errors(event: dict[str, object]) -> list[str]:
    """What in ``event`` (and in each of its facets) breaks the OpenLineage JSON schemas."""
    import json

    from jsonschema import Draft202012Validator
    from referencing import Registry, Resource

    schemas = {p.stem: json.loads(p.read_text()) for p in SPEC_DIR.glob("*.json")}
    registry = Registry().with_resources((s["$id"], Resource.from_contents(s)) for s in schemas.values())
    errors = [e.message for e in Draft202012Validator(schemas["OpenLineage"], registry=registry).iter_errors(event)]
    facets = [f for f in (event["job"]["facets"], event["run"]["facets"]) for f in f.values()]  # type: ignore[index]
    facets += [f for d in [*event["inputs"], *event["outputs"]] for f in d["facets"].values()]  # type: ignore[misc]
    for facet in facets:
        name = facet["_schemaURL"].split("/")[-1].split(".json")[0]
        schema = schemas[name]
        validator = Draft202012Validator({"$ref": f"{schema['$id']}#/$defs/{name}"}, registry=registry)
        errors += [f"{name}: {e.message}" for e in validator.iter_errors(facet)]
    return errors


def sent_events(lake: Lakehouse, run_id: str) -> dict[str, dict]:  # type: ignore[type-arg]
    """The events of sparkfs run ``run_id`` in the default transport's file, by job name."""
    import json

    from sparkfs.core.openlineage import EVENTS_FILE, run_uuid

    lines = (lake.settings.data_path / EVENTS_FILE).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    return {e["job"]["name"]: e for e in events if e["run"]["facets"]["parent"]["run"]["runId"] == run_uuid(run_id)}


def test_recorded_lineage_goes_out_as_openlineage_events_that_follow_the_spec(recorded: Lakehouse) -> None:
    events = sent_events(recorded, "r1")

    targets = sorted({(e.target, e.target_version) for e in EDGES})
    assert sorted(events) == sorted({f"sparkfs.test.{t}" for t, _ in targets})
    for event in events.values():
        assert spec_errors(event) == [], event
        assert event["eventType"] == "COMPLETE"
        parent = event["run"]["facets"]["parent"]["job"]
        assert (parent["namespace"], parent["name"]) == ("sparkfs", "sparkfs.test")
    schema = recorded.schema
    gold = events[f"sparkfs.test.{G}"]  # two versions of the same table: the later event is kept here
    assert {(o["name"], o["facets"]["version"]["datasetVersion"]) for o in gold["outputs"]} <= {
        (f"{schema('gold')}.lt_feat", "5"), (f"{schema('gold')}.lt_feat", "6")}
    assert gold["outputs"][0]["facets"]["schema"]["fields"] == [  # the written table's columns, documented
        {"name": "entity", "type": "string", "ordinal_position": 1, "fields": []},
        {"name": "feat", "type": "double", "description": "a feature, documented", "ordinal_position": 2, "fields": []}]
    predictions = events[f"sparkfs.test.{P}"]
    assert [(o["name"], o["facets"]["version"]["datasetVersion"]) for o in predictions["outputs"]] == [
        (f"{schema('ml')}.lt_pred", "7")]
    assert sorted((i["namespace"], i["name"], i["facets"]["version"]["datasetVersion"]) for i in predictions["inputs"]) == [
        ("sparkfs", f"{schema('gold')}.lt_feat", "5"), ("sparkfs/mlflow", "lt_model", "2")]
    bronze = events[f"sparkfs.test.{B}"]
    assert {(i["namespace"], i["name"]) for i in bronze["inputs"]} <= {
        ("sparkfs/landing", e.source) for e in EDGES if e.source_kind == "file"}


def test_a_rerun_that_records_no_new_edge_sends_no_event_again(recorded: Lakehouse) -> None:
    assert record_lineage(recorded, EDGES[:3], job="test", run_id="r5").rows_inserted == 0  # type: ignore[union-attr]
    assert sent_events(recorded, "r5") == {}
    assert sent_events(recorded, "r1") != {}


def test_an_openlineage_transport_that_fails_is_a_warning_and_noop_sends_nothing(
    lake: Lakehouse, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from sparkfs.core.config import LineageSettings
    from sparkfs.core.openlineage import emit_lineage

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    broken = lake.settings.model_copy(update={"lineage": LineageSettings(
        transport={"type": "file", "log_file_path": str(blocker / "events.jsonl"), "append": True})})
    with caplog.at_level("WARNING", logger="sparkfs.core.openlineage"):
        assert emit_lineage(broken, lake, EDGES[:1], job="test", run_id="r3") == 0
    assert "OpenLineage events of the test run r3 not sent" in caplog.text

    quiet = lake.settings.model_copy(update={"lineage": LineageSettings(transport={"type": "noop"})})
    assert emit_lineage(quiet, lake, EDGES, job="test", run_id="r4") == 8
    assert sent_events(lake, "r4") == {}


@pytest.mark.e2e
def test_the_jobs_send_the_lineage_of_every_version_they_write(e2e_lakehouse) -> None:  # type: ignore[no-untyped-def]
    import json

    from sparkfs.core.openlineage import EVENTS_FILE

    lake = e2e_lakehouse.lake
    lines = (e2e_lakehouse.data / EVENTS_FILE).read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert events and all(spec_errors(e) == [] for e in events)
    sent = {(o["name"], int(o["facets"]["version"]["datasetVersion"])): e for e in events for o in e["outputs"]}
    carrier_delays = lake.name("gold", "carrier_delays").replace("`", "")
    columns = next(o["facets"]["schema"]["fields"] for e in events for o in e["outputs"] if o["name"] == carrier_delays)
    described = {c["name"]: c.get("description") for c in columns}
    assert described["carrier"] == "two-letter carrier code, the entity key"  # conf/feature_tables.yaml's docs
    # Every edge ops.lineage holds went out: its target at its version, its source among the inputs.
    for edge in lake.read(*LINEAGE_TABLE).collect():
        kind = "model" if edge.target.startswith("model:") else "table"
        if kind == "model":
            name = edge.target.removeprefix("model:")
        else:
            name = lake.name(*edge.target.split(".", 1)).replace("`", "")
        event = sent[(name, edge.target_version)]
        assert edge.job in event["job"]["name"]
        versions = [i["facets"].get("version", {}).get("datasetVersion") for i in event["inputs"]]
        assert (str(edge.source_version) if edge.source_version is not None else None) in versions
