"""``conf/monitoring.yaml``: the alert policy and the bounds of the monitor job.

Drift levels are :class:`~sparkfs.monitoring.drift.DriftThresholds`; performance levels compare
an estimated or realized metric with the reference's (the model's test split): a drop of at
least ``warn_drop`` warns, of at least ``alert_drop`` alerts -- when the metric's band lies
wholly below the reference too; a drop inside the band stays a warning (a small day's estimate
is noisy). ``fail_on_alert`` makes the monitor job exit non-zero after writing its tables and
alert rows, so a scheduler's failure notification fires. A missing file means the defaults.

Example::

    config = load_monitoring_config(settings)
    config.drift.psi_alert, config.performance.alert_drop, config.fail_on_alert
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sparkfs.core.config import Settings, StrictModel, load_yaml
from sparkfs.monitoring.drift import DriftThresholds

MONITORING_CONF = "monitoring.yaml"


class PerformancePolicy(StrictModel):
    warn_drop: float = Field(0.03, ge=0)
    alert_drop: float = Field(0.05, ge=0)


class IngestionPolicy(StrictModel):
    """Per table and day: the row count against the same weekday of the ``weeks`` before it
    (below ``(1 - tolerance) x`` their minimum or above ``(1 + tolerance) x`` their maximum is a
    warning, no rows at all an alert), and how late the newest landing may be."""

    tables: list[str] = Field(default_factory=list)   # "layer.table"
    weeks: int = Field(4, ge=1)
    tolerance: float = Field(0.5, ge=0)
    max_delay_hours: float = Field(30.0, gt=0)


class MonitoringConfig(StrictModel):
    drift: DriftThresholds = DriftThresholds()
    performance: PerformancePolicy = PerformancePolicy()
    ingestion: IngestionPolicy = IngestionPolicy()
    # Rows of a day brought to the driver for NannyML's estimate (a seeded sample above it).
    estimate_max_rows: int = Field(100_000, ge=100)
    # Rows of the labelled day brought to the driver for the realized metrics and their intervals.
    realized_max_rows: int = Field(1_000_000, ge=100)
    bootstrap: int = Field(200, ge=0)
    seed: int = 7
    fail_on_alert: bool = False


def load_monitoring_config(settings: Settings, path: Path | str | None = None) -> MonitoringConfig:
    """``<conf_dir>/monitoring.yaml`` (or ``path``); the defaults when the file does not exist."""
    file = Path(path) if path else Path(settings.conf_dir) / MONITORING_CONF
    if path is None and not file.is_file():
        return MonitoringConfig()
    return load_yaml(file, MonitoringConfig)
