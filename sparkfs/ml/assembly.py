"""Training-set assembly: the spine and its point-in-time features, shared by training, scoring
and exploration.

Training, batch scoring, the skew check and the notebooks all build their rows here, so they
cannot disagree on which flights are in the spine, when their features are looked up, or which
feature rows match. The spine's lookup time ``t`` is the moment the prediction is made, by the
one rule of ``prediction_time`` (:class:`~sparkfs.ml.config.PredictionTimeConfig`), applied here
only (:func:`prediction_instant`): ``mode: batch`` -- the cutoff of the row's day (every flight
of D as known at D 06:00 UTC); ``mode: lead`` -- the row's timestamp minus the lead. A lookup
matches feature rows with ``feature_ts <= t`` and, with a lookback L, ``feature_ts > t - L``.
A training run records its rule (:data:`PREDICTION_TIME_TAG`) and scoring uses the model's own
(:func:`with_model_rule`), so a model is served by the rule it was evaluated under.

Example::

    spine_df = build_spine(lake, config, date(2013, 6, 1), date(2013, 6, 30), labelled=True)
    training_set = build_features(lake, config, spine_df, label=config.label)
    training_set.spec.table_versions()    # {"carrier_delays": 4, ...}
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.ml.config import PredictionTimeConfig, TrainingConfig
from sparkfs.pit.api import FeatureLookup, TrainingSet, create_training_set

log = logging.getLogger(__name__)

# Where a training run logs what it was built from (MLflow artifacts), read back by scoring.
SPEC_ARTIFACT = "lineage/training_set_spec.json"

SPINE_ARTIFACT = "lineage/spine.json"

# The prediction-time rule a model was trained with (JSON), on its run and registered version.
PREDICTION_TIME_TAG = "sparkfs.prediction_time"


def prediction_instant(rule: PredictionTimeConfig, timestamp: Column, day: Column) -> Column:
    """The instant a row is predicted at, under ``rule``: ``mode: batch`` -- the cutoff on
    ``day`` in the rule's time zone (``day`` 2013-06-01, cutoff 06:00 UTC -> 2013-06-01 06:00 UTC);
    ``mode: lead`` -- ``timestamp - lead``.

    Example::

        spine_df.withColumn("prediction_ts", prediction_instant(rule, F.col("sched_dep_ts"),
                                                                F.col("flight_date")))
    """
    if rule.mode == "lead":
        return timestamp - F.make_dt_interval(secs=F.lit(int(rule.lead.total_seconds())))
    cutoff = rule.cutoff
    return F.make_timestamp(
        F.year(day), F.month(day), F.dayofmonth(day), F.lit(cutoff.hour), F.lit(cutoff.minute),
        F.lit(cutoff.second), F.lit(rule.timezone),
    )


def with_model_rule(config: TrainingConfig, tags: Mapping[str, str]) -> TrainingConfig:
    """``config`` with the prediction-time rule a model was trained with (its
    :data:`PREDICTION_TIME_TAG`), so scoring serves the model by the rule it was evaluated under.
    A model without the tag (trained before the rule was recorded) keeps ``config``'s rule."""
    recorded = tags.get(PREDICTION_TIME_TAG)
    if recorded is None:
        return config
    rule = PredictionTimeConfig.model_validate(json.loads(recorded))
    if rule != config.prediction_time:
        log.warning("the model was trained with prediction time '%s', conf/training.yaml says '%s': "
                    "scoring with the model's", rule.describe(), config.prediction_time.describe())
    return config.model_copy(update={"prediction_time": rule})


def build_spine(
    lake: Lakehouse,
    config: TrainingConfig,
    start: date,
    end: date,
    *,
    labelled: bool,
    version: int | None = None,
) -> DataFrame:
    """One row per entity and prediction time on ``start..end`` (dates of ``spine.date_column``,
    else UTC dates of the timestamp), read from the configured spine table (``labelled``: the
    events with outcomes, ``spine.table``; else what inference scores, ``spine.serving_table``
    when set, e.g. the schedule known before the day): keys, timestamp, the
    configured spine columns and, when ``labelled``, the label (``label.column > label.above``;
    null stays null). Training and inference both build their spine here, so they cannot
    disagree on it. ``version`` reads the source table as of that Delta version (to rebuild a
    training spine).

    The lookup time (:attr:`~TrainingConfig.lookup_timestamp`, ``prediction_ts``) follows
    ``config.prediction_time`` (:func:`prediction_instant`). Under ``mode: batch`` a row whose
    timestamp is at or before its day's cutoff is left out: the batch that would score it starts
    after it happened (a row with a null timestamp stays).

    Example::

        spine_df = build_spine(lake, config, date(2013, 12, 2), date(2013, 12, 2), labelled=False)
    """
    spine = config.spine
    table = spine.table if labelled or spine.serving_table is None else spine.serving_table
    source = lake.read(spine.layer, table, version=version)
    wanted = list(dict.fromkeys([*config.keys, config.timestamp, *spine.columns]))
    require_columns(source, [*wanted, spine.label.column] if labelled else wanted,
                     lake.name(spine.layer, table))
    day = F.col(spine.date_column) if spine.date_column else F.to_date(F.col(config.timestamp))
    rows = source.where(day.between(F.lit(start), F.lit(end)))
    columns: list[Column] = [F.col(c) for c in wanted]
    rule, timestamp = config.prediction_time, F.col(config.timestamp)
    if config.lookup_timestamp != config.timestamp:
        at = prediction_instant(rule, timestamp, day)
        columns.append(at.alias(config.lookup_timestamp))
        if rule.mode == "batch":
            rows = rows.where(timestamp.isNull() | (timestamp > at))
    if labelled:
        label = (F.col(spine.label.column) > F.lit(spine.label.above)).cast("int")
        columns.append(label.alias(config.label))
    return rows.select(*columns)


def build_features(
    lake: Lakehouse, config: TrainingConfig, spine_df: DataFrame, *, label: str | None,
    feature_times: str | None = None,
) -> TrainingSet:
    """The point-in-time feature lookups of ``config`` on ``spine_df`` (the code path shared by
    training, inference and the skew check). A lookup matches feature rows with
    ``feature_ts <= t`` and, with a lookback L, ``feature_ts > t - L``, where ``t`` is the spine's
    :attr:`~TrainingConfig.lookup_timestamp` (the prediction time, see :func:`prediction_instant`).
    ``feature_times`` adds the column recording which feature row each spine row used (see
    :func:`~sparkfs.pit.api.create_training_set`), for the leakage audit.

    Example::

        training_set = build_features(lake, config, spine_df, label=config.label)
        training_set.df, training_set.spec.table_versions()
    """
    lookups = [FeatureLookup(**lookup.model_dump()) for lookup in config.lookups]
    return create_training_set(lake, spine_df, lookups, label=label,
                               timestamp_key=config.lookup_timestamp, feature_times=feature_times)
