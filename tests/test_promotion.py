"""Champion / challenger: a new model takes the alias only if it beats the champion on the same
test rows by the gate's margin; every alias move is recorded; promote and rollback by hand."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from synthetic_flights import SPEC, synthetic_config, synthetic_df

from sparkfs.core.config import Settings
from sparkfs.core.errors import GateFailedError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.jobs.cli import main
from sparkfs.ml.aliases import alias_moves, current_version, move_alias, rollback
from sparkfs.ml.evaluation import classification_metrics, paired_difference
from sparkfs.ml.train import train_model

MODEL = "delay_champion_test"
START, END = date(2013, 1, 1), date(2013, 3, 31)
# The label follows the departure hour and the wind: without the wind a model is weaker.
WEAK = {"features": {"numeric": ["dep_hour"], "categorical": ["carrier"]}}


def test_paired_difference_resamples_both_models_on_the_same_rows() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    good = np.clip(y * 0.3 + rng.random(400) * 0.7, 0, 1)
    noise = rng.random(400)
    d = paired_difference(y, good, noise, threshold_a=0.5, threshold_b=0.5, metric="roc_auc", n_boot=200, seed=1)
    expected = classification_metrics(y, good, 0.5)["roc_auc"] - classification_metrics(y, noise, 0.5)["roc_auc"]
    assert d.difference == pytest.approx(expected)
    assert 0 < d.interval[0] < d.difference < d.interval[1]
    same = paired_difference(y, good, good, threshold_a=0.5, threshold_b=0.5, metric="roc_auc", n_boot=50)
    assert same.interval == (0.0, 0.0)          # paired: identical models differ by exactly 0
    loss = paired_difference(y, good, noise, threshold_a=0.5, threshold_b=0.5, metric="log_loss", n_boot=0)
    assert loss.difference > 0                   # lower log loss is better: the sign follows


def test_model_command_checks_its_arguments_before_spark(capsys) -> None:
    assert main(["model", "promote"]) == 2
    assert "sparkfs model promote needs --version V" in capsys.readouterr().err
    assert main(["model", "rollback", "--version", "3"]) == 2
    assert "rollback takes no --version" in capsys.readouterr().err


@pytest.mark.slow  # three trainings
def test_a_worse_challenger_is_not_promoted_and_rollback_restores_the_previous_version(
    spark: SparkSession, settings: Settings, lake: Lakehouse
) -> None:
    df = synthetic_df(spark)
    first = train_model(df, SPEC, synthetic_config(MODEL, **WEAK), settings, start=START, end=END)
    assert first.registered_version == "1"
    assert "champion: no delay_champion_test@champion yet" in first.gate.checks[-1]

    better = train_model(df, SPEC, synthetic_config(MODEL), settings, start=START, end=END)
    assert better.registered_version == "2" and current_version(MODEL, "champion") == "2"
    assert better.gate.checks[-1].startswith("champion v1: roc_auc challenger ")

    with pytest.raises(GateFailedError) as failed:
        train_model(df, SPEC, synthetic_config(MODEL, **WEAK), settings, start=START, end=END)
    assert any(r.startswith("does not beat the champion: champion v2") for r in failed.value.reasons)
    assert current_version(MODEL, "champion") == "2"                 # the alias did not move
    assert len(MlflowClient().search_model_versions(f"name = '{MODEL}'")) == 2

    moves = alias_moves(lake, MODEL, "champion")
    assert [(m.action, m.from_version, m.to_version) for m in moves] == [("train", "1", "2"), ("train", None, "1")]
    assert moves[0].run_id == better.run_id and moves[0].moved_by and "champion v1" in moves[0].reason

    back = rollback(lake, MODEL, "champion", reason="v2 alerts on drift")
    assert (back.action, back.from_version, back.to_version) == ("rollback", "2", "1")
    assert current_version(MODEL, "champion") == "1"
    newest = alias_moves(lake, MODEL, "champion")[0]
    assert (newest.action, newest.to_version, newest.reason) == ("rollback", "1", "v2 alerts on drift")

    again = move_alias(lake, MODEL, "champion", "2", action="promote", reason="fixed upstream")
    assert (again.from_version, again.to_version) == ("1", "2") and current_version(MODEL, "champion") == "2"
    with pytest.raises(Exception, match="has no version 9"):
        move_alias(lake, MODEL, "champion", "9", action="promote", reason="typo")
