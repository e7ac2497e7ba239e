"""sparkfs: batch feature engineering on PySpark + Delta Lake.

What a notebook or a script needs, in the order data flows:

- the lakehouse: :func:`connect` (settings, session and tables in one call), or step by step
  :func:`load_settings`, :func:`get_spark`, :func:`open_lakehouse`;
  :class:`Lakehouse`, the one MERGE writer :func:`merge_upsert`, :func:`record_run`;
- point-in-time training sets: :class:`FeatureLookup`, :func:`create_training_set`,
  :func:`rebuild_training_set`, :class:`TrainingSet` / :class:`TrainingSetSpec`, :func:`as_of_join`
  (the names follow Databricks Feature Engineering where the concept is the same);
- models: :func:`load_training_config`, :func:`build_spine` / :func:`build_features` (the rows
  training and scoring share), :func:`train_model`, :func:`load_scoring_model`,
  :func:`score_batch`.

Importing sparkfs has no side effects and stays light: every name above is imported on first
use (pyspark with the first lakehouse name, MLflow and XGBoost with the first model function),
and nothing starts a SparkSession until you call :func:`connect` or :func:`get_spark`.

Example::

    import sparkfs

    lake = sparkfs.connect()
    ts = sparkfs.create_training_set(
        lake, spine_df, [sparkfs.FeatureLookup("carrier_delays", ["carrier"])],
        label="is_arr_delayed", timestamp_key="sched_dep_ts",
    )
"""

from __future__ import annotations

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sparkfs.core.config import Settings, load_settings
    from sparkfs.core.connect import connect
    from sparkfs.core.errors import (
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
    from sparkfs.core.lakehouse import Lakehouse, open_lakehouse
    from sparkfs.core.merge import MergeResult, merge_upsert
    from sparkfs.core.runs import RunWindow, record_run
    from sparkfs.core.session import get_spark
    from sparkfs.ml.assembly import build_features, build_spine
    from sparkfs.ml.config import TrainingConfig, load_training_config
    from sparkfs.ml.score import ScoringModel, load_scoring_model, score_batch
    from sparkfs.ml.train import TrainingResult, train_model
    from sparkfs.pit.api import (
        FeatureLookup,
        TrainingSet,
        as_of_join,
        create_training_set,
        rebuild_training_set,
    )
    from sparkfs.pit.spec import TrainingSetSpec

# Every public name is imported on first use: `import sparkfs` (and the `sparkfs` command, which
# checks its arguments before anything else) must not pay for pyspark, MLflow or XGBoost.
_ERRORS = ("ConfigError", "DeltaJarsUnavailableError", "DuplicateKeyError", "EnvironmentSetupError",
           "JavaNotFoundError", "JavaVersionError", "SchemaMismatchError", "SparkfsError",
           "TableNotFoundError")
_LAZY = {
    **dict.fromkeys(_ERRORS, "sparkfs.core.errors"),
    "Settings": "sparkfs.core.config",
    "load_settings": "sparkfs.core.config",
    "Lakehouse": "sparkfs.core.lakehouse",
    "open_lakehouse": "sparkfs.core.lakehouse",
    "MergeResult": "sparkfs.core.merge",
    "merge_upsert": "sparkfs.core.merge",
    "RunWindow": "sparkfs.core.runs",
    "record_run": "sparkfs.core.runs",
    "get_spark": "sparkfs.core.session",
    "connect": "sparkfs.core.connect",
    "FeatureLookup": "sparkfs.pit.api",
    "TrainingSet": "sparkfs.pit.api",
    "as_of_join": "sparkfs.pit.api",
    "create_training_set": "sparkfs.pit.api",
    "rebuild_training_set": "sparkfs.pit.api",
    "TrainingSetSpec": "sparkfs.pit.spec",
    "TrainingConfig": "sparkfs.ml.config",
    "load_training_config": "sparkfs.ml.config",
    "build_spine": "sparkfs.ml.assembly",
    "build_features": "sparkfs.ml.assembly",
    "train_model": "sparkfs.ml.train",
    "TrainingResult": "sparkfs.ml.train",
    "ScoringModel": "sparkfs.ml.score",
    "load_scoring_model": "sparkfs.ml.score",
    "score_batch": "sparkfs.ml.score",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sparkfs' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "ConfigError",
    "DeltaJarsUnavailableError",
    "DuplicateKeyError",
    "EnvironmentSetupError",
    "FeatureLookup",
    "JavaNotFoundError",
    "JavaVersionError",
    "Lakehouse",
    "MergeResult",
    "RunWindow",
    "SchemaMismatchError",
    "ScoringModel",
    "Settings",
    "SparkfsError",
    "TableNotFoundError",
    "TrainingConfig",
    "TrainingResult",
    "TrainingSet",
    "TrainingSetSpec",
    "as_of_join",
    "build_features",
    "build_spine",
    "connect",
    "create_training_set",
    "get_spark",
    "load_scoring_model",
    "load_settings",
    "load_training_config",
    "merge_upsert",
    "open_lakehouse",
    "rebuild_training_set",
    "record_run",
    "score_batch",
    "train_model",
]
