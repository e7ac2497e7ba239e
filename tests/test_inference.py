"""Batch inference: alias resolution, the signature check, scoring in Spark, the idempotent MERGE,
and the training-serving skew comparison."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from chispa import assert_df_equality
from e2e_lakehouse import MODEL as E2E_MODEL
from e2e_lakehouse import MODEL_TABLES, PREDICTIONS, SCORED_DAY, SharedLakehouse
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from synthetic_flights import SYNTHETIC_MODEL as MODEL
from synthetic_flights import SyntheticModel, synthetic_config, synthetic_df

from sparkfs.core.config import Settings
from sparkfs.core.errors import (
    FeatureSchemaMismatchError,
    ModelNotFoundError,
    SchemaMismatchError,
    TrainingServingSkewError,
)
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.runs import RunWindow
from sparkfs.jobs.infer import infer_job
from sparkfs.ml.score import (
    ScoringModel,
    check_feature_schema,
    load_scoring_model,
    predict_and_merge,
    score,
)
from sparkfs.ml.skew import compare_features

KEYS = ["flight_id", "sched_dep_ts"]
FEATURES = ["dep_hour", "wind_speed", "carrier_dep_delay_mean_7d", "carrier", "origin"]


@pytest.fixture
def model(synthetic_model: SyntheticModel, settings: Settings) -> ScoringModel:
    experiment = settings.mlflow.model_copy(update={"experiment": synthetic_model.config.experiment})
    return load_scoring_model(settings.model_copy(update={"mlflow": experiment}), MODEL, "champion")


@pytest.mark.slow
def test_alias_resolves_to_the_registered_version_with_its_signature(model: ScoringModel) -> None:
    assert (model.name, model.alias, model.version) == (MODEL, "champion", "1")
    assert model.uri == f"models:/{MODEL}/1"
    assert model.inputs == [
        ("dep_hour", "double"), ("wind_speed", "double"), ("carrier_dep_delay_mean_7d", "double"),
        ("carrier", "string"), ("origin", "string"),
    ]


@pytest.mark.slow
def test_missing_alias_or_model_is_a_clear_error(model: ScoringModel, settings: Settings) -> None:
    with pytest.raises(ModelNotFoundError, match=r"has no alias 'challenger'; its aliases: \['champion'\]"):
        load_scoring_model(settings, MODEL, "challenger")
    with pytest.raises(ModelNotFoundError, match=r"no registered model named 'no_such_model'.*" + MODEL):
        load_scoring_model(settings, "no_such_model", "champion")


def test_schema_mismatch_lists_missing_extra_and_mistyped(spark: SparkSession) -> None:
    # The inputs a registered signature gives (test_alias_resolves_to_the_registered_version_...).
    model = ScoringModel(MODEL, "champion", "1", None, [
        ("dep_hour", "double"), ("wind_speed", "double"), ("carrier_dep_delay_mean_7d", "double"),
        ("carrier", "string"), ("origin", "string"),
    ])
    df = (
        synthetic_df(spark, rows=50)
        .drop("wind_speed")
        .withColumn("dep_hour", F.col("dep_hour").cast("string"))
        .withColumn("origin_visibility", F.lit(10.0))
    )
    with pytest.raises(FeatureSchemaMismatchError) as info:
        check_feature_schema(df, model, feature_columns=[*FEATURES, "origin_visibility"])
    text = str(info.value)
    assert "missing ['wind_speed']" in text
    assert "extra ['origin_visibility']" in text
    assert "mistyped ['dep_hour: signature double, features string']" in text
    # Integer features are fine for a double signature (cast before scoring).
    check_feature_schema(synthetic_df(spark, rows=50), model, FEATURES)


@pytest.mark.slow
def test_scores_in_spark_equal_the_pyfunc_and_rerun_changes_nothing(
    spark: SparkSession, lake: Lakehouse, model: ScoringModel
) -> None:
    import mlflow

    day_df = synthetic_df(spark).where(F.to_date("sched_dep_ts") == F.lit(date(2013, 3, 20)))
    config = synthetic_config(MODEL, inference={"table": "test_delay_predictions"})
    versions = {"weather_hourly": 4, "planes": 1}

    first = predict_and_merge(lake, day_df, model, config, versions)
    rows = day_df.count()
    assert (first.merge.rows_inserted, first.merge.rows_updated) == (rows, 0)
    before = lake.read("ml", "test_delay_predictions").orderBy(*KEYS)
    before_rows = before.collect()

    again = predict_and_merge(lake, day_df, model, config, versions)
    assert (again.merge.rows_inserted, again.merge.rows_updated) == (0, 0)
    after = lake.read("ml", "test_delay_predictions").orderBy(*KEYS)
    assert_df_equality(spark.createDataFrame(before_rows, before.schema), after)
    assert after.columns == [*KEYS, "carrier", "origin", "score_date", "probability", "prediction",
                             "model_name", "model_version", "feature_versions", "is_arr_delayed"]

    first_row = after.first()
    assert first_row["model_name"] == MODEL and first_row["model_version"] == "1"
    assert first_row["feature_versions"] == '{"planes": 1, "weather_hourly": 4}'
    assert first_row["score_date"] == date(2013, 3, 20)  # no spine.date_column: the UTC date

    # Spark scored through the same packaged code: identical to the pyfunc on the driver.
    local = day_df.orderBy(*KEYS).toPandas()
    expected = mlflow.pyfunc.load_model(model.uri).predict(local[FEATURES])
    got = after.select("probability", "prediction").toPandas()
    assert got["probability"].tolist() == pytest.approx(expected["probability"].tolist(), abs=1e-12)
    assert got["prediction"].tolist() == expected["prediction"].tolist()


@pytest.mark.slow
def test_a_small_batch_is_scored_on_the_driver_as_spark_would(spark: SparkSession, model: ScoringModel) -> None:
    day_df = (synthetic_df(spark).where(F.to_date("sched_dep_ts") == F.lit(date(2013, 3, 20)))
              .withColumn("times", F.struct(F.col("sched_dep_ts").alias("event_ts"), F.lit(None).cast("timestamp").alias("known_at"))))
    rows = day_df.count()
    keep = [*KEYS, "carrier", "times"]  # carrier is kept and a model input too
    in_spark = score(day_df, model, keep, driver_max_rows=0)
    on_driver = score(day_df, model, keep, driver_max_rows=rows)
    over_the_limit = score(day_df, model, keep, driver_max_rows=rows - 1)

    assert "LocalTableScan" in on_driver._jdf.queryExecution().executedPlan().toString()
    assert "LocalTableScan" not in over_the_limit._jdf.queryExecution().executedPlan().toString()
    assert on_driver.schema == in_spark.schema == over_the_limit.schema
    expected = in_spark.orderBy(*KEYS).collect()
    assert len(expected) == rows and {r["prediction"] for r in expected} <= {0, 1}
    assert on_driver.orderBy(*KEYS).collect() == expected
    assert over_the_limit.orderBy(*KEYS).collect() == expected
    empty = score(day_df.limit(0), model, keep, driver_max_rows=rows)
    assert empty.schema == in_spark.schema and empty.count() == 0


def test_compare_features_finds_every_kind_of_skew(spark: SparkSession) -> None:
    training = synthetic_df(spark, rows=60).select(*KEYS, *FEATURES)
    same = compare_features(training, training, KEYS, FEATURES)
    assert same.identical and same.rows_compared == 60
    assert "no training-serving skew" in same.describe()

    changed = (
        training.where(F.col("flight_id") != "f00005")  # a row the inference path lost
        .withColumn("wind_speed", F.when(F.col("flight_id") == "f00001", F.lit(None))
                    .otherwise(F.col("wind_speed")))  # value -> null
        .withColumn("origin", F.when(F.col("flight_id") == "f00002", F.lit("XXX"))
                    .otherwise(F.col("origin")))
        .withColumn("dep_hour", F.col("dep_hour").cast("double"))  # same values, other type
    )
    report = compare_features(training, changed, KEYS, FEATURES)
    assert not report.identical
    assert report.rows_compared == 59
    assert report.missing_in_inference == 1 and report.missing_in_training == 0
    assert report.mismatched_rows == {"dep_hour": 0, "wind_speed": 1, "carrier": 0,
                                      "carrier_dep_delay_mean_7d": 0, "origin": 1}
    assert report.type_mismatches == {"dep_hour": ("int", "double")}
    assert {e["flight_id"] for e in report.examples} == {"f00001", "f00002"}


# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_row_of_a_day_is_in_that_days_partition(spark: SparkSession, lake: Lakehouse, model: ScoringModel) -> None:
    # The spine selects a day by its local date (spine.date_column); the evening's flights depart
    # on the next UTC day. All of them must be found under the day they were scored for.
    day = date(2013, 3, 20)
    local_date = F.to_date(F.from_utc_timestamp("sched_dep_ts", "America/New_York"))
    day_df = synthetic_df(spark).withColumn("flight_date", local_date).where(F.col("flight_date") == F.lit(day))
    assert {r[0] for r in day_df.select(F.to_date("sched_dep_ts")).distinct().collect()} == {
        day, date(2013, 3, 21)}  # the edge is in the data
    config = synthetic_config(MODEL, spine={"date_column": "flight_date"},
                              inference={"table": "test_day_predictions"})

    first = predict_and_merge(lake, day_df, model, config, {"weather_hourly": 4})
    again = predict_and_merge(lake, day_df, model, config, {"weather_hourly": 4})

    assert (first.merge.rows_inserted, again.merge.rows_inserted, again.merge.rows_updated) == (day_df.count(), 0, 0)
    table = lake.read("ml", "test_day_predictions")
    assert table.where(F.col("score_date") == F.lit(day)).count() == day_df.count() == table.count()
    detail = spark.sql(f"DESCRIBE DETAIL {lake.name('ml', 'test_day_predictions')}").first()
    assert detail is not None and detail["partitionColumns"] == ["score_date"]
    with pytest.raises(SchemaMismatchError, match=r"spine.date_column"):
        predict_and_merge(lake, day_df.drop("flight_date"), model, config, {})


# End to end on small Delta tables: train_job -> infer_job -> skew check, through the real
# point-in-time join. The shared lakehouse (e2e_lakehouse.py) ran train_job and infer_job for
# E2E_DAY; a test that runs a job again works on a copy of the tables it needs.

E2E_DAY = SCORED_DAY


@pytest.mark.e2e
def test_train_job_then_infer_job_end_to_end(e2e_lakehouse: SharedLakehouse) -> None:
    trained, inferred = e2e_lakehouse.printed["train"], e2e_lakehouse.printed["infer"]
    assert f"registered {E2E_MODEL} version 1 as @champion" in trained
    assert f"with {E2E_MODEL} version 1 (@champion)" in inferred
    lake = e2e_lakehouse.lake
    predictions = lake.read("ml", PREDICTIONS)
    first = predictions.orderBy(*KEYS).collect()
    day_flights = lake.read("silver", "e2e_flights").where(F.to_date("sched_dep_ts") == F.lit(E2E_DAY))
    assert len(first) == day_flights.count() > 0
    versions = {"e2e_weather": lake.version("gold", "e2e_weather"),
                "e2e_carrier_stats": lake.version("gold", "e2e_carrier_stats")}
    assert {r.feature_versions for r in first} == {json.dumps(versions, sort_keys=True)}
    assert {r.model_version for r in first} == {"1"}
    # Re-running is idempotent: predict_and_merge (what the job calls) is re-run in
    # test_scores_in_spark_equal_the_pyfunc_and_rerun_changes_nothing.


@pytest.mark.e2e
def test_infer_on_a_day_without_flights_says_so_and_writes_nothing(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path, capsys
) -> None:
    ctx = e2e_lakehouse.clone(tmp_path, "empty_day", MODEL_TABLES)  # the job records its run
    lake = ctx.lake
    empty_day = date(2014, 6, 1)  # the synthetic flights end in 2013
    written = lake.exists("ml", PREDICTIONS) and lake.version("ml", PREDICTIONS)

    infer_job(ctx, RunWindow(empty_day, empty_day))

    out = capsys.readouterr().out
    assert f"no rows in the spine for {empty_day}" in out and "nothing scored" in out
    assert (lake.exists("ml", PREDICTIONS) and lake.version("ml", PREDICTIONS)) == written


@pytest.mark.e2e
def test_skew_check_catches_features_changed_since_training(
    e2e_lakehouse: SharedLakehouse, tmp_path: Path
) -> None:
    from sparkfs.core.merge import merge_upsert
    from sparkfs.ml.config import load_training_config
    from sparkfs.ml.score import load_scoring_model
    from sparkfs.ml.skew import skew_check

    # A copy of the model's tables: the correction below must not reach other tests.
    ctx = e2e_lakehouse.clone(tmp_path, "skew", MODEL_TABLES)
    lake = ctx.lake
    config = load_training_config(ctx.settings)
    model = load_scoring_model(ctx.settings, E2E_MODEL, "champion")
    report = skew_check(lake, config, model, 150)
    assert report.identical, report.describe()
    assert report.rows_compared == 150
    before = lake.read("ml", PREDICTIONS).orderBy(*KEYS).collect()
    assert before  # the shared run scored E2E_DAY

    # A late correction to January's JFK weather: the model was trained on the old values.
    corrected = lake.read("gold", "e2e_weather").where(
        (F.col("origin") == "JFK") & (F.month("obs_ts") == 1)
    ).withColumn("wind_speed", F.col("wind_speed") + 1.0)
    merge_upsert(lake, "gold", "e2e_weather", corrected, ["origin", "obs_ts"])
    conf = Path(ctx.settings.conf_dir) / "training.yaml"
    conf.write_text(conf.read_text().replace("skew_check: false", "skew_check: true"))
    with pytest.raises(TrainingServingSkewError) as info:
        infer_job(ctx, RunWindow(E2E_DAY, E2E_DAY))
    text = str(info.value)
    assert "differing rows per feature {'wind_speed': " in text
    assert "'origin': 'JFK'" in text and "'origin': 'EWR'" not in text
    # The check runs before scoring: nothing was written.
    assert lake.read("ml", PREDICTIONS).orderBy(*KEYS).collect() == before
