"""Input checks shared by every room: say what was expected and what was found."""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame

from sparkfs.core.errors import SchemaMismatchError


def require_columns(df: DataFrame, required: Sequence[str], what: str = "the DataFrame") -> None:
    """Raise :class:`SchemaMismatchError` naming the missing columns and the ones ``df`` has."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise SchemaMismatchError(f"missing columns {missing} in {what}; it has {sorted(df.columns)}")
