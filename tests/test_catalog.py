"""The feature catalog: docs, freshness and shape of every feature table, search, PII, and which
registered model versions use a table or a feature (real Delta tables, a real MLflow store)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.catalog import describe_table, features_df, find, model_uses, sample, search_features
from sparkfs.catalog.entries import MASK
from sparkfs.core.config import Settings, StorageSettings
from sparkfs.core.errors import ConfigError, UsageError
from sparkfs.core.lakehouse import FILE_RETENTION_PROPERTY, LOG_RETENTION_PROPERTY, Lakehouse
from sparkfs.features.feature_tables import (
    FeatureSpan,
    FeatureTableSpec,
    compute,
    load_feature_tables,
    write_feature_table,
)
from sparkfs.jobs.catalog import format_features, format_show
from sparkfs.jobs.cli import build_parser
from sparkfs.ml.assembly import SPEC_ARTIFACT
from sparkfs.ml.config import LookupConfig, check_pii, load_training_config
from sparkfs.ml.tracking import configure_mlflow
from sparkfs.pit.api import FeatureLookup, create_training_set

REPO = Path(__file__).resolve().parents[1]
TABLE = "cat_delays"
D = date(2013, 1, 2)
EVENTS = [
    ("AA", datetime(2013, 1, 2, 0, 0), 20.0, "Ann"),
    ("AA", datetime(2013, 1, 2, 0, 30), None, "Ann"),  # a null delay
    ("UA", datetime(2013, 1, 2, 1, 30), 40.0, None),  # the latest event, no captain
]


def captain_builder(lake: Lakehouse, span: FeatureSpan) -> DataFrame:
    events = lake.spark.createDataFrame(EVENTS, "carrier string, ts timestamp, delay double, captain string")
    return events.withColumn("_ingested_at", F.col("ts") + F.expr("INTERVAL 1 DAY"))  # when each row landed


def spec() -> FeatureTableSpec:
    return FeatureTableSpec.model_validate({
        "name": TABLE, "description": "delays per carrier, with the captain", "owner": "tests",
        "tags": ["flights", "catalog"], "keys": ["carrier"], "event_time": "ts", "partition_by": "event_date",
        "build": "test_catalog:captain_builder",
        "columns": {"carrier": "carrier code", "ts": "departure instant", "captain": "the captain's name"},
        "pii": ["captain"],
        "rolling": {"prefix": "carrier", "windows": {"1h": "1h"},
                    "aggregates": [{"value": "delay", "aggs": ["mean"], "description": "departure delay"}]},
    })


@pytest.fixture(scope="module")
def table(lake: Lakehouse) -> str:
    write_feature_table(lake, spec(), compute(lake, spec(), D, D))
    return TABLE


def test_an_entry_has_docs_freshness_types_and_null_shares(lake: Lakehouse, table: str) -> None:
    entry = describe_table(lake, spec())

    assert (entry.rows, entry.latest_event_utc, entry.keys, entry.owner) == (3, "2013-01-02 01:30:00", ("carrier",), "tests")
    assert entry.version == lake.version("gold", table) and entry.last_write_utc is not None
    by_name = {f.name: f for f in entry.features}
    assert [by_name[c].role for c in ("carrier", "ts", "event_date", "captain")] == ["key", "event_time", "partition", "feature"]
    assert by_name["carrier_delay_mean_1h"].type == "double"
    assert by_name["carrier_delay_mean_1h"].null_share == 0.0  # 00:30's window holds 00:00's delay
    assert by_name["captain"].null_share == pytest.approx(1 / 3, abs=1e-4)
    assert [f.name for f in entry.features if f.pii] == ["captain"]
    # The retention the upkeep job relies on is set when the table is created.
    properties = lake.properties("gold", table)
    assert properties[LOG_RETENTION_PROPERTY] == "interval 315360000 seconds"
    assert properties[FILE_RETENTION_PROPERTY] == "interval 604800 seconds"


def test_search_finds_features_by_name_docs_or_table_and_lists_pii(lake: Lakehouse, table: str) -> None:
    entries = [describe_table(lake, spec())]

    assert [f.name for f in search_features(entries, "DELAY")] == [  # the table's description says delays
        "carrier", "ts", "event_date", "captain", "carrier_delay_mean_1h", "known_at"]
    assert [f.name for f in search_features(entries, "departure")] == ["ts", "carrier_delay_mean_1h"]
    assert search_features(entries, "no such text") == []
    assert [f.qualified for f in search_features(entries, pii_only=True)] == [f"{TABLE}.captain"]
    assert find(entries, f"gold.{TABLE}") == (entries[0], None)
    assert find(entries, "carrier_delay_mean_1h")[1] == next(f for f in entries[0].features if f.name == "carrier_delay_mean_1h")
    with pytest.raises(UsageError, match="no feature table or feature named 'nope'"):
        find(entries, "nope")
    df = features_df(lake.spark, entries)
    assert df.count() == 6 and df.where("pii").select("name").first() == ("captain",)
    lines = format_features(search_features(entries, "name"))
    assert "[pii]" in lines[1] and "the captain's name" in lines[1]


def test_a_sample_masks_pii(lake: Lakehouse, table: str) -> None:
    rows = sample(lake, describe_table(lake, spec()), rows=2).collect()

    assert [r["carrier"] for r in rows] == ["UA", "AA"]  # newest first
    assert {r["captain"] for r in rows} == {MASK}


@pytest.fixture
def registry(settings: Settings, tmp_path: Path) -> Iterator[Settings]:
    """A fresh MLflow store for this test; the session's store again afterwards."""
    own = settings.model_copy(update={"storage": StorageSettings(data_dir=str(tmp_path))})
    configure_mlflow(own, "catalog-tests")
    yield own
    configure_mlflow(settings)


@pytest.mark.slow
def test_usage_names_the_model_version_and_alias_that_read_a_feature(
    lake: Lakehouse, table: str, registry: Settings
) -> None:
    spine_df = lake.spark.createDataFrame([("AA", datetime(2013, 1, 2, 1, 0))], "carrier string, at timestamp")
    ts = create_training_set(lake, spine_df, [FeatureLookup(table, ["carrier"], "at", features=["carrier_delay_mean_1h"])])
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_dict(ts.spec.to_dict(), SPEC_ARTIFACT)
    client.create_registered_model("catalog_model")
    for _ in range(2):  # v1 without lineage, v2 with
        client.create_model_version("catalog_model", f"runs:/{run.info.run_id}/model")
    client.create_model_version("catalog_model", f"runs:/{run.info.run_id}/model", run_id=run.info.run_id,
                                tags={"sparkfs.run_id": run.info.run_id})
    client.set_registered_model_alias("catalog_model", "champion", "3")

    uses = model_uses(registry)

    assert [u.label for u in uses] == ["catalog_model v1", "catalog_model v2", "catalog_model v3 @champion"]
    v3 = uses[-1]
    assert v3.uses_feature(table, "carrier_delay_mean_1h") and not v3.uses_feature(table, "captain")
    assert v3.table_versions == {table: lake.version("gold", table)}
    assert v3.pins() == {("gold", table): lake.version("gold", table)}
    assert not uses[0].uses_table(table)
    entry = describe_table(lake, spec())
    card = format_show(entry, next(f for f in entry.features if f.name == "carrier_delay_mean_1h"), [v3])
    assert f"  catalog_model v3 @champion (trained on {table} v{lake.version('gold', table)})" in card


def test_the_command_line_parses_list_search_and_show() -> None:
    parser = build_parser()
    listed = parser.parse_args(["catalog", "--search", "delay", "--json"])
    shown = parser.parse_args(["catalog", "--json", "show", "carrier_delays.carrier_dep_delay_mean_7d"])

    assert (listed.search, listed.json, listed.pii, getattr(listed, "name", None)) == ("delay", True, False, None)
    assert (shown.name, shown.json) == ("carrier_delays.carrier_dep_delay_mean_7d", True)


def test_a_pii_column_is_refused_as_a_model_feature_unless_allowed(settings: Settings) -> None:
    config = load_training_config(settings)  # the repository's: planes.tailnum is pii, and a key
    reads_captain = LookupConfig(table=TABLE, lookup_key=["carrier"], features=["captain", "carrier_delay_mean_1h"])
    reads_all = LookupConfig(table=TABLE, lookup_key=["carrier"])

    for lookup in (reads_captain, reads_all):
        with pytest.raises(ConfigError, match=r"tagged pii .*\['cat_delays.captain'\].*allow_pii: \[cat_delays.captain\]"):
            check_pii(config.model_copy(update={"lookups": [lookup]}), [spec()])
    check_pii(config.model_copy(update={"lookups": [reads_all], "allow_pii": ["cat_delays.captain"]}), [spec()])
    check_pii(config.model_copy(update={"lookups": [reads_captain.model_copy(update={"features": ["carrier_delay_mean_1h"]})]}),
              [spec()])
    assert "tailnum" in load_feature_tables(REPO / "conf" / "feature_tables.yaml")[0].pii
