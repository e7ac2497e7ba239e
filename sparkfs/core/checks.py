"""Input checks shared by every room: say what was expected and what was found."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from sparkfs.core.errors import DuplicateKeyError, SchemaMismatchError

# Duplicate keys named in a DuplicateKeyError: enough to find the cause, few enough to read.
DUPLICATE_EXAMPLES = 5
# Above this many distinct values, a Spread gives the range of a column's values, not the list.
MAX_LISTED_VALUES = 1000


@dataclass(frozen=True)
class Spread:
    """The values one column takes in a DataFrame: the distinct non-null ones (when there are at
    most ``MAX_LISTED_VALUES``, else ``None``), their range, and whether a null is among them.
    The MERGE writer prunes the target's partitions with it."""

    values: tuple[Any, ...] | None
    low: Any
    high: Any
    has_null: bool

    @staticmethod
    def aggregates(column: str) -> list[Column]:
        """The aggregate columns :meth:`of` reads: add them to an aggregation over ``column``."""
        return [F.slice(F.collect_set(column), 1, MAX_LISTED_VALUES + 1).alias("_spread_values"),
                F.min(column).alias("_spread_low"), F.max(column).alias("_spread_high"),
                F.count_if(F.col(column).isNull()).alias("_spread_nulls")]

    @staticmethod
    def of(row: Row) -> Spread:
        """The spread in a row of an aggregation that computed :meth:`aggregates`."""
        values = tuple(row["_spread_values"] or ())
        return Spread(values if len(values) <= MAX_LISTED_VALUES else None, row["_spread_low"],
                      row["_spread_high"], bool(row["_spread_nulls"]))


def require_columns(df: DataFrame, required: Sequence[str], what: str = "the DataFrame") -> None:
    """Raise :class:`SchemaMismatchError` naming the missing columns and the ones ``df`` has."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"missing columns {missing} in {what}; it has {sorted(df.columns)}")


def require_unique(
    df: DataFrame, keys: Sequence[str], what: str = "the DataFrame", *, hint: str | None = None
) -> int:
    """Raise :class:`DuplicateKeyError` when ``df`` has more than one row for some ``keys``;
    else return its row count (the same aggregation counts them: no second pass to count).

    Null is a key value like any other (two rows with a null key are duplicates), as in the
    null-safe match of the MERGE writer; filter null keys out first where they match nothing.
    The message names up to five duplicated keys with their row counts, and ``hint`` (why no
    rule picks one row), e.g. ``"the batch for silver.t has more than one row per key ['id']
    and no sequence column decides; examples: [{'id': 7, 'rows': 2}]"``. One aggregation over
    ``df`` (a second one for the examples, when there are duplicates); only the examples reach
    the driver.
    """
    return count_unique(df, keys, what, hint=hint)[0]


def count_unique(
    df: DataFrame, keys: Sequence[str], what: str = "the DataFrame", *, hint: str | None = None,
    spread_of: str | None = None,
) -> tuple[int, Spread | None]:
    """:func:`require_unique`, and the :class:`Spread` of column ``spread_of`` (when given) from
    the same aggregation: the MERGE writer's one pass over its batch."""
    keys = list(keys)
    require_columns(df, [*keys, *([spread_of] if spread_of else [])], what)
    rows, value = "_sparkfs_rows", "_sparkfs_value"  # not "count": a key column may be called that
    # Once the keys are unique, a key's one row holds its value (min of one row; a null stays null).
    carried = [F.min(spread_of).alias(value)] if spread_of else []
    per_key = df.groupBy(*keys).agg(F.count(F.lit(1)).alias(rows), *carried)
    spread = Spread.aggregates(value) if spread_of else []
    summary = per_key.agg(F.sum(rows).alias("rows"), F.count_if(F.col(rows) > 1).alias("duplicated"), *spread).first()
    assert summary is not None
    if summary["duplicated"]:
        dupes = per_key.where(F.col(rows) > 1).limit(DUPLICATE_EXAMPLES).collect()
        examples = [{k: row[k] for k in keys} | {"rows": row[rows]} for row in dupes]
        because = f" and {hint}" if hint else ""
        raise DuplicateKeyError(
            f"{what} has more than one row per key {keys}{because}; examples: {examples}"
        )
    return int(summary["rows"] or 0), Spread.of(summary) if spread_of else None
