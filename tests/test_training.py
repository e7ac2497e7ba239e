"""Training: the time split and its gap, the packaged transforms, evaluation, the gate, MLflow."""

from __future__ import annotations

import json
import shutil
from datetime import date, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from synthetic_flights import SPEC, SyntheticModel, synthetic_config, synthetic_df, synthetic_pandas

from sparkfs.core.config import Settings, StorageSettings
from sparkfs.core.errors import ConfigError, GateFailedError, SchemaMismatchError
from sparkfs.features.feature_tables import FeatureTableSpec, declared_feature_tables
from sparkfs.ml.collect import bounded_to_pandas, collect_splits
from sparkfs.ml.config import SplitConfig, TrainingConfig, load_training_config
from sparkfs.ml.evaluation import Evaluation, SliceEvaluation, apply_gate, evaluate
from sparkfs.ml.model import UNKNOWN, Preprocessor
from sparkfs.ml.splits import effective_feature_window, split_boundaries, time_split
from sparkfs.ml.tracking import configure_mlflow
from sparkfs.ml.train import train_model

GAP = timedelta(days=7)
SPLIT = SplitConfig(validation=timedelta(days=18), test=timedelta(days=18), gap=GAP)
START, END = date(2013, 1, 1), date(2013, 3, 31)


def test_split_boundaries_follow_the_config() -> None:
    b = split_boundaries(START, END, SPLIT, longest_feature_window=GAP)
    assert b.start == datetime(2013, 1, 1)
    assert b.end == datetime(2013, 4, 1)
    assert b.test_start == datetime(2013, 3, 14)
    assert b.validation_end == datetime(2013, 3, 7)
    assert b.validation_start == datetime(2013, 2, 17)
    assert b.train_end == datetime(2013, 2, 10)


def test_time_split_has_no_overlap_and_respects_the_gap(spark: SparkSession) -> None:
    b = split_boundaries(START, END, SPLIT, longest_feature_window=GAP)
    tick = timedelta(microseconds=1)
    instants = {
        "window_start": b.start,  # first instant of the window: train
        "train_end": b.train_end,  # upper edge is inclusive: train
        "just_after_train": b.train_end + tick,  # in the gap
        "gap_end": b.validation_start,  # (train_end, train_end + gap] is the gap
        "first_validation": b.validation_start + tick,
        "validation_end": b.validation_end,
        "second_gap": b.validation_end + GAP,
        "first_test": b.test_start + tick,
        "last_test": b.end - tick,
        "window_end": b.end,  # next day 00:00: outside
        "before_window": b.start - tick,
        "null_ts": None,
    }
    schema = T.StructType([T.StructField("id", T.StringType()), T.StructField("ts", T.TimestampType())])
    df = spark.createDataFrame(list(instants.items()), schema)
    # plus a dense grid of rows every 6 hours over the whole window
    grid = spark.range(0, 4 * 91).select(
        F.concat(F.lit("g"), F.col("id").cast("string")).alias("id"),
        (F.lit(b.start).cast("timestamp") + F.make_interval(hours=F.col("id").cast("int") * 6)).alias("ts"),
    )
    split = time_split(df.unionByName(grid), "ts", b)

    ids = {name: {r.id for r in part.select("id").collect()} for name, part in split.__dict__.items()}
    assert {"window_start", "train_end"} <= ids["train"]
    assert ids["validation"] >= {"first_validation", "validation_end"}
    assert ids["test"] >= {"first_test", "last_test"}
    excluded = {"just_after_train", "gap_end", "second_gap", "window_end", "before_window", "null_ts"}
    assert not excluded & (ids["train"] | ids["validation"] | ids["test"])
    assert not ids["train"] & ids["validation"] and not ids["validation"] & ids["test"]
    assert not ids["train"] & ids["test"]

    def span(part: str) -> tuple[datetime, datetime]:
        row = getattr(split, part).agg(F.min("ts").alias("lo"), F.max("ts").alias("hi")).first()
        return row["lo"], row["hi"]

    (_, train_hi), (val_lo, val_hi), (test_lo, _) = span("train"), span("validation"), span("test")
    # A feature window (t - w, t] with w <= gap of the first validation row starts after the
    # last training timestamp: the gap is strictly longer than the distance allowed.
    assert val_lo - train_hi > GAP
    assert test_lo - val_hi > GAP


def test_gap_shorter_than_the_longest_feature_window_is_an_error() -> None:
    with pytest.raises(ConfigError, match="gap is 7d, shorter than the longest feature window 30d"):
        split_boundaries(START, END, SPLIT, longest_feature_window=timedelta(days=30))
    with pytest.raises(ConfigError, match="too short"):
        split_boundaries(START, date(2013, 1, 31), SPLIT, longest_feature_window=GAP)


def rolling_table(name: str, windows: dict[str, str]) -> FeatureTableSpec:
    return FeatureTableSpec.model_validate({
        "name": name, "description": "d", "owner": "o", "keys": ["carrier"], "event_time": "ts",
        "build": "m:f", "columns": {"carrier": "c", "ts": "t"},
        "rolling": {"windows": windows, "aggregates": [{"value": "v", "aggs": ["sum"], "description": "v"}]},
    })


def test_feature_window_is_derived_and_config_can_only_raise_it(caplog: pytest.LogCaptureFixture) -> None:
    lookups = [{"table": "stats", "lookup_key": ["carrier"], "lookback": "30d"}]
    config = synthetic_config("window", lookups=lookups)  # configures longest_feature_window: 7d
    with caplog.at_level("INFO", logger="sparkfs.ml.splits"):
        assert effective_feature_window(config, []) == timedelta(days=30)
    assert "longest_feature_window 7d in the training config is shorter than the lookback of the 'stats' lookup: using 30d" in caplog.text
    with pytest.raises(ConfigError, match="gap is 7d, shorter than the longest feature window 30d"):
        split_boundaries(START, END, config.split, effective_feature_window(config, []))

    # The windows of the feature tables the lookups read count too; other tables do not.
    tables = [rolling_table("stats", {"1d": "1d", "6w": "6w"}), rolling_table("unread", {"90d": "90d"})]
    assert effective_feature_window(config, tables) == timedelta(weeks=6)
    raised = synthetic_config("window", lookups=lookups, longest_feature_window="60d")
    assert effective_feature_window(raised, tables) == timedelta(days=60)
    derived_only = synthetic_config("window", lookups=[{"table": "stats", "lookup_key": ["carrier"]}])
    derived_only = derived_only.model_copy(update={"longest_feature_window": None})
    assert effective_feature_window(derived_only, tables) == timedelta(weeks=6)
    assert effective_feature_window(derived_only, []) == timedelta(0)


def test_preprocessor_is_fitted_on_the_train_rows_only() -> None:
    train = pd.DataFrame(
        {"x": [1.0, 2.0, None, 10.0], "y": [3.0, 3.0, 3.0, 3.0], "c": ["AA", "AA", "UA", None]}
    )
    other = pd.DataFrame({"x": [None, 500.0], "y": [None, 4.0], "c": ["ZZ", "UA"]})
    pre = Preprocessor(numeric=["x", "y"], categorical=["c"], min_category_count=2).fit(train)
    assert pre.medians == {"x": 2.0, "y": 3.0}
    assert pre.indicators == ["x"]  # y had no nulls in training: no indicator
    assert pre.categories == {"c": ["AA"]}  # UA seen once < min_category_count

    out = pre.transform(other)
    assert list(out.columns) == ["x", "y", "x_is_missing", "c"]
    assert out["x"].tolist() == [2.0, 500.0]  # imputed with the train median, not other's
    assert out["y"].tolist() == [3.0, 4.0]
    assert out["x_is_missing"].tolist() == [1.0, 0.0]
    assert out["c"].tolist() == [UNKNOWN, UNKNOWN]  # unseen and rare both go to the bucket
    assert list(out["c"].cat.categories) == ["AA", UNKNOWN]


def test_preprocessor_scaling_and_input_checks() -> None:
    train = pd.DataFrame({"x": [1.0, 3.0, None], "c": ["a", "b", "a"]})
    pre = Preprocessor(numeric=["x"], categorical=["c"], scale=True).fit(train)
    scaled = pre.transform(train)["x"]
    assert scaled.mean() == pytest.approx(0.0)
    assert scaled.std(ddof=0) == pytest.approx(1.0)
    with pytest.raises(SchemaMismatchError, match=r"missing feature columns \['c'\]"):
        pre.transform(pd.DataFrame({"x": [1.0]}))


def test_bootstrap_intervals_bracket_the_point_and_are_reproducible() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.3 + rng.random(500) * 0.7, 0, 1)
    first = evaluate(y, p, 0.5, n_boot=50, seed=3)
    again = evaluate(y, p, 0.5, n_boot=50, seed=3)
    assert first.intervals == again.intervals
    for name, value in first.metrics.items():
        low, high = first.intervals[name]
        assert low <= value <= high, name
        assert high - low > 0
    assert first.metrics["roc_auc"] > 0.7


def test_metrics_match_scikit_learn_with_ties_and_resample_weights() -> None:
    from sklearn.metrics import average_precision_score, f1_score, log_loss, roc_auc_score

    from sparkfs.ml.evaluation import _Scored, classification_metrics

    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.round(np.clip(y * 0.25 + rng.random(400) * 0.75, 0, 1), 1)  # many tied scores
    counts = rng.integers(0, 3, 400)  # a resample: row i drawn counts[i] times
    order = np.argsort(-p, kind="stable")
    for weights in (np.ones(400, dtype=int), counts):
        ys, ps = np.repeat(y[order], weights[order]), np.repeat(p[order], weights[order])
        ours = _Scored(y, p).metrics(weights[order].astype(float), threshold=0.5)
        assert ours["roc_auc"] == pytest.approx(roc_auc_score(ys, ps), abs=1e-12)
        assert ours["pr_auc"] == pytest.approx(average_precision_score(ys, ps), abs=1e-12)
        assert ours["log_loss"] == pytest.approx(log_loss(ys, np.clip(ps, 1e-7, 1 - 1e-7)), abs=1e-9)
        assert ours["f1"] == pytest.approx(f1_score(ys, ps >= 0.5), abs=1e-12)
    one_class = classification_metrics(np.zeros(5), np.linspace(0.1, 0.5, 5), 0.3)
    assert np.isnan(one_class["roc_auc"]) and np.isnan(one_class["pr_auc"])
    assert one_class["f1"] == 0.0


def _evaluation(**metrics: float) -> Evaluation:
    base = {"roc_auc": 0.7, "pr_auc": 0.5, "log_loss": 0.5, "f1": 0.5}
    return Evaluation(1000, 300, {**base, **metrics}, {})


def test_gate_checks_margin_direction_and_slices() -> None:
    model, baseline = _evaluation(roc_auc=0.74, log_loss=0.48), _evaluation(roc_auc=0.70, log_loss=0.50)
    slices = [
        SliceEvaluation("carrier", "AA", _evaluation(roc_auc=0.52)),
        SliceEvaluation("carrier", "OO", Evaluation(20, 5, {**_evaluation().metrics, "roc_auc": 0.1}, {})),
        SliceEvaluation("origin", "JFK", _evaluation(roc_auc=float("nan"))),
    ]
    passed = apply_gate(model, baseline, slices[1:], metric="roc_auc", min_margin=0.03,
                        slice_metric="roc_auc", slice_floor=0.55, min_slice_rows=100)
    assert passed.passed and passed.reasons == []
    assert any("OO" in c and "skipped" in c for c in passed.checks)  # too small
    assert any("JFK" in c and "undefined" in c for c in passed.checks)

    failed = apply_gate(model, baseline, slices, metric="log_loss", min_margin=0.05,
                        slice_metric="roc_auc", slice_floor=0.55, min_slice_rows=100)
    assert not failed.passed
    assert len(failed.reasons) == 2
    assert "log_loss: model 0.4800 vs baseline 0.5000, improvement +0.0200" in failed.reasons[0]
    assert "carrier=AA" in failed.reasons[1]


def test_bounded_to_pandas_caps_the_rows(spark: SparkSession) -> None:
    df = spark.range(0, 2000)
    frame, total = bounded_to_pandas(df, max_rows=150, seed=1)
    assert total == 2000
    assert 0 < len(frame) <= 150
    small, total = bounded_to_pandas(df.limit(40), max_rows=150, seed=1)
    assert (len(small), total) == (40, 40)


def test_training_config_file_loads_and_rejects_unknown_keys(settings: Settings, tmp_path) -> None:
    config = load_training_config(settings)
    window = effective_feature_window(config, declared_feature_tables(settings))
    assert window == timedelta(days=30)  # route_delays: a 30d lookback and 30d windows
    assert config.split.gap >= window
    assert config.label and config.features.numeric
    bad = tmp_path / "training.yaml"
    bad.write_text("features: {numeric: [x]}\nsplit: {gap: 3 weeks}\ngate: {metrc: f1}\n")
    with pytest.raises(ConfigError) as info:
        load_training_config(settings, bad)
    text = str(info.value)
    assert "split.gap" in text and "expected a duration like '30d'" in text
    assert "unknown key 'gate.metrc'" in text and "min_margin" in text


@pytest.fixture
def trained(synthetic_model: SyntheticModel):
    return synthetic_model.result, synthetic_model.config


@pytest.mark.slow  # trains and registers a model (the run's first also starts MLflow, XGBoost, NannyML)
def test_train_registers_a_model_that_beats_the_baseline(trained, settings: Settings) -> None:
    result, config = trained
    assert result.gate.passed
    assert result.registered_version == "1"
    assert result.model.metrics["roc_auc"] > result.baseline.metrics["roc_auc"] + 0.02
    assert result.counts["null_label"] > 0 and result.counts["outside_splits"] > 0

    client = MlflowClient()
    version = client.get_model_version_by_alias(config.model_name, "champion")
    assert str(version.version) == "1"
    assert version.tags["sparkfs.table_version.weather_hourly"] == "4"
    run = client.get_run(result.run_id)
    metrics = run.data.metrics
    for name in ("roc_auc", "pr_auc", "log_loss", "f1"):
        assert metrics[f"test_{name}_ci_low"] <= metrics[f"test_{name}"] <= metrics[f"test_{name}_ci_high"]
        assert f"baseline_{name}" in metrics
    assert "slice_carrier_AA_roc_auc" in metrics and "slice_origin_JFK_f1" in metrics
    assert run.data.tags["sparkfs.table_version.carrier_delay_stats"] == "2"
    artifacts = {f.path for folder in ("plots", "lineage", "evaluation")
                 for f in client.list_artifacts(result.run_id, folder)}
    assert {"plots/roc.png", "plots/calibration.png", "plots/feature_importance.png",
            "lineage/training_set_spec.json", "evaluation/slice_metrics.json"} <= artifacts
    assert mlflow.artifacts.load_dict(f"runs:/{result.run_id}/lineage/training_set_spec.json") == SPEC.to_dict()


@pytest.mark.slow  # trains and registers a model (the run's first also starts MLflow, XGBoost, NannyML)
def test_the_run_logs_its_training_set_as_inputs_and_the_version_says_what_it_is(trained) -> None:
    result, config = trained
    client = MlflowClient()
    inputs = client.get_run(result.run_id).inputs.dataset_inputs
    by_context = {tag.value: i.dataset for i in inputs for tag in i.tags if tag.key == "mlflow.data.context"}
    assert sorted(by_context) == ["test", "train", "validation"]
    for split, dataset in by_context.items():
        assert dataset.name == f"{config.model_name}-{split}"
        assert dataset.source_type == "sparkfs_training_set"
        assert json.loads(dataset.source) == {"training_set_spec": SPEC.to_dict()}
        assert json.loads(dataset.profile)["num_rows"] == result.counts[f"{split}_rows"]

    version = client.get_model_version(config.model_name, result.registered_version)
    text = version.description
    assert text.startswith("Predicts is_arr_delayed: 1 when arr_delay > 15, per (flight_id) at sched_dep_ts")
    assert f"Trained on 2013-01-01 00:00 to {result.boundaries.train_end:%Y-%m-%d %H:%M} UTC " \
           f"({result.counts['train_rows']} rows)" in text
    assert f"Gate passed: roc_auc: model {result.model.metrics['roc_auc']:.4f} vs baseline" in text


@pytest.mark.slow  # trains and registers a model (the run's first also starts MLflow, XGBoost, NannyML)
def test_registered_pyfunc_carries_the_transforms_fitted_on_train(trained) -> None:
    result, config = trained
    loaded = mlflow.pyfunc.load_model(f"models:/{config.model_name}@champion")
    model = loaded.unwrap_python_model()
    frame = synthetic_pandas()
    train_rows = frame[frame["sched_dep_ts"] <= result.boundaries.train_end]
    train_rows = train_rows[train_rows["is_arr_delayed"].notna()]
    expected = float(train_rows["wind_speed"].median())
    assert model.preprocessor.medians["wind_speed"] == pytest.approx(expected)
    assert expected != pytest.approx(float(frame["wind_speed"].median()))  # not fitted on all rows
    assert "ZZ" not in model.preprocessor.categories["carrier"]  # only in the test period
    assert model.threshold == pytest.approx(result.threshold)
    assert [c.name for c in loaded.metadata.get_input_schema().inputs] == config.feature_columns

    rows = frame[config.feature_columns].tail(50)
    out = loaded.predict(rows)
    assert list(out.columns) == ["probability", "prediction"]
    assert out["probability"].between(0, 1).all()
    assert (out["prediction"] == (out["probability"] >= result.threshold)).all()


def test_gate_failure_logs_the_run_but_registers_nothing(spark: SparkSession, settings: Settings) -> None:
    config = synthetic_config("delay_gate_test", gate={"min_margin": 0.9})
    with pytest.raises(GateFailedError) as info:
        train_model(synthetic_df(spark), SPEC, config, settings, start=START, end=END)
    error = info.value
    assert "does not beat the baseline by the margin" in str(error)
    assert error.reasons and error.run_id
    client = MlflowClient()
    assert client.search_registered_models(filter_string="name = 'delay_gate_test'") == []
    run = client.get_run(error.run_id)
    assert run.data.tags["sparkfs.gate"] == "failed"
    assert "does not beat the baseline" in run.data.tags["sparkfs.gate_reasons"]


def test_training_set_without_both_classes_is_a_clear_error(spark: SparkSession, settings: Settings) -> None:
    config: TrainingConfig = synthetic_config("delay_one_class")
    df = synthetic_df(spark).withColumn("is_arr_delayed", F.lit(0))
    with pytest.raises(Exception, match=r"the train split .* needs rows of both classes"):
        train_model(df, SPEC, config, settings, start=START, end=END)


def test_build_spine_filters_days_and_derives_the_label(spark: SparkSession, lake) -> None:
    from sparkfs.core.runs import RunWindow
    from sparkfs.jobs.train import training_window
    from sparkfs.ml.assembly import build_spine

    schema = T.StructType([
        T.StructField("flight_id", T.StringType()), T.StructField("sched_dep_ts", T.TimestampType()),
        T.StructField("carrier", T.StringType()), T.StructField("arr_delay", T.DoubleType()),
        T.StructField("dep_delay", T.DoubleType()),
    ])
    rows = [
        ("a", datetime(2013, 5, 1, 0, 0), "UA", 15.0, 3.0),  # exactly 15: not late
        ("b", datetime(2013, 5, 1, 23, 59), "AA", 15.5, 9.0),
        ("c", datetime(2013, 5, 2, 12, 0), None, None, None),  # cancelled: label stays null
        ("d", datetime(2013, 5, 3, 0, 0), "DL", 60.0, 50.0),  # the day after the window
        ("e", datetime(2013, 4, 30, 23, 59), "DL", 1.0, 0.0),  # the day before
    ]
    lake.create("silver", "spine_test_flights", schema)
    spark.createDataFrame(rows, schema).write.format("delta").mode("overwrite").saveAsTable(
        lake.name("silver", "spine_test_flights"))
    config = synthetic_config("spine_test", spine={"table": "spine_test_flights", "columns": ["carrier"]})

    labelled = build_spine(lake, config, date(2013, 5, 1), date(2013, 5, 2), labelled=True)
    assert labelled.columns == ["flight_id", "sched_dep_ts", "carrier", "is_arr_delayed"]
    got = {r.flight_id: r.is_arr_delayed for r in labelled.collect()}
    assert got == {"a": 0, "b": 1, "c": None}
    unlabelled = build_spine(lake, config, date(2013, 5, 1), date(2013, 5, 2), labelled=False)
    assert unlabelled.columns == ["flight_id", "sched_dep_ts", "carrier"]  # no label, no arr_delay

    lead = synthetic_config("spine_test", spine={"table": "spine_test_flights"},
                            prediction_time={"mode": "lead", "lead": "90m"})
    assert lead.lookup_timestamp == "prediction_ts"
    ahead = build_spine(lake, lead, date(2013, 5, 1), date(2013, 5, 1), labelled=False)
    times = {r.flight_id: r.prediction_ts for r in ahead.collect()}
    assert times == {"a": datetime(2013, 4, 30, 22, 30), "b": datetime(2013, 5, 1, 22, 29)}

    assert training_window(config, None) == (START, END)
    day = RunWindow(date(2013, 3, 1), date(2013, 3, 1))
    assert training_window(config, day) == (START, date(2013, 3, 1))
    span = RunWindow(date(2013, 2, 1), date(2013, 3, 1))
    assert training_window(config, span) == (date(2013, 2, 1), date(2013, 3, 1))


def test_collected_splits_do_not_depend_on_the_row_order_of_the_training_set(spark: SparkSession) -> None:
    config = synthetic_config("delay_order_test")
    boundaries = split_boundaries(START, END, config.split, longest_feature_window=GAP)
    df = synthetic_df(spark)
    shuffled = df.orderBy(F.rand(7)).repartition(3)
    first, second = collect_splits(df, config, boundaries), collect_splits(shuffled, config, boundaries)
    for name in ("train", "validation", "test"):
        pd.testing.assert_frame_equal(getattr(first, name), getattr(second, name))
    assert first.counts == second.counts


@pytest.mark.slow
def test_artifacts_stay_in_the_data_folder_and_a_moved_store_is_refused(settings: Settings, tmp_path) -> None:
    here = settings.model_copy(update={"storage": StorageSettings(data_dir=str(tmp_path / "here"))})
    moved = settings.model_copy(update={"storage": StorageSettings(data_dir=str(tmp_path / "moved"))})
    try:
        target = configure_mlflow(here, "artifacts-where")
        assert target.artifact_location == (tmp_path / "here" / "mlartifacts" / "artifacts-where").as_uri()
        assert configure_mlflow(here, "artifacts-where").experiment_id == target.experiment_id  # reused
        shutil.copytree(tmp_path / "here", tmp_path / "moved")
        with pytest.raises(ConfigError) as info:
            configure_mlflow(moved, "artifacts-where")
        text = str(info.value)
        assert f"keeps its artifacts in {tmp_path / 'here' / 'mlartifacts' / 'artifacts-where'}" in text
        assert "new runs would write into the old folder" in text
        # A new experiment in the moved store is created under the moved folder.
        fresh = configure_mlflow(moved, "artifacts-new")
        assert fresh.artifact_location == (tmp_path / "moved" / "mlartifacts" / "artifacts-new").as_uri()
    finally:
        configure_mlflow(settings)  # the session's store again, for the tests after this one
