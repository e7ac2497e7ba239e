"""Table names and where tables live: one naming layer for local runs and Databricks.

Code names a table by layer and name, ``lake.name("gold", "planes")``. On Databricks that is the
Unity Catalog name ``<catalog>.<schema>.<table>``, a managed table. Locally there is no shared
metastore (an embedded Derby metastore admits one process at a time, so a notebook would lock out
a running job); instead every table is an external Delta table at
``<data_dir>/warehouse/<schema>/<table>`` and :meth:`Lakehouse.attach` registers the tables found
there in the session catalog by name. A table written by one process is therefore visible by name
to the next, with no paths in user code.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import datetime, timedelta
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql.types import StructType

from sparkfs.core.config import Settings
from sparkfs.core.conflicts import create_table
from sparkfs.core.errors import ConfigError, TableNotFoundError
from sparkfs.core.session import on_databricks

# Table properties that make a Delta table a feature table (set by the gold writer, read by the
# point-in-time join): comma-separated entity keys, and the event-time column ("" for static tables).
KEYS_PROPERTY = "sparkfs.keys"
EVENT_TIME_PROPERTY = "sparkfs.event_time"
SEQUENCE_PROPERTY = "sparkfs.sequence"
KNOWN_AT_PROPERTY = "sparkfs.known_at"
# A partition column holding the UTC date of the event time: point-in-time reads prune by it.
EVENT_DATE_PROPERTY = "sparkfs.event_date"
# How long Delta keeps old versions readable: the log entries, and the data files a later commit
# removed (VACUUM deletes those once they are older than this).
# Tables written by many one-row appends (run records, validation results): Delta compacts their
# small files after a write once enough pile up, so reading them stays fast for a year of runs.
APPEND_LOG_PROPERTIES = {"delta.autoOptimize.autoCompact": "true"}
LOG_RETENTION_PROPERTY = "delta.logRetentionDuration"
FILE_RETENTION_PROPERTY = "delta.deletedFileRetentionDuration"
DEFAULT_FILE_RETENTION = timedelta(days=7)  # Delta's default for delta.deletedFileRetentionDuration
PROTOCOL_ENTRIES = ("delta.minReaderVersion", "delta.minWriterVersion", "delta.feature.")  # not properties
_INTERVAL_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(microsecond|millisecond|second|minute|hour|day|week)s?", re.I)


def delta_interval(value: timedelta) -> str:
    """A duration as a Delta interval property value: ``interval 604800 seconds``."""
    return f"interval {int(value.total_seconds())} seconds"


def parse_delta_interval(text: str) -> timedelta:
    """``interval 7 days`` / ``interval 1 week 2 hours`` / ``interval 3600 seconds`` -> timedelta."""
    parts = _INTERVAL_PART.findall(text)
    if not parts or not text.strip().lower().startswith("interval"):
        raise ConfigError(f"expected a Delta interval like 'interval 7 days'; found {text!r}")
    return sum((timedelta(**{f"{unit.lower()}s": float(n)}) for n, unit in parts), timedelta(0))


def retention_properties(settings: Settings) -> dict[str, str]:
    """The retention properties a new table gets from ``storage.log_retention`` /
    ``storage.deleted_file_retention``."""
    return {
        LOG_RETENTION_PROPERTY: delta_interval(settings.storage.log_retention),
        FILE_RETENTION_PROPERTY: delta_interval(settings.storage.deleted_file_retention),
    }


def checksum(df: DataFrame) -> tuple[int, int]:
    """Row count and an order-independent checksum of every row's values (sum of row hashes).

    Two reads with equal checksums hold the same multiset of rows (up to hash collisions); the
    sum is taken as a decimal so it cannot overflow under ANSI mode.
    """
    from pyspark.sql import functions as F

    row = df.select(F.count(F.lit(1)), F.sum(F.xxhash64(*df.columns).cast("decimal(38,0)"))).first()
    assert row is not None
    return int(row[0]), int(row[1] or 0)


@dataclass(frozen=True)
class Commit:
    """One commit of a Delta table, as its history records it.

    ``metrics`` are Delta's ``operationMetrics`` as ints, e.g. ``numTargetRowsInserted`` of a
    MERGE or ``numOutputRows`` of a WRITE; :meth:`metric` reads one, 0 when absent.
    """

    version: int
    timestamp: datetime
    operation: str
    metrics: Mapping[str, int]

    def metric(self, name: str) -> int:
        return self.metrics.get(name, 0)

    @classmethod
    def from_history(cls, row: Row) -> Commit:
        metrics = {k: int(v) for k, v in (row["operationMetrics"] or {}).items() if v.isdigit()}
        return cls(int(row["version"]), row["timestamp"], str(row["operation"]), metrics)


def _quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


@dataclass(frozen=True)
class Lakehouse:
    """Resolves logical ``(layer, table)`` names and manages Delta tables for one session.

    Locally a layer is a schema of external Delta tables under the warehouse folder; on
    Databricks it is a Unity Catalog ``catalog.schema``.

    Example::

        lake = open_lakehouse(spark, settings)
        lake.name("gold", "carrier_delays")        # `sparkfs_gold`.`carrier_delays` locally
        lake.read("gold", "carrier_delays", version=3), lake.version("gold", "carrier_delays")
    """

    spark: SparkSession
    settings: Settings
    # Open read logs of each thread (see track_reads): every read appends (layer, table, version or None).
    _read_logs: threading.local = dataclass_field(default_factory=threading.local, compare=False, repr=False)
    # Tables and properties ensure_properties has already checked (once per Lakehouse, not per write).
    _ensured: set[tuple[str, str, str]] = dataclass_field(default_factory=set, compare=False, repr=False)

    @contextmanager
    def track_reads(self) -> Iterator[list[tuple[str, str, int | None]]]:
        """Log every :meth:`read` made inside the block: ``(layer, table, version)``, the version
        None when the current one was read. What a write records as its lineage.

        Example::

            with lake.track_reads() as reads:
                rows_df = builder(lake, span)        # reads silver.flights
            reads                                     # [("silver", "flights", None)]
        """
        log: list[tuple[str, str, int | None]] = []
        logs = self._read_logs.__dict__.setdefault("logs", [])  # this thread's: stages run side by side
        logs.append(log)
        try:
            yield log
        finally:
            logs.remove(log)

    @property
    def is_local(self) -> bool:
        return self.settings.storage.catalog is None

    @property
    def warehouse(self) -> Path:
        return self.settings.data_path / "warehouse"

    def schema(self, layer: str) -> str:
        schemas = self.settings.storage.schemas
        if layer not in schemas:
            raise ConfigError(f"unknown layer '{layer}': storage.schemas defines {sorted(schemas)}")
        return schemas[layer]

    def name(self, layer: str, table: str) -> str:
        """Fully qualified name: ``schema.table`` locally, ``catalog.schema.table`` on Databricks."""
        parts = [self.settings.storage.catalog, self.schema(layer), table]
        return ".".join(_quote(p) for p in parts if p)

    def location(self, layer: str, table: str) -> str | None:
        """The folder of a local table; None on Databricks (Unity Catalog manages storage)."""
        return str(self.warehouse / self.schema(layer) / table) if self.is_local else None

    def ensure_schema(self, layer: str) -> None:
        catalog = self.settings.storage.catalog
        qualified = ".".join(_quote(p) for p in (catalog, self.schema(layer)) if p)
        if not self.spark.catalog.databaseExists(qualified.replace("`", "")):
            self.spark.sql(f"CREATE SCHEMA IF NOT EXISTS {qualified}")

    def attach(self) -> list[str]:
        """Register every local Delta table under the warehouse in this session's catalog."""
        if not self.is_local or on_databricks():
            return []
        attached = []
        for layer in self.settings.storage.schemas:
            tables = self.tables(layer)
            if not tables:
                continue
            self.ensure_schema(layer)
            for table in tables:
                self._register(layer, table)
                attached.append(self.name(layer, table))
        return attached

    def tables(self, layer: str) -> list[str]:
        """The names of the layer's tables: the Delta folders under the warehouse locally, the
        schema's tables in Unity Catalog."""
        if self.is_local and not on_databricks():
            folder = self.warehouse / self.schema(layer)
            return sorted(p.parent.name for p in folder.glob("*/_delta_log"))
        catalog = self.settings.storage.catalog
        qualified = ".".join(p for p in (catalog, self.schema(layer)) if p)
        if not self.spark.catalog.databaseExists(qualified):
            return []
        return sorted(t.name for t in self.spark.catalog.listTables(qualified))

    def _register(self, layer: str, table: str) -> None:
        location = self.location(layer, table)
        self.spark.sql(
            f"CREATE TABLE IF NOT EXISTS {self.name(layer, table)} USING DELTA LOCATION '{location}'"
        )

    def exists(self, layer: str, table: str) -> bool:
        if self.is_local:
            location = self.location(layer, table)
            if self.spark.catalog.tableExists(self.name(layer, table).replace("`", "")):
                return True
            if location and DeltaTable.isDeltaTable(self.spark, location):
                self.ensure_schema(layer)
                self._register(layer, table)
                return True
            return False
        return bool(self.spark.catalog.tableExists(self.name(layer, table).replace("`", "")))

    def create(
        self, layer: str, table: str, schema: StructType, *, partition_by: Iterable[str] = (),
        properties: Mapping[str, str] | None = None, comment: str | None = None,
        column_comments: Mapping[str, str] | None = None,
    ) -> str:
        """Create the Delta table if it does not exist yet; return its qualified name."""
        full_name = self.name(layer, table)
        self.ensure_schema(layer)
        comments = column_comments or {}
        builder = DeltaTable.createIfNotExists(self.spark).tableName(full_name)
        for field in schema.fields:
            builder = builder.addColumn(
                field.name, field.dataType, nullable=field.nullable, comment=comments.get(field.name)
            )
        partitions = list(partition_by)
        if partitions:
            builder = builder.partitionedBy(*partitions)
        for key, value in (properties or {}).items():
            builder = builder.property(key, value)
        if comment:
            builder = builder.comment(comment)
        location = self.location(layer, table)
        if location:
            builder = builder.location(location)
        create_table(builder.execute, full_name, location)
        return full_name

    def ensure_properties(self, layer: str, table: str, properties: Mapping[str, str]) -> None:
        """Set the ``properties`` the table lacks or holds with another value (one commit, or none).

        Checked once per Lakehouse: a table brought up to date stays so for the job's life.
        """
        key = (layer, table, repr(sorted(properties.items())))
        if key in self._ensured:
            return
        current = self.properties(layer, table)
        wrong = {k: v for k, v in properties.items() if current.get(k) != v}
        if wrong:
            pairs = ", ".join(f"'{k}' = '{v}'" for k, v in wrong.items())
            self.spark.sql(f"ALTER TABLE {self.name(layer, table)} SET TBLPROPERTIES ({pairs})")
        self._ensured.add(key)

    def add_columns(self, layer: str, table: str, schema: StructType) -> list[str]:
        """Add the columns of ``schema`` the table lacks (a table written by an earlier sparkfs);
        return their names. Existing rows hold null in them."""
        present = set(self.read(layer, table).columns)
        missing = [f for f in schema.fields if f.name not in present]
        if missing:
            columns = ", ".join(f"{_quote(f.name)} {f.dataType.simpleString()}" for f in missing)
            self.spark.sql(f"ALTER TABLE {self.name(layer, table)} ADD COLUMNS ({columns})")
        return [f.name for f in missing]

    def table(self, layer: str, table: str) -> DeltaTable:
        self._require(layer, table)
        return DeltaTable.forName(self.spark, self.name(layer, table))

    def read(self, layer: str, table: str, version: int | None = None) -> DataFrame:
        """The table as a DataFrame, optionally as of a Delta version (time travel)."""
        self._require(layer, table)
        for log in getattr(self._read_logs, "logs", ()):
            log.append((layer, table, version))
        reader = self.spark.read
        if version is not None:
            reader = reader.option("versionAsOf", version)
        return reader.table(self.name(layer, table))

    def history(self, layer: str, table: str, limit: int | None = None) -> DataFrame:
        """The table's Delta history, newest first: version, time, operation, rows written."""
        metrics = "operationMetrics"
        return (
            self.table(layer, table)
            .history(limit)
            .selectExpr(
                "version", "timestamp", "operation",
                f"coalesce({metrics}.numTargetRowsInserted, {metrics}.numOutputRows) AS rows_inserted",
                f"{metrics}.numTargetRowsUpdated AS rows_updated",
                f"{metrics}.numTargetRowsDeleted AS rows_deleted",
            )
        )

    def resolve(self, qualified: str) -> tuple[str, str]:
        """``(layer, table)`` for ``layer.table`` (``gold.planes``) or ``schema.table``
        (``sparkfs_gold.planes``)."""
        prefix, _, table = qualified.replace("`", "").rpartition(".")
        schema = prefix.rpartition(".")[2]
        for layer, name in self.settings.storage.schemas.items():
            if schema in (layer, name) and table:
                return layer, table
        raise ConfigError(
            f"cannot resolve table '{qualified}': expected <layer>.<table> or <schema>.<table> with "
            f"a layer or schema of {sorted(self.settings.storage.schemas.items())}"
        )

    def properties(self, layer: str, table: str) -> dict[str, str]:
        """The table's properties (e.g. ``sparkfs.keys``), read from its metadata (``detail()`` scans its files)."""
        self._require(layer, table)
        rows = self.spark.sql(f"SHOW TBLPROPERTIES {self.name(layer, table)}").collect()
        return {key: value for key, value in rows if not key.startswith(PROTOCOL_ENTRIES)}

    def version(self, layer: str, table: str) -> int:
        """The table's current Delta version."""
        return self.last_commit(layer, table).version

    def last_commit(self, layer: str, table: str) -> Commit:
        """The table's newest commit: version, time, operation and its metrics."""
        return self.commits(layer, table, 1)[0]

    def commits(self, layer: str, table: str, limit: int) -> list[Commit]:
        """The table's ``limit`` newest commits, newest first (reads only those log entries)."""
        local = self._local_commits(layer, table, limit)
        if local is not None:
            return local
        history = self.table(layer, table).history(limit)
        rows = history.select("version", "timestamp", "operation", "operationMetrics").collect()
        return [Commit.from_history(r) for r in rows]

    def commit_after(self, layer: str, table: str, version: int, operation: str) -> Commit | None:
        """The newest ``operation`` commit (``"MERGE"``, ``"WRITE"``) after ``version``; None
        when there is none.

        A writer takes ``last_commit(...).version`` before it writes and asks this afterwards:
        a write that changed nothing (a MERGE of an empty batch, an append of no rows) makes no
        commit, and must not report the previous commit's numbers as its own. Commits of other
        operations in between (another writer's OPTIMIZE, say) are skipped; two concurrent
        writes of the same operation cannot be told apart by the history alone.
        """
        newest = self.last_commit(layer, table)
        if newest.version <= version:
            return None
        if newest.operation == operation:
            return newest
        newer = self.commits(layer, table, newest.version - version)
        return next((c for c in newer if c.version > version and c.operation == operation), None)

    def _local_commits(self, layer: str, table: str, limit: int) -> list[Commit] | None:
        """The newest commits of a local table, read from its ``_delta_log`` commit files: the
        same ``commitInfo`` that ``DESCRIBE HISTORY`` shows, without a Spark query (which costs
        0.1-1 s; every writer asks twice). None where the files are not on this machine or a
        commit file is missing (log cleanup): then the history is asked."""
        if not self.is_local or on_databricks():
            return None
        self._require(layer, table)
        log_dir = Path(str(self.location(layer, table))) / "_delta_log"
        versions = sorted((int(p.stem) for p in log_dir.glob("*.json") if p.stem.isdigit()), reverse=True)
        commits = []
        for version in versions[:limit]:
            commit_file = log_dir / f"{version:020d}.json"
            actions = (json.loads(line) for line in commit_file.read_text().splitlines() if line.strip())
            info = next((a["commitInfo"] for a in actions if "commitInfo" in a), None)
            if info is None:
                return None
            # History's time is the in-commit timestamp when the table has one, else the file's.
            millis = info.get("inCommitTimestamp") or commit_file.stat().st_mtime_ns // 1_000_000
            metrics = {k: int(v) for k, v in (info.get("operationMetrics") or {}).items() if str(v).isdigit()}
            commits.append(Commit(version, datetime.fromtimestamp(millis / 1000), str(info["operation"]), metrics))
        return commits or None

    def _require(self, layer: str, table: str) -> None:
        if not self.exists(layer, table):
            raise TableNotFoundError(
                f"table {self.name(layer, table)} does not exist"
                + (f" (no Delta log at {self.location(layer, table)})" if self.is_local else "")
            )


def open_lakehouse(spark: SparkSession, settings: Settings) -> Lakehouse:
    """A :class:`Lakehouse` with the tables already on disk registered by name, so a table a
    ``spark-submit`` job wrote is readable by name from the next process or a notebook.

    Example::

        settings = load_settings()
        lake = open_lakehouse(get_spark(settings), settings)
    """
    lake = Lakehouse(spark, settings)
    lake.attach()
    return lake
