"""A model's monitoring reference, made from its test split when it is trained and logged with it.

Three MLflow artifacts of the training run, next to the pyfunc (under ``monitoring/``):

- ``reference.json``: what was profiled (inputs, score, prediction and label columns, the
  problem type) and the test split's realized metrics (the level an estimate is compared with);
- ``reference_profile.json``: the :class:`~sparkfs.monitoring.profile.ReferenceProfile` of the
  inputs and the score (bins, category counts, null shares) that PSI / JS / chi-squared use;
- ``reference_rows.parquet``: the test split's inputs and score (bounded by the training run's
  ``max_rows``), which the exact KS test compares a day with;
- ``performance_estimator.pkl``: NannyML's CBPE (classification) or DLE (regression) fitted on
  the test split's probabilities and labels.

Example::

    reference = build_reference(spark, scored_test_pdf, numeric=["distance"], categorical=["carrier"],
                                score="probability", prediction="prediction", label="is_arr_delayed",
                                problem="classification", metrics={"roc_auc": 0.71})
    log_reference(reference)            # inside the training run
    load_reference(run_id)              # in the monitor job, by the registered version's run
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict
from pyspark.sql import DataFrame, SparkSession

from sparkfs.monitoring.drift import day_to_day_highs
from sparkfs.monitoring.performance import estimator_bytes, estimator_from_bytes, fit_estimator
from sparkfs.monitoring.profile import ReferenceProfile, profile_reference

FOLDER = "monitoring"
META_ARTIFACT = f"{FOLDER}/reference.json"
PROFILE_ARTIFACT = f"{FOLDER}/reference_profile.json"
ROWS_ARTIFACT = f"{FOLDER}/reference_rows.parquet"
ESTIMATOR_ARTIFACT = f"{FOLDER}/performance_estimator.pkl"
DAY = "__sparkfs_day"


class ReferenceSpec(BaseModel):
    """What the reference holds and how the model's rows name it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem: str
    numeric: list[str]
    categorical: list[str]
    score: str
    prediction: str
    label: str
    rows: int
    metrics: dict[str, float]  # the test split's realized metrics
    # metric -> column -> the highest value one of the test split's days reached against the
    # whole split (drift.day_to_day_highs); empty for a reference made without days.
    day_to_day: dict[str, dict[str, float]] = {}

    @property
    def profiled(self) -> list[str]:
        """Every column drift is measured on: the inputs and the score."""
        return [*self.numeric, *self.categorical, self.score]


@dataclass(frozen=True)
class ModelReference:
    spec: ReferenceSpec
    profile: ReferenceProfile
    rows: pd.DataFrame   # the test split's inputs, score, prediction and label
    estimator: Any       # a fitted nannyml CBPE or DLE


def build_reference(
    spark: SparkSession,
    scored: pd.DataFrame,
    *,
    numeric: Sequence[str],
    categorical: Sequence[str],
    score: str,
    prediction: str,
    label: str,
    problem: str,
    metrics: Mapping[str, float],
    day: pd.Series | None = None,
) -> ModelReference:
    """Profile the scored test split's inputs and score, and fit the performance estimator.
    ``day`` (one value per row of ``scored``, e.g. the date of its prediction time) also measures
    the split's day-to-day spread (:func:`~sparkfs.monitoring.drift.day_to_day_highs`)."""
    columns = list(dict.fromkeys([*numeric, *categorical, score, prediction, label]))
    rows = scored[columns].reset_index(drop=True)
    days = [] if day is None else [DAY]
    frame = rows.assign(**{DAY: day.astype(str).to_numpy()}) if day is not None else rows
    rows_df = to_spark(spark, frame, [*numeric, score], [*categorical, *days]).persist()
    try:
        profile = profile_reference(rows_df, numeric=[*numeric, score], categorical=categorical)
        highs = day_to_day_highs(rows_df, profile, chunk_by=DAY) if days else {}
    finally:
        rows_df.unpersist()
    spec = ReferenceSpec(problem=problem, numeric=list(numeric), categorical=list(categorical), score=score,
                         prediction=prediction, label=label, rows=len(rows),
                         metrics={k: float(v) for k, v in metrics.items()}, day_to_day=highs)
    estimator = fit_estimator(rows, problem=problem, score=score, prediction=prediction, label=label,
                              features=[*numeric, *categorical])
    return ModelReference(spec, profile, rows, estimator)


def log_reference(reference: ModelReference) -> None:
    """Log the reference's artifacts into the active MLflow run (see the module docstring)."""
    mlflow.log_text(reference.spec.model_dump_json(indent=2), META_ARTIFACT)
    mlflow.log_text(reference.profile.to_json(), PROFILE_ARTIFACT)
    with tempfile.TemporaryDirectory() as folder:
        rows_path = Path(folder) / Path(ROWS_ARTIFACT).name
        reference.rows.to_parquet(rows_path, index=False)
        estimator_path = Path(folder) / Path(ESTIMATOR_ARTIFACT).name
        estimator_path.write_bytes(estimator_bytes(reference.estimator))
        mlflow.log_artifact(str(rows_path), FOLDER)
        mlflow.log_artifact(str(estimator_path), FOLDER)


def load_reference(run_id: str) -> ModelReference | None:
    """The reference logged by training run ``run_id``; None when the run logged none (a model
    trained before monitoring existed, or by code that did not log one)."""
    try:
        spec_text = mlflow.artifacts.load_text(f"runs:/{run_id}/{META_ARTIFACT}")
    except (MlflowException, OSError):
        return None
    spec = ReferenceSpec.model_validate_json(spec_text)
    profile = ReferenceProfile.from_json(mlflow.artifacts.load_text(f"runs:/{run_id}/{PROFILE_ARTIFACT}"))
    with tempfile.TemporaryDirectory() as folder:
        rows_path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ROWS_ARTIFACT}", dst_path=folder)
        rows = pd.read_parquet(rows_path)
        estimator_path = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{ESTIMATOR_ARTIFACT}",
                                                             dst_path=folder)
        estimator = estimator_from_bytes(Path(estimator_path).read_bytes())
    return ModelReference(spec, profile, rows, estimator)


def to_spark(spark: SparkSession, frame: pd.DataFrame, numeric: Sequence[str], categorical: Sequence[str]) -> DataFrame:
    """``numeric`` (as double) and ``categorical`` (as string) columns of a pandas frame in Spark,
    with every missing value (NaN, None, pd.NA) a null: Spark keeps a pandas NaN as a NaN value,
    which would count as a value, not a null, in the profile."""
    columns = [*numeric, *categorical]
    schema = ", ".join([*(f"`{c}` double" for c in numeric), *(f"`{c}` string" for c in categorical)])
    cast = {c: frame[c].astype("float64") for c in numeric} | {c: frame[c].astype(object) for c in categorical}
    plain = pd.DataFrame(cast)[columns].astype(object)
    records = plain.where(plain.notna(), None).itertuples(index=False, name=None)
    return spark.createDataFrame([tuple(r) for r in records], schema)
