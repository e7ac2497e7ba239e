"""Logging a training run to MLflow: params, metrics, plots, lineage, the packaged model.

One function, :func:`log_training_run`, writes everything a later reader (a person in the MLflow
UI, the skew check, a rebuild of the training set) needs about the run, and registers the model
under its alias only when the gate passed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.pandas_dataset import from_pandas
from mlflow.tracking import MlflowClient
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from sparkfs import __version__
from sparkfs.ml.assembly import PREDICTION_TIME_TAG, SPEC_ARTIFACT, SPINE_ARTIFACT
from sparkfs.ml.collect import SplitFrames
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.evaluation import Evaluation, GateResult, SliceEvaluation, slices_table
from sparkfs.ml.fit import DEFAULT_XGB_PARAMS
from sparkfs.ml.model import PREDICTION, PROBABILITY, PackagedModel, model_signature
from sparkfs.ml.splits import SplitBoundaries
from sparkfs.ml.tracking import register_with_alias
from sparkfs.pit.spec import TrainingSetSpec


@dataclass(frozen=True)
class HoldoutResults:
    """How the model and the baseline did on the test split, and what the gate decided."""

    scored: pd.DataFrame  # the test rows with the model's probability
    model: Evaluation
    baseline: Evaluation
    slices: list[SliceEvaluation]
    gate: GateResult


class TrainingSetSource(DatasetSource):
    """Where a logged training set came from: its :class:`TrainingSetSpec` (spine, every feature
    table and the Delta version read), so a reader of the run's inputs can rebuild it with
    :func:`~sparkfs.pit.api.rebuild_training_set`."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self._spec = dict(spec)

    @staticmethod
    def _get_source_type() -> str:
        return "sparkfs_training_set"

    def load(self, **kwargs: Any) -> Any:
        raise NotImplementedError("rebuild it: sparkfs.rebuild_training_set(lake, spec)")

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False

    @classmethod
    def _resolve(cls, raw_source: Any) -> TrainingSetSource:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"training_set_spec": self._spec}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> TrainingSetSource:
        return cls(source_dict["training_set_spec"])


TestSplitHook = Callable[[pd.DataFrame, Evaluation], None]
"""Called inside the training run of a model that passed the gate, after the model is logged and
before it is registered, with
the scored test split (features, label, ``probability``, ``prediction``) and its evaluation:
where the jobs layer logs the model's monitoring reference next to the pyfunc."""


@dataclass(frozen=True)
class LoggedRun:
    run_id: str
    model_uri: str
    registered_version: str | None


def log_training_run(
    *,
    model: PackagedModel,
    frames: SplitFrames,
    results: HoldoutResults,
    config: TrainingConfig,
    name: str,
    boundaries: SplitBoundaries,
    spec: TrainingSetSpec,
    spine_source: Mapping[str, Any] | None,
    start: date,
    end: date,
    on_test_split: TestSplitHook | None = None,
) -> LoggedRun:
    """One MLflow run: params, row counts, test / baseline / slice metrics, plots, the training-set
    spec and spine (lineage), the gate's verdict, every read table's Delta version as a tag, and
    the pyfunc with its signature. Registers ``name@alias`` only when the gate passed."""
    label, gate, booster = config.label, results.gate, model.booster
    table_versions = {**spec.table_versions(), **_spine_version(spine_source)}
    prediction_time = json.dumps(config.prediction_time.model_dump(mode="json"), sort_keys=True)
    with mlflow.start_run(run_name=f"train-{end.isoformat()}") as run:
        mlflow.log_params({
            "model_name": name, "alias": config.alias, "label": label,
            "features_numeric": ",".join(config.features.numeric),
            "features_categorical": ",".join(config.features.categorical),
            "window_start": start.isoformat(), "window_end": end.isoformat(),
            "gap": str(config.split.gap), "max_rows": config.max_rows,
            "prediction_time": prediction_time,
            "threshold": round(model.threshold, 6), "best_iteration": booster.num_boosted_rounds() - 1,
            "baseline": f"positive rate by {config.baseline.column}",
            "gate": json.dumps(config.gate.model_dump()),
            **{f"xgb_{k}": v for k, v in {**DEFAULT_XGB_PARAMS, **config.xgboost.params}.items()},
            **boundaries.as_params(),
        })
        mlflow.log_metrics({f"rows_{k}": float(v) for k, v in frames.counts.items()})
        mlflow.log_metrics(results.model.flat("test"))
        mlflow.log_metrics(results.baseline.flat("baseline"))
        mlflow.log_metrics({
            _metric_key(f"slice_{s.column}_{s.value}_{m}"): v
            for s in results.slices for m, v in s.evaluation.metrics.items() if np.isfinite(v)
        })
        mlflow.log_table(slices_table(results.slices), "evaluation/slice_metrics.json")
        for file, figure in _plots(results.scored, label, booster).items():
            mlflow.log_figure(figure, f"plots/{file}")
        mlflow.log_dict(spec.to_dict(), SPEC_ARTIFACT)
        _log_training_inputs(frames, spec, name, label)
        mlflow.log_dict({**(spine_source or {}), "start": start.isoformat(), "end": end.isoformat(),
                         "prediction_time": json.loads(prediction_time)}, SPINE_ARTIFACT)
        mlflow.log_dict({"passed": gate.passed, "reasons": gate.reasons, "checks": gate.checks},
                        "evaluation/gate.json")
        lineage_tags = {
            "sparkfs.version": __version__,
            "sparkfs.gate": "passed" if gate.passed else "failed",
            # The rule scoring must serve this model with (read back by assembly.with_model_rule).
            PREDICTION_TIME_TAG: prediction_time,
            **{f"sparkfs.table_version.{t}": str(v) for t, v in table_versions.items()},
        }
        if gate.reasons:
            lineage_tags["sparkfs.gate_reasons"] = "; ".join(gate.reasons)[:4900]
        mlflow.set_tags(lineage_tags)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=model,
            signature=model_signature(config.features.numeric, config.features.categorical),
            input_example=frames.train[config.feature_columns].head(5),
            pip_requirements=_pip_requirements(),
        )
        if on_test_split is not None and gate.passed:  # a rejected model is never monitored
            scored = results.scored.assign(**{
                PREDICTION: (results.scored[PROBABILITY] >= model.threshold).astype("int32")})
            on_test_split(scored, results.model)
        registered: str | None = None
        if gate.passed:
            version = register_with_alias(
                info.model_uri, name, config.alias,
                tags={**lineage_tags, "sparkfs.run_id": run.info.run_id},
            )
            registered = str(version.version)
            MlflowClient().update_model_version(
                name, registered, version_description(config, boundaries, gate, frames.counts))
            mlflow.set_tag("sparkfs.registered_version", registered)
    return LoggedRun(run.info.run_id, info.model_uri, registered)


def _log_training_inputs(frames: SplitFrames, spec: TrainingSetSpec, name: str, label: str) -> None:
    """The rows each split trained or was measured on, as MLflow dataset inputs (context = the
    split), their source the training-set spec. MLflow stores a digest, schema and row count,
    not the rows."""
    source = TrainingSetSource(spec.to_dict())
    for split, rows in (("train", frames.train), ("validation", frames.validation), ("test", frames.test)):
        dataset = from_pandas(rows, source=source, targets=label, name=f"{name}-{split}")
        mlflow.log_input(dataset, context=split)


def version_description(
    config: TrainingConfig, boundaries: SplitBoundaries, gate: GateResult, counts: Mapping[str, int]
) -> str:
    """What a registered model version predicts, the window it was trained on, and the gate.

    Example::

        version_description(config, boundaries, gate, frames.counts)
        # 'Predicts is_arr_delayed: 1 when arr_delay > 15, per (carrier, flight, origin) at ...'
    """
    rule = config.spine.label
    b = boundaries
    return (
        f"Predicts {config.label}: 1 when {rule.column} > {rule.above:g}, per "
        f"({', '.join(config.keys)}) at {config.timestamp}, from features looked up as of "
        f"{config.lookup_timestamp}. Trained on {b.start:%Y-%m-%d %H:%M} to "
        f"{b.train_end:%Y-%m-%d %H:%M} UTC ({counts.get('train_rows', 0)} rows), validated to "
        f"{b.validation_end:%Y-%m-%d %H:%M}, tested on {b.test_start:%Y-%m-%d %H:%M} to "
        f"{b.end:%Y-%m-%d %H:%M} ({counts.get('test_rows', 0)} rows). Gate "
        f"{'passed' if gate.passed else 'failed'}: {gate.checks[0] if gate.checks else 'no checks'}."
    )


def _spine_version(spine_source: Mapping[str, Any] | None) -> dict[str, int]:
    """The spine table's Delta version, when the spine was read from a table."""
    if spine_source and isinstance(spine_source.get("table"), str) and isinstance(spine_source.get("version"), int):
        return {spine_source["table"]: spine_source["version"]}
    return {}


def _metric_key(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_ - . /`` and spaces."""
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def _pip_requirements() -> list[str]:
    """Pinned from the running environment (no slow requirement inference at log time)."""
    import sklearn

    return [
        f"mlflow=={mlflow.__version__}", f"xgboost=={xgb.__version__}", f"pandas=={pd.__version__}",
        f"numpy=={np.__version__}", f"scikit-learn=={sklearn.__version__}", f"sparkfs=={__version__}",
    ]


def _plots(test: pd.DataFrame, label: str, booster: xgb.Booster) -> dict[str, Figure]:
    y, p = test[label].to_numpy(), test[PROBABILITY].to_numpy()
    roc = Figure(figsize=(5, 5))
    ax = roc.subplots()
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test split)")
    ax.legend(loc="lower right")

    calibration = Figure(figsize=(5, 5))
    ax = calibration.subplots()
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    ax.plot(predicted, observed, marker="o", label="model")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    ax.set(xlabel="mean predicted probability", ylabel="observed late rate",
           title="Calibration (test split, deciles)")
    ax.legend(loc="upper left")

    importance = Figure(figsize=(6, 6))
    ax = importance.subplots()
    gains = booster.get_score(importance_type="gain")
    ordered = sorted(gains.items(), key=lambda kv: kv[1])[-25:]
    ax.barh([k for k, _ in ordered], [v for _, v in ordered])
    ax.set(xlabel="average gain per split", title="Feature importance (gain)")
    importance.tight_layout()
    return {"roc.png": roc, "calibration.png": calibration, "feature_importance.png": importance}
