"""Column helpers shared by the point-in-time plans (Column -> Column, no DataFrames)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column
from pyspark.sql import functions as F


def column(name: str) -> Column:
    """The column called ``name``, taken literally.

    ``F.col("meta.src")`` reads field ``src`` of a struct ``meta``; a user's column name may hold
    a dot (or a backtick), so every name the join did not make itself is quoted.
    """
    return F.col("`" + name.replace("`", "``") + "`")


def all_of(conditions: Sequence[Column]) -> Column:
    """The conjunction of ``conditions`` (at least one)."""
    return reduce(lambda a, b: a & b, conditions)
