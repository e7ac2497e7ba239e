"""Training-serving skew: the features a model was trained on against the ones scoring builds now.

Example::

    report = skew_check(lake, config, model, sample_rows=200)
    report.identical, report.describe()
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import SchemaMismatchError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.ml.assembly import (
    SPEC_ARTIFACT,
    SPINE_ARTIFACT,
    build_features,
    build_spine,
    with_model_rule,
)
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.score import ScoringModel
from sparkfs.pit.api import rebuild_training_set


@dataclass(frozen=True)
class SkewReport:
    """Feature-by-feature comparison of training rows with the same rows built for inference."""

    rows_compared: int
    missing_in_inference: int
    missing_in_training: int
    mismatched_rows: dict[str, int]
    type_mismatches: dict[str, tuple[str, str]]
    examples: list[dict[str, Any]]

    @property
    def identical(self) -> bool:
        return not (self.missing_in_inference or self.missing_in_training
                    or any(self.mismatched_rows.values()) or self.type_mismatches)

    def describe(self) -> str:
        if self.identical:
            return f"no training-serving skew: {self.rows_compared} rows identical on every feature"
        differing = {c: n for c, n in self.mismatched_rows.items() if n}
        return (
            f"training-serving skew on {self.rows_compared} rows compared: differing rows per "
            f"feature {differing}, types {self.type_mismatches}, rows only in training "
            f"{self.missing_in_inference}, only in inference {self.missing_in_training}; "
            f"examples {self.examples}"
        )


def compare_features(
    training_df: DataFrame, inference_df: DataFrame, keys: Sequence[str], features: Sequence[str]
) -> SkewReport:
    """Exact, null-safe comparison of ``features`` for rows matched on ``keys``.

    Runs in Spark; only counts and at most 5 example rows come back. Types must match too
    (an int feature at training and a double at inference is skew, even if values agree).
    """
    for what, frame in (("training rows", training_df), ("inference rows", inference_df)):
        require_columns(frame, [*keys, *features], f"the {what} for the skew check")
    train_types, infer_types = dict(training_df.dtypes), dict(inference_df.dtypes)
    type_mismatches = {
        c: (train_types[c], infer_types[c]) for c in features if train_types[c] != infer_types[c]
    }
    left = training_df.select(*keys, *features, F.lit(True).alias("_in_training"))
    right = inference_df.select(
        *[F.col(c).alias(f"_i_{c}") for c in [*keys, *features]], F.lit(True).alias("_in_inference")
    )
    on = [F.col(k).eqNullSafe(F.col(f"_i_{k}")) for k in keys]
    joined = left.join(right, on=on, how="full_outer")
    both = F.col("_in_training").isNotNull() & F.col("_in_inference").isNotNull()
    differs = {c: both & ~F.col(c).eqNullSafe(F.col(f"_i_{c}")) for c in features}
    stats = joined.agg(
        F.count_if(both).alias("_rows"),
        F.count_if(F.col("_in_inference").isNull()).alias("_only_training"),
        F.count_if(F.col("_in_training").isNull()).alias("_only_inference"),
        *[F.count_if(cond).alias(f"_d_{c}") for c, cond in differs.items()],
    ).first()
    assert stats is not None
    any_diff = F.lit(False)
    for cond in differs.values():
        any_diff = any_diff | cond
    examples = [r.asDict() for r in joined.where(any_diff).limit(5).collect()] if features else []
    return SkewReport(
        rows_compared=int(stats["_rows"]),
        missing_in_inference=int(stats["_only_training"]),
        missing_in_training=int(stats["_only_inference"]),
        mismatched_rows={c: int(stats[f"_d_{c}"]) for c in features},
        type_mismatches=type_mismatches,
        examples=examples,
    )


def skew_check(
    lake: Lakehouse, config: TrainingConfig, model: ScoringModel, sample_rows: int
) -> SkewReport:
    """Compare, for a sample of the model's training flights, the feature vector the model was
    trained on with the one the inference path builds now.

    The training rows are rebuilt exactly from the run's lineage (the spine table at its recorded
    Delta version, every feature table at the version in the training-set spec); the inference
    rows go through :func:`build_spine` without labels and :func:`build_features`, as
    ``infer_job`` does. A difference means code skew, or feature rows changed since training
    (late corrections). The sample is deterministic: the ``sample_rows`` flights with the
    smallest key hash. Both sides use the model's own prediction-time rule. Cost: one rebuild of
    the training set.
    """
    config = with_model_rule(config, model.tags)
    if model.run_id is None:
        raise SchemaMismatchError(f"{model.name} version {model.version} has no training run")
    spec = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPEC_ARTIFACT}")
    spine = mlflow.artifacts.load_dict(f"runs:/{model.run_id}/{SPINE_ARTIFACT}")
    keys = [*config.keys, config.timestamp]
    training_spine = build_spine(
        lake, config, date.fromisoformat(spine["start"]), date.fromisoformat(spine["end"]),
        labelled=True, version=spine.get("version"),
    )
    trained = rebuild_training_set(lake, spec, spine=training_spine).df
    sample = trained.orderBy(F.xxhash64(*keys), *keys).limit(sample_rows).persist()
    try:
        days = sample.agg(F.min(F.to_date(config.timestamp)), F.max(F.to_date(config.timestamp))).first()
        assert days is not None
        day_spine = build_spine(lake, config, days[0], days[1], labelled=False)
        inference_spine = day_spine.join(sample.select(*keys), on=keys, how="left_semi")
        inference_df = build_features(lake, config, inference_spine, label=None).df
        return compare_features(sample, inference_df, keys, model.input_columns)
    finally:
        sample.unpersist()
