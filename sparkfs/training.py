"""Training: time-based split with a gap, packaged transforms, XGBoost, evaluation, the gate, MLflow.

``train_model`` takes a point-in-time training set (spine keys + timestamp + feature columns +
label, as built by :mod:`sparkfs.point_in_time`) and:

1. splits it by time into train / validation / test with a gap at least as long as the longest
   feature window, following the time rule ``(t - w, t]``: train is ``ts <= train_end``,
   validation is ``train_end + gap < ts <= validation_end``, test is
   ``validation_end + gap < ts < end`` (see :mod:`sparkfs.splits`). A validation row's window ``(t - w, t]`` with
   ``w <= gap`` then starts after the last training timestamp, so no window straddles a split;
2. brings the labelled rows to the driver, bounded by ``max_rows`` (a seeded sample above it);
3. fits the :class:`~sparkfs.model.Preprocessor` on the train split only, trains XGBoost with
   early stopping on validation, picks the F1-optimal threshold on validation;
4. scores the test split through the packaged pyfunc (the code inference runs), measures it and a
   per-carrier rate baseline with bootstrap intervals, overall and per slice;
5. applies the gate; logs params, metrics, plots, the model (signature + input example) and
   lineage (the training-set spec with every table's Delta version) to MLflow; registers the
   model and moves the alias only if the gate passed, else raises :class:`GateFailedError`.

Example::

    config = load_training_config(settings)
    result = train_model(training_set.df, training_set.spec, config, settings,
                         start=date(2013, 1, 1), end=date(2013, 12, 31))
    result.registered_version   # "3"
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xgboost as xgb
from matplotlib.figure import Figure
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve

from sparkfs import __version__
from sparkfs.config import Settings
from sparkfs.errors import GateFailedError, TrainingDataError
from sparkfs.evaluation import (
    Evaluation,
    GateResult,
    RateBaseline,
    SliceEvaluation,
    apply_gate,
    best_f1_threshold,
    evaluate,
    evaluate_slices,
    metrics_summary,
    slices_table,
)
from sparkfs.jobs import JobContext, RunWindow
from sparkfs.lakehouse import Lakehouse
from sparkfs.merge import require_columns
from sparkfs.model import PROBABILITY, DelayModel, Preprocessor, model_signature
from sparkfs.point_in_time import FeatureLookup, TrainingSet, create_training_set
from sparkfs.runs import record_run
from sparkfs.splits import SPLIT, SPLITS, SplitBoundaries, assign_split, split_boundaries
from sparkfs.tracking import (
    TrackingTarget,
    configure_mlflow,
    register_with_alias,
    registered_model_name,
)
from sparkfs.training_config import TrainingConfig, XGBoostConfig, load_training_config

log = logging.getLogger(__name__)

SPEC_ARTIFACT = "lineage/training_set_spec.json"
SPINE_ARTIFACT = "lineage/spine.json"


# ---------------------------------------------------------------------------------------------
# Driver-side data


def bounded_to_pandas(df: DataFrame, max_rows: int, seed: int) -> tuple[pd.DataFrame, int]:
    """``df`` as pandas, at most ``max_rows`` rows: a seeded Bernoulli sample above the bound.

    Returns the frame and the row count before sampling. The bound keeps the driver's memory
    fixed however large the table grows (1,000,000 rows x 40 columns is about 320 MB).
    """
    total = df.count()
    if total > max_rows:
        log.warning("training set has %d rows, above max_rows=%d: sampling", total, max_rows)
        df = df.sample(fraction=min(1.0, max_rows / total * 1.02), seed=seed).limit(max_rows)
    return df.toPandas(), total


@dataclass(frozen=True)
class SplitFrames:
    train: pd.DataFrame
    validation: pd.DataFrame
    test: pd.DataFrame
    counts: dict[str, int]


def collect_splits(df: DataFrame, config: TrainingConfig, boundaries: SplitBoundaries) -> SplitFrames:
    """Label rows by split, count what is dropped (gap, null timestamp, null label), bring the
    labelled rows to the driver (bounded), and check each split can train / be measured."""
    needed = list(dict.fromkeys(
        [*config.keys, config.timestamp, config.label, *config.feature_columns,
         *config.evaluation.slices, config.baseline.column]
    ))
    require_columns(df, needed, "the training set")
    labelled = assign_split(df.select(*needed), config.timestamp, boundaries)
    stats = labelled.agg(
        F.count(F.lit(1)).alias("rows"),
        F.count_if(F.col(config.timestamp).isNull()).alias("null_timestamp"),
        F.count_if(F.col(config.timestamp).isNotNull() & F.col(SPLIT).isNull()).alias("outside_splits"),
        F.count_if(F.col(SPLIT).isNotNull() & F.col(config.label).isNull()).alias("null_label"),
    ).first()
    assert stats is not None
    usable = labelled.where(F.col(SPLIT).isNotNull() & F.col(config.label).isNotNull())
    pdf, total = bounded_to_pandas(usable, config.max_rows, config.evaluation.seed)
    # Rows arrive in whatever order the join's plan left them; XGBoost's row subsampling is by
    # position, so sort (keys, timestamp, then every column) to make the model a function of the
    # rows alone: the same training set gives the same model whichever plan built it.
    pdf = pdf.sort_values([SPLIT, *needed], kind="mergesort", na_position="last", ignore_index=True)
    pdf[config.label] = pdf[config.label].astype("int64")
    frames = {name: pdf[pdf[SPLIT] == name].drop(columns=SPLIT).reset_index(drop=True) for name in SPLITS}
    counts = {k: int(stats[k]) for k in ("rows", "null_timestamp", "outside_splits", "null_label")}
    counts["usable"] = total
    counts.update({f"{name}_rows": len(frame) for name, frame in frames.items()})
    for name, frame in frames.items():
        classes = sorted(frame[config.label].unique().tolist())
        if classes != [0, 1]:
            low, high = boundaries.intervals()[name]
            raise TrainingDataError(
                f"the {name} split ({low} < {config.timestamp} <= {high}) needs rows of both "
                f"classes of {config.label}; found {len(frame)} rows with classes {classes}"
            )
    log.info("training rows: %s", counts)
    return SplitFrames(frames["train"], frames["validation"], frames["test"], counts)


# ---------------------------------------------------------------------------------------------
# Training and evaluation

DEFAULT_XGB_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "max_depth": 6,
    "eta": 0.05,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "min_child_weight": 5,
    "max_cat_to_onehot": 8,
    "nthread": 2,
}


def fit_booster(
    preprocessor: Preprocessor, train: pd.DataFrame, validation: pd.DataFrame,
    label: str, config: XGBoostConfig, seed: int,
) -> xgb.Booster:
    """XGBoost with early stopping on the validation split; returns the booster cut at its best
    iteration, so the packaged model is exactly the one that validated best."""
    params = {**DEFAULT_XGB_PARAMS, "seed": seed, **config.params}
    dtrain = xgb.DMatrix(preprocessor.transform(train), label=train[label], enable_categorical=True)
    dvalid = xgb.DMatrix(preprocessor.transform(validation), label=validation[label], enable_categorical=True)
    booster = xgb.train(
        params, dtrain, num_boost_round=config.num_boost_round,
        evals=[(dtrain, "train"), (dvalid, "validation")],
        early_stopping_rounds=config.early_stopping_rounds, verbose_eval=False,
    )
    best = int(booster.best_iteration)
    log.info("xgboost: best iteration %d of %d", best, booster.num_boosted_rounds())
    return booster[: best + 1]


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced; ``registered_version`` is None when the gate failed."""

    run_id: str
    model_uri: str
    model_name: str
    alias: str
    registered_version: str | None
    threshold: float
    best_iteration: int
    counts: dict[str, int]
    boundaries: SplitBoundaries
    model: Evaluation
    baseline: Evaluation
    slices: list[SliceEvaluation]
    gate: GateResult
    tracking: TrackingTarget

    def summary(self) -> str:
        status = (f"registered {self.model_name} version {self.registered_version} as "
                  f"@{self.alias}" if self.registered_version else "NOT registered (gate failed)")
        lines = [
            f"training run {self.run_id}: {status}",
            f"rows: train {self.counts['train_rows']}, validation {self.counts['validation_rows']}, "
            f"test {self.counts['test_rows']} (threshold {self.threshold:.3f}, "
            f"{self.best_iteration + 1} trees)",
            "test metrics [95% bootstrap interval]:",
            metrics_summary({"model": self.model, "baseline": self.baseline}),
            "gate: " + ("passed" if self.gate.passed else "FAILED"),
            *(f"  - {r}" for r in (self.gate.reasons or self.gate.checks[:1])),
            f"MLflow UI: {self.tracking.ui_command}",
        ]
        return "\n".join(lines)


def spec_table_versions(spec: Mapping[str, Any]) -> dict[str, int]:
    """Every table a training-set spec read, with its Delta version (for lineage tags)."""
    versions: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            table, version = node.get("table"), node.get("version")
            if isinstance(table, str) and isinstance(version, int):
                versions[table] = version
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(spec)
    return versions


def train_model(
    training_df: DataFrame,
    spec: Mapping[str, Any],
    config: TrainingConfig,
    settings: Settings,
    *,
    start: date,
    end: date,
    spine_source: Mapping[str, Any] | None = None,
) -> TrainingResult:
    """Train, evaluate, gate, log and (if the gate passes) register; see the module docstring.

    ``spec`` is the training set's spec (logged as ``lineage/training_set_spec.json``, its tables'
    Delta versions as tags); ``spine_source`` says where the spine came from (e.g. the table and
    Delta version it was read at; logged as ``lineage/spine.json``), so the exact training set
    can be rebuilt. Raises :class:`GateFailedError` (after logging the run and the model) when the
    gate fails.
    """
    boundaries = split_boundaries(start, end, config.split, config.longest_feature_window)
    frames = collect_splits(training_df, config, boundaries)
    seed = config.evaluation.seed
    label = config.label

    preprocessor = Preprocessor(
        numeric=list(config.features.numeric), categorical=list(config.features.categorical),
        scale=config.features.scale, min_category_count=config.features.min_category_count,
    ).fit(frames.train)
    booster = fit_booster(preprocessor, frames.train, frames.validation, label, config.xgboost, seed)
    model = DelayModel(preprocessor, booster, threshold=0.5)
    model.threshold = best_f1_threshold(frames.validation[label], model.predict_proba(frames.validation))

    # The test split is scored through the packaged pyfunc's predict: the code inference runs.
    test = frames.test.copy()
    test[PROBABILITY] = model.predict(None, test[config.feature_columns])[PROBABILITY].to_numpy()
    baseline = RateBaseline(config.baseline.column, config.baseline.smoothing).fit(frames.train, label)
    baseline_threshold = best_f1_threshold(
        frames.validation[label], baseline.predict_proba(frames.validation)
    )
    ev = config.evaluation
    model_eval = evaluate(test[label], test[PROBABILITY], model.threshold,
                          n_boot=ev.bootstrap, confidence=ev.confidence, seed=seed)
    baseline_eval = evaluate(test[label], baseline.predict_proba(test), baseline_threshold,
                             n_boot=ev.bootstrap, confidence=ev.confidence, seed=seed)
    slices = evaluate_slices(test, label, PROBABILITY, ev.slices, model.threshold,
                             n_boot=ev.slice_bootstrap, confidence=ev.confidence, seed=seed)
    gate = apply_gate(model_eval, baseline_eval, slices, **config.gate.model_dump())

    tracking = configure_mlflow(settings, config.experiment)
    name = registered_model_name(settings, config.model_name)
    table_versions = spec_table_versions({"spec": spec, "spine": spine_source or {}})
    with mlflow.start_run(run_name=f"train-{end.isoformat()}") as run:
        mlflow.log_params({
            "model_name": name, "alias": config.alias, "label": label,
            "features_numeric": ",".join(config.features.numeric),
            "features_categorical": ",".join(config.features.categorical),
            "window_start": start.isoformat(), "window_end": end.isoformat(),
            "gap": str(config.split.gap), "max_rows": config.max_rows,
            "threshold": round(model.threshold, 6), "best_iteration": booster.num_boosted_rounds() - 1,
            "baseline": f"late rate by {config.baseline.column}",
            "gate": json.dumps(config.gate.model_dump()),
            **{f"xgb_{k}": v for k, v in {**DEFAULT_XGB_PARAMS, **config.xgboost.params}.items()},
            **boundaries.as_params(),
        })
        mlflow.log_metrics({f"rows_{k}": float(v) for k, v in frames.counts.items()})
        mlflow.log_metrics(model_eval.flat("test"))
        mlflow.log_metrics(baseline_eval.flat("baseline"))
        mlflow.log_metrics({
            _metric_key(f"slice_{s.column}_{s.value}_{m}"): v
            for s in slices for m, v in s.evaluation.metrics.items() if np.isfinite(v)
        })
        mlflow.log_table(slices_table(slices), "evaluation/slice_metrics.json")
        for file, figure in _plots(test, label, model, booster).items():
            mlflow.log_figure(figure, f"plots/{file}")
        mlflow.log_dict(dict(spec), SPEC_ARTIFACT)
        mlflow.log_dict({**(spine_source or {}), "start": start.isoformat(), "end": end.isoformat()},
                        SPINE_ARTIFACT)
        mlflow.log_dict({"passed": gate.passed, "reasons": gate.reasons, "checks": gate.checks},
                        "evaluation/gate.json")
        lineage_tags = {
            "sparkfs.version": __version__,
            "sparkfs.gate": "passed" if gate.passed else "failed",
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
        registered: str | None = None
        if gate.passed:
            version = register_with_alias(
                info.model_uri, name, config.alias,
                tags={**lineage_tags, "sparkfs.run_id": run.info.run_id},
            )
            registered = str(version.version)
            mlflow.set_tag("sparkfs.registered_version", registered)
    result = TrainingResult(
        run_id=run.info.run_id, model_uri=info.model_uri, model_name=name, alias=config.alias,
        registered_version=registered, threshold=model.threshold,
        best_iteration=booster.num_boosted_rounds() - 1, counts=frames.counts,
        boundaries=boundaries, model=model_eval, baseline=baseline_eval, slices=slices,
        gate=gate, tracking=tracking,
    )
    log.info("training run %s: gate %s", result.run_id, "passed" if gate.passed else "failed")
    if not gate.passed:
        raise GateFailedError(
            f"model not registered: the gate failed ({len(gate.reasons)} reason(s)); the run "
            f"{run.info.run_id} is logged in MLflow for inspection.\n{result.summary()}",
            reasons=gate.reasons, run_id=run.info.run_id,
        )
    return result


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


def _plots(test: pd.DataFrame, label: str, model: DelayModel, booster: xgb.Booster) -> dict[str, Figure]:
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


# ---------------------------------------------------------------------------------------------
# The spine, the point-in-time features, and the job


def flights_spine(
    lake: Lakehouse,
    config: TrainingConfig,
    start: date,
    end: date,
    *,
    labelled: bool,
    version: int | None = None,
) -> DataFrame:
    """One row per flight scheduled on ``start..end`` (UTC dates): keys, timestamp, the configured
    spine columns and, when ``labelled``, the label (``label.column > label.above``; null stays
    null). Training and inference both build their spine here, so they cannot disagree on it.
    ``version`` reads the source table as of that Delta version (to rebuild a training spine).
    """
    spine = config.spine
    source = lake.read(spine.layer, spine.table, version=version)
    wanted = list(dict.fromkeys([*config.keys, config.timestamp, *spine.columns]))
    require_columns(source, [*wanted, spine.label.column] if labelled else wanted,
                     lake.name(spine.layer, spine.table))
    day = F.col(spine.date_column) if spine.date_column else F.to_date(F.col(config.timestamp))
    rows = source.where(day.between(F.lit(start), F.lit(end)))
    columns: list[Column] = [F.col(c) for c in wanted]
    lead = int(spine.prediction_lead.total_seconds())
    if lead:
        columns.append((F.col(config.timestamp) - F.make_dt_interval(secs=F.lit(lead)))
                       .alias(config.lookup_timestamp))
    if labelled:
        label = (F.col(spine.label.column) > F.lit(spine.label.above)).cast("int")
        columns.append(label.alias(config.label))
    return rows.select(*columns)


def build_features(
    lake: Lakehouse, config: TrainingConfig, spine_df: DataFrame, *, label: str | None
) -> TrainingSet:
    """The point-in-time feature lookups of ``config`` on ``spine_df`` (the code path shared by
    training, inference and the skew check). A lookup matches feature rows with
    ``feature_ts <= t`` and, with a lookback L, ``feature_ts > t - L``, where ``t`` is the spine's
    :attr:`~TrainingConfig.lookup_timestamp` (the scheduled departure minus the prediction lead)."""
    lookups = [FeatureLookup(**lookup.model_dump()) for lookup in config.lookups]
    return create_training_set(lake, spine_df, lookups, label=label,
                               timestamp_key=config.lookup_timestamp)


def training_window(config: TrainingConfig, window: RunWindow | None) -> tuple[date, date]:
    """No window: the configured ``start..end``. ``--date D``: ``start..D`` (train as of D).
    ``--start S --end E``: exactly ``S..E``."""
    if window is None:
        return config.start, config.end
    if window.start == window.end:
        return config.start, window.end
    return window.start, window.end


def train_job(ctx: JobContext, window: RunWindow | None) -> None:
    """``sparkfs run train``: build the PIT training set, train, gate, log, register."""
    config = load_training_config(ctx.settings)
    start, end = training_window(config, window)
    lake = ctx.lake
    # Fail before the (long) training-set build if the window cannot hold the splits.
    split_boundaries(start, end, config.split, config.longest_feature_window)
    with record_run(lake, "train", {"start": start, "end": end, "model": config.model_name}) as run:
        with run.stage("training_set") as stage:
            layer, table = config.spine.layer, config.spine.table
            version = lake.version(layer, table)
            spine_source = {"layer": layer, "table": table, "version": version}
            spine_df = flights_spine(lake, config, start, end, labelled=True, version=version)
            training_set = build_features(lake, config, spine_df, label=config.label)
            stage.rows_in = training_set.checks["spine_rows"]
            stage.rows_out = training_set.checks["rows"]
            stage.table_name = lake.name(layer, table)
            stage.table_version = version
            stage.details["table_versions"] = spec_table_versions(training_set.spec)
        with run.stage("train") as stage:
            result = train_model(training_set.df, training_set.spec, config, ctx.settings,
                                 start=start, end=end, spine_source=spine_source)
            stage.rows_in = result.counts["usable"]
            stage.details.update(
                run_id=result.run_id, registered_version=result.registered_version,
                test=result.model.metrics, baseline=result.baseline.metrics,
            )
    print(f"\n{result.summary()}")
