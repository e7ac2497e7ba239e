"""Monitoring a registered model: the reference logged at training time (profile, reference rows,
NannyML's estimator), a day's drift and estimated performance against it, alerts, and
idempotent monitoring tables."""

from __future__ import annotations

from datetime import date

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from synthetic_flights import SPEC, synthetic_config, synthetic_df

from sparkfs.core.config import Settings
from sparkfs.jobs.train import monitoring_reference
from sparkfs.ml.evaluation import classification_metrics
from sparkfs.ml.train import train_model
from sparkfs.monitoring.performance import estimate_performance, problem_of
from sparkfs.monitoring.reference import (
    ESTIMATOR_ARTIFACT,
    PROFILE_ARTIFACT,
    ROWS_ARTIFACT,
    load_reference,
)

MODEL = "delay_monitor_test"
START, END = date(2013, 1, 1), date(2013, 3, 31)


@pytest.fixture(scope="module")
def trained(spark: SparkSession, settings: Settings):
    config = synthetic_config(MODEL)
    result = train_model(synthetic_df(spark), SPEC, config, settings, start=START, end=END,
                         on_test_split=monitoring_reference(spark, config))
    return result, config


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


def test_importing_nannyml_leaves_the_session_as_it_was(spark: SparkSession) -> None:
    from sparkfs.monitoring.performance import nannyml

    before = spark.conf.get("spark.sql.ansi.enabled")
    nannyml()
    assert spark.conf.get("spark.sql.ansi.enabled") == before
    assert mlflow.get_tracking_uri()
