"""Row selection shared by every layer: the latest row(s) of each key, one rule for all.

"Latest per key" is the same question in silver (the latest delivery of a row), in the MERGE
writer (the highest sequence value of a batch) and in the transformation library; the answers
differ only in what happens on a tie and to rows without a key, so those are the options.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce
from typing import Literal

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import SchemaMismatchError

_FLAG = "_sparkfs_is_latest"


def tie_message(what: str, columns: Sequence[str], hint: str) -> Column:
    """A runtime error message naming the tied row's values, e.g.
    ``DuplicateKeyError: latest_per_key: two rows tie on (key=a, ts=2024-03-01 10:00:00); ...``.

    For ``F.raise_error``: a tie found inside a query fails it with the values of the tie.
    """
    values = [
        F.concat(F.lit(f"{c}="), F.coalesce(F.col(c).cast("string"), F.lit("NULL"))) for c in columns
    ]
    return F.concat(
        F.lit(f"DuplicateKeyError: {what}: two rows tie on ("),
        F.concat_ws(", ", *values),
        F.lit(f"); {hint}"),
    )


def latest_rows(
    df: DataFrame,
    keys: Sequence[str],
    order_by: Sequence[str],
    *,
    ties: Literal["fail", "keep"],
    null_keys: Literal["group", "keep"] = "group",
    what: str = "latest_rows",
    tie_hint: str = "the latest row is ambiguous",
) -> DataFrame:
    """The rows of ``df`` that are the latest of their key: highest ``order_by`` (compared column
    by column, descending; a null value ranks lowest).

    ``ties`` says what happens when several rows of a key share the highest ``order_by``:

    - ``"fail"``: exactly one row per key; a tie of the winner fails the query at execution with
      a Spark runtime error starting ``DuplicateKeyError`` that names the tied values (see
      :func:`tie_message`, with ``tie_hint`` as its advice). Ties among older rows are fine.
    - ``"keep"``: every tied winner is kept, for a later check to judge (silver keeps all rows of
      the latest delivery so in-delivery duplicates reach validation; the MERGE writer names
      examples with :func:`~sparkfs.core.checks.require_unique`).

    ``null_keys`` says what a null key is: ``"group"`` (a key value like any other, as in the
    null-safe match of the MERGE writer) or ``"keep"`` (rows with any null key belong to no
    entity: all of them are kept, none supersedes another).

    Example: ``latest_rows(updates_df, ["tailnum"], ["updated_at"], ties="fail")``.
    """
    keys, order_by = list(keys), list(order_by)
    if not keys or not order_by:
        raise ValueError(f"{what}: needs keys and order columns; got keys {keys}, order_by {order_by}")
    if ties not in ("fail", "keep") or null_keys not in ("group", "keep"):
        raise ValueError(
            f"{what}: ties must be 'fail' or 'keep' and null_keys 'group' or 'keep'; "
            f"got ties={ties!r}, null_keys={null_keys!r}"
        )
    require_columns(df, [*keys, *order_by], f"the input of {what}")
    if _FLAG in df.columns:
        raise SchemaMismatchError(f"{what}: column {_FLAG!r} is reserved; rename it")
    ranked = Window.partitionBy(*keys).orderBy(*[F.col(c).desc_nulls_last() for c in order_by])
    if ties == "keep":
        is_latest = F.rank().over(ranked) == 1
    else:
        first = F.row_number().over(ranked) == 1
        runner_up_ties = reduce(
            lambda acc, c: acc & F.lead(F.col(c), 1).over(ranked).eqNullSafe(F.col(c)),
            order_by,
            F.lead(F.lit(True), 1).over(ranked).isNotNull(),
        )
        error = F.raise_error(tie_message(what, [*keys, *order_by], tie_hint))
        is_latest = F.when(first & runner_up_ties, error).otherwise(first)
    if null_keys == "keep":
        has_keys = reduce(lambda acc, k: acc & F.col(k).isNotNull(), keys, F.lit(True))
        is_latest = ~has_keys | is_latest
    # Spark allows window functions in a projection, not in a filter: flag, filter, drop.
    return df.withColumn(_FLAG, is_latest).where(F.col(_FLAG)).drop(_FLAG)
