"""What the notebooks call: feature tables, one flight's point-in-time features, the champion model.

The notebooks in ``notebooks/`` hold no logic of their own; each cell is a call into this module,
which reuses the product's own code paths (the lakehouse, the training config, the spine and
point-in-time join of training and inference, the MLflow registry). Everything is computed in
Spark and only small, bounded results come back to the driver (documentation, histograms, one
flight, a sample), so the same notebooks run on the full lakehouse and on Databricks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.config import Settings, load_settings
from sparkfs.core.errors import ConfigError
from sparkfs.core.lakehouse import EVENT_TIME_PROPERTY, KEYS_PROPERTY, Lakehouse, open_lakehouse
from sparkfs.core.session import get_spark
from sparkfs.ml.assembly import build_features, build_spine
from sparkfs.ml.config import LookupConfig, TrainingConfig, load_training_config
from sparkfs.ml.score import ScoringModel, load_scoring_model, score
from sparkfs.pit.api import TrainingSet

GOLD = "gold"
_NUMERIC = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType, T.DecimalType)


@dataclass(frozen=True)
class Project:
    """The settings, the lakehouse and the training config a notebook works with."""

    settings: Settings
    lake: Lakehouse
    config: TrainingConfig


def open_project(env: str | None = None, conf_dir: str | Path | None = None) -> Project:
    """Settings (``conf/`` found from the working folder or ``SPARKFS_CONF_DIR``), the session
    (on Databricks the notebook's own), the lakehouse with its tables attached, the training config."""
    settings = load_settings(conf_dir, env)
    lake = open_lakehouse(get_spark(settings), settings)
    return Project(settings, lake, load_training_config(settings))


# ---------------------------------------------------------------------------------------------
# Feature tables


def feature_tables(lake: Lakehouse) -> pd.DataFrame:
    """One row per gold table: its documentation and layout as stored in Delta metadata."""
    rows = []
    for table in lake.tables(GOLD):
        detail = lake.table(GOLD, table).detail().first()
        assert detail is not None
        props = dict(detail["properties"] or {})
        rows.append({
            "table": table,
            "description": props.get("sparkfs.description") or detail["description"] or "",
            "keys": props.get(KEYS_PROPERTY, ""),
            "event_time": props.get(EVENT_TIME_PROPERTY) or "(static)",
            "partitioned_by": ", ".join(detail["partitionColumns"] or []),
            "owner": props.get("sparkfs.owner", ""),
            "tags": props.get("sparkfs.tags", ""),
            "delta_version": lake.version(GOLD, table),
            "columns": len(lake.read(GOLD, table).columns),
        })
    return pd.DataFrame(rows)


def feature_columns(lake: Lakehouse, table: str) -> pd.DataFrame:
    """The columns of a gold table with their types and descriptions (column comments)."""
    fields = lake.read(GOLD, table).schema.fields
    return pd.DataFrame(
        [{"column": f.name, "type": f.dataType.simpleString(),
          "description": f.metadata.get("comment", "")} for f in fields]
    )


def numeric_columns(lake: Lakehouse, table: str, exclude: Sequence[str] = ()) -> list[str]:
    """The numeric feature columns of a gold table (keys and event time excluded)."""
    props = lake.properties(GOLD, table)
    skip = {*exclude, *props.get(KEYS_PROPERTY, "").split(","), props.get(EVENT_TIME_PROPERTY, "")}
    return [f.name for f in lake.read(GOLD, table).schema.fields
            if isinstance(f.dataType, _NUMERIC) and f.name not in skip]


def histograms(df: DataFrame, columns: Sequence[str], bins: int = 30) -> dict[str, pd.DataFrame]:
    """Equal-width histograms computed in Spark: per column, ``bin_start``, ``bin_end``, ``count``
    and the number of nulls (``nulls`` attribute of the frame). Two passes over ``df``."""
    if not columns:
        return {}
    stats = df.select(
        *[F.min(F.col(c).cast("double")).alias(f"lo{i}") for i, c in enumerate(columns)],
        *[F.max(F.col(c).cast("double")).alias(f"hi{i}") for i, c in enumerate(columns)],
        *[F.count_if(F.col(c).isNull()).alias(f"nulls{i}") for i, c in enumerate(columns)],
    ).first()
    assert stats is not None
    bounds = {c: (stats[f"lo{i}"], stats[f"hi{i}"]) for i, c in enumerate(columns)}
    buckets = []
    for c, (lo, hi) in bounds.items():
        if lo is None:
            continue
        width = (hi - lo) / bins if hi > lo else 1.0
        value = F.col(c).cast("double")
        # least() skips nulls, so a null value must stay out explicitly
        bucket = F.when(value.isNotNull(),
                        F.least(F.floor((value - F.lit(lo)) / F.lit(width)), F.lit(bins - 1)))
        buckets.append(F.struct(F.lit(c).alias("column"), bucket.cast("int").alias("bin")))
    counts: dict[tuple[str, int], int] = {}
    if buckets:
        exploded = df.select(F.explode(F.array(*buckets)).alias("b")).where(F.col("b.bin").isNotNull())
        for row in exploded.groupBy("b.column", "b.bin").count().collect():  # <= columns x bins rows
            counts[(row["column"], row["bin"])] = row["count"]
    result = {}
    for i, c in enumerate(columns):
        lo, hi = bounds[c]
        if lo is None:
            frame = pd.DataFrame(columns=["bin_start", "bin_end", "count"])
        else:
            width = (hi - lo) / bins if hi > lo else 1.0
            frame = pd.DataFrame([{"bin_start": lo + b * width, "bin_end": lo + (b + 1) * width,
                                   "count": counts.get((c, b), 0)} for b in range(bins)])
        frame.attrs["nulls"] = int(stats[f"nulls{i}"])
        result[c] = frame
    return result


def plot_distributions(
    lake: Lakehouse, table: str, columns: Sequence[str] | None = None, bins: int = 30
) -> Figure:
    """Histograms of a gold table's numeric features (all of them by default), one panel each."""
    columns = list(columns or numeric_columns(lake, table))
    if not columns:
        raise ConfigError(f"gold table '{table}' has no numeric feature columns to plot")
    hists = histograms(lake.read(GOLD, table), columns, bins)
    ncols = min(3, len(columns))
    nrows = math.ceil(len(columns) / ncols)
    fig = Figure(figsize=(4.5 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, column in zip(axes, columns, strict=False):
        h = hists[column]
        if len(h):
            ax.bar(h["bin_start"], h["count"], width=h["bin_end"] - h["bin_start"], align="edge")
        ax.set_title(f"{column} (nulls: {h.attrs['nulls']})", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes[len(columns):]:
        ax.set_visible(False)
    fig.suptitle(f"gold.{table}")
    return fig


# ---------------------------------------------------------------------------------------------
# One flight, point in time


def pick_flight(project: Project, day: date | str | None = None) -> dict[str, Any]:
    """A flight of ``day`` (default: the last day of the training window) with all its lookup
    keys present: its spine row as a dict (keys, timestamp, spine columns)."""
    config = project.config
    day = date.fromisoformat(day) if isinstance(day, str) else day or config.end
    spine = build_spine(project.lake, config, day, day, labelled=False)
    needed = sorted({c for lk in config.lookups for c in _spine_keys(lk)})
    row = (spine.where(F.col(config.timestamp).isNotNull())
           .dropna(subset=needed).orderBy(config.timestamp, *config.keys).first())
    if row is None:
        raise ConfigError(f"no flight with all lookup keys {needed} on {day} in the spine table")
    return row.asDict()


def lookup_flight(project: Project, flight: Mapping[str, Any]) -> TrainingSet:
    """The point-in-time features of one flight, through the code training and inference run
    (spine -> :func:`~sparkfs.ml.assembly.build_features`)."""
    config = project.config
    day = flight[config.spine.date_column] if config.spine.date_column else flight[config.timestamp].date()
    spine = build_spine(project.lake, config, day, day, labelled=False)
    one = spine.where(_all_equal({k: flight[k] for k in config.keys}))
    return build_features(project.lake, config, one, label=None)


def feature_timeline(
    project: Project, flight: Mapping[str, Any], lookup: int = 0, around: int = 3
) -> pd.DataFrame:
    """The rows of lookup ``lookup``'s table for this flight's keys just before and after the
    lookup time ``t``: the ``around`` latest rows with event time ``<= t`` and the ``around``
    first ones after it, with ``t`` and the minutes from ``t`` to each event, so a reader can
    see which row the point-in-time join had to take (the latest at or before ``t``, within the
    lookback)."""
    config = project.config
    lk = config.lookups[lookup]
    props = project.lake.properties(GOLD, lk.table)
    event_time = props.get(EVENT_TIME_PROPERTY, "")
    table_keys = [k for k in props.get(KEYS_PROPERTY, "").split(",") if k]
    spine_keys = _spine_keys(lk)
    rows = project.lake.read(GOLD, lk.table).where(
        _all_equal({tk: flight[sk] for tk, sk in zip(table_keys, spine_keys, strict=True)}))
    if not event_time:
        return rows.limit(around).toPandas()
    t = flight[lk.timestamp_lookup_key or config.lookup_timestamp]
    before = rows.where(F.col(event_time) <= F.lit(t)).orderBy(F.col(event_time).desc()).limit(around)
    after = rows.where(F.col(event_time) > F.lit(t)).orderBy(event_time).limit(around)
    frame = pd.DataFrame(before.unionByName(after).orderBy(event_time).toPandas())
    frame.insert(0, "lookup_time", t)
    minutes = (pd.to_datetime(frame[event_time]) - pd.Timestamp(t)).dt.total_seconds() / 60
    frame.insert(1, "minutes_after_lookup", minutes)
    return frame


def _spine_keys(lk: LookupConfig) -> list[str]:
    return list(lk.lookup_key.values()) if isinstance(lk.lookup_key, dict) else list(lk.lookup_key)


def _all_equal(values: Mapping[str, Any]) -> Any:
    condition = F.lit(True)
    for column, value in values.items():
        condition = condition & F.col(column).eqNullSafe(F.lit(value))
    return condition


# ---------------------------------------------------------------------------------------------
# A training set, and the model behind the alias


def training_set(project: Project, start: date | str | None = None, end: date | str | None = None,
                 days: int = 14) -> TrainingSet:
    """A labelled point-in-time training set for flights of ``start..end`` (default: the last
    ``days`` days of the configured window), built as ``sparkfs run train`` builds it."""
    config = project.config
    end = date.fromisoformat(end) if isinstance(end, str) else end or config.end
    start = date.fromisoformat(start) if isinstance(start, str) else start or end - timedelta(days=days - 1)
    spine = build_spine(project.lake, config, start, end, labelled=True)
    return build_features(project.lake, config, spine, label=config.label)


def table_versions(ts: TrainingSet) -> pd.DataFrame:
    """The Delta version of every table a training set read (what rebuilds it exactly)."""
    versions = ts.spec.table_versions()
    return pd.DataFrame({"table": list(versions), "delta_version": list(versions.values())})


def feature_summary(ts: TrainingSet, columns: Sequence[str]) -> pd.DataFrame:
    """Per feature: share of nulls (no feature row in the lookback, or a null value) and, for
    numeric features, mean / min / max; one pass in Spark."""
    df = ts.df
    types = dict(df.dtypes)
    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, c in enumerate(columns):
        aggs.append(F.avg(F.col(c).isNull().cast("double")).alias(f"null{i}"))
        if isinstance(df.schema[c].dataType, _NUMERIC):
            aggs += [F.avg(c).alias(f"mean{i}"), F.min(c).alias(f"min{i}"), F.max(c).alias(f"max{i}")]
    row = df.select(*aggs).first()
    assert row is not None
    stats = row.asDict()
    return pd.DataFrame([{
        "feature": c, "type": types[c], "null_share": stats[f"null{i}"],
        "mean": stats.get(f"mean{i}"), "min": stats.get(f"min{i}"), "max": stats.get(f"max{i}"),
    } for i, c in enumerate(columns)])


def plot_label_rate(ts: TrainingSet, label: str, by: str, top: int = 15) -> Figure:
    """Share of positive labels per value of ``by`` (the ``top`` most frequent values)."""
    rates = pd.DataFrame(ts.df.groupBy(by).agg(F.count(F.lit(1)).alias("rows"), F.avg(label).alias("rate"))
                         .orderBy(F.desc("rows")).limit(top).toPandas())
    fig = Figure(figsize=(8, 3.5), layout="constrained")
    ax = fig.subplots()
    ax.bar(rates[by].astype(str), rates["rate"])
    overall = ts.df.select(F.avg(label)).first()
    if overall is not None and overall[0] is not None:
        ax.axhline(overall[0], color="black", linestyle="--", linewidth=1, label="overall")
        ax.legend()
    ax.set(xlabel=by, ylabel=f"share of {label} = 1", title=f"{label} by {by} (training set)")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    return fig


def champion(project: Project) -> ScoringModel:
    """The registered model version behind the configured alias (a clear error if none)."""
    return load_scoring_model(project.settings, project.config.model_name, project.config.alias)


def model_metrics(model: ScoringModel) -> pd.DataFrame:
    """Test metrics of the model's training run with their bootstrap intervals, and the baseline."""
    from mlflow import MlflowClient

    metrics = MlflowClient().get_run(model.run_id).data.metrics if model.run_id else {}
    names = sorted(k.removeprefix("test_").removesuffix("_ci_low")
                   for k in metrics if k.startswith("test_") and k.endswith("_ci_low"))
    return pd.DataFrame([{
        "metric": n, "model": metrics.get(f"test_{n}"),
        "ci_low": metrics.get(f"test_{n}_ci_low"), "ci_high": metrics.get(f"test_{n}_ci_high"),
        "baseline": metrics.get(f"baseline_{n}"),
    } for n in names])


def model_lineage(model: ScoringModel) -> pd.DataFrame:
    """The registered version's tags: the Delta version of each feature table it was trained on."""
    return pd.DataFrame(sorted(model.tags.items()), columns=["tag", "value"])


def model_inputs(model: ScoringModel) -> pd.DataFrame:
    """The model signature's inputs, in order."""
    return pd.DataFrame(model.inputs, columns=["column", "type"])


def model_plots(model: ScoringModel) -> Figure:
    """The plots logged with the model's training run (ROC, calibration, importance), side by side."""
    import matplotlib.image as mpimg
    from mlflow.artifacts import download_artifacts

    if model.run_id is None:
        raise ConfigError(f"model {model.name} version {model.version} has no training run")
    folder = Path(download_artifacts(run_id=model.run_id, artifact_path="plots"))
    images = sorted(folder.glob("*.png"))
    fig = Figure(figsize=(5 * max(len(images), 1), 4.5), layout="constrained")
    for ax, path in zip(fig.subplots(1, max(len(images), 1), squeeze=False).ravel(), images,
                        strict=False):
        ax.imshow(mpimg.imread(path))
        ax.set_axis_off()
    fig.suptitle(f"{model.name} version {model.version} (@{model.alias}): run {model.run_id}")
    return fig


def score_training_set(model: ScoringModel, ts: TrainingSet, keys: Sequence[str], label: str) -> pd.DataFrame:
    """Score a training set with the model inside Spark (the batch-inference scorer) and compare
    the mean predicted probability with the observed label rate, per decile of probability."""
    scored = score(ts.df, model, keep=[*keys, label])
    deciles = scored.withColumn("decile", F.least(F.floor(F.col("probability") * 10), F.lit(9)))
    return (deciles.groupBy("decile")
            .agg(F.count(F.lit(1)).alias("rows"), F.avg("probability").alias("mean_probability"),
                 F.avg(label).alias("observed_rate"))
            .orderBy("decile").toPandas())
