"""Training: time-based split with a gap, packaged transforms, XGBoost, evaluation, the gate, MLflow.

``train_model`` takes a point-in-time training set (spine keys + timestamp + feature columns +
label, as built by :mod:`sparkfs.ml.assembly`) and:

1. splits it by time into train / validation / test with a gap at least as long as the longest
   feature window (derived from the lookups and the feature tables of ``<conf_dir>``, see
   :func:`~sparkfs.ml.splits.effective_feature_window`), following the time rule ``(t - w, t]``:
   train is ``ts <= train_end``, validation is ``train_end + gap < ts <= validation_end``, test is
   ``validation_end + gap < ts < end`` (see :mod:`sparkfs.ml.splits`). A validation row's window ``(t - w, t]`` with
   ``w <= gap`` then starts after the last training timestamp, so no window straddles a split;
2. brings the labelled rows to the driver, bounded by ``max_rows`` (a seeded sample above it);
3. fits the :class:`~sparkfs.ml.model.Preprocessor` on the train split only, trains XGBoost with
   early stopping on validation, picks the F1-optimal threshold on validation;
4. scores the test split through the packaged pyfunc (the code inference runs), measures it and a
   per-carrier rate baseline with bootstrap intervals, overall and per slice;
5. applies the gate, and the champion check: the challenger must beat the model behind the
   alias on the same test rows by the gate's margin (:mod:`sparkfs.ml.champion`); logs params,
   metrics, plots, the model (signature + input example) and lineage (the training-set spec
   with every table's Delta version) to MLflow; registers the model and moves the alias only
   if the gate passed (recorded in ``ops.alias_moves``, see :mod:`sparkfs.ml.aliases`), else
   raises :class:`GateFailedError`.

Example::

    config = load_training_config(settings)
    result = train_model(training_set.df, training_set.spec, config, settings,
                         start=date(2013, 1, 1), end=date(2013, 12, 31))
    result.registered_version   # "3"
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timezone
from typing import Any

from pyspark.sql import DataFrame

from sparkfs.core.config import Settings
from sparkfs.core.errors import GateFailedError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.feature_tables import declared_feature_tables
from sparkfs.ml.aliases import AliasMove, record_move, who
from sparkfs.ml.champion import champion_check, champion_inputs, with_champion
from sparkfs.ml.collect import SplitFrames, collect_splits
from sparkfs.ml.config import TrainingConfig
from sparkfs.ml.evaluation import (
    Evaluation,
    GateResult,
    RateBaseline,
    SliceEvaluation,
    apply_gate,
    best_f1_threshold,
    evaluate,
    evaluate_slices,
    metrics_summary,
)
from sparkfs.ml.fit import fit_booster
from sparkfs.ml.mlflow_log import HoldoutResults, TestSplitHook, log_training_run
from sparkfs.ml.model import PROBABILITY, PackagedModel, Preprocessor
from sparkfs.ml.splits import SplitBoundaries, effective_feature_window, split_boundaries
from sparkfs.ml.tracking import TrackingTarget, configure_mlflow, registered_model_name
from sparkfs.pit.spec import TrainingSetSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingResult:
    """What a training run produced; ``registered_version`` is None when the gate failed.

    Example::

        result = train_model(training_set.df, training_set.spec, config, settings, start=s, end=e)
        print(result.summary())      # rows per split, test metrics with intervals, the gate
    """

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


def fit_model(frames: SplitFrames, config: TrainingConfig) -> PackagedModel:
    """Preprocessor fitted on train, booster early-stopped on validation, and the F1-optimal
    threshold on validation: the model that gets packaged."""
    preprocessor = Preprocessor(
        numeric=list(config.features.numeric), categorical=list(config.features.categorical),
        scale=config.features.scale, min_category_count=config.features.min_category_count,
    ).fit(frames.train)
    booster = fit_booster(preprocessor, frames.train, frames.validation, config.label,
                          config.xgboost, config.evaluation.seed)
    model = PackagedModel(preprocessor, booster, threshold=0.5)
    model.threshold = best_f1_threshold(frames.validation[config.label],
                                        model.predict_proba(frames.validation))
    return model


def evaluate_on_test(model: PackagedModel, frames: SplitFrames, config: TrainingConfig) -> HoldoutResults:
    """Score the test split through the packaged pyfunc (the code scoring runs), measure it and
    the rate baseline with bootstrap intervals, overall and per slice, and apply the gate."""
    label, ev, seed = config.label, config.evaluation, config.evaluation.seed
    test = frames.test.copy()
    test[PROBABILITY] = model.predict(None, test[config.feature_columns])[PROBABILITY].to_numpy()
    baseline = RateBaseline(config.baseline.column, config.baseline.smoothing).fit(frames.train, label)
    baseline_threshold = best_f1_threshold(
        frames.validation[label], baseline.predict_proba(frames.validation)
    )
    model_eval = evaluate(test[label], test[PROBABILITY], model.threshold,
                          n_boot=ev.bootstrap, confidence=ev.confidence, seed=seed)
    baseline_eval = evaluate(test[label], baseline.predict_proba(test), baseline_threshold,
                             n_boot=ev.bootstrap, confidence=ev.confidence, seed=seed)
    slices = evaluate_slices(test, label, PROBABILITY, ev.slices, model.threshold,
                             n_boot=ev.slice_bootstrap, confidence=ev.confidence, seed=seed)
    gate = apply_gate(model_eval, baseline_eval, slices, **config.gate.model_dump())
    return HoldoutResults(test, model_eval, baseline_eval, slices, gate)


def train_model(
    training_df: DataFrame,
    spec: TrainingSetSpec,
    config: TrainingConfig,
    settings: Settings,
    *,
    start: date,
    end: date,
    spine_source: Mapping[str, Any] | None = None,
    on_test_split: TestSplitHook | None = None,
) -> TrainingResult:
    """Train, evaluate, gate, log and (if the gate passes) register; see the module docstring.

    ``spec`` is the training set's spec (logged as ``lineage/training_set_spec.json``, its tables'
    Delta versions as tags); ``spine_source`` says where the spine came from (e.g. the table and
    Delta version it was read at; logged as ``lineage/spine.json``), so the exact training set
    can be rebuilt. ``on_test_split`` is called inside the run, before registration, with the
    scored test split (e.g. to log the monitoring reference next to the model). Raises
    :class:`GateFailedError` (after logging the run and the model) when the gate fails.

    Example::

        result = train_model(training_set.df, training_set.spec, config, settings,
                             start=date(2013, 1, 1), end=date(2013, 11, 30))
        result.registered_version   # "3", or None when the gate failed
    """
    feature_window = effective_feature_window(config, declared_feature_tables(settings))
    boundaries = split_boundaries(start, end, config.split, feature_window)
    tracking = configure_mlflow(settings, config.experiment)
    name = registered_model_name(settings, config.model_name)
    champion_columns = [c for c in champion_inputs(name, config.alias) if c in training_df.columns]
    frames = collect_splits(training_df, config, boundaries, extra=champion_columns)
    model = fit_model(frames, config)
    results = evaluate_on_test(model, frames, config)
    champion = champion_check(model, frames.test, config, name)
    results = replace(results, gate=with_champion(results.gate, champion))
    logged = log_training_run(
        model=model, frames=frames, results=results, config=config, name=name,
        boundaries=boundaries, spec=spec, spine_source=spine_source, start=start, end=end,
        on_test_split=on_test_split,
    )
    gate = results.gate
    if logged.registered_version is not None:
        record_move(Lakehouse(training_df.sparkSession, settings), AliasMove(
            name, config.alias, champion.champion_version, logged.registered_version, "train",
            "; ".join(gate.checks[:1] + [champion.text]), who(), datetime.now(timezone.utc).replace(tzinfo=None),
            logged.run_id))
    result = TrainingResult(
        run_id=logged.run_id, model_uri=logged.model_uri, model_name=name, alias=config.alias,
        registered_version=logged.registered_version, threshold=model.threshold,
        best_iteration=model.booster.num_boosted_rounds() - 1, counts=frames.counts,
        boundaries=boundaries, model=results.model, baseline=results.baseline,
        slices=results.slices, gate=gate, tracking=tracking,
    )
    log.debug("training run %s: gate %s", result.run_id, "passed" if gate.passed else "failed")
    if not gate.passed:
        raise GateFailedError(
            f"model not registered: the gate failed ({len(gate.reasons)} reason(s)); the run "
            f"{logged.run_id} is logged in MLflow for inspection.\n{result.summary()}",
            reasons=gate.reasons, run_id=logged.run_id,
        )
    return result
