"""The feature catalog: every gold feature table and feature with its docs, freshness and shape.

The docs come from ``conf/feature_tables.yaml`` (the same declarations the gold writer stores as
Delta comments and properties); the freshness and shape from the table itself: its Delta version
and last write (from the log), its row count, latest event time and each column's null share
(one aggregate query per table). Usage by models is in :mod:`sparkfs.catalog.usage`.

Example::

    entries = describe_tables(lake, declared_feature_tables(lake.settings))
    search_features(entries, "delay")               # the delay features with their docs
    features_df(lake.spark, entries).show()         # the same, as a DataFrame for a notebook
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from sparkfs.core.errors import UsageError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.feature_tables import LAYER, FeatureTableSpec

MASK = "***"  # what a PII value looks like in a sample


@dataclass(frozen=True)
class FeatureEntry:
    """One column of a feature table. ``role``: key, event_time, partition or feature.
    ``type`` and ``null_share`` are None until the table has been written."""

    table: str
    name: str
    description: str
    role: str
    type: str | None
    null_share: float | None
    pii: bool

    @property
    def qualified(self) -> str:
        return f"{self.table}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TableEntry:
    """One feature table: its declaration and, once written, its freshness (``version``,
    ``last_write_utc``, ``latest_event_utc``) and ``rows``."""

    table: str
    full_name: str
    description: str
    owner: str
    tags: tuple[str, ...]
    keys: tuple[str, ...]
    event_time: str | None
    exists: bool
    version: int | None
    last_write_utc: str | None
    latest_event_utc: str | None
    rows: int | None
    features: tuple[FeatureEntry, ...]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tags"], out["keys"] = list(self.tags), list(self.keys)
        out["features"] = [f.to_dict() for f in self.features]
        return out

    def text(self) -> str:
        """Everything a search looks at, lower-cased."""
        return " ".join([self.table, self.description, self.owner, *self.tags]).lower()


def _role(spec: FeatureTableSpec, column: str) -> str:
    if column in spec.keys:
        return "key"
    if column == spec.event_time:
        return "event_time"
    if column == spec.partition_by:
        return "partition"
    return "feature"


def describe_table(lake: Lakehouse, spec: FeatureTableSpec) -> TableEntry:
    """The catalog entry of one declared feature table (reads the table once, if it exists)."""
    docs = spec.documented_columns()
    exists = lake.exists(LAYER, spec.name)
    types: dict[str, str] = {}
    nulls: dict[str, float | None] = {}
    version = last_write = latest_event = rows = None
    if exists:
        df = lake.read(LAYER, spec.name)
        types = {f.name: f.dataType.simpleString() for f in df.schema.fields}
        present = [c for c in docs if c in types]
        aggs = [F.count(F.lit(1)).alias("__rows")]
        aggs += [F.count(F.col(f"`{c}`")).alias(f"__n{i}") for i, c in enumerate(present)]
        if spec.event_time:
            aggs.append(F.date_format(F.max(spec.event_time), "yyyy-MM-dd HH:mm:ss").alias("__latest"))
        stats = df.agg(*aggs).first()
        assert stats is not None
        rows = int(stats["__rows"])
        nulls = {c: (1 - stats[f"__n{i}"] / rows if rows else None) for i, c in enumerate(present)}
        latest_event = stats["__latest"] if spec.event_time else None
        commit = lake.last_commit(LAYER, spec.name)
        version, last_write = commit.version, commit.timestamp.strftime("%Y-%m-%d %H:%M:%S")
    features = tuple(
        FeatureEntry(spec.name, column, text, _role(spec, column), types.get(column),
                     None if nulls.get(column) is None else round(float(nulls[column] or 0), 4),
                     column in spec.pii)
        for column, text in docs.items()
    )
    return TableEntry(
        table=spec.name, full_name=lake.name(LAYER, spec.name).replace("`", ""),
        description=spec.description, owner=spec.owner, tags=tuple(spec.tags), keys=tuple(spec.keys),
        event_time=spec.event_time, exists=exists, version=version, last_write_utc=last_write,
        latest_event_utc=latest_event, rows=rows, features=features,
    )


def describe_tables(lake: Lakehouse, specs: Sequence[FeatureTableSpec]) -> list[TableEntry]:
    """The catalog entry of every declared feature table, in declaration order."""
    return [describe_table(lake, spec) for spec in specs]


def search_features(entries: Sequence[TableEntry], text: str | None = None, *,
                    pii_only: bool = False) -> list[FeatureEntry]:
    """Features whose name or description contains ``text`` (case-insensitive), and every feature
    of a table whose name, description, owner or tags contain it; None: every feature.
    ``pii_only``: only the columns tagged as personal data."""
    needle = (text or "").lower()
    found = []
    for entry in entries:
        table_hit = needle in entry.text()
        for feature in entry.features:
            if pii_only and not feature.pii:
                continue
            if table_hit or needle in feature.name.lower() or needle in feature.description.lower():
                found.append(feature)
    return found


def find(entries: Sequence[TableEntry], name: str) -> tuple[TableEntry, FeatureEntry | None]:
    """A table (``carrier_delays``, ``gold.carrier_delays``) or a feature
    (``carrier_dep_delay_mean_7d``, ``carrier_delays.carrier_dep_delay_mean_7d``) by name."""
    bare = name.replace("`", "").split(".")
    for entry in entries:
        if bare[-1] == entry.table:
            return entry, None
    table = bare[-2] if len(bare) > 1 else None
    matches = [(e, f) for e in entries for f in e.features
               if f.name == bare[-1] and f.role == "feature" and table in (None, e.table)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UsageError(f"'{name}' is a feature of several tables {[e.table for e, _ in matches]}; "
                         "name it as <table>.<feature>")
    raise UsageError(f"no feature table or feature named '{name}'; tables: {[e.table for e in entries]} "
                     "('sparkfs catalog --search TEXT' finds features)")


def tables_df(spark: SparkSession, entries: Sequence[TableEntry]) -> DataFrame:
    """The catalog's tables as a DataFrame (one row per table, without the features)."""
    rows = [{k: v for k, v in e.to_dict().items() if k != "features"} for e in entries]
    schema = ("table string, full_name string, description string, owner string, tags array<string>, "
              "keys array<string>, event_time string, exists boolean, version long, last_write_utc string, "
              "latest_event_utc string, rows long")
    return spark.createDataFrame(rows, schema)


def features_df(spark: SparkSession, features: Sequence[FeatureEntry] | Sequence[TableEntry]) -> DataFrame:
    """Features (or every feature of the given tables) as a DataFrame, one row per feature."""
    flat = [f for item in features for f in (item.features if isinstance(item, TableEntry) else [item])]
    schema = ("table string, name string, description string, role string, type string, "
              "null_share double, pii boolean")
    return spark.createDataFrame([f.to_dict() for f in flat], schema)


def sample(lake: Lakehouse, entry: TableEntry, rows: int = 5) -> DataFrame:
    """A few rows of the table, newest first where it has an event time, PII columns masked."""
    df = lake.read(LAYER, entry.table)
    if entry.event_time:
        df = df.orderBy(F.col(entry.event_time).desc())
    masked = {f.name: F.lit(MASK) for f in entry.features if f.pii and f.name in df.columns}
    return df.limit(rows).withColumns(masked)
