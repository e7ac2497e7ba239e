"""One chunk (a day) of a model's predictions checked against its reference: drift of every input
and the score, NannyML's estimated performance with its band, the realized performance when the
labels are known, and the alert rows the policy (``conf/monitoring.yaml``) calls for.

The functions here take the rows as Spark DataFrames and return typed rows for
:mod:`sparkfs.monitoring.tables`; which rows a day holds (the predictions and the inputs they
were scored from) is the caller's business (the monitor job rebuilds them by the inference path).

Example::

    model = MonitoredModel("flight_delay", "3", run_id)
    report = check_chunk(served_df, reference, model, "2013-12-02", config)
    write_report(lake, report)      # MERGE: a rerun of the same day changes nothing
    [a.message for a in report.alerts if a.level == "alert"]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import MergeResult
from sparkfs.monitoring.config import MonitoringConfig, PerformancePolicy
from sparkfs.monitoring.drift import DayToDay, DriftMetric, DriftThresholds, drift, limits_for
from sparkfs.monitoring.performance import (
    CLASSIFICATION,
    bounded_sample,
    estimate_performance,
)
from sparkfs.monitoring.reference import ModelReference
from sparkfs.monitoring.tables import (
    ALERTS,
    DRIFT,
    PERFORMANCE,
    AlertRow,
    DriftRow,
    PerformanceRow,
    write_rows,
)

HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "f1": True, "log_loss": False, "rmse": False, "mae": False}
LEVELS = ("ok", "warn", "alert")


@dataclass(frozen=True)
class MonitoredModel:
    name: str
    version: str
    run_id: str

    def describe_reference(self, reference: ModelReference) -> str:
        return (f"{self.name} v{self.version} reference: the test split of training run {self.run_id} "
                f"({reference.spec.rows} rows)")


@dataclass(frozen=True)
class RealizedMetric:
    """A metric measured on labelled rows, with its bootstrap interval."""

    metric: str
    value: float
    lower: float | None
    upper: float | None
    rows: int
    sampled_rows: int


@dataclass
class ChunkReport:
    chunk: str
    drift: list[DriftRow] = field(default_factory=list)
    performance: list[PerformanceRow] = field(default_factory=list)
    alerts: list[AlertRow] = field(default_factory=list)

    @property
    def level(self) -> str:
        """The worst level of the chunk's findings."""
        found = {a.level for a in self.alerts}
        return "alert" if "alert" in found else "warn" if "warn" in found else "ok"


def check_chunk(
    served_df: DataFrame,
    reference: ModelReference,
    model: MonitoredModel,
    chunk: str,
    config: MonitoringConfig,
    *,
    realized: Sequence[RealizedMetric] = (),
    realized_chunk: str | None = None,
) -> ChunkReport:
    """Drift and estimated performance of ``served_df`` (one chunk's predictions with their
    inputs; empty: nothing to check) and the ``realized`` metrics of ``realized_chunk`` (the
    latest chunk whose labels are known), with the alert rows they call for."""
    report = ChunkReport(chunk)
    spec = reference.spec
    if not served_df.isEmpty():
        report.drift = drift_rows(served_df, reference, model, chunk, config.drift)
        report.performance = estimated_rows(served_df, reference, model, chunk, config)
    if realized:
        report.performance += [
            performance_row(model, realized_chunk or chunk, r.metric, "realized", r.value, r.lower, r.upper,
                            r.rows, r.sampled_rows, spec.metrics.get(r.metric), config.performance)
            for r in realized
        ]
    source = model.describe_reference(reference)
    report.alerts = [*drift_alerts(report.drift, config.drift, source, spec.day_to_day),
                     *performance_alerts(report.performance, config.performance, source)]
    return report


def drift_rows(served_df: DataFrame, reference: ModelReference, model: MonitoredModel, chunk: str,
               thresholds: DriftThresholds) -> list[DriftRow]:
    """PSI / KS / JS / chi-squared / null share of every profiled column (inputs and score)."""
    rows_df = served_df.select(*(F.col(f"`{c}`") for c in reference.spec.profiled))
    metrics: list[DriftMetric] = drift(rows_df, reference.profile, reference=reference.rows,
                                       thresholds=thresholds, day_to_day=reference.spec.day_to_day)
    source = f"run {model.run_id}"
    return [DriftRow(model.name, model.version, m.metric, m.feature, chunk, m.value, m.p_value, m.level,
                     m.rows, source) for m in metrics]


def estimated_rows(served_df: DataFrame, reference: ModelReference, model: MonitoredModel, chunk: str,
                   config: MonitoringConfig) -> list[PerformanceRow]:
    """NannyML's estimate on the chunk (a seeded sample of ``estimate_max_rows`` above it)."""
    spec = reference.spec
    columns = ([spec.score, spec.prediction] if spec.problem == CLASSIFICATION
               else [*spec.numeric, *spec.categorical, spec.prediction])
    sample, total = bounded_sample(served_df, columns, config.estimate_max_rows, config.seed)
    return [
        performance_row(model, chunk, e.metric, e.method, e.value, e.lower, e.upper, total, e.sampled_rows,
                        spec.metrics.get(e.metric), config.performance)
        for e in estimate_performance(reference.estimator, sample, total_rows=total)
    ]


def performance_level(metric: str, value: float, lower: float | None, upper: float | None,
                      reference: float | None, policy: PerformancePolicy) -> str:
    """``warn`` when the metric is at least ``warn_drop`` worse than the reference; ``alert`` when
    it is at least ``alert_drop`` worse and its band lies wholly on the worse side."""
    if reference is None or value != value:  # NaN: undefined (one class)
        return "ok"
    higher = HIGHER_IS_BETTER.get(metric, True)
    drop = reference - value if higher else value - reference
    outside = (upper is None or upper < reference) if higher else (lower is None or lower > reference)
    if drop >= policy.alert_drop and outside:
        return "alert"
    return "warn" if drop >= policy.warn_drop else "ok"


def performance_row(model: MonitoredModel, chunk: str, metric: str, method: str, value: float,
                    lower: float | None, upper: float | None, rows: int, sampled_rows: int,
                    reference: float | None, policy: PerformancePolicy) -> PerformanceRow:
    level = performance_level(metric, value, lower, upper, reference, policy)
    return PerformanceRow(model.name, model.version, metric, method, chunk, value, lower, upper, rows,
                          sampled_rows, reference, level)


def drift_alerts(rows: Sequence[DriftRow], thresholds: DriftThresholds, reference: str,
                 day_to_day: DayToDay | None = None) -> list[AlertRow]:
    out = []
    for r in rows:
        if r.level == "ok":
            continue
        threshold = limits_for(r.metric, r.feature, thresholds, day_to_day)[LEVELS.index(r.level) - 1]
        high = (day_to_day or {}).get(r.metric, {}).get(r.feature) if thresholds.day_to_day else None
        spread = f"; the reference's days reached {high:.4f}" if high is not None else ""
        if r.p_value is None:
            tested = f" >= {threshold:g}{spread}"
        else:  # the threshold is the effect's (statistic, Cramer's V); the p-value is below ks_p_alert
            tested = f", p {r.p_value:.2g} below {thresholds.ks_p_alert:g}, effect >= {threshold:.4g}{spread}"
        out.append(AlertRow(
            r.model_name, r.model_version, r.metric, r.feature, r.chunk, r.level, "drift", r.value, threshold,
            reference,
            f"{r.feature} drifted on {r.chunk}: {r.metric} {r.value:.4f}{tested} ({r.rows} rows) against the "
            f"{reference}",
        ))
    return out


def performance_alerts(rows: Sequence[PerformanceRow], policy: PerformancePolicy, reference: str) -> list[AlertRow]:
    out = []
    for r in rows:
        if r.level == "ok" or r.reference_value is None:
            continue
        drop = policy.alert_drop if r.level == "alert" else policy.warn_drop
        band = f" [{r.lower:.4f}, {r.upper:.4f}]" if r.lower is not None and r.upper is not None else ""
        what = "estimated by " + r.method.upper() if r.method != "realized" else "realized"
        out.append(AlertRow(
            r.model_name, r.model_version, r.metric, f"performance:{r.method}", r.chunk, r.level, "performance",
            r.value, r.reference_value, reference,
            f"{r.metric} {what} on {r.chunk}: {r.value:.4f}{band} ({r.sampled_rows} of {r.rows} rows), "
            f"{r.reference_value:.4f} on the {reference}; {r.level} at a drop of {drop:g}",
        ))
    return out


def write_report(lake: Lakehouse, report: ChunkReport) -> dict[str, MergeResult]:
    """MERGE the report's rows into ``monitoring.drift`` / ``performance`` / ``alerts``; tables
    with no rows for this report are not touched."""
    written = {}
    for table, rows in ((DRIFT, report.drift), (PERFORMANCE, report.performance), (ALERTS, report.alerts)):
        if rows:
            written[table.name] = write_rows(lake, table, rows)
    return written
