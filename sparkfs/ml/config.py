"""``conf/training.yaml`` as typed config: features, split, XGBoost, baseline, gate, inference.

Loaded once with :func:`load_training_config` (through :func:`sparkfs.core.config.load_yaml`: env
vars expanded, unknown keys and wrong types rejected with the file and key). Durations are
:data:`~sparkfs.core.durations.Duration`: ``30d``, ``2w``, ``3h``, ``15m``, ``10s`` or ISO 8601
(``P30D``), as in every conf file.

Example::

    config = load_training_config(settings)
    config.split.gap, config.feature_columns     # timedelta(days=30), ['dep_hour', ...]
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, field_validator, model_validator

from sparkfs.core.config import Settings, StrictModel, load_yaml
from sparkfs.core.durations import Duration, format_duration
from sparkfs.core.errors import ConfigError

if TYPE_CHECKING:
    from sparkfs.features.feature_tables import FeatureTableSpec

TRAINING_CONF = "training.yaml"
PREDICTION_TS = "prediction_ts"

MetricName = Literal["roc_auc", "pr_auc", "log_loss", "f1"]


class FeaturesConfig(StrictModel):
    """The model's input columns and how they are preprocessed."""

    numeric: list[str]
    categorical: list[str] = Field(default_factory=list)
    scale: bool = False  # trees do not need it; on for models that do
    min_category_count: int = Field(1, ge=1)


class SplitConfig(StrictModel):
    """Durations counted back from the end of the training window: ``train | gap | validation |
    gap | test``. ``gap`` must be at least the longest feature window
    (:func:`sparkfs.ml.splits.effective_feature_window`)."""

    validation: Duration = timedelta(days=45)
    test: Duration = timedelta(days=45)
    gap: Duration = timedelta(days=30)


class XGBoostConfig(StrictModel):
    params: dict[str, float | int | str] = Field(default_factory=dict)
    num_boost_round: int = Field(500, ge=1)
    early_stopping_rounds: int = Field(30, ge=1)


class BaselineConfig(StrictModel):
    """The baseline the model must beat: the train split's positive rate per ``column`` value,
    shrunk towards the overall rate by ``smoothing`` pseudo-rows."""

    column: str
    smoothing: float = Field(20.0, ge=0)


class EvaluationConfig(StrictModel):
    bootstrap: int = Field(200, ge=0)
    slice_bootstrap: int = Field(100, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    slices: list[str] = Field(default_factory=list)  # columns whose values are evaluated apart
    seed: int = 7


class GateConfig(StrictModel):
    """Register only if the model beats the baseline on ``metric`` by ``min_margin`` and no slice
    of at least ``min_slice_rows`` rows is below ``slice_floor`` on ``slice_metric``."""

    metric: MetricName = "roc_auc"
    min_margin: float = 0.02
    slice_metric: MetricName = "roc_auc"
    slice_floor: float = 0.55
    min_slice_rows: int = Field(300, ge=1)


class InferenceConfig(StrictModel):
    table: str  # in the ml layer
    # Spine columns copied onto each prediction row (for slicing and monitoring).
    context_columns: list[str] = Field(default_factory=list)
    skew_check: bool = False
    skew_sample_rows: int = Field(200, ge=1)
    # A batch of at most this many rows is scored on the driver (sparkfs.ml.score.score); 0: always in Spark.
    driver_max_rows: int = Field(100_000, ge=0)


class LabelConfig(StrictModel):
    """The label is ``column > above`` as 0/1; a null ``column`` (a cancelled flight) stays null."""

    column: str
    above: float


def _clock_time(value: object) -> object:
    """A quoted ``"06:00"``: YAML reads an unquoted 6:00 as the number 360, not a time."""
    if isinstance(value, time):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a quoted time of day like \"06:00\"; found {value!r} "
                         "(YAML reads an unquoted 6:00 as the number 360: quote it)")
    return value


ClockTime = Annotated[time, BeforeValidator(_clock_time)]


class PredictionTimeConfig(StrictModel):
    """When a prediction is made: the spine's lookup time, one rule for training and inference.

    - ``mode: batch`` -- every row of day D (the spine's ``date_column``, else the UTC date of its
      timestamp) is scored by the batch that starts at ``cutoff`` on D in ``timezone``, with
      features as known at that instant: the lookup time is the cutoff, whatever the row's own
      time. A row whose timestamp is at or before its day's cutoff has happened before that
      batch starts, and no earlier batch knows it (a day's schedule lands the evening before, after
      the previous batch): it is left out of the spine, in training and inference alike.
    - ``mode: lead`` -- each row is predicted ``lead`` before its own timestamp (for a service that
      scores close to the event); ``lead: 0s`` looks features up at the timestamp itself.

    Example::

        PredictionTimeConfig.model_validate({"mode": "batch", "cutoff": "06:00", "timezone": "UTC"})
    """

    mode: Literal["batch", "lead"]
    cutoff: ClockTime = time(6, 0)
    timezone: str = "UTC"
    lead: Duration = timedelta(0)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}; use an IANA name like 'UTC' or "
                             "'America/New_York'") from exc
        return value

    @model_validator(mode="after")
    def _fields_of_the_mode(self) -> PredictionTimeConfig:
        # Set away from its default, a field of the other mode is a misunderstanding, not a no-op.
        other = {"batch": {"lead"}, "lead": {"cutoff", "timezone"}}[self.mode]
        other = {f for f in other if getattr(self, f) != type(self).model_fields[f].default}
        if other:
            raise ValueError(f"mode {self.mode!r} does not take {sorted(other)}: batch takes cutoff and "
                             "timezone, lead takes lead")
        return self

    def describe(self) -> str:
        if self.mode == "batch":
            return f"batch at {self.cutoff:%H:%M} {self.timezone}"
        return f"lead {format_duration(self.lead)} before the event"


class SpineConfig(StrictModel):
    """Where the spine comes from: one row per entity and prediction time."""

    layer: str
    table: str  # what training reads: the events with their outcomes (the label)
    # What inference reads (same layer): the events known before they happen (a schedule, no
    # outcome columns). None: inference reads ``table`` too (a backtest).
    serving_table: str | None = None
    # Source column holding the event date (prunes partitions); None: the date of ``timestamp``.
    date_column: str | None = None
    # Source columns copied onto the spine besides keys and timestamp (lookup keys, features).
    columns: list[str] = Field(default_factory=list)
    label: LabelConfig


class LookupConfig(StrictModel):
    """One :class:`~sparkfs.pit.FeatureLookup` on a gold feature table."""

    table: str
    lookup_key: list[str] | dict[str, str]  # spine columns; {table key: spine column} if renamed
    timestamp_lookup_key: str | None = None
    features: list[str] | None = None
    lookback: Duration | None = None
    prefix: str | None = None
    known_at: str | None = None


class TrainingConfig(StrictModel):
    """``conf/training.yaml``: what to train on, how to split, evaluate, gate and register.

    Example::

        config = load_training_config(settings)
        config.feature_columns, config.split.gap, config.lookup_timestamp
    """

    model_name: str
    alias: str = "champion"
    experiment: str | None = None  # default: mlflow.experiment from sparkfs.yaml
    keys: list[str]
    timestamp: str
    label: str
    start: date  # the default training window; `sparkfs run train --start S --end E` overrides it
    end: date
    # A floor for the longest feature window, which is otherwise derived from the lookups'
    # lookbacks and the windows of the feature tables they read (splits.effective_feature_window);
    # it can only raise the derived value. None: the derived value alone.
    longest_feature_window: Duration | None = None
    max_rows: int = Field(1_000_000, ge=100)
    features: FeaturesConfig
    split: SplitConfig = SplitConfig()
    xgboost: XGBoostConfig = XGBoostConfig()
    baseline: BaselineConfig
    evaluation: EvaluationConfig = EvaluationConfig()
    gate: GateConfig = GateConfig()
    inference: InferenceConfig
    spine: SpineConfig
    # When predictions are made (the spine's lookup time): see PredictionTimeConfig.
    prediction_time: PredictionTimeConfig
    lookups: list[LookupConfig] = Field(default_factory=list)
    # Columns tagged `pii` in conf/feature_tables.yaml that this model may use anyway, as
    # <table>.<column>; any other PII column a lookup reads is refused at load.
    allow_pii: list[str] = Field(default_factory=list)

    @property
    def lookup_timestamp(self) -> str:
        """The spine column the point-in-time lookups use: ``prediction_ts`` (the prediction time
        of :class:`PredictionTimeConfig`), or the timestamp itself for ``mode: lead`` with no lead."""
        rule = self.prediction_time
        return self.timestamp if rule.mode == "lead" and not rule.lead else PREDICTION_TS

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]


def load_training_config(settings: Settings, path: Path | str | None = None) -> TrainingConfig:
    """Read ``<conf_dir>/training.yaml`` (or ``path``) into a :class:`TrainingConfig`; unknown
    keys and wrong types are a :class:`~sparkfs.core.errors.ConfigError` naming the file and key.

    Example::

        config = load_training_config(load_settings())
    """
    config = load_yaml(path or Path(settings.conf_dir) / TRAINING_CONF, TrainingConfig)
    # Imported here: it brings pyspark, which a usage error found above should not wait for.
    from sparkfs.features.feature_tables import declared_feature_tables

    check_pii(config, declared_feature_tables(settings))
    return config


def check_pii(config: TrainingConfig, tables: Sequence[FeatureTableSpec]) -> None:
    """Refuse a lookup that reads a column tagged ``pii`` in conf/feature_tables.yaml, unless
    ``allow_pii`` names it (``<table>.<column>``). A lookup without ``features`` reads them all."""
    specs = {t.name: t for t in tables}
    refused = []
    for lookup in config.lookups:
        spec = specs.get(lookup.table)
        if spec is None or not spec.pii:
            continue
        # Keys are joined on, not learned from; without `features` every other column is read.
        read = set(spec.pii) - set(spec.merge_keys) if lookup.features is None else set(lookup.features) & set(spec.pii)
        refused += [f"{lookup.table}.{c}" for c in sorted(read) if f"{lookup.table}.{c}" not in config.allow_pii]
    if refused:
        raise ConfigError(
            f"{TRAINING_CONF}: lookups read columns tagged pii in feature_tables.yaml: {refused}. "
            "Leave them out of the lookup's features, or allow them explicitly: allow_pii: "
            f"[{', '.join(refused)}]"
        )
