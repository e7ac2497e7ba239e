"""The one MERGE writer: idempotent upserts into Delta tables, used by every layer.

Rows are matched on the table's key (entity keys plus event time). A matched row is rewritten
only when one of its values changed, so re-running a day leaves the table, and the MERGE's
insert/update counts, at zero change. When the table is partitioned, the batch's partition
values go into the merge condition, so Delta reads only the partitions the batch touches.
The append-only logs (run records, validation results) are written by :func:`append_rows`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.types import StructType

from sparkfs.core.checks import MAX_LISTED_VALUES, Spread, count_unique, require_columns
from sparkfs.core.conflicts import retry_on_conflict
from sparkfs.core.errors import SchemaMismatchError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.rows import latest_rows

log = logging.getLogger(__name__)

RETRACT = "__sparkfs_retract"  # a batch row that deletes the table's row with its key (retract_partitions)


@dataclass(frozen=True)
class MergeResult:
    """What one MERGE did. ``version`` is the Delta version it committed, or the table's version
    when it committed nothing (an empty batch).

    Example::

        result = merge_upsert(lake, "gold", "planes", planes_df, keys=["tailnum"])
        result.rows_inserted, result.rows_updated, result.version
    """

    table: str
    version: int
    source_rows: int
    rows_inserted: int
    rows_updated: int
    rows_deleted: int = 0  # rows retracted (``retract_partitions``)


def deduplicate(
    df: DataFrame, keys: Sequence[str], sequence_by: str | None, what: str, partition_by: str | None
) -> tuple[DataFrame, int, Spread | None]:
    """One row per key, cached, how many rows that is and the spread of its ``partition_by``
    values (one aggregation). With ``sequence_by`` the highest sequence wins; otherwise
    duplicates are an error. A tie on the sequence value is also an error: no arbitrary pick.
    The caller unpersists the DataFrame.
    """
    if sequence_by is not None:
        require_columns(df, [sequence_by], what)
        # Tied winners are kept so that require_unique below names them as examples.
        df = latest_rows(df, keys, [sequence_by], ties="keep", what=what)
    rule = f"rows tie on {sequence_by!r}" if sequence_by else "no sequence column decides"
    df = df.persist()
    try:
        return df, *count_unique(df, keys, what, hint=rule, spread_of=partition_by)
    except BaseException:
        df.unpersist()
        raise


def merge_upsert(
    lake: Lakehouse,
    layer: str,
    table: str,
    source_df: DataFrame,
    keys: Sequence[str],
    *,
    partition_by: str | None = None,
    sequence_by: str | None = None,
    retract_partitions: Sequence[Any] | None = None,
) -> MergeResult:
    """Upsert ``source_df`` into an existing Delta table on ``keys``; return what changed.

    ``retract_partitions`` (with ``partition_by``): the batch is the whole truth for these
    partition values, so the table's rows in them that the batch does not hold are deleted (a day
    delivered again without some rows). Without it nothing is ever deleted.

    Keys match null-safely (``<=>``). Matched rows are updated only when a non-key value differs;
    unmatched rows are inserted; nothing is deleted. The source must have exactly the target's
    columns (schema changes are made to the table on purpose, not by a merge). An empty batch
    merges nothing and commits nothing: its result has 0 rows and the table's current version.
    (Insert-only writes, where the first write of a row is the one kept: :func:`insert_new`.)

    Example::

        result = merge_upsert(lake, "gold", "carrier_delays", day_df, keys=["carrier", "event_ts"],
                              partition_by="event_date")
        result.rows_inserted, result.rows_updated     # (0, 0) when the same day is merged again
    """
    full_name = lake.name(layer, table)
    target_cols = lake.table(layer, table).toDF().columns
    require_columns(source_df, keys, f"the batch for {full_name}")
    extra = sorted(set(source_df.columns) - set(target_cols))
    missing = sorted(set(target_cols) - set(source_df.columns))
    if extra or missing:
        raise SchemaMismatchError(
            f"batch for {full_name} does not match the table: extra columns {extra}, "
            f"missing columns {missing}; the table has {target_cols}"
        )
    source, source_rows, spread = deduplicate(
        source_df.select(*target_cols), keys, sequence_by, f"the batch for {full_name}", partition_by)
    try:
        if source_rows == 0 and partition_by and retract_partitions:
            return _retract_all(lake, layer, table, partition_by, retract_partitions)
        if source_rows == 0:
            # Delta commits nothing for a MERGE of no rows; say so instead of running it.
            version = lake.last_commit(layer, table).version
            log.debug("MERGE %s: empty batch, nothing merged (table stays at v%d)", full_name, version)
            return MergeResult(full_name, version, 0, 0, 0)
        changed = ~reduce(
            lambda acc, c: acc & c,
            [F.col(f"t.`{c}`").eqNullSafe(F.col(f"s.`{c}`")) for c in target_cols if c not in keys],
            F.lit(True),
        )
        values: dict[str, str | Column] = {f"`{c}`": F.col(f"s.`{c}`") for c in target_cols}
        retracting = F.col(f"s.`{RETRACT}`")

        def attempt() -> tuple[int, Row | None]:
            read_version = lake.last_commit(layer, table).version
            batch = source.withColumn(RETRACT, F.lit(False))
            if partition_by and retract_partitions:
                batch = batch.unionByName(
                    _retractions(lake, layer, table, source, keys, partition_by, retract_partitions))
            condition = _key_condition(keys)
            if partition_by and spread:  # the retractions lie in retract_partitions: no need to read them twice
                condition = condition & _partition_condition(partition_by, spread, retract_partitions or ())
            # execute() returns this MERGE's own counts (num_inserted_rows, num_updated_rows, ...);
            # the table's newest commit may be another writer's.
            builder = (
                lake.table(layer, table).alias("t")
                .merge(batch.alias("s"), condition)
                .whenMatchedDelete(condition=retracting)
                .whenMatchedUpdate(condition=changed, set=values)
                .whenNotMatchedInsert(condition=~retracting, values=values)
            )
            return read_version, builder.execute().first()

        # A MERGE that lost a commit race is run again against the new version: it is idempotent.
        read_version, metrics = retry_on_conflict(attempt, full_name, "MERGE")
    finally:
        source.unpersist()
    assert metrics is not None
    committed = lake.commit_after(layer, table, read_version, "MERGE")
    result = MergeResult(
        table=full_name,
        version=committed.version if committed else read_version,
        source_rows=source_rows,
        rows_inserted=int(metrics["num_inserted_rows"]),
        rows_updated=int(metrics["num_updated_rows"]),
        rows_deleted=int(metrics["num_deleted_rows"]),
    )
    # DEBUG: the stage that ran the MERGE reports its rows; this line is for `-v`.
    log.debug(
        "MERGE %s v%d: %d source rows, %d inserted, %d updated",
        full_name, result.version, result.source_rows, result.rows_inserted, result.rows_updated,
    )
    return result


def _retractions(
    lake: Lakehouse, layer: str, table: str, source: DataFrame, keys: Sequence[str], partition_by: str,
    partitions: Sequence[Any],
) -> DataFrame:
    """The table's rows in ``partitions`` whose keys the batch lacks, flagged to be deleted.

    They join the batch as rows of their own, so the MERGE deletes them as *matched* rows: Delta
    then still prunes the target to the batch's partitions, which a ``WHEN NOT MATCHED BY SOURCE``
    clause would prevent (it scans the whole table to find the rows no source row matches).
    """
    target = lake.read(layer, table).where(F.col(partition_by).isin(list(partitions))).alias("t")
    present = reduce(
        lambda acc, c: acc & c, [F.col(f"t.`{k}`").eqNullSafe(F.col(f"b.`{k}`")) for k in keys]
    )
    gone = target.join(source.select(*keys).alias("b"), present, "left_anti")
    return gone.select(*[F.col(f"t.`{c}`") for c in source.columns]).withColumn(RETRACT, F.lit(True))


def _retract_all(lake: Lakehouse, layer: str, table: str, partition_by: str, values: Sequence[Any]) -> MergeResult:
    """An empty batch that is the whole truth for its partitions: delete their rows."""
    full_name = lake.name(layer, table)
    read_version = lake.last_commit(layer, table).version
    condition = F.col(f"`{partition_by}`").isin(list(values))
    retry_on_conflict(lambda: lake.table(layer, table).delete(condition), full_name, "DELETE")
    committed = lake.commit_after(layer, table, read_version, "DELETE")
    deleted = committed.metric("numDeletedRows") if committed else 0
    return MergeResult(full_name, committed.version if committed else read_version, 0, 0, 0, deleted)


def insert_new(
    lake: Lakehouse,
    layer: str,
    table: str,
    source_df: DataFrame,
    identity: Sequence[str],
    *,
    partition_by: str | None = None,
) -> MergeResult:
    """Insert the rows of ``source_df`` whose ``identity`` the table does not hold yet; never update.

    The append-only writer of bronze: ``identity`` names a batch of rows (a landed file: its path
    and content hash), and a batch whose identity is already in the table is not inserted again,
    whoever wrote it and when. Being a MERGE, it reads the target's partitions the batch touches, so
    two concurrent inserts of one batch conflict at commit and the loser, run again by
    :func:`~sparkfs.core.conflicts.retry_on_conflict`, finds the rows there and inserts nothing:
    exactly once, whatever the timing. Columns the table lacks are added (schema evolution: a new
    upstream column is kept).

    Example::

        result = insert_new(lake, "bronze", "flights", batch_df, ["_source_file", "_source_hash"],
                            partition_by="event_date")
        result.rows_inserted     # 0 when these files are already in bronze
    """
    full_name = lake.name(layer, table)
    require_columns(source_df, [*identity, *([partition_by] if partition_by else [])], f"the batch for {full_name}")
    source = source_df.persist()
    try:
        source_rows, spread = _count_and_spread(source, partition_by)
        if source_rows == 0:
            version = lake.last_commit(layer, table).version
            return MergeResult(full_name, version, 0, 0, 0)
        condition = _key_condition(identity)
        if partition_by and spread:
            condition = condition & _partition_condition(partition_by, spread)

        def attempt() -> tuple[int, Row | None]:
            read_version = lake.last_commit(layer, table).version
            return read_version, (
                lake.table(layer, table).alias("t")
                .merge(source.alias("s"), condition)
                .whenNotMatchedInsertAll()
                .withSchemaEvolution()
                .execute()
                .first()
            )

        read_version, metrics = retry_on_conflict(attempt, full_name, "insert")
    finally:
        source.unpersist()
    assert metrics is not None
    inserted = int(metrics["num_inserted_rows"])
    committed = lake.commit_after(layer, table, read_version, "MERGE")
    result = MergeResult(full_name, committed.version if committed else read_version, source_rows, inserted, 0)
    log.debug("insert %s v%d: %d source rows, %d inserted", full_name, result.version, source_rows, inserted)
    return result


def append_rows(lake: Lakehouse, layer: str, table: str, rows: list[dict[str, Any]], schema: StructType) -> None:
    """Append ``rows`` to the table as they are: a blind append, never in conflict with other
    writers (the append-only logs: run records, validation results)."""
    df = lake.spark.createDataFrame(rows, schema)
    name = lake.name(layer, table)
    retry_on_conflict(lambda: df.write.format("delta").mode("append").saveAsTable(name), name, "append")


def _key_condition(keys: Sequence[str]) -> Column:
    return reduce(
        lambda acc, c: acc & c,
        [F.col(f"t.`{k}`").eqNullSafe(F.col(f"s.`{k}`")) for k in keys],
    )


def _count_and_spread(source: DataFrame, partition_by: str | None) -> tuple[int, Spread | None]:
    """The batch's rows and the spread of its ``partition_by`` values, in one pass."""
    if partition_by is None:
        return source.count(), None
    row = source.agg(F.count(F.lit(1)).alias("rows"), *Spread.aggregates(partition_by)).first()
    assert row is not None
    return int(row["rows"]), Spread.of(row)


def _partition_condition(column: str, spread: Spread, also: Sequence[Any] = ()) -> Column:
    """Target-side filter on the batch's partition values (and ``also``), so Delta prunes the other
    partitions: the list of values, or their range when there are more than ``MAX_LISTED_VALUES``."""
    target_col = F.col(f"t.`{column}`")
    extra = [v for v in also if v is not None and (spread.values is None or v not in spread.values)]
    if spread.values is not None and len(spread.values) + len(extra) <= MAX_LISTED_VALUES:
        listed = [*spread.values, *extra]
        cond = target_col.isin(listed) if listed else F.lit(False)
    else:
        bounds = [v for v in (spread.low, spread.high, *extra) if v is not None]
        cond = target_col.between(min(bounds), max(bounds)) if bounds else F.lit(False)
    if spread.has_null or None in also:
        cond = cond | target_col.isNull()
    return cond
