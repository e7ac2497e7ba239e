"""The monitoring tables, under the ``monitoring`` layer, written with the one MERGE writer.

- ``drift``: one row per (model, version, metric, feature, chunk): PSI, KS, JS, chi-squared and
  null-share change of each input and the score, against the model's reference;
- ``performance``: one row per (model, version, metric, method, chunk): NannyML's estimate
  (``cbpe`` / ``dle``) with its band, or the ``realized`` metric with its bootstrap interval
  once the chunk's labels arrived, next to the reference's value;
- ``alerts``: one row per (model, version, metric, feature, chunk) that is not ``ok``: what
  drifted, by how much, against which reference, at which level;
- ``ingestion``: one row per (table, check, day): volume, freshness, missing day.

Rows hold no run timestamp: the same day monitored again gives the same rows, and the MERGE
changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult, merge_upsert

LAYER = "monitoring"


@dataclass(frozen=True)
class DriftRow:
    model_name: str
    model_version: str
    metric: str
    feature: str
    chunk: str
    value: float
    p_value: float | None
    level: str
    rows: int
    reference: str


@dataclass(frozen=True)
class PerformanceRow:
    model_name: str
    model_version: str
    metric: str
    method: str            # cbpe, dle, realized
    chunk: str
    value: float
    lower: float | None
    upper: float | None
    rows: int
    sampled_rows: int
    reference_value: float | None
    level: str


@dataclass(frozen=True)
class AlertRow:
    model_name: str
    model_version: str
    metric: str
    feature: str
    chunk: str
    level: str             # warn, alert
    source: str            # drift, performance, ingestion
    value: float
    threshold: float
    reference: str
    message: str


@dataclass(frozen=True)
class IngestionRow:
    table_name: str
    check: str             # volume, freshness, missing_day
    chunk: str
    value: float
    expected_low: float | None
    expected_high: float | None
    level: str
    message: str


@dataclass(frozen=True)
class Table:
    name: str
    row: type
    keys: tuple[str, ...]
    comment: str


DRIFT = Table("drift", DriftRow, ("model_name", "model_version", "metric", "feature", "chunk"),
              "Univariate drift of a model's inputs and score per chunk (day) against its reference")
PERFORMANCE = Table("performance", PerformanceRow, ("model_name", "model_version", "metric", "method", "chunk"),
                    "Estimated (NannyML) and realized model performance per chunk (day), with bands")
ALERTS = Table("alerts", AlertRow, ("model_name", "model_version", "metric", "feature", "chunk"),
               "Monitoring findings at warn or alert level: what, how much, against which reference")
INGESTION = Table("ingestion", IngestionRow, ("table_name", "check", "chunk"),
                  "Ingestion checks per table and day: volume, freshness, missing days")

# Field annotations are strings (``from __future__ import annotations``).
_SPARK_TYPES = {"str": "string", "float": "double", "int": "long", "float | None": "double"}


def schema_of(row: type) -> str:
    """The Spark DDL of a row dataclass (every column nullable)."""
    return ", ".join(f"`{f.name}` {_SPARK_TYPES[str(f.type)]}" for f in fields(row))


def write_rows(lake: Lakehouse, table: Table, rows: Sequence[object]) -> MergeResult:
    """Create ``monitoring.<table>`` on first use and MERGE ``rows`` on its keys."""
    spark: SparkSession = lake.spark
    df = spark.createDataFrame([tuple(asdict(r).values()) for r in rows], schema_of(table.row))  # type: ignore[call-overload]
    lake.create(LAYER, table.name, df.schema, comment=table.comment)
    return merge_upsert(lake, LAYER, table.name, df, list(table.keys))


def rows_of_model(df: DataFrame, name: str, version: str, days: int) -> list[dict[str, object]]:
    """The rows of a monitoring table for model ``name`` version ``version`` over its last ``days``
    chunks, collected (a row per day and metric: small)."""
    rows = df.where((F.col("model_name") == name) & (F.col("model_version") == version))
    chunks = sorted({r[0] for r in rows.select("chunk").distinct().collect()})[-days:]
    return [r.asDict() for r in rows.where(F.col("chunk").isin(chunks)).collect()]
