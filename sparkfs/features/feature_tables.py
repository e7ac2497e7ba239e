"""Gold feature tables: declared in ``conf/feature_tables.yaml``, computed, stored as documented Delta.

A feature table is declared with its name, entity ``keys``, ``event_time`` (none for a static
table), ``partition_by``, ``description``, ``owner``, ``tags``, a description for every column,
the function that builds its rows (``build: module:function``), and optionally ``rolling``
aggregates::

    - name: carrier_delays
      keys: [carrier]
      event_time: event_ts
      partition_by: event_date
      build: sparkfs.examples.flights.features:carrier_departures
      columns: {carrier: ..., event_ts: ...}
      rolling:
        prefix: carrier
        windows: {1h: 1h, 7d: 7d}
        aggregates:
          - {value: dep_delay, aggs: [count, mean], description: departure delay in minutes}

**Time rule.** A rolling feature at event time ``t`` aggregates the entity's events with
``t - w < event_ts <= t``, i.e. ``(t - w, t]`` -- the point-in-time rule of the whole product:
a lookup at ``t`` sees feature rows with ``feature_ts <= t``. Rows that share ``t`` for one
entity see each other and become one gold row, so a table is unique on (keys, event time).

**Runs.** For a run window of event dates ``[S, E]`` a table gets the rows with event time in
``[S 00:00, E+1 00:00)`` UTC; its builder is given a :class:`FeatureSpan` that also says how far
back the longest window reaches, so it reads exactly the history the windows need. The rows go
through :func:`write_feature_table`, the one MERGE writer on (keys, event time), with the
window's partitions in the merge condition: a daily run touches one day's partition and a rerun
inserts and updates nothing. The table carries its documentation as Delta metadata: table
comment, column comments, and the properties ``sparkfs.keys``, ``sparkfs.event_time``,
``sparkfs.known_at``, ``sparkfs.event_date`` (the partition column: the UTC date of the event
time, which point-in-time reads prune by), ``sparkfs.owner``, ``sparkfs.tags``, ``sparkfs.description``, ``sparkfs.pii``; and, from
``storage.log_retention`` / ``storage.deleted_file_retention``, how long Delta keeps its old
versions (``delta.logRetentionDuration``, ``delta.deletedFileRetentionDuration``).

**When a row was known.** A table with an event time also gets ``known_at``: when every input of
the row had landed, the latest landing time (``_ingested_at``, which bronze takes from the
delivery and silver keeps) of the entity's input rows up to the row's event time, over the
history the run reads (at least the longest window). Builders keep ``_ingested_at`` for this. A
lookup "as known at" (``known_at="known_at"``) then never sees a row whose inputs landed after the
lookup time, e.g. an early-morning hour whose weather file lands the next day; the bound is
conservative (an old row re-delivered late makes the entity's later rows known later too).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.window import Window

from sparkfs.core.checks import require_columns
from sparkfs.core.config import Settings, StrictModel, import_ref, load_yaml
from sparkfs.core.durations import Duration
from sparkfs.core.errors import SchemaMismatchError
from sparkfs.core.lakehouse import (
    EVENT_DATE_PROPERTY,
    EVENT_TIME_PROPERTY,
    KEYS_PROPERTY,
    KNOWN_AT_PROPERTY,
    Lakehouse,
    retention_properties,
)
from sparkfs.core.merge import MergeResult, merge_upsert
from sparkfs.features.transformations import with_trailing_aggregates

LAYER = "gold"
FEATURE_TABLES_CONF = "feature_tables.yaml"
OWNER_PROPERTY = "sparkfs.owner"
TAGS_PROPERTY = "sparkfs.tags"
DESCRIPTION_PROPERTY = "sparkfs.description"
PII_PROPERTY = "sparkfs.pii"
# The landing time of a silver row (bronze takes it from the delivery), and the gold column made from it.
LANDED_AT = "_ingested_at"
KNOWN_AT = "known_at"

# Doubles are written rounded to this many decimals. Spark accumulates a window's values in the
# order rows reach it, and among rows with equal timestamps that order is not fixed between runs,
# so a recomputed sum or std can differ in its last bits; rounded, a rerun writes identical values
# and its MERGE updates nothing.
ROUND_DECIMALS = 9

_AGG_TEXT = {
    "count": "number of non-null values",
    "sum": "sum",
    "mean": "mean",
    "std": "sample standard deviation",
    "min": "minimum",
    "max": "maximum",
}


class RollingAggregate(StrictModel):
    """Trailing aggregates of one value column, over all (or some of) the table's windows."""

    value: str
    aggs: list[Literal["count", "sum", "mean", "std", "min", "max"]] = Field(min_length=1)
    windows: list[str] | None = None  # suffixes of RollingSpec.windows; None: all of them
    description: str


class RollingSpec(StrictModel):
    """Rolling features ``<prefix>_<value>_<agg>_<window>`` (prefix optional) over (t - w, t]."""

    prefix: str | None = None
    windows: dict[str, Duration] = Field(min_length=1)
    aggregates: list[RollingAggregate] = Field(min_length=1)

    @model_validator(mode="after")
    def _known_windows(self) -> RollingSpec:
        for agg in self.aggregates:
            unknown = sorted(set(agg.windows or []) - set(self.windows))
            if unknown:
                raise ValueError(f"aggregate of {agg.value!r} uses windows {unknown}; declared: {sorted(self.windows)}")
        return self

    def features(self) -> dict[str, str]:
        """Every generated feature column with its description, in declaration order."""
        return {
            column: (f"{_AGG_TEXT[name]} of {agg.description}, over the trailing {suffix} window "
                     f"(t - {suffix}, t] ending at the row's event time")
            for column, (agg, name, suffix) in self.generated().items()
        }

    def generated(self) -> dict[str, tuple[RollingAggregate, str, str]]:
        """Every generated feature column, in declaration order: its aggregate, which of its
        ``aggs``, over which window (suffix)."""
        return {
            f"{self._prefix(agg)}_{name}_{suffix}": (agg, name, suffix)
            for agg in self.aggregates for suffix in agg.windows or self.windows for name in agg.aggs
        }

    def _prefix(self, agg: RollingAggregate) -> str:
        return f"{self.prefix}_{agg.value}" if self.prefix else agg.value

    def apply(self, events_df: DataFrame, keys: Sequence[str], event_time: str) -> DataFrame:
        """Add the rolling features to event rows (``with_trailing_aggregates``, one call per aggregate)."""
        for agg in self.aggregates:
            windows = {s: self.windows[s] for s in (agg.windows or self.windows)}
            events_df = with_trailing_aggregates(
                events_df, keys, event_time, agg.value, windows, aggs=agg.aggs, prefix=self._prefix(agg)
            )
        return events_df

    @property
    def longest(self) -> timedelta:
        return max(self.windows.values())


class FeatureTableSpec(StrictModel):
    """One gold feature table, as declared in ``conf/feature_tables.yaml``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = Field(min_length=1)
    owner: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    keys: list[str] = Field(min_length=1)
    event_time: str | None = None
    partition_by: str | None = None
    build: str = Field(pattern=r"^[\w.]+:\w+$")
    columns: dict[str, str]
    # Columns holding personal data: masked in catalog samples, refused as model features
    # unless the training config allows them by name.
    pii: list[str] = Field(default_factory=list)
    rolling: RollingSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> FeatureTableSpec:
        if self.event_time is None and (self.rolling or self.partition_by):
            raise ValueError("a static table (no event_time) has neither rolling features nor partition_by")
        undocumented = [c for c in [*self.keys, *([self.event_time] if self.event_time else [])] if c not in self.columns]
        if undocumented:
            raise ValueError(f"columns {undocumented} (keys / event time) need a description under 'columns'")
        empty = [c for c, text in self.columns.items() if not text.strip()]
        if empty:
            raise ValueError(f"columns {empty} have an empty description")
        unknown = [c for c in self.pii if c not in self.documented_columns()]
        if unknown:
            raise ValueError(f"pii columns {unknown} are not columns of the table; its columns: "
                             f"{list(self.documented_columns())}")
        return self

    @property
    def merge_keys(self) -> list[str]:
        return [*self.keys, *([self.event_time] if self.event_time else [])]

    @property
    def history(self) -> timedelta:
        """How far before a row's event time its features look: the longest rolling window."""
        return self.rolling.longest if self.rolling else timedelta(0)

    def documented_columns(self) -> dict[str, str]:
        """Every column of the table, in table order, with its description."""
        docs = dict.fromkeys(self.merge_keys, "")
        if self.partition_by:
            docs[self.partition_by] = f"UTC date of {self.event_time} (the partition column)"
        docs |= self.columns
        docs |= self.rolling.features() if self.rolling else {}
        if self.event_time:
            docs[KNOWN_AT] = (
                f"when the row's inputs had all landed: the latest {LANDED_AT} of the entity's input "
                f"rows up to {self.event_time} (lookups as known at a time use it)"
            )
        return docs

    def properties(self) -> dict[str, str]:
        return {
            KEYS_PROPERTY: ",".join(self.keys),
            EVENT_TIME_PROPERTY: self.event_time or "",
            KNOWN_AT_PROPERTY: KNOWN_AT if self.event_time else "",
            EVENT_DATE_PROPERTY: self.partition_by or "",
            OWNER_PROPERTY: self.owner,
            TAGS_PROPERTY: ",".join(self.tags),
            DESCRIPTION_PROPERTY: self.description,
            PII_PROPERTY: ",".join(self.pii),
        }

    def builder(self) -> Callable[[Lakehouse, FeatureSpan], DataFrame]:
        fn: Callable[[Lakehouse, FeatureSpan], DataFrame] = import_ref(self.build, f"feature table {self.name!r}: build")
        return fn


class FeatureTablesFile(StrictModel):
    """``conf/feature_tables.yaml``."""

    tables: list[FeatureTableSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_names(self) -> FeatureTablesFile:
        names = [t.name for t in self.tables]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature tables {dupes} are declared twice")
        return self


def load_feature_tables(path: Path | str) -> list[FeatureTableSpec]:
    return load_yaml(path, FeatureTablesFile).tables


def declared_feature_tables(settings: Settings) -> list[FeatureTableSpec]:
    """The feature tables of ``<conf_dir>/feature_tables.yaml``; none when the project has no
    such file (its gold tables are then written by other code, and declare no windows)."""
    path = Path(settings.conf_dir) / FEATURE_TABLES_CONF
    return load_feature_tables(path) if path.exists() else []


@dataclass(frozen=True)
class FeatureSpan:
    """The event times a run writes, ``[start, end)``, and the history its windows read, ``(history_start, end)``."""

    start: datetime
    end: datetime
    history_start: datetime

    @classmethod
    def for_dates(cls, first: date, last: date, history: timedelta = timedelta(0)) -> FeatureSpan:
        """Event dates ``[first, last]`` (UTC days) with ``history`` before the first."""
        start = datetime.combine(first, time())
        return cls(start, datetime.combine(last + timedelta(days=1), time()), start - history)

    def dates(self, slack: timedelta = timedelta(0)) -> tuple[date, date]:
        """The calendar dates to read, from the history's start to the span's end, widened by ``slack``."""
        return (self.history_start - slack).date(), (self.end + slack).date()


def compute(lake: Lakehouse, spec: FeatureTableSpec, first: date, last: date) -> DataFrame:
    """The feature table's rows for event dates ``[first, last]`` (a static table: all rows).

    Calls the builder with the span (and the history the rolling windows need), adds the rolling
    features, keeps the documented columns, and keeps only rows whose event time lies in the span.

    Example: ``compute(lake, spec, date(2013, 4, 1), date(2013, 4, 1))``.
    """
    span = FeatureSpan.for_dates(first, last, spec.history)
    built = spec.builder()(lake, span)
    docs = spec.documented_columns()
    inputs = {a.value for a in spec.rolling.aggregates} if spec.rolling else set()
    inputs |= {LANDED_AT}
    undocumented = sorted(set(built.columns) - set(docs) - inputs)
    if undocumented:
        raise SchemaMismatchError(
            f"feature table {spec.name!r}: the builder {spec.build} makes columns {undocumented} "
            f"that conf/feature_tables.yaml does not document; add them under 'columns'"
        )
    if spec.event_time is None:
        require_columns(built, list(docs), f"the rows built for {spec.name!r}")
        return built.select(*docs).transform(_rounded)
    assert spec.event_time is not None
    if LANDED_AT not in built.columns:
        raise SchemaMismatchError(
            f"feature table {spec.name!r}: the builder {spec.build} must keep {LANDED_AT!r} (when each "
            f"input row landed; silver tables carry it) so that each row's {KNOWN_AT!r} can be derived; "
            f"it returned {built.columns}"
        )
    ts = F.col(spec.event_time)
    built = built.where((ts > F.lit(span.history_start)) & (ts < F.lit(span.end)))
    built = with_known_at(built, spec.keys, spec.event_time)
    if spec.rolling:
        built = spec.rolling.apply(built, spec.keys, spec.event_time)
    if spec.partition_by:  # always the UTC date of the event time (sparkfs.event_date: reads prune by it)
        built = built.withColumn(spec.partition_by, F.to_date(ts))
    require_columns(built, list(docs), f"the rows built for {spec.name!r}")
    rows = built.where(ts >= F.lit(span.start)).select(*docs).transform(_rounded)
    # Events sharing (keys, t) got identical rolling values (peers in a range frame): one row each.
    return rows.distinct() if spec.rolling else rows


def with_known_at(events_df: DataFrame, keys: Sequence[str], event_time: str) -> DataFrame:
    """Add :data:`KNOWN_AT`: per entity, the running maximum of :data:`LANDED_AT` up to each row's
    event time (rows sharing it included). An upper bound of the landing time of every input a
    trailing window ending there can hold, in one sorted pass (a sliding maximum over the longest
    window would cost a pass per row)."""
    up_to_t = (
        Window.partitionBy(*keys).orderBy(F.unix_micros(F.col(event_time)).asc_nulls_last())
        .rangeBetween(Window.unboundedPreceding, 0)
    )
    return events_df.withColumn(KNOWN_AT, F.max(LANDED_AT).over(up_to_t))


def _rounded(df: DataFrame) -> DataFrame:
    doubles = [f.name for f in df.schema.fields if isinstance(f.dataType, T.DoubleType | T.FloatType)]
    return df.withColumns({c: F.round(c, ROUND_DECIMALS) for c in doubles})


def ensure_feature_table(lake: Lakehouse, spec: FeatureTableSpec, schema: T.StructType) -> str:
    """Create the Delta table with its documentation, or bring an existing one's metadata up to date.

    New columns are added (a feature added in conf, to be backfilled); a column the table has and
    the spec no longer declares is an error. Metadata is altered only when it differs, so a rerun
    commits nothing.
    """
    docs = spec.documented_columns()
    if not lake.exists(LAYER, spec.name):
        return lake.create(
            LAYER, spec.name, schema, partition_by=[spec.partition_by] if spec.partition_by else [],
            properties={**retention_properties(lake.settings), **spec.properties()},
            comment=spec.description, column_comments=docs,
        )
    full_name = lake.name(LAYER, spec.name)
    current = lake.read(LAYER, spec.name).schema
    dropped = [f.name for f in current.fields if f.name not in docs]
    if dropped:
        raise SchemaMismatchError(
            f"{full_name} has columns {dropped} that conf/feature_tables.yaml no longer declares; "
            "declare them again, or drop and rebuild the table"
        )
    new = [f for f in schema.fields if f.name not in current.fieldNames()]
    if new:
        cols = ", ".join(f"`{f.name}` {f.dataType.simpleString()} COMMENT {_sql_str(docs[f.name])}" for f in new)
        lake.spark.sql(f"ALTER TABLE {full_name} ADD COLUMNS ({cols})")
    current_properties = lake.properties(LAYER, spec.name)
    changed = {k: v for k, v in spec.properties().items() if current_properties.get(k) != v}
    if changed:
        pairs = ", ".join(f"{_sql_str(k)} = {_sql_str(v)}" for k, v in changed.items())
        lake.spark.sql(f"ALTER TABLE {full_name} SET TBLPROPERTIES ({pairs})")
    for f in current.fields:
        if f.metadata.get("comment") != docs[f.name]:
            lake.spark.sql(f"ALTER TABLE {full_name} ALTER COLUMN `{f.name}` COMMENT {_sql_str(docs[f.name])}")
    return full_name


def write_feature_table(lake: Lakehouse, spec: FeatureTableSpec, rows_df: DataFrame) -> MergeResult:
    """MERGE ``rows_df`` into the feature table on (keys, event time), pruning by its partitions.

    A batch with two rows for one (keys, event time) raises
    :class:`~sparkfs.core.errors.DuplicateKeyError` naming examples.
    """
    ensure_feature_table(lake, spec, rows_df.schema)
    return merge_upsert(lake, LAYER, spec.name, rows_df, spec.merge_keys, partition_by=spec.partition_by)


def _sql_str(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"

