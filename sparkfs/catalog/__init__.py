"""The catalog room: find a feature, see which models use it, keep the tables fast and rebuildable.

- :mod:`~sparkfs.catalog.entries`: feature tables and features with docs, freshness and shape;
- :mod:`~sparkfs.catalog.usage`: registered model versions and the tables / features they read.
"""

from __future__ import annotations

from sparkfs.catalog.entries import (
    FeatureEntry,
    TableEntry,
    describe_table,
    describe_tables,
    features_df,
    find,
    sample,
    search_features,
    tables_df,
)
from sparkfs.catalog.usage import ModelUse, model_uses

__all__ = [
    "FeatureEntry",
    "ModelUse",
    "TableEntry",
    "describe_table",
    "describe_tables",
    "features_df",
    "find",
    "model_uses",
    "sample",
    "search_features",
    "tables_df",
]
