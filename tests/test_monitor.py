"""Monitoring a registered model: the reference logged at training time (profile, reference rows,
NannyML's estimator), a day's drift and estimated performance against it, alerts, and
idempotent monitoring tables."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from e2e_lakehouse import MODEL as E2E_MODEL
from e2e_lakehouse import MODEL_TABLES, SharedLakehouse
from mlflow.tracking import MlflowClient
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from synthetic_flights import SyntheticModel

from sparkfs.core.config import Settings
from sparkfs.core.errors import ConfigError, MonitoringAlertError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.jobs.infer import infer_job, infer_stages
from sparkfs.jobs.monitor import monitor_job
from sparkfs.ml.config import load_training_config
from sparkfs.ml.evaluation import classification_metrics
from sparkfs.ml.score import load_scoring_model
from sparkfs.ml.served import served_rows
from sparkfs.monitoring.config import IngestionPolicy, MonitoringConfig, load_monitoring_config
from sparkfs.monitoring.ingestion import ingestion_alerts, ingestion_checks
from sparkfs.monitoring.monitor import (
    MonitoredModel,
    RealizedMetric,
    check_chunk,
    performance_level,
    write_report,
)
from sparkfs.monitoring.performance import (
    estimate_performance,
    fit_estimator,
    problem_of,
    track_record,
)
from sparkfs.monitoring.reference import (
    ESTIMATOR_ARTIFACT,
    PROFILE_ARTIFACT,
    ROWS_ARTIFACT,
    ModelReference,
    build_reference,
    load_reference,
)


@pytest.fixture
def trained(synthetic_model: SyntheticModel):
    return synthetic_model.result, synthetic_model.config


@pytest.mark.slow  # trains a model (a minute on a busy machine)
def test_training_logs_the_reference_and_the_estimator_next_to_the_model(trained) -> None:
    result, config = trained
    artifacts = {f.path for f in MlflowClient().list_artifacts(result.run_id, "monitoring")}
    assert {PROFILE_ARTIFACT, ROWS_ARTIFACT, ESTIMATOR_ARTIFACT} <= artifacts

    reference = load_reference(result.run_id)
    assert reference is not None
    spec = reference.spec
    assert spec.problem == "classification" and spec.rows == result.counts["test_rows"]
    assert spec.metrics["roc_auc"] == pytest.approx(result.model.metrics["roc_auc"])
    # Every input and the score are profiled; nulls in the inputs are counted as nulls.
    assert set(reference.profile.numeric) == {*config.features.numeric, "probability"}
    assert set(reference.profile.categorical) == set(config.features.categorical)
    wind = reference.profile.numeric["wind_speed"]
    assert wind.nulls == int(reference.rows["wind_speed"].isna().sum()) > 0
    assert sum(wind.counts) + wind.nulls == spec.rows

    # CBPE was fitted on the test split: estimated on those rows without their labels, its band
    # holds the realized ROC AUC.
    assert type(reference.estimator).__name__ == "CBPE"
    rows = reference.rows.drop(columns=[spec.label])
    estimate = {e.metric: e for e in estimate_performance(reference.estimator, rows)}["roc_auc"]
    realized = classification_metrics(reference.rows[spec.label].to_numpy(),
                                       reference.rows["probability"].to_numpy(), 0.5)["roc_auc"]
    assert estimate.lower < realized < estimate.upper
    assert estimate.upper - estimate.lower > 0.01 and estimate.rows == spec.rows


def test_the_estimator_follows_the_model_type() -> None:
    assert problem_of("binary:logistic") == "classification"
    assert problem_of("reg:squarederror") == "regression"
    with pytest.raises(Exception, match="cannot tell the problem type of the XGBoost objective 'rank:pairwise'"):
        problem_of("rank:pairwise")


def test_dle_estimates_a_regressors_error_before_the_labels(capfd: pytest.CaptureFixture[str]) -> None:
    """A regressor is watched with DLE: fitted on the reference's errors, it sees from the inputs
    alone that a day with more of the noisy kind of rows will have a larger error."""
    rng = np.random.default_rng(5)

    def day(rows: int, noisy_share: float) -> pd.DataFrame:
        x1, noisy = rng.normal(0, 1, rows), (rng.random(rows) < noisy_share).astype(float)
        y = 2 * x1 + rng.normal(0, 1, rows) * (0.2 + 1.8 * noisy)     # noisy rows: 10x the error
        return pd.DataFrame({"x1": x1, "noisy": noisy, "prediction": 2 * x1, "y": y})

    estimator = fit_estimator(day(2000, 0.2), problem=problem_of("reg:squarederror"), score="prediction",
                              prediction="prediction", label="y", features=["x1", "noisy"])
    estimates = {}
    for share in (0.2, 0.6):
        rows = day(800, share)
        mae = {e.metric: e for e in estimate_performance(estimator, rows.drop(columns="y"))}["mae"]
        realized = float(np.mean(np.abs(rows["y"] - rows["prediction"])))
        assert mae.method == "dle" and mae.lower <= realized <= mae.upper   # the labels were never shown to it
        estimates[share] = mae.value
    assert estimates[0.6] > 1.8 * estimates[0.2]
    assert "[LightGBM]" not in capfd.readouterr().out


def test_the_track_record_compares_each_estimated_day_with_its_realized_value() -> None:
    def row(method: str, chunk: str, value: float | None, lower: float | None = None, upper: float | None = None,
            metric: str = "roc_auc") -> dict[str, object]:
        return {"metric": metric, "method": method, "chunk": chunk, "value": value, "lower": lower, "upper": upper}

    rows = [row("cbpe", "d1", 0.70, 0.65, 0.75), row("realized", "d1", 0.72, 0.70, 0.74),   # inside, error 0.02
            row("cbpe", "d2", 0.70, 0.68, 0.72), row("realized", "d2", 0.60, 0.55, 0.65),   # outside, error 0.10
            row("cbpe", "d3", 0.71, 0.66, 0.76),                                            # no label yet
            row("realized", "d4", 0.80),                                                    # no estimate
            row("cbpe", "d5", 0.70, 0.60, 0.80), row("realized", "d5", None),               # no realized value
            row("cbpe", "d1", 0.10, metric="f1"), row("realized", "d1", 0.90, metric="f1")]
    record = track_record(rows)
    assert record is not None and (record.method, record.days, record.inside_band) == ("cbpe", 2, 1)
    assert record.mean_absolute_error == pytest.approx(0.06)
    assert "mean absolute error 0.060, realized inside the band on 1 of 2" in record.describe()
    assert track_record(rows[4:6]) is None


def test_importing_nannyml_leaves_the_session_as_it_was(spark: SparkSession) -> None:
    from sparkfs.monitoring.performance import nannyml

    before = spark.conf.get("spark.sql.ansi.enabled")
    nannyml()
    assert spark.conf.get("spark.sql.ansi.enabled") == before
    assert mlflow.get_tracking_uri()


# --- a day against a reference, without training (fast) -------------------------------------------

CARRIERS = ["AA", "B6", "DL", "UA"]
SCHEMA = "delay double, hour double, carrier string, probability double, prediction int, is_late int"


def scored_frame(rows: int, seed: int, *, shift: float = 0.0) -> pd.DataFrame:
    """Scored rows: ``delay`` ~ N(10 + 5 shift, 5) (shift 1: the mean moves by one sd), a null
    ``delay`` every 23rd row, a null carrier every 31st; the label follows the probability."""
    rng = np.random.default_rng(seed)
    delay = rng.normal(10 + 5 * shift, 5, rows)
    hour = rng.integers(5, 23, rows).astype(float)
    probability = 1 / (1 + np.exp(-(-2.0 + 0.12 * (delay - 10) + 0.1 * (hour - 12))))
    frame = pd.DataFrame({
        "delay": delay, "hour": hour, "carrier": rng.choice(CARRIERS, rows).astype(object),
        "probability": probability, "prediction": (probability >= 0.3).astype("int32"),
        "is_late": (rng.random(rows) < probability).astype("int32"),
    })
    frame.loc[frame.index % 23 == 0, "delay"] = np.nan
    frame.loc[frame.index % 31 == 0, "carrier"] = None
    return frame


def to_df(spark: SparkSession, frame: pd.DataFrame) -> DataFrame:
    records = [tuple(None if v is None or (isinstance(v, float) and np.isnan(v)) else
                     (v.item() if isinstance(v, np.generic) else v) for v in row)
               for row in frame.itertuples(index=False)]
    return spark.createDataFrame(records, SCHEMA)


@pytest.fixture(scope="module")
def reference(spark: SparkSession) -> ModelReference:
    frame = scored_frame(2000, seed=1)
    return build_reference(spark, frame, numeric=["delay", "hour"], categorical=["carrier"],
                           score="probability", prediction="prediction", label="is_late",
                           problem="classification", metrics={"roc_auc": 0.72})


MODEL_ID = MonitoredModel("monitor_fast", "4", "run0123")


@pytest.mark.slow
def test_a_one_sd_shift_is_psi_above_0_25_and_an_alert_row(spark: SparkSession, reference: ModelReference) -> None:
    day_df = to_df(spark, scored_frame(500, seed=2, shift=1.0))
    report = check_chunk(day_df, reference, MODEL_ID, "2013-12-02", MonitoringConfig())

    psi = {(r.feature, r.metric): r for r in report.drift}
    assert psi[("delay", "psi")].value > 0.25 and psi[("delay", "psi")].level == "alert"
    assert psi[("hour", "psi")].value < 0.1 and psi[("hour", "psi")].level == "ok"   # not shifted
    assert psi[("delay", "ks")].p_value < 1e-6                                        # exact KS ran
    assert psi[("probability", "psi")].level != "ok"   # a shifted input moves the score too
    assert {r.rows for r in report.drift} == {500} and {r.chunk for r in report.drift} == {"2013-12-02"}

    alert = next(a for a in report.alerts if (a.feature, a.metric) == ("delay", "psi"))
    assert alert.level == "alert" and alert.threshold == 0.25 and alert.source == "drift"
    assert alert.message.startswith("delay drifted on 2013-12-02: psi ")
    assert "monitor_fast v4 reference: the test split of training run run0123 (2000 rows)" in alert.message
    assert not [a for a in report.alerts if a.feature == "hour"]
    assert report.level == "alert"

    same = check_chunk(to_df(spark, scored_frame(500, seed=3)), reference, MODEL_ID, "2013-12-03", MonitoringConfig())
    assert not [a for a in same.alerts if a.source == "drift" and a.level == "alert"]


@pytest.mark.slow
def test_cbpe_estimates_the_day_with_a_band_and_realized_sits_next_to_it(
    spark: SparkSession, reference: ModelReference
) -> None:
    day = scored_frame(800, seed=4)
    realized = [RealizedMetric("roc_auc", 0.55, 0.50, 0.60, 900, 900)]
    config = MonitoringConfig(estimate_max_rows=500)   # the day is sampled to 500 rows
    report = check_chunk(to_df(spark, day), reference, MODEL_ID, "2013-12-03", config,
                         realized=realized, realized_chunk="2013-12-02")
    rows = {(p.method, p.metric): p for p in report.performance}
    estimate = rows[("cbpe", "roc_auc")]
    truth = classification_metrics(day["is_late"].to_numpy(), day["probability"].to_numpy(), 0.3)["roc_auc"]
    assert estimate.lower < estimate.value < estimate.upper
    assert estimate.lower < truth < estimate.upper          # the labels were never shown to it
    assert estimate.rows == 800 and estimate.sampled_rows <= 500 and estimate.chunk == "2013-12-03"
    assert ("cbpe", "f1") in rows

    late = rows[("realized", "roc_auc")]
    assert (late.chunk, late.value, late.reference_value, late.level) == ("2013-12-02", 0.55, 0.72, "alert")
    alert = next(a for a in report.alerts if a.source == "performance")
    assert alert.feature == "performance:realized" and alert.chunk == "2013-12-02"
    assert "roc_auc realized on 2013-12-02: 0.5500 [0.5000, 0.6000]" in alert.message

    # Inside the band a large drop only warns; a small one is fine.
    policy = MonitoringConfig().performance
    assert performance_level("roc_auc", 0.65, 0.55, 0.75, 0.72, policy) == "warn"
    assert performance_level("roc_auc", 0.70, 0.66, 0.74, 0.72, policy) == "ok"
    assert performance_level("rmse", 12.0, 11.0, 13.0, 10.0, policy) == "alert"   # lower is better


@pytest.mark.slow
def test_monitoring_a_day_again_changes_no_monitoring_table(
    spark: SparkSession, lake: Lakehouse, reference: ModelReference
) -> None:
    day_df = to_df(spark, scored_frame(300, seed=5, shift=1.0))
    realized = [RealizedMetric("roc_auc", 0.61, 0.55, 0.66, 600, 600)]
    first = write_report(lake, check_chunk(day_df, reference, MODEL_ID, "2013-12-05", MonitoringConfig(),
                                           realized=realized, realized_chunk="2013-12-04"))
    assert set(first) == {"drift", "performance", "alerts"}
    assert all(m.rows_inserted > 0 for m in first.values())
    before = {name: sorted(map(tuple, lake.read("monitoring", name).collect()), key=repr) for name in first}

    again = write_report(lake, check_chunk(day_df, reference, MODEL_ID, "2013-12-05", MonitoringConfig(),
                                           realized=realized, realized_chunk="2013-12-04"))
    assert {name: (m.rows_inserted, m.rows_updated) for name, m in again.items()} == {
        name: (0, 0) for name in first}
    assert {name: sorted(map(tuple, lake.read("monitoring", name).collect()), key=repr) for name in first} == before
    stored = lake.read("monitoring", "alerts").where("chunk = '2013-12-05' and feature = 'delay'")
    assert {r["metric"] for r in stored.collect()} >= {"psi", "ks"}


# --- ingestion ---------------------------------------------------------------------------------------

def landed(spark: SparkSession, days: dict[date, tuple[int, datetime]]) -> DataFrame:
    """``rows`` rows for each event date, the last of them landing at the given instant."""
    records = [(day, at - timedelta(minutes=i)) for day, (rows, at) in days.items() for i in range(rows)]
    return spark.createDataFrame(records, "event_date date, _ingested_at timestamp")


def test_missing_late_and_odd_volume_days_are_found(spark: SparkSession) -> None:
    monday = date(2013, 6, 24)
    on_time = {monday - timedelta(weeks=w): (10 + w, datetime.combine(monday - timedelta(weeks=w, days=-1),
                                                                         datetime.min.time()) + timedelta(hours=5))
               for w in range(1, 5)}                          # 11..14 rows, landed 05:00 the next day
    policy = IngestionPolicy(weeks=4, tolerance=0.5, max_delay_hours=30)

    normal = landed(spark, {**on_time, monday: (12, datetime(2013, 6, 25, 5))})
    rows = {r.check: r for r in ingestion_checks(normal, "bronze.flights", monday, policy)}
    assert (rows["volume"].value, rows["volume"].expected_low, rows["volume"].expected_high) == (12, 5.5, 21.0)
    assert rows["volume"].level == "ok"
    assert rows["freshness"].value == pytest.approx(5.0) and rows["freshness"].level == "ok"

    missing = ingestion_checks(landed(spark, on_time), "bronze.flights", monday, policy)
    assert [(r.check, r.level) for r in missing] == [("missing_day", "alert")]
    assert missing[0].message == "bronze.flights has no rows for 2013-06-24: the day is missing"

    late_and_thin = landed(spark, {**on_time, monday: (3, datetime(2013, 6, 27, 1))})   # 49 h after
    rows = {r.check: r for r in ingestion_checks(late_and_thin, "bronze.flights", monday, policy)}
    assert rows["freshness"].level == "alert" and rows["freshness"].value == pytest.approx(49.0)
    assert rows["volume"].level == "warn" and "has 3 rows for 2013-06-24" in rows["volume"].message
    alerts = ingestion_alerts(list(rows.values()))
    assert [(a.source, a.metric, a.feature, a.level) for a in alerts] == [
        ("ingestion", "volume", "bronze.flights", "warn"), ("ingestion", "freshness", "bronze.flights", "alert")]

    first_week = landed(spark, {monday: (12, datetime(2013, 6, 25, 5))})   # no history: volume not judged
    assert [r.check for r in ingestion_checks(first_week, "bronze.flights", monday, policy)] == ["freshness"]


def test_monitoring_conf_loads_and_rejects_unknown_keys(settings: Settings, tmp_path) -> None:
    config = load_monitoring_config(settings)
    assert config.drift.psi_alert == 0.25 and config.ingestion.tables[0] == "bronze.schedules"
    assert config.fail_on_alert is False
    assert load_monitoring_config(settings.model_copy(update={"conf_dir": str(tmp_path)})) == MonitoringConfig()
    bad = tmp_path / "monitoring.yaml"
    bad.write_text("drift: {psi_alrt: 0.3}\n")
    with pytest.raises(ConfigError, match="unknown key 'drift.psi_alrt'"):
        load_monitoring_config(settings, bad)


# --- the monitor job, end to end -------------------------------------------------------------------

DAY = date(2013, 3, 28)          # in the test period of the synthetic window: labels known at once


def monitoring_content(lake: Lakehouse) -> dict[str, list[tuple]]:
    return {name: sorted(map(tuple, lake.read("monitoring", name).collect()), key=repr)
            for name in ("drift", "performance", "alerts") if lake.exists("monitoring", name)}


def estimate_run(ctx) -> str:
    return str(MlflowClient().get_model_version_by_alias(E2E_MODEL, "champion").run_id)


@pytest.mark.e2e
def test_monitor_job_checks_a_day_against_the_reference_and_a_rerun_changes_nothing(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path, capsys
) -> None:
    # The shared model (trained by train_job, with its reference), on a copy of its tables and
    # conf: scoring, monitoring and the conf change below stay here. The monitor job logs its
    # plots to the model's training run in the shared MLflow store (no other test reads them).
    ctx = e2e_lakehouse.clone(tmp_path, "mon", MODEL_TABLES)
    lake, conf = ctx.lake, Path(ctx.settings.conf_dir)
    infer_job(ctx, RunWindow(DAY - timedelta(days=1), DAY))
    capsys.readouterr()
    # The daily job hands its monitoring the rows its inference scored: the rows rebuilt here.
    config = load_training_config(ctx.settings)
    with record_run(lake, "infer", {"date": DAY}) as run:
        scored = infer_stages(ctx, config, RunWindow(DAY, DAY), run)
    assert scored is not None and scored.inputs is not None
    model = load_scoring_model(ctx.settings, config.model_name, config.alias)
    handed, rebuilt = (sorted(map(tuple, served_rows(lake, config, model, DAY, inputs).collect()), key=repr)
                       for inputs in (scored.inputs, None))
    assert handed == rebuilt and len(handed) == scored.inputs.count() > 0

    monitor_job(ctx, RunWindow(DAY, DAY))
    out = capsys.readouterr().out
    assert f"monitor {DAY}: {E2E_MODEL} v1 (@champion)" in out
    drift_df = lake.read("monitoring", "drift").where(F.col("model_name") == E2E_MODEL)
    assert {r.feature for r in drift_df.collect()} == {
        "dep_hour", "wind_speed", "carrier_dep_delay_mean_7d", "carrier", "origin", "probability"}
    assert {r.chunk for r in drift_df.collect()} == {DAY.isoformat()}
    performance = {(r.method, r.metric, r.chunk): r
                   for r in lake.read("monitoring", "performance").where(F.col("model_name") == E2E_MODEL).collect()}
    estimate = performance[("cbpe", "roc_auc", DAY.isoformat())]
    assert estimate.lower < estimate.value < estimate.upper and estimate.reference_value > 0.5
    realized = performance[("realized", "roc_auc", (DAY - timedelta(days=1)).isoformat())]
    assert realized.rows > 0 and realized.lower <= realized.value <= realized.upper

    plots = {f.path for f in MlflowClient().list_artifacts(estimate_run(ctx), "monitoring/plots")}
    assert plots == {"monitoring/plots/performance_roc_auc.png", "monitoring/plots/drift_psi_heatmap.png"}
    assert (ctx.settings.data_path / "monitoring" / "plots" / E2E_MODEL / "v1" / "drift_psi_heatmap.png").is_file()

    before = monitoring_content(lake)
    monitor_job(ctx, RunWindow(DAY, DAY))
    assert monitoring_content(lake) == before

    # fail_on_alert: the job writes its findings, then fails
    (conf / "monitoring.yaml").write_text(
        "drift: {psi_warn: 0.0001, psi_alert: 0.0002, day_to_day: false}\nfail_on_alert: true\n")
    with pytest.raises(MonitoringAlertError, match="alert\\(s\\) and fail_on_alert is set"):
        monitor_job(ctx, RunWindow(DAY, DAY))
    assert lake.read("monitoring", "alerts").where(
        (F.col("model_name") == E2E_MODEL) & (F.col("metric") == "psi")).count() > 0
