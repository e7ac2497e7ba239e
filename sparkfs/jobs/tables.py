"""What ``sparkfs tables`` and ``sparkfs history`` read and show: Delta metadata, never the rows.

A table's version, row count, size and last write come from its Delta log (the row count from
the per-file statistics Delta keeps there), so listing a lakehouse costs the same for a table of
ten rows and one of ten million. Only ``--checksum`` reads every row.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from sparkfs.core.config import Settings
from sparkfs.core.errors import UsageError

if TYPE_CHECKING:
    from delta.tables import DeltaTable
    from pyspark.sql import DataFrame

    from sparkfs.core.lakehouse import Lakehouse

@dataclass(frozen=True)
class TableSummary:
    """One table as ``sparkfs tables`` shows it; every value comes from the Delta log unless
    ``checksum`` was asked for (that one reads every row)."""

    table: str
    version: int
    rows: int
    size_bytes: int
    files: int
    last_write_utc: str
    last_operation: str
    checksum: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _delta_table(lake: Lakehouse, layer: str, table: str) -> DeltaTable:
    """The table by path locally (no registration in the session catalog), by name on Databricks."""
    from delta.tables import DeltaTable

    location = lake.location(layer, table)
    return DeltaTable.forPath(lake.spark, location) if location else lake.table(layer, table)


def _read_version(lake: Lakehouse, layer: str, table: str, version: int) -> DataFrame:
    location = lake.location(layer, table)
    if location is None:
        return lake.read(layer, table, version=version)
    return lake.spark.read.format("delta").option("versionAsOf", version).load(location)


def summarize_table(lake: Lakehouse, layer: str, table: str, *, with_checksum: bool = False) -> TableSummary:
    """Version, rows, size and last write of one table, from its Delta log.

    The row count is a ``count()`` Delta answers from the per-file statistics in its log (a
    metadata-only query; it scans only files written without statistics). ``with_checksum`` adds
    :func:`~sparkfs.core.lakehouse.checksum` over every row, folded to 64 bits and printed as
    unsigned hex.
    """
    from sparkfs.core.lakehouse import checksum

    delta = _delta_table(lake, layer, table)
    last = delta.history(1).selectExpr(
        "version", "date_format(timestamp, 'yyyy-MM-dd HH:mm:ss') AS ts", "operation").first()
    detail = delta.detail().select("numFiles", "sizeInBytes").first()
    assert last is not None and detail is not None
    version = int(last["version"])
    df = _read_version(lake, layer, table, version)  # the version reported, not a newer one
    digest = None
    if with_checksum:
        rows, total = checksum(df)
        digest = unsigned_hex(total)
    else:
        rows = df.count()
    return TableSummary(
        table=lake.name(layer, table).replace("`", ""), version=version, rows=rows,
        size_bytes=int(detail["sizeInBytes"]), files=int(detail["numFiles"]),
        last_write_utc=str(last["ts"]), last_operation=str(last["operation"]), checksum=digest,
    )


def unsigned_hex(total: int) -> str:
    """A checksum (a sum of signed 64-bit row hashes, of any size and sign) as 16 hex digits: the
    sum modulo 2**64, so equal contents print equal text and nothing prints a minus sign."""
    return f"{total % 2**64:016x}"


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def format_tables(summaries: Sequence[TableSummary]) -> list[str]:
    """The ``sparkfs tables`` listing, one line per table under a header."""
    checksums = any(s.checksum for s in summaries)
    width = max([len(s.table) for s in summaries] + [5])
    lines = [f"{'table':<{width}}  {'version':>7}  {'rows':>11}  {'size':>9}  {'files':>5}  "
             f"{'last write (UTC)':<19}  {'operation':<12}" + ("  checksum" if checksums else "")]
    for s in summaries:
        lines.append(f"{s.table:<{width}}  {s.version:>7}  {s.rows:>11,}  {_size(s.size_bytes):>9}  "
                     f"{s.files:>5}  {s.last_write_utc:<19}  {s.last_operation:<12}"
                     + (f"  {s.checksum}" if s.checksum else ""))
    return [line.rstrip() for line in lines]


def history_rows(lake: Lakehouse, layer: str, table: str, limit: int | None) -> list[dict[str, Any]]:
    """The table's newest ``limit`` writes (all for None): version, UTC time, operation, rows."""
    history_df = lake.history(layer, table, limit).selectExpr(
        "version", "date_format(timestamp, 'yyyy-MM-dd HH:mm:ss') AS timestamp_utc", "operation",
        # Delta keeps operation metrics as strings.
        "CAST(rows_inserted AS BIGINT) AS rows_inserted", "CAST(rows_updated AS BIGINT) AS rows_updated",
        "CAST(rows_deleted AS BIGINT) AS rows_deleted",
    )
    return [row.asDict() for row in history_df.collect()]  # one row per write, at most `limit`


def format_history(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """A table's history as aligned lines, newest first; counts a write did not report stay blank."""
    lines = [f"  {'version':>7}  {'time (UTC)':<19}  {'operation':<14}  {'inserted':>10}  "
             f"{'updated':>10}  {'deleted':>10}"]
    for r in rows:
        counts = [r["rows_inserted"], r["rows_updated"], r["rows_deleted"]]
        lines.append(f"  {r['version']:>7}  {r['timestamp_utc']:<19}  {r['operation']:<14}  "
                     + "  ".join(f"{'' if c is None else f'{c:,}':>10}" for c in counts))
    return [line.rstrip() for line in lines]


def suggest_table(name: str, candidates: Sequence[str]) -> str:
    """What to tell someone who named a table that does not exist: the nearest name, if any."""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    if close:
        return f"did you mean {close[0]}? ('sparkfs tables' lists them)"
    return "'sparkfs tables' lists the tables" if candidates else "the lakehouse has no tables yet"


def check_local_table(settings: Settings, name: str) -> None:
    """A local table's Delta folder exists (checked on disk, before Spark starts).

    Names are ``<layer>.<table>`` or ``<schema>.<table>``, as :meth:`Lakehouse.resolve` reads them.
    """
    schemas = settings.storage.schemas
    warehouse = settings.data_path / "warehouse"
    prefix, _, table = name.replace("`", "").rpartition(".")
    layer = next((lay for lay, schema in schemas.items() if prefix in (lay, schema)), None)
    if layer and table and (warehouse / schemas[layer] / table / "_delta_log").is_dir():
        return
    existing = [f"{lay}.{p.parent.name}" for lay, schema in schemas.items()
                for p in sorted((warehouse / schema).glob("*/_delta_log"))]
    raise UsageError(f"no table {name} in {warehouse}; {suggest_table(f'{layer or prefix}.{table}', existing)}")


