"""Model evaluation on a held-out split: metrics, bootstrap intervals, slices, baseline, the gate.

Everything here works on bounded pandas/numpy data that training has already brought to the
driver (the test split), never on a Spark table.

Example::

    threshold = best_f1_threshold(y_valid, p_valid)
    report = evaluate(y_test, p_test, threshold, n_boot=200, seed=7)
    report.metrics["roc_auc"], report.intervals["roc_auc"]     # 0.71, (0.70, 0.72)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_curve

METRICS = ("roc_auc", "pr_auc", "log_loss", "f1")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "log_loss": False, "f1": True}
_EPS = 1e-7


class _Scored:
    """Labels and scores sorted once (descending score, ties grouped), so that the metrics of any
    row weighting -- a bootstrap resample is a vector of counts -- cost O(rows), not a sort."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        order = np.argsort(-p, kind="stable")
        self.order = order
        self.y = y[order].astype("float64")
        self.p = np.clip(p[order], _EPS, 1 - _EPS)
        # Start index of each group of equal scores (ties are one threshold, as in sklearn).
        self.groups = np.flatnonzero(np.r_[True, np.diff(self.p) != 0])
        self.loss = -(self.y * np.log(self.p) + (1 - self.y) * np.log(1 - self.p))

    def metrics(self, w: np.ndarray, threshold: float) -> dict[str, float]:
        pos_w, neg_w = w * self.y, w * (1 - self.y)
        positives, negatives = pos_w.sum(), neg_w.sum()
        pos_g = np.add.reduceat(pos_w, self.groups)
        neg_g = np.add.reduceat(neg_w, self.groups)
        tp, fp = np.cumsum(pos_g), np.cumsum(neg_g)
        if positives > 0 and negatives > 0:
            # P(score of a positive > score of a negative) + half the ties.
            roc_auc = float(np.sum(neg_g * (tp - pos_g / 2)) / (positives * negatives))
            # Average precision: precision at each threshold weighted by the recall it adds.
            pr_auc = float(np.sum(pos_g * tp / np.maximum(tp + fp, _EPS)) / positives)
        else:
            roc_auc = pr_auc = float("nan")
        predicted = self.p >= threshold
        tp_t = pos_w[predicted].sum()
        f1_den = tp_t + positives + neg_w[predicted].sum()  # 2TP + FP + FN = TP + P + FP
        total = w.sum()
        return {
            "roc_auc": roc_auc,
            "pr_auc": pr_auc,
            "log_loss": float(np.dot(w, self.loss) / total) if total else float("nan"),
            "f1": float(2 * tp_t / f1_den) if f1_den else 0.0,
        }


def classification_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), log loss and F1 at ``threshold`` (``p >= threshold``).

    The same definitions as scikit-learn's ``roc_auc_score``, ``average_precision_score``,
    ``log_loss`` and ``f1_score``; AUCs are NaN when ``y`` holds a single class (undefined).
    """
    y = np.asarray(y, dtype="int64")
    p = np.asarray(p, dtype="float64")
    return _Scored(y, p).metrics(np.ones(len(y)), threshold)


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The probability threshold with the highest F1 on (validation) data; 0.5 if undefined."""
    y = np.asarray(y, dtype="int64")
    if not 0 < y.sum() < len(y):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, _EPS)
    # precision/recall have one more entry than thresholds (the point at recall 0).
    return float(thresholds[int(np.argmax(f1[:-1]))])


@dataclass(frozen=True)
class Evaluation:
    """Point metrics and (low, high) percentile bootstrap intervals on one set of rows."""

    rows: int
    positives: int
    metrics: dict[str, float]
    intervals: dict[str, tuple[float, float]]

    def flat(self, prefix: str) -> dict[str, float]:
        """``{prefix}_roc_auc``, ``{prefix}_roc_auc_ci_low``, ... for logging as MLflow metrics."""
        out: dict[str, float] = {f"{prefix}_rows": float(self.rows)}
        for name, value in self.metrics.items():
            out[f"{prefix}_{name}"] = value
            low, high = self.intervals.get(name, (float("nan"), float("nan")))
            out[f"{prefix}_{name}_ci_low"] = low
            out[f"{prefix}_{name}_ci_high"] = high
        return out


def evaluate(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    *,
    n_boot: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> Evaluation:
    """Metrics with percentile bootstrap intervals (rows resampled with replacement ``n_boot`` times).

    A resample holding a single class gives NaN AUCs, which are left out of that metric's interval.
    """
    y = np.asarray(y, dtype="int64")
    scored = _Scored(y, np.asarray(p, dtype="float64"))
    point = scored.metrics(np.ones(len(y)), threshold)
    intervals: dict[str, tuple[float, float]] = {}
    if n_boot > 0 and len(y) > 1:
        rng = np.random.default_rng(seed)
        draws: dict[str, list[float]] = {name: [] for name in point}
        for _ in range(n_boot):
            # A resample with replacement, as the number of times each (sorted) row is drawn.
            counts = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype("float64")
            for name, value in scored.metrics(counts, threshold).items():
                draws[name].append(value)
        alpha = (1 - confidence) / 2
        for name, values in draws.items():
            finite = np.asarray(values)[np.isfinite(values)]
            if len(finite):
                intervals[name] = (float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
    return Evaluation(len(y), int(y.sum()), point, intervals)


@dataclass(frozen=True)
class Difference:
    """``metric`` of model a minus model b on the same rows, with a paired bootstrap interval
    (both scored on the same resample each time), in the direction where positive is better."""

    metric: str
    a: float
    b: float
    difference: float
    interval: tuple[float, float]


def paired_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, threshold_a: float, threshold_b: float,
    metric: str, n_boot: int = 200, confidence: float = 0.95, seed: int = 0,
) -> Difference:
    """How much better model a does than model b on ``metric`` on the same labelled rows.

    Example::

        d = paired_difference(y, p_new, p_old, threshold_a=0.3, threshold_b=0.3, metric="roc_auc")
        d.difference, d.interval      # 0.021, (0.008, 0.034)
    """
    y = np.asarray(y, dtype="int64")
    sign = 1.0 if HIGHER_IS_BETTER[metric] else -1.0
    a, b = _Scored(y, np.asarray(p_a, dtype="float64")), _Scored(y, np.asarray(p_b, dtype="float64"))
    ones = np.ones(len(y))
    value_a, value_b = a.metrics(ones, threshold_a)[metric], b.metrics(ones, threshold_b)[metric]
    draws = []
    rng = np.random.default_rng(seed)
    for _ in range(n_boot if len(y) > 1 else 0):
        counts = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype("float64")
        # the same resample for both: counts are per original row, each scorer reads them in its order
        draws.append(sign * (a.metrics(counts[a.order], threshold_a)[metric]
                             - b.metrics(counts[b.order], threshold_b)[metric]))
    finite = np.asarray(draws)[np.isfinite(draws)] if draws else np.asarray([])
    alpha = (1 - confidence) / 2
    interval = ((float(np.quantile(finite, alpha)), float(np.quantile(finite, 1 - alpha)))
                if len(finite) else (float("nan"), float("nan")))
    return Difference(metric, value_a, value_b, sign * (value_a - value_b), interval)


@dataclass(frozen=True)
class SliceEvaluation:
    column: str
    value: str
    evaluation: Evaluation


def evaluate_slices(
    frame: pd.DataFrame,
    label: str,
    probability: str,
    columns: Sequence[str],
    threshold: float,
    *,
    n_boot: int = 100,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[SliceEvaluation]:
    """The same metrics per value of each slice column (nulls form their own ``<null>`` slice)."""
    out = []
    for column in columns:
        keys = frame[column].astype("string").fillna("<null>")
        for value, part in frame.groupby(keys, sort=True):
            evaluation = evaluate(
                part[label].to_numpy(), part[probability].to_numpy(), threshold,
                n_boot=n_boot, confidence=confidence, seed=seed,
            )
            out.append(SliceEvaluation(column, str(value), evaluation))
    return out


def slices_table(slices: Sequence[SliceEvaluation]) -> pd.DataFrame:
    """One row per slice with its metrics and intervals (logged as an MLflow artifact)."""
    rows = []
    for s in slices:
        row: dict[str, object] = {"column": s.column, "value": s.value, "rows": s.evaluation.rows,
                                  "positives": s.evaluation.positives}
        for name, value in s.evaluation.metrics.items():
            low, high = s.evaluation.intervals.get(name, (float("nan"), float("nan")))
            row.update({name: value, f"{name}_ci_low": low, f"{name}_ci_high": high})
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass
class RateBaseline:
    """The late rate per category seen in training, shrunk toward the overall rate.

    ``rate(c) = (late(c) + m * prior) / (rows(c) + m)``; an unseen or null category gets the
    prior. It is the number a model has to beat to be worth registering.
    """

    column: str
    smoothing: float = 20.0
    prior: float = 0.0
    rates: dict[str, float] = field(default_factory=dict)

    def fit(self, frame: pd.DataFrame, label: str) -> RateBaseline:
        y = frame[label].astype("float64")
        self.prior = float(y.mean()) if len(y) else 0.0
        keys = frame[self.column].astype("string")
        grouped = y.groupby(keys, dropna=True).agg(["sum", "count"])
        self.rates = {
            str(k): float((r["sum"] + self.smoothing * self.prior) / (r["count"] + self.smoothing))
            for k, r in grouped.iterrows()
        }
        return self

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        keys = frame[self.column].astype("string")
        return keys.map(self.rates).astype("float64").fillna(self.prior).to_numpy()


@dataclass(frozen=True)
class GateResult:
    """Whether a model may be registered; ``reasons`` says why not, ``checks`` lists every check."""

    passed: bool
    reasons: list[str]
    checks: list[str]


def apply_gate(
    model: Evaluation,
    baseline: Evaluation,
    slices: Sequence[SliceEvaluation],
    *,
    metric: str,
    min_margin: float,
    slice_metric: str,
    slice_floor: float,
    min_slice_rows: int,
) -> GateResult:
    """Pass when the model beats the baseline on ``metric`` by ``min_margin`` and no slice with at
    least ``min_slice_rows`` rows scores below ``slice_floor`` on ``slice_metric``.

    Direction follows the metric (log loss: lower is better, so the margin is a reduction).
    Slices smaller than ``min_slice_rows``, or whose metric is undefined (one class), are listed
    as skipped, not silently passed.
    """
    reasons: list[str] = []
    checks: list[str] = []
    ours, theirs = model.metrics[metric], baseline.metrics[metric]
    gain = ours - theirs if HIGHER_IS_BETTER[metric] else theirs - ours
    text = (f"{metric}: model {ours:.4f} vs baseline {theirs:.4f}, improvement {gain:+.4f} "
            f"(required >= {min_margin:+.4f})")
    checks.append(text)
    if not np.isfinite(gain) or gain < min_margin:
        reasons.append(f"does not beat the baseline by the margin: {text}")
    higher = HIGHER_IS_BETTER[slice_metric]
    for s in slices:
        name = f"slice {s.column}={s.value} ({s.evaluation.rows} rows)"
        value = s.evaluation.metrics[slice_metric]
        if s.evaluation.rows < min_slice_rows:
            checks.append(f"{name}: skipped, fewer than {min_slice_rows} rows")
            continue
        if not np.isfinite(value):
            checks.append(f"{name}: skipped, {slice_metric} undefined (one class)")
            continue
        ok = value >= slice_floor if higher else value <= slice_floor
        text = f"{name}: {slice_metric} {value:.4f}, floor {slice_floor:.4f}"
        checks.append(text)
        if not ok:
            reasons.append(f"slice below the floor: {text}")
    return GateResult(not reasons, reasons, checks)


def metrics_summary(evaluations: Mapping[str, Evaluation]) -> str:
    """A small text table: one line per evaluation, metric with its interval."""
    lines = []
    for name, ev in evaluations.items():
        parts = []
        for metric in METRICS:
            low, high = ev.intervals.get(metric, (float("nan"), float("nan")))
            parts.append(f"{metric} {ev.metrics[metric]:.4f} [{low:.4f}, {high:.4f}]")
        lines.append(f"  {name:<9} " + "  ".join(parts))
    return "\n".join(lines)
