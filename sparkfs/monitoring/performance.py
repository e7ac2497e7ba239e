"""Performance before the labels arrive: NannyML's CBPE (classification) or DLE (regression),
fitted once on the model's test split at training time, then asked about a day of predictions.

CBPE (confidence-based performance estimation) calibrates the test split's probabilities
against its labels; on a day without labels it estimates the confusion matrix, and so ROC AUC,
from the calibrated probabilities alone. It stays right under covariate shift, not under concept
shift (``P(y | x)`` changing): the realized metrics, once the labels land, are the check on it.
DLE (direct loss estimation) does the same for regression by learning the loss from the inputs.

The estimator is pickled (a few KB) and logged with the model; :func:`estimate_performance`
takes a bounded pandas frame (a seeded sample of the day above ``max_rows``, see
:func:`bounded_sample`), so the driver's memory does not grow with the day.

Example::

    estimator = fit_estimator(test_pdf, problem="classification", score="probability",
                              prediction="prediction", label="is_arr_delayed")
    estimate_performance(estimator, day_pdf)[0]   # roc_auc 0.71 [0.68, 0.74] on 812 rows
"""

from __future__ import annotations

import math
import os
import pickle
import sys
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import ConfigError, SchemaMismatchError

CLASSIFICATION, REGRESSION = "classification", "regression"
METRICS = {CLASSIFICATION: ["roc_auc", "f1"], REGRESSION: ["rmse", "mae"]}
METHODS = {CLASSIFICATION: "cbpe", REGRESSION: "dle"}


def problem_of(objective: str) -> str:
    """The problem an XGBoost objective solves: ``binary:*`` / ``multi:*`` are classification,
    ``reg:*`` (and ``count:``, ``survival:``) regression; so CBPE or DLE follows the model type."""
    if objective.startswith(("binary:", "multi:")):
        return CLASSIFICATION
    if objective.startswith(("reg:", "count:", "survival:")):
        return REGRESSION
    raise ConfigError(f"cannot tell the problem type of the XGBoost objective {objective!r}: "
                      "expected binary:*, multi:* (classification) or reg:*, count:*, survival:* (regression)")


def nannyml() -> ModuleType:
    """``import nannyml`` without its side effects on Spark.

    nannyml sends usage statistics to segment.io unless ``NML_DISABLE_USAGE_LOGGING`` is set: a
    pipeline does not phone home, so it is set (when unset) before the import.

    nannyml imports flaml, which at import turns the active session's ``spark.sql.ansi.enabled``
    off and, through ``pyspark.pandas``, starts a session when none is active. pyspark.pandas is
    hidden during the import (flaml works without it) and the ANSI setting is put back.
    """
    if "nannyml" in sys.modules:
        return sys.modules["nannyml"]
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
    active = SparkSession.getActiveSession()
    ansi = active.conf.get("spark.sql.ansi.enabled") if active is not None else None
    hide = "pyspark.pandas" not in sys.modules
    if hide:
        sys.modules["pyspark.pandas"] = None  # type: ignore[assignment]  # import -> ImportError
    try:
        import nannyml as module
    finally:
        if hide:
            del sys.modules["pyspark.pandas"]
        if active is not None and ansi is not None:
            active.conf.set("spark.sql.ansi.enabled", ansi)
    return module


def fit_estimator(
    reference: pd.DataFrame,
    *,
    problem: str,
    score: str,
    prediction: str,
    label: str,
    features: Sequence[str] = (),
) -> Any:
    """CBPE (``problem="classification"``: ``score`` is the probability of class 1, ``prediction``
    the thresholded class) or DLE (``"regression"``: ``prediction`` is the predicted value, the
    ``features`` are what it learns the loss from), fitted on the labelled ``reference`` rows.
    The whole reference is one chunk: its sampling error sizes the bands of later estimates."""
    nml = nannyml()
    if problem not in METRICS:
        raise ConfigError(f"problem must be one of {sorted(METRICS)}, got {problem!r}")
    needed = [score, prediction, label] if problem == CLASSIFICATION else [*features, prediction, label]
    missing = [c for c in needed if c not in reference.columns]
    if missing:
        raise SchemaMismatchError(f"the reference rows lack {missing}; they have {sorted(reference.columns)}")
    rows = reference[needed].dropna(subset=[label])
    if problem == CLASSIFICATION:
        if sorted(rows[label].astype("int64").unique().tolist()) != [0, 1]:
            raise SchemaMismatchError(f"CBPE needs reference rows of both classes of {label}")
        estimator = nml.CBPE(
            metrics=METRICS[problem], y_pred_proba=score, y_pred=prediction, y_true=label,
            problem_type="classification_binary", chunk_number=1,
        )
    else:
        estimator = nml.DLE(feature_column_names=list(features), y_pred=prediction, y_true=label,
                            metrics=METRICS[problem], chunk_number=1,
                            hyperparameters={"verbosity": -1})  # LightGBM's defaults, without its [Info] lines
    with _one_chunk():
        return estimator.fit(rows)


@contextmanager
def _one_chunk() -> Iterator[None]:
    """One chunk is the design here (a day is the chunk); NannyML warns about it every time."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The resulting number of chunks is too low")
        yield


@dataclass(frozen=True)
class PerformanceEstimate:
    """An estimated metric of one chunk with its band (value +- 3 sampling errors, as NannyML
    reports it). ``rows`` is the chunk's size; ``sampled_rows`` what the estimate used."""

    metric: str
    method: str        # cbpe, dle
    value: float
    lower: float
    upper: float
    rows: int
    sampled_rows: int


def estimate_performance(estimator: Any, rows: pd.DataFrame, *, total_rows: int | None = None) -> list[PerformanceEstimate]:
    """Every metric the estimator was fitted for, estimated on ``rows`` as one chunk (no labels
    needed). ``total_rows``: the chunk's size when ``rows`` is a sample of it."""
    if rows.empty:
        return []
    with _one_chunk():
        result = estimator.estimate(rows).filter(period="analysis").to_df(multilevel=False)
    last = result.iloc[-1]
    method = "cbpe" if type(estimator).__name__ == "CBPE" else "dle"
    out = []
    for metric in estimator.metrics:
        name = metric.column_name
        value = float(last[f"{name}_value"])
        lower = last.get(f"{name}_lower_confidence_boundary")
        upper = last.get(f"{name}_upper_confidence_boundary")
        out.append(PerformanceEstimate(
            name, method, value,
            float(lower) if lower is not None and pd.notna(lower) else value,
            float(upper) if upper is not None and pd.notna(upper) else value,
            total_rows if total_rows is not None else len(rows), len(rows),
        ))
    return out


@dataclass(frozen=True)
class TrackRecord:
    """How the label-free estimate of ``metric`` did on the days whose labels have come in: the
    mean absolute error against the realized value, and on how many days the realized value lay
    inside the estimate's band."""

    metric: str
    method: str
    days: int
    mean_absolute_error: float
    inside_band: int

    def describe(self) -> str:
        return (f"{self.method.upper()}'s {self.metric} against the realized one over {self.days} labelled "
                f"day(s): mean absolute error {self.mean_absolute_error:.3f}, realized inside the band on "
                f"{self.inside_band} of {self.days}")


def track_record(rows: Sequence[Mapping[str, Any]], metric: str = "roc_auc") -> TrackRecord | None:
    """The :class:`TrackRecord` of ``rows`` of the performance table (one model version), or None
    before any estimated day has its realized value."""
    chosen = [r for r in rows if r["metric"] == metric and r["value"] is not None and math.isfinite(r["value"])]
    realized = {r["chunk"]: float(r["value"]) for r in chosen if r["method"] == "realized"}
    estimated = [r for r in chosen if r["method"] != "realized" and r["chunk"] in realized]
    if not estimated:
        return None
    errors = [abs(float(r["value"]) - realized[r["chunk"]]) for r in estimated]
    inside = sum(1 for r in estimated
                 if r["lower"] is not None and r["upper"] is not None and r["lower"] <= realized[r["chunk"]] <= r["upper"])
    return TrackRecord(metric, str(estimated[0]["method"]), len(estimated), sum(errors) / len(errors), inside)


def bounded_sample(df: DataFrame, columns: Sequence[str], max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """``columns`` of ``df`` as pandas, at most ``max_rows`` rows (a seeded Bernoulli sample
    above it), and the row count before sampling. A sample of 100,000 rows puts the sampling
    error of an AUC well below the band CBPE reports, at a fixed driver memory."""
    require_columns(df, columns, "the rows to estimate on")
    total = df.count()
    chosen = df.select(*columns)
    if total > max_rows:
        chosen = chosen.sample(fraction=min(1.0, max_rows / total * 1.02), seed=seed).limit(max_rows)
    return chosen.toPandas(), total


def estimator_bytes(estimator: Any) -> bytes:
    return pickle.dumps(estimator)


def estimator_from_bytes(data: bytes) -> Any:
    """The estimator logged with a model (a pickle the training run wrote: trusted input)."""
    nannyml()  # its classes, imported without the side effects
    return pickle.loads(data)  # noqa: S301
