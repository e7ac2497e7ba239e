"""Column helpers shared by the point-in-time plans (Column -> Column, no DataFrames)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import reduce

from pyspark.sql import Column


def all_of(conditions: Sequence[Column]) -> Column:
    """The conjunction of ``conditions`` (at least one)."""
    return reduce(lambda a, b: a & b, conditions)
