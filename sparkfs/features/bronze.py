"""Bronze: where data enters the lakehouse. Raw files appended as they arrived, never modified.

An upstream delivers newline-delimited JSON files into a landing zone::

    <landing>/<source>/<YYYY-MM-DD>/*.json   a daily source: one folder per event date
    <landing>/<source>/*.json                a source delivered once (a dimension)

:func:`ingest` appends the files bronze has not seen yet to the Delta table ``bronze.<source>``.
Every value is kept as the string it arrived as (a parse error cannot lose a value, and a type
change upstream cannot break an append; silver does the typing), plus ingestion metadata:

- ``_ingested_at`` when the file *landed*: its modification time in the landing zone, which the
  delivery sets (object stores: the upload time). Not the wall clock of the run that reads it, so
  a backfill of last year reproduces the landing times the daily runs saw, and "what had landed by
  06:00" means the same in history and in production. ``_run_id`` is the run that appended it
  (its run record has the wall-clock time),
- ``_source_file`` the path inside the landing zone, ``_source_modified`` the file's timestamp,
  ``_source_hash`` the SHA-256 of its content,
- ``_record_id`` an id for the row, unique in the table, that silver and quarantine carry along,
- ``_malformed`` for a line that is not valid JSON (or not UTF-8): the line's bytes as base64 (the
  row's other values are null; silver quarantines it with the one reason ``malformed record``),
- ``event_date`` (daily sources only, the partition column): the date folder the file came in.

Re-running is safe, and so are two runs at once: a delivery is ingested exactly once, identified
by its path and content hash. The rows go in by an insert-only MERGE on that identity
(:func:`~sparkfs.core.merge.insert_new`), so a second run that read bronze before the first one
committed loses the commit race, is retried, and then finds the file there. A file replaced in
place (same path, new content) is a new delivery: its rows are appended next to the old ones,
and silver keeps the latest delivery of each row. A new upstream column is added to the table
(schema evolution); a missing required column stops the run before anything is written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.config import StrictModel
from sparkfs.core.errors import MissingSourceDataError, SchemaMismatchError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import insert_new

log = logging.getLogger(__name__)

LAYER = "bronze"
EVENT_DATE = "event_date"
METADATA_COLUMNS = (
    "_ingested_at",
    "_run_id",
    "_source_file",
    "_source_modified",
    "_source_hash",
    "_record_id",
    "_malformed",
)
MALFORMED = "_malformed"  # a line that did not parse: its bytes, base64; null for every other row
CORRUPT_RECORD = "_corrupt_record"  # Spark's column for such a line
# A file is one delivery: its path in the landing zone and the hash of its content.
FILE_IDENTITY = ("_source_file", "_source_hash")


class SourceSpec(StrictModel):
    """One raw source, as declared in ``conf/pipeline.yaml`` under ``sources``."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str
    arrival: Literal["daily", "once"] = "daily"
    required_columns: list[str] = Field(min_length=1)


@dataclass(frozen=True)
class IngestResult:
    table: str
    version: int | None  # None: nothing new, no commit
    files_new: int  # deliveries not in bronze before (files_replaced of them: a known path, new content)
    files_skipped: int
    rows_written: int
    files_replaced: int = 0
    files: tuple[str, ...] = ()  # the appended files, relative to the landing folder


def landing_files(landing_dir: Path, source: SourceSpec, days: Sequence[date]) -> dict[str, Path]:
    """The landing files of ``source`` for ``days`` (all files for a once-source), by relative path."""
    folders = [landing_dir / source.name / d.isoformat() for d in days] if source.arrival == "daily" else [
        landing_dir / source.name
    ]
    found = {}
    for folder in folders:
        for path in sorted(folder.glob("*.json")):
            found[path.relative_to(landing_dir).as_posix()] = path
    return found


def ingested_files(lake: Lakehouse, source: SourceSpec, days: Sequence[date]) -> dict[str, set[str | None]]:
    """The content hashes bronze holds per landing path for ``days`` (reads only those partitions).

    A hash of None: a row ingested before bronze recorded hashes (that path counts as ingested).
    """
    if not lake.exists(LAYER, source.name):
        return {}
    table_df = lake.read(LAYER, source.name)
    if source.arrival == "daily":
        table_df = table_df.where(F.col(EVENT_DATE).isin(list(days)))
    hash_col = F.col("_source_hash") if "_source_hash" in table_df.columns else F.lit(None).cast("string")
    # One row per delivery: bounded by the files of the window, not by the table's size.
    seen: dict[str, set[str | None]] = {}
    for path, digest in table_df.select("_source_file", hash_col).distinct().collect():
        seen.setdefault(path, set()).add(digest)
    return seen


def file_hash(path: Path) -> str:
    """SHA-256 of the file's bytes, hex."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest(
    lake: Lakehouse,
    source: SourceSpec,
    landing_dir: Path,
    days: Sequence[date],
    run_id: str,
) -> IngestResult:
    """Append the not-yet-ingested landing files of ``source`` for ``days`` to ``bronze.<source>``.

    ``days`` are event dates (the run window); a once-source ignores them and takes every new
    file. A day with neither landing files nor bronze rows raises
    :class:`~sparkfs.core.errors.MissingSourceDataError`; a batch without a required column raises
    :class:`~sparkfs.core.errors.SchemaMismatchError` naming the missing and the present columns.

    Example: ``ingest(lake, flights_source, Path(".sparkfs/landing"), [date(2013, 4, 1)], run.run_id)``.
    """
    full_name = lake.name(LAYER, source.name)
    available = landing_files(landing_dir, source, days)
    seen = ingested_files(lake, source, days)
    if source.arrival == "daily":
        covered = {Path(p).parent.name for p in [*available, *seen]}
        missing_days = [d for d in days if d.isoformat() not in covered]
        if missing_days:
            raise MissingSourceDataError(
                f"no '{source.name}' files for {[str(d) for d in missing_days]} under "
                f"{landing_dir / source.name}/<date>/*.json, and bronze {full_name} has none either: "
                "has the upstream delivered these days?"
            )
    elif not available and not seen:
        raise MissingSourceDataError(
            f"no '{source.name}' files under {landing_dir / source.name}/*.json, and bronze {full_name} is empty"
        )
    # An empty file is a delivery with no rows (it covers its day) but nothing to append.
    empty = sorted(rel for rel, path in available.items() if path.stat().st_size == 0)
    if empty:
        log.warning("bronze %s: %d delivered files are empty: %s", full_name, len(empty), empty)
    hashes = {rel: file_hash(path) for rel, path in available.items() if rel not in empty}
    new = {rel: available[rel] for rel, digest in hashes.items()
           if not seen.get(rel, set()) & {digest, None}}
    replaced = sorted(rel for rel in new if rel in seen)
    if replaced:
        log.warning("bronze %s: %d files were replaced in place (new content): %s", full_name, len(replaced), replaced)
    skipped = len(available) - len(new) - len(empty)
    if not new:
        log.debug("bronze %s: %d files already ingested, nothing new", full_name, skipped)
        return IngestResult(full_name, None, 0, skipped, 0)

    raw_df = (
        lake.spark.read.option("primitivesAsString", "true")
        .json([str(p) for p in new.values()])
        .select("*", F.col("_metadata.file_path").alias("_file_path"),
                F.col("_metadata.file_modification_time").alias("_source_modified"))
    )
    # A line Spark cannot parse (bad JSON, bytes that are not UTF-8) comes back as one row with all
    # values null and the line in _corrupt_record. Delta must not store bytes that are not UTF-8
    # in a string column (other readers refuse them), so the line is kept as base64 of its bytes.
    malformed = (
        F.base64(F.col(CORRUPT_RECORD).cast("binary")) if CORRUPT_RECORD in raw_df.columns
        else F.lit(None).cast("string")
    )
    upstream_cols = [c for c in raw_df.columns if c not in ("_file_path", "_source_modified", CORRUPT_RECORD)]
    missing = [c for c in source.required_columns if c not in upstream_cols]
    if missing:
        raise SchemaMismatchError(
            f"source '{source.name}': the new files {sorted(new)} lack required columns {missing}; "
            f"they have {sorted(upstream_cols)}. Nothing was written."
        )
    clash = [c for c in upstream_cols if c in (*METADATA_COLUMNS, EVENT_DATE)]
    if clash:
        raise SchemaMismatchError(
            f"source '{source.name}': upstream columns {clash} clash with bronze's own columns"
        )
    batch_df = raw_df.select(
        *upstream_cols,
        F.col("_source_modified").alias("_ingested_at"),  # landed, not read: see the module doc
        F.lit(run_id).alias("_run_id"),
        _relative_path(F.col("_file_path"), source).alias("_source_file"),
        "_source_modified",
        F.create_map(*[F.lit(x) for rel, digest in hashes.items() if rel in new for x in (rel, digest)])[
            _relative_path(F.col("_file_path"), source)
        ].alias("_source_hash"),
        F.concat(F.lit(run_id + "-"), F.monotonically_increasing_id().cast("string")).alias("_record_id"),
        malformed.alias(MALFORMED),
        *([F.to_date(F.regexp_extract("_file_path", r"/(\d{4}-\d{2}-\d{2})/[^/]+$", 1)).alias(EVENT_DATE)]
          if source.arrival == "daily" else []),
    )
    partitions = [EVENT_DATE] if source.arrival == "daily" else []
    lake.create(
        LAYER, source.name, batch_df.schema, partition_by=partitions,
        comment=f"Raw '{source.name}' as delivered: {source.description}",
    )
    # Insert-only on the file's identity: a delivery another run has already put in bronze (even
    # one committed while this run was reading) is not inserted again.
    inserted = insert_new(lake, LAYER, source.name, batch_df, FILE_IDENTITY,
                          partition_by=partitions[0] if partitions else None)
    rows = inserted.rows_inserted
    log.debug("bronze %s v%d: %d new files (%d rows), %d already ingested",
              full_name, inserted.version, len(new), rows, skipped)
    return IngestResult(full_name, inserted.version if rows else None, len(new), skipped, rows, len(replaced),
                        tuple(sorted(new)))


def _relative_path(file_path: Column, source: SourceSpec) -> Column:
    """``<source>/<date>/<file>`` (or ``<source>/<file>``) from the absolute URI Spark reports.

    The URI is percent-encoded (a space is ``%20``): decoded here, with a literal ``+`` kept.
    """
    tail = r"/[^/]+/[^/]+$" if source.arrival == "daily" else r"/[^/]+$"
    decoded = F.url_decode(F.regexp_replace(file_path, r"\+", "%2B"))
    return F.regexp_extract(decoded, rf"({source.name}{tail})", 1)


def read_days(lake: Lakehouse, source: str, days: Sequence[date]) -> DataFrame:
    """The bronze rows of a daily source for ``days`` (partition pruned)."""
    return lake.read(LAYER, source).where(F.col(EVENT_DATE).isin(list(days)))
