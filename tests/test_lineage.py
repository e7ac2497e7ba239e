"""Lineage: reads are logged as they happen, edges are recorded once (MERGE), and the graph is
walked upstream by version down to the landed files and downstream by name to models and
predictions (a real ops.lineage Delta table)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.catalog.lineage import downstream, impact, upstream
from sparkfs.catalog.usage import ModelUse
from sparkfs.core.column_lineage import ColumnInput, plan_column_inputs
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.lineage import LINEAGE_TABLE, LineageEdge, edges_from_reads, record_lineage
from sparkfs.features.column_lineage import feature_table_column_lineage
from sparkfs.features.feature_tables import FeatureSpan, FeatureTableSpec, load_feature_tables
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


# --- Column lineage ------------------------------------------------------------------------------

CONF = Path(__file__).resolve().parents[1] / "conf"
LT_FLIGHTS = "silver.lt_flights"
RUN_DAY = date(2013, 4, 1)


def lt_departures(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    """A builder like the example's ``carrier_departures``, on a silver table of this module."""
    return lake.read("silver", "lt_flights").select(
        "carrier", F.coalesce("dep_ts", "sched_dep_ts").alias("event_ts"), "dep_delay",
        F.col("is_cancelled").cast("int").alias("is_cancelled"), "_ingested_at")


@pytest.fixture(scope="module")
def lt_delays(lake: Lakehouse) -> FeatureTableSpec:
    """The example's carrier_delays declaration (conf/feature_tables.yaml), built from lt_flights."""
    lake.create("silver", "lt_flights", T.StructType([
        T.StructField("carrier", T.StringType()), T.StructField("dep_ts", T.TimestampType()),
        T.StructField("sched_dep_ts", T.TimestampType()), T.StructField("dep_delay", T.DoubleType()),
        T.StructField("is_cancelled", T.BooleanType()), T.StructField("_ingested_at", T.TimestampType()),
        T.StructField("tailnum", T.StringType())]))
    carrier_delays = next(t for t in load_feature_tables(CONF / "feature_tables.yaml") if t.name == "carrier_delays")
    return carrier_delays.model_copy(update={"name": "lt_delays", "build": "test_lineage:lt_departures"})


def field_inputs(facet: dict, column: str) -> list[tuple[str, str, list[tuple[str, str]]]]:  # type: ignore[type-arg]
    """One column of a columnLineage facet: (dataset, field, [(type, subtype)]) per input field."""
    return [(i["name"], i["field"], [(t["type"], t["subtype"]) for t in i["transformations"]])
            for i in facet["fields"][column]["inputFields"]]


@pytest.fixture(scope="module")
def gold_event(lake: Lakehouse, lt_delays: FeatureTableSpec) -> dict:  # type: ignore[type-arg]
    """The OpenLineage event of a recorded write of gold.lt_delays (v1, from lt_flights)."""
    target = "gold.lt_delays"
    edges = [LineageEdge(target, 1, "table", LT_FLIGHTS, lake.version("silver", "lt_flights"))]
    columns = {(target, 1): feature_table_column_lineage(lake, lt_delays, RUN_DAY, RUN_DAY)}
    record_lineage(lake, edges, job="test", run_id="r6", columns=columns)
    return sent_events(lake, "r6")[f"sparkfs.test.{target}"]


def test_a_gold_write_sends_which_silver_columns_fed_each_column(
    lake: Lakehouse, lt_delays: FeatureTableSpec, gold_event: dict  # type: ignore[type-arg]
) -> None:
    event = gold_event
    assert spec_errors(event) == []
    facet = event["outputs"][0]["facets"]["columnLineage"]
    assert set(facet["fields"]) == set(lt_delays.documented_columns())  # every column is known
    flights = lake.name("silver", "lt_flights").replace("`", "")
    window = [(flights, c, [("INDIRECT", "WINDOW")]) for c in ("carrier", "dep_ts", "sched_dep_ts")]
    assert field_inputs(facet, "carrier_dep_delay_mean_7d") == [
        (flights, "dep_delay", [("DIRECT", "AGGREGATION")]), *window]
    dep_delay = facet["fields"]["carrier_dep_delay_mean_7d"]["inputFields"][0]["transformations"][0]
    assert dep_delay["description"] == "mean of dep_delay over the trailing 7d window (t - 7d, t]"
    # The builder casts the flag to int; the mean of it is still an aggregation of the silver column.
    assert field_inputs(facet, "carrier_is_cancelled_sum_30d") == [
        (flights, "is_cancelled", [("DIRECT", "AGGREGATION")]), *window]
    assert field_inputs(facet, "carrier") == [(flights, "carrier", [("DIRECT", "IDENTITY")])]
    # event_ts is coalesce(dep_ts, sched_dep_ts) in the builder; event_date its UTC date.
    for column in ("event_ts", "event_date"):
        assert field_inputs(facet, column) == [(flights, c, [("DIRECT", "TRANSFORMATION")]) for c in ("dep_ts", "sched_dep_ts")]
    assert field_inputs(facet, "known_at") == [(flights, "_ingested_at", [("DIRECT", "AGGREGATION")]), *window]
    assert all(i["name"] == flights for f in facet["fields"].values() for i in f["inputFields"])  # never tailnum's table


def test_the_spec_check_reports_a_broken_column_lineage_facet(gold_event: dict) -> None:  # type: ignore[type-arg]
    import copy

    broken = copy.deepcopy(gold_event)
    fields = broken["outputs"][0]["facets"]["columnLineage"]["fields"]
    del fields["carrier"]["inputFields"][0]["field"]  # an input field must name its column
    fields["event_ts"]["inputFields"] = "dep_ts"
    errors = spec_errors(broken)
    assert len(errors) == 2 and all(e.startswith("ColumnLineageDatasetFacet: ") for e in errors), errors
    assert any("'field' is a required property" in e for e in errors)


def test_column_lineage_is_read_off_the_plan_or_left_out(lake: Lakehouse, lt_delays: FeatureTableSpec) -> None:
    flights = lake.read("silver", "lt_flights")
    found = plan_column_inputs(lake, flights.where(F.col("carrier") == "AA").select(
        F.col("tailnum").alias("plane"),
        F.when(F.col("is_cancelled"), F.lit(0.0)).otherwise(F.col("dep_delay")).alias("delay"),
        F.lit(1).alias("one")))
    assert found["plane"] == (ColumnInput(LT_FLIGHTS, "tailnum"),)
    assert found["delay"] == (ColumnInput(LT_FLIGHTS, "is_cancelled", "INDIRECT", "CONDITIONAL"),
                              ColumnInput(LT_FLIGHTS, "dep_delay", "DIRECT", "TRANSFORMATION"))
    assert found["one"] == ()  # a literal: computed from no column
    by_carrier = plan_column_inputs(lake, flights.groupBy("carrier").agg(F.max("dep_delay").alias("worst")))
    assert by_carrier["worst"] == (ColumnInput(LT_FLIGHTS, "dep_delay", "DIRECT", "AGGREGATION"),)
    # Not known exactly: a column from a DataFrame made in memory, a window function, a union.
    joined = flights.join(lake.spark.createDataFrame([("AA", "American")], "carrier string, name string"), "carrier")
    assert plan_column_inputs(lake, joined)["name"] is None
    assert plan_column_inputs(lake, joined)["dep_delay"] == (ColumnInput(LT_FLIGHTS, "dep_delay"),)
    ranked = flights.select(F.rank().over(Window.partitionBy("carrier").orderBy("dep_ts")).alias("r"))
    assert plan_column_inputs(lake, ranked) == {"r": None}
    assert plan_column_inputs(lake, flights.unionByName(flights)) == {}


def test_predictions_send_the_model_inputs_behind_each_score(lake: Lakehouse, lt_delays: FeatureTableSpec) -> None:
    from sparkfs.ml.score import ScoringModel, score_column_lineage
    from sparkfs.pit.spec import LookupSpec, SpineSource, TrainingSetSpec

    spine_df = lake.read("silver", "lt_flights").select("carrier", "tailnum", "sched_dep_ts")
    lookup = LookupSpec(table="lt_delays", version=1, lookup_key={"carrier": "carrier"}, timestamp_lookup_key="ts",
                        event_time="event_ts", sequence=None, known_at=None, features=["carrier_dep_delay_mean_7d"],
                        outputs=["lt_mean_7d"], lookback_us=None, prefix="lt")
    spec = TrainingSetSpec(spine=SpineSource(source="dataframe"), label=None, rows=0, lookups=[lookup])
    model = ScoringModel("lt_model", "champion", "3", None, [("lt_mean_7d", "double"), ("carrier", "string")])

    columns = score_column_lineage(lake, spine_df, spec, model)

    scored = ("DIRECT", "TRANSFORMATION", "scored by model lt_model version 3")
    assert {c: [(i.source, i.column, i.type, i.subtype, i.description) for i in inputs] for c, inputs in columns.items()} == {
        c: [("gold.lt_delays", "carrier_dep_delay_mean_7d", *scored), (LT_FLIGHTS, "carrier", *scored)]
        for c in ("probability", "prediction")}
    unknown = ScoringModel("lt_model", "champion", "3", None, [("lt_mean_7d", "double"), ("not_there", "string")])
    assert score_column_lineage(lake, spine_df, spec, unknown) == {}  # a score with an unknown input: none


@pytest.mark.e2e
def test_the_jobs_send_the_lineage_of_every_version_they_write(e2e_lakehouse) -> None:  # type: ignore[no-untyped-def]
    import json

    from e2e_lakehouse import PREDICTIONS

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
    # Column lineage: the example's gold columns <- silver flights (its builder's plan + the declaration) ...
    flights = lake.name("silver", "flights").replace("`", "")
    gold = next(o["facets"]["columnLineage"] for e in events for o in e["outputs"] if o["name"] == carrier_delays)
    assert set(gold["fields"]) == {c["name"] for c in columns}
    assert field_inputs(gold, "carrier_dep_delay_mean_7d") == [
        (flights, "dep_delay", [("DIRECT", "AGGREGATION")]),
        *[(flights, c, [("INDIRECT", "WINDOW")]) for c in ("carrier", "dep_ts", "sched_dep_ts")]]
    # ... the scores <- every model input: the spine's columns and the looked-up gold features.
    predictions = lake.name("ml", PREDICTIONS).replace("`", "")
    scores = next(o["facets"]["columnLineage"] for e in events for o in e["outputs"] if o["name"] == predictions)
    assert sorted((i["name"].split(".")[-1], i["field"]) for i in scores["fields"]["probability"]["inputFields"]) == [
        ("e2e_carrier_stats", "dep_delay_mean_7d"), ("e2e_flights", "carrier"), ("e2e_flights", "dep_hour"),
        ("e2e_flights", "origin"), ("e2e_weather", "wind_speed")]
    # No column lineage where the mapping is code sparkfs does not read: bronze <- files, silver <- bronze.
    assert not [o for e in events for o in e["outputs"] if "columnLineage" in o["facets"]
                and o["name"].rpartition(".")[0].endswith(("bronze", "silver"))]
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
