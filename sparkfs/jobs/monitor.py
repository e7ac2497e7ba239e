"""``sparkfs run monitor --date D``: the model behind the alias, watched on day D.

For the registered version behind ``model_name@alias`` and the reference its training run
logged (:mod:`sparkfs.monitoring.reference`):

1. drift of D's predictions' inputs and score against the reference (Spark aggregations);
2. NannyML's estimated performance of D (CBPE's ROC AUC and F1 with their bands; a seeded
   sample of ``estimate_max_rows`` above it): the labels of D are not known yet;
3. the realized metrics, with bootstrap intervals, of D-1, the latest day whose labels have
   arrived (the daily job on D merges them), next to the estimate made for it the day before;
4. ingestion checks of the day before (D-1: the day whose outcomes D's run needed) for every
   table of ``ingestion.tables``: missing day, volume against the same weekday, landing delay;
5. plots of the version's last 60 days (estimated vs realized ROC AUC with bands, a PSI heatmap
   of columns x days) saved under ``<data dir>/monitoring/plots/<model>/v<version>/`` and logged
   to the model's training run (``monitoring/plots/``), replacing the day before's, and the
   estimate's track record over those days (mean absolute error against the realized ROC AUC,
   days the realized value lay inside the estimate's band);
6. alert rows by the policy of ``conf/monitoring.yaml``; with ``fail_on_alert`` an alert makes
   the job exit 1 after everything is written.

Everything is MERGEd into ``monitoring.drift`` / ``performance`` / ``alerts`` / ``ingestion`` keyed by (model,
version, metric, feature or method, day): a rerun of D changes nothing. A model whose training
run logged no reference (trained before monitoring existed) is reported, not monitored.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from mlflow.tracking import MlflowClient

from sparkfs.core.errors import ConfigError, MonitoringAlertError
from sparkfs.core.merge import MergeResult
from sparkfs.core.runs import RunRecorder, RunWindow, record_run
from sparkfs.jobs.context import JobContext
from sparkfs.ml.config import TrainingConfig, load_training_config
from sparkfs.ml.evaluation import evaluate
from sparkfs.ml.model import PROBABILITY
from sparkfs.ml.score import InferenceResult, load_scoring_model
from sparkfs.ml.served import labelled_predictions, served_rows
from sparkfs.monitoring.config import MonitoringConfig, load_monitoring_config
from sparkfs.monitoring.ingestion import ingestion_alerts, ingestion_checks
from sparkfs.monitoring.monitor import (
    ChunkReport,
    MonitoredModel,
    RealizedMetric,
    check_chunk,
    write_report,
)
from sparkfs.monitoring.performance import TrackRecord, bounded_sample, track_record
from sparkfs.monitoring.plots import monitoring_plots, save_plots
from sparkfs.monitoring.reference import ModelReference, load_reference
from sparkfs.monitoring.tables import (
    ALERTS,
    DRIFT,
    INGESTION,
    LAYER,
    PERFORMANCE,
    AlertRow,
    IngestionRow,
    rows_of_model,
    write_rows,
)

REALIZED_METRICS = ("roc_auc", "pr_auc", "f1", "log_loss")
PLOT_DAYS = 60
SHOWN_ALERTS = 3  # the console shows the first alerts; the table holds them all


@dataclass(frozen=True)
class MonitorResult:
    model: MonitoredModel
    report: ChunkReport
    written: dict[str, MergeResult]
    track_record: TrackRecord | None = None   # the estimate against the realized values, last 60 days


def monitor_job(ctx: JobContext, window: RunWindow | None) -> None:
    """The registered ``monitor`` job: :func:`monitor_stages` for D, or each day of a range."""
    if window is None:
        raise ConfigError("the monitor job needs a date: sparkfs run monitor --date YYYY-MM-DD")
    config = load_training_config(ctx.settings)
    policy = load_monitoring_config(ctx.settings)
    alerts: list[AlertRow] = []
    for day in window.days():
        params = {"date": day, "model": config.model_name, "alias": config.alias}
        with ctx.one_day(), record_run(ctx.lake, "monitor", params) as run:
            checked = ingestion_stage(ctx, policy, day - timedelta(days=1), run)
            result = monitor_stages(ctx, config, policy, day, run)
        print(describe_ingestion(checked) + describe_monitoring(result, config, day))
        alerts += [a for a in ingestion_alerts(checked) if a.level == "alert"]
        if result is not None:
            alerts += [a for a in result.report.alerts if a.level == "alert"]
    if alerts and policy.fail_on_alert:
        raise MonitoringAlertError(
            f"{len(alerts)} alert(s) and fail_on_alert is set (conf/monitoring.yaml):\n"
            + "\n".join(f"  - {a.message}" for a in alerts[:20]))


def monitor_stages(ctx: JobContext, config: TrainingConfig, policy: MonitoringConfig, day: date,
                   run: RunRecorder, scored: InferenceResult | None = None) -> MonitorResult | None:
    """The monitoring stages of a run (the ``monitor`` and ``daily`` jobs); None when the model's
    training run logged no reference. ``scored``: the run's inference of ``day`` (the daily job),
    whose scored rows are the served inputs when it used the same model version."""
    lake = ctx.lake
    with run.stage("resolve_reference") as stage:
        scoring = load_scoring_model(ctx.settings, config.model_name, config.alias)
        reference = load_reference(scoring.run_id) if scoring.run_id else None
        stage.details.update(model=scoring.name, version=scoring.version, run_id=scoring.run_id,
                             reference=reference is not None)
        if reference is None or scoring.run_id is None:
            return None
    model = MonitoredModel(scoring.name, scoring.version, scoring.run_id)
    with run.stage("drift_and_estimate") as stage:
        inputs = scored.inputs if scored is not None and scored.model.version == scoring.version else None
        served_df = served_rows(lake, config, scoring, day, inputs).persist()
        try:
            yesterday = day - timedelta(days=1)
            realized = realized_metrics(ctx, config, policy, model, reference, yesterday)
            report = check_chunk(served_df, reference, model, day.isoformat(), policy,
                                 realized=realized, realized_chunk=yesterday.isoformat())
        finally:
            served_df.unpersist()
        stage.rows_in = report.drift[0].rows if report.drift else 0
        stage.details.update(level=report.level, alerts=len(report.alerts))
    with run.stage("write") as stage:
        written = write_report(lake, report)
        stage.rows_out = sum(m.rows_inserted + m.rows_updated for m in written.values())
        stage.details["tables"] = {name: m.version for name, m in written.items()}
    record = None
    if lake.exists(LAYER, DRIFT.name) and lake.exists(LAYER, PERFORMANCE.name):
        with run.stage("plots") as stage:
            performance = rows_of_model(lake.read(LAYER, PERFORMANCE.name), model.name, model.version, PLOT_DAYS)
            figures = monitoring_plots(performance, rows_of_model(lake.read(LAYER, DRIFT.name), model.name,
                                                                  model.version, PLOT_DAYS))
            folder = ctx.settings.data_path / "monitoring" / "plots" / model.name / f"v{model.version}"
            client = MlflowClient()
            for path in save_plots(figures, folder):
                client.log_artifact(model.run_id, str(path), "monitoring/plots")
            stage.details["plots"] = str(folder)
            record = track_record(performance)
            if record is not None:
                stage.details.update(estimate_mae=record.mean_absolute_error, labelled_days=record.days,
                                     realized_inside_band=record.inside_band)
    return MonitorResult(model, report, written, record)


def ingestion_stage(ctx: JobContext, policy: MonitoringConfig, day: date, run: RunRecorder) -> list[IngestionRow]:
    """The ingestion checks of ``day`` for every table of ``ingestion.tables`` ("layer.table"),
    MERGEd into ``monitoring.ingestion`` with their alert rows. A table that does not exist
    yet is a missing day."""
    rows: list[IngestionRow] = []
    if not policy.ingestion.tables:
        return rows
    with run.stage("ingestion") as stage:
        for qualified in policy.ingestion.tables:
            layer, _, table = qualified.partition(".")
            if not table:
                raise ConfigError(f"monitoring.yaml: ingestion.tables names 'layer.table', found {qualified!r}")
            if not ctx.lake.exists(layer, table):
                rows.append(IngestionRow(qualified, "missing_day", day.isoformat(), 0.0, None, None, "alert",
                                         f"{qualified} does not exist: {day} is missing"))
                continue
            rows += ingestion_checks(ctx.lake.read(layer, table), qualified, day, policy.ingestion)
        written = write_rows(ctx.lake, INGESTION, rows)
        alerts = ingestion_alerts(rows)
        if alerts:
            write_rows(ctx.lake, ALERTS, alerts)
        stage.table_name, stage.table_version = written.table, written.version
        stage.rows_out = written.rows_inserted + written.rows_updated
        stage.details["levels"] = {r.table_name + ":" + r.check: r.level for r in rows}
    return rows


def describe_ingestion(rows: list[IngestionRow]) -> str:
    if not rows:
        return ""
    bad = [r for r in rows if r.level != "ok"]
    head = f"\ningestion {rows[0].chunk}: {len({r.table_name for r in rows})} table(s) checked, {len(bad)} finding(s)"
    return head + "".join(f"\n  {r.level}: {r.message}" for r in bad)


def realized_metrics(ctx: JobContext, config: TrainingConfig, policy: MonitoringConfig, model: MonitoredModel,
                     reference: ModelReference, day: date) -> list[RealizedMetric]:
    """ROC AUC, PR AUC, F1 (at the model's threshold) and log loss of ``day``'s labelled
    predictions, with bootstrap intervals: the same definitions training measured the reference
    with (:func:`sparkfs.ml.evaluation.evaluate`). Empty when no label of ``day`` has arrived."""
    labelled = labelled_predictions(ctx.lake, config, model.version, day)
    sample, total = bounded_sample(labelled, [config.label, PROBABILITY], policy.realized_max_rows, policy.seed)
    if sample.empty:
        return []
    threshold = float(MlflowClient().get_run(model.run_id).data.params.get("threshold", 0.5))
    evaluation = evaluate(sample[config.label].to_numpy(), sample[PROBABILITY].to_numpy(), threshold,
                          n_boot=policy.bootstrap, seed=policy.seed)
    out = []
    for metric in REALIZED_METRICS:
        low, high = evaluation.intervals.get(metric, (None, None))
        out.append(RealizedMetric(metric, evaluation.metrics[metric], low, high, total, len(sample)))
    return out


def describe_monitoring(result: MonitorResult | None, config: TrainingConfig, day: date) -> str:
    """What the console shows after monitoring ``day``."""
    if result is None:
        return (f"\nmonitor {day}: {config.model_name}@{config.alias} has no monitoring reference (its "
                "training run logged none; retrain with this version of sparkfs): nothing monitored")
    report, model = result.report, result.model
    if not report.drift and not report.performance:
        return f"\nmonitor {day}: no predictions by {model.name} v{model.version} on {day}, no labels for the day before"
    lines = [f"\nmonitor {day}: {model.name} v{model.version} (@{config.alias}): {report.level}"]
    drifted = sorted({r.feature for r in report.drift if r.level != "ok"})
    if report.drift:
        lines.append(f"  drift: {len(drifted)} of {len({r.feature for r in report.drift})} columns warn or alert"
                     + (f" ({', '.join(drifted[:8])}{', ...' if len(drifted) > 8 else ''})" if drifted else ""))
    for p in report.performance:
        if p.metric == "roc_auc":
            band = f" [{p.lower:.3f}, {p.upper:.3f}]" if p.lower is not None and p.upper is not None else ""
            ref = f", reference {p.reference_value:.3f}" if p.reference_value is not None else ""
            lines.append(f"  {p.method} roc_auc on {p.chunk}: {p.value:.3f}{band}{ref} ({p.level})")
    if result.track_record is not None:
        lines.append(f"  {result.track_record.describe()}")
    alerts = [a for a in report.alerts if a.level == "alert"]
    lines += [f"  {a.level}: {a.message}" for a in alerts[:SHOWN_ALERTS]]
    if len(alerts) > SHOWN_ALERTS:
        lines.append(f"  ... and {len(alerts) - SHOWN_ALERTS} more alert(s) in `{LAYER}.{ALERTS.name}`")
    return "\n".join(lines)
