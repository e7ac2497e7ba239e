"""sparkfs: batch feature engineering on PySpark + Delta Lake.

Importing sparkfs has no side effects: nothing starts a SparkSession until you call
:func:`get_spark`.
"""

from __future__ import annotations

from sparkfs.config import Settings, load_settings
from sparkfs.errors import (
    ConfigError,
    DeltaJarsUnavailableError,
    DuplicateKeyError,
    EnvironmentSetupError,
    JavaNotFoundError,
    JavaVersionError,
    SchemaMismatchError,
    SparkfsError,
    TableNotFoundError,
)
from sparkfs.lakehouse import Lakehouse, open_lakehouse
from sparkfs.merge import MergeResult, merge_upsert
from sparkfs.point_in_time import (
    FeatureLookup,
    TrainingSet,
    as_of_join,
    create_training_set,
    rebuild_training_set,
)
from sparkfs.runs import record_run
from sparkfs.session import get_spark

__all__ = [
    "ConfigError",
    "DeltaJarsUnavailableError",
    "DuplicateKeyError",
    "EnvironmentSetupError",
    "JavaNotFoundError",
    "JavaVersionError",
    "Lakehouse",
    "MergeResult",
    "SchemaMismatchError",
    "Settings",
    "SparkfsError",
    "TableNotFoundError",
    "get_spark",
    "load_settings",
    "merge_upsert",
    "open_lakehouse",
    "record_run",
    "FeatureLookup",
    "TrainingSet",
    "as_of_join",
    "create_training_set",
    "rebuild_training_set",
]
__version__ = "0.1.0"
