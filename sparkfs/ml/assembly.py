"""Training-set assembly: the spine and its point-in-time features, shared by training, scoring
and exploration.

Training, batch scoring, the skew check and the notebooks all build their rows here, so they
cannot disagree on which flights are in the spine, when their features are looked up, or which
feature rows match. The spine's lookup time is :attr:`~sparkfs.ml.config.TrainingConfig.lookup_timestamp`
(the spine timestamp minus ``spine.prediction_lead``); a lookup matches feature rows with
``feature_ts <= t`` and, with a lookback L, ``feature_ts > t - L``.

Example::

    spine_df = build_spine(lake, config, date(2013, 6, 1), date(2013, 6, 30), labelled=True)
    training_set = build_features(lake, config, spine_df, label=config.label)
    training_set.spec.table_versions()    # {"carrier_delays": 4, ...}
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.ml.config import TrainingConfig
from sparkfs.pit.api import FeatureLookup, TrainingSet, create_training_set

# Where a training run logs what it was built from (MLflow artifacts), read back by scoring.
SPEC_ARTIFACT = "lineage/training_set_spec.json"

SPINE_ARTIFACT = "lineage/spine.json"



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
    else UTC dates of the timestamp), read from the configured spine table: keys, timestamp, the
    configured spine columns and, when ``labelled``, the label (``label.column > label.above``;
    null stays null). Training and inference both build their spine here, so they cannot
    disagree on it. ``version`` reads the source table as of that Delta version (to rebuild a
    training spine).

    Example::

        spine_df = build_spine(lake, config, date(2013, 12, 2), date(2013, 12, 2), labelled=False)
    """
    spine = config.spine
    source = lake.read(spine.layer, spine.table, version=version)
    wanted = list(dict.fromkeys([*config.keys, config.timestamp, *spine.columns]))
    require_columns(source, [*wanted, spine.label.column] if labelled else wanted,
                     lake.name(spine.layer, spine.table))
    day = F.col(spine.date_column) if spine.date_column else F.to_date(F.col(config.timestamp))
    rows = source.where(day.between(F.lit(start), F.lit(end)))
    columns: list[Column] = [F.col(c) for c in wanted]
    lead = int(spine.prediction_lead.total_seconds())
    if lead:
        columns.append((F.col(config.timestamp) - F.make_dt_interval(secs=F.lit(lead)))
                       .alias(config.lookup_timestamp))
    if labelled:
        label = (F.col(spine.label.column) > F.lit(spine.label.above)).cast("int")
        columns.append(label.alias(config.label))
    return rows.select(*columns)


def build_features(
    lake: Lakehouse, config: TrainingConfig, spine_df: DataFrame, *, label: str | None
) -> TrainingSet:
    """The point-in-time feature lookups of ``config`` on ``spine_df`` (the code path shared by
    training, inference and the skew check). A lookup matches feature rows with
    ``feature_ts <= t`` and, with a lookback L, ``feature_ts > t - L``, where ``t`` is the spine's
    :attr:`~TrainingConfig.lookup_timestamp` (the spine timestamp minus the prediction lead).

    Example::

        training_set = build_features(lake, config, spine_df, label=config.label)
        training_set.df, training_set.spec.table_versions()
    """
    lookups = [FeatureLookup(**lookup.model_dump()) for lookup in config.lookups]
    return create_training_set(lake, spine_df, lookups, label=label,
                               timestamp_key=config.lookup_timestamp)
