"""The tables' upkeep: compact and cluster them, and VACUUM without breaking a pinned version.

A MERGE a day leaves small files behind; ``OPTIMIZE ... ZORDER BY (keys, event time)`` rewrites
them into few, clustered files, so a lookup reads fewer. Clustering is Z-order because the gold
tables are partitioned by event date, and Delta's liquid clustering excludes partitioning.

VACUUM then deletes the data files no version inside the retention still reads. Delta's rule is
by time, not by version: a file removed by a commit is deleted once that removal is older than
the retention. The files a version ``V`` reads are removed at the earliest by commit ``V + 1``,
so ``V`` stays readable while the retention is at least the age of commit ``V + 1``. A version is
*pinned* when a registered model's training set (or a spec the caller names) read it:
:func:`maintain` computes the oldest pin per table and sets the table's
``delta.deletedFileRetentionDuration`` to ``max(storage.deleted_file_retention, age of the commit
after the pin + slack + margin)``, then vacuums with it: every VACUUM until the next run (a manual
one, Databricks predictive optimization's) keeps the pin too. An explicit ``retain`` shorter than
the pin needs is refused with :class:`PinnedVersionError`. Retentions are whole hours, rounded up:
Delta's VACUUM rounds the hours it is given to the nearest whole number. The same holds for the log:
``delta.logRetentionDuration`` is raised when a pin would otherwise age out of it.

Example::

    pins = pins_of_models(model_uses(settings))
    results = maintain(lake, [("gold", "carrier_delays")], pins)
    results[0].files_before, results[0].files_after
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sparkfs.catalog.usage import ModelUse
from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import (
    EVENT_TIME_PROPERTY,
    FILE_RETENTION_PROPERTY,
    KEYS_PROPERTY,
    LOG_RETENTION_PROPERTY,
    Lakehouse,
    delta_interval,
    parse_delta_interval,
)
from sparkfs.pit.api import FEATURE_LAYER
from sparkfs.pit.spec import TrainingSetSpec

# Clock differences between a commit's recorded time and its files' removal time.
DEFAULT_SLACK = timedelta(hours=1)
# How long a retention set for a pin must hold beyond today: until the next weekly run, and a day.
DEFAULT_MARGIN = timedelta(days=8)


class PinnedVersionError(SparkfsError):
    """A VACUUM (or log cleanup) would delete what a pinned Delta version reads."""


@dataclass(frozen=True)
class Pin:
    """Table ``layer.table`` at ``version`` must stay readable, because ``by`` read it."""

    layer: str
    table: str
    version: int
    by: str


def pins_of_spec(spec: TrainingSetSpec, by: str) -> list[Pin]:
    """The pins of one training-set spec: every gold lookup and a spine read from a table."""
    pins = [Pin(FEATURE_LAYER, lk.table, lk.version, by) for lk in spec.lookups]
    if spec.spine.layer and spec.spine.table and spec.spine.version is not None:
        pins.append(Pin(spec.spine.layer, spec.spine.table, spec.spine.version, by))
    return pins


def pins_of_models(uses: Iterable[ModelUse]) -> list[Pin]:
    """The pins of every registered model version (see :func:`~sparkfs.catalog.usage.model_uses`)."""
    return [Pin(layer, table, version, use.label) for use in uses for (layer, table), version in use.pins().items()]


def oldest_pins(pins: Iterable[Pin]) -> dict[tuple[str, str], Pin]:
    """The oldest pinned version of each table."""
    oldest: dict[tuple[str, str], Pin] = {}
    for pin in pins:
        key = (pin.layer, pin.table)
        if key not in oldest or pin.version < oldest[key].version:
            oldest[key] = pin
    return oldest


@dataclass(frozen=True)
class MaintenanceResult:
    """What :func:`maintain` did to one table. ``files_*``: data files in the current version;
    ``files_deleted``: files VACUUM removed from storage."""

    table: str
    version_before: int
    version_after: int
    files_before: int
    files_after: int
    zorder_by: tuple[str, ...]
    oldest_pin: int | None
    pinned_by: str | None
    retention_hours: float
    files_deleted: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _commit_time(lake: Lakehouse, layer: str, table: str, version: int) -> datetime | None:
    row = lake.table(layer, table).history().where(f"version = {int(version)}").select("timestamp").first()
    return None if row is None else row["timestamp"]


def _earliest_version(lake: Lakehouse, layer: str, table: str) -> int:
    row = lake.table(layer, table).history().selectExpr("min(version) AS v").first()
    assert row is not None
    return int(row["v"])


def required_retention(lake: Lakehouse, layer: str, table: str, version: int, now: datetime) -> timedelta:
    """How long removed files must be kept so ``version`` stays readable: the age of the commit
    after it (zero while it is the newest version: nothing it reads has been removed yet)."""
    after = _commit_time(lake, layer, table, version + 1)
    return timedelta(0) if after is None else max(now - after, timedelta(0))


def _file_count(lake: Lakehouse, layer: str, table: str) -> int:
    detail = lake.table(layer, table).detail().select("numFiles").first()
    assert detail is not None
    return int(detail["numFiles"])


def _ensure_log_retention(lake: Lakehouse, layer: str, table: str, pin: Pin, now: datetime) -> None:
    """Keep the log of ``pin``'s version: it must still be there, and stay past the table's log
    retention (raised when the pin is about to age out of it)."""
    earliest = _earliest_version(lake, layer, table)
    if pin.version < earliest:
        raise PinnedVersionError(
            f"{lake.name(layer, table)} v{pin.version}, pinned by {pin.by}, is no longer in the Delta log "
            f"(the oldest version left is v{earliest}): it cannot be rebuilt. Retrain, or restore the table"
        )
    written = _commit_time(lake, layer, table, pin.version)
    properties = lake.properties(layer, table)
    retention = parse_delta_interval(properties.get(LOG_RETENTION_PROPERTY, "interval 30 days"))
    needed = (now - written if written else timedelta(0)) + lake.settings.storage.log_retention
    if written is not None and now - written + timedelta(days=30) > retention:
        lake.spark.sql(f"ALTER TABLE {lake.name(layer, table)} SET TBLPROPERTIES "
                       f"('{LOG_RETENTION_PROPERTY}' = '{delta_interval(needed)}')")


def zorder_columns(lake: Lakehouse, layer: str, table: str) -> list[str]:
    """The keys and event time of a feature table (from its ``sparkfs.*`` properties), minus
    partition columns (Z-order cannot use them); none for a table without keys."""
    properties = lake.properties(layer, table)
    keys = [k for k in properties.get(KEYS_PROPERTY, "").split(",") if k]
    event_time = properties.get(EVENT_TIME_PROPERTY) or None
    detail = lake.table(layer, table).detail().select("partitionColumns").first()
    partitions = set(detail["partitionColumns"] or []) if detail is not None else set()
    return [c for c in [*keys, *([event_time] if event_time else [])] if c not in partitions]


def _on_disk(lake: Lakehouse, layer: str, table: str) -> int | None:
    """Data files in a local table's folder, any version's (None on Databricks). The log's
    checkpoints are parquet files too, not data: VACUUM's own commits may write one."""
    location = lake.location(layer, table)
    if location is None:
        return None
    root = Path(location)
    return sum(1 for p in root.rglob("*.parquet") if "_delta_log" not in p.relative_to(root).parts)


def _check_retain(lake: Lakehouse, layer: str, table: str, pin: Pin | None, retain: timedelta,
                  needed: timedelta, keep: timedelta, slack: timedelta) -> None:
    """An explicit retention must keep the pin (``needed``) and the table's own retention (``keep``)."""
    full_name = lake.name(layer, table)
    if pin is not None and retain < needed:
        raise PinnedVersionError(
            f"VACUUM {full_name} RETAIN {retain.total_seconds() / 3600:.2f} HOURS would delete files of "
            f"v{pin.version}, pinned by {pin.by}: keeping it readable needs at least "
            f"{needed.total_seconds() / 3600:.2f} hours (the age of v{pin.version + 1}, plus {slack} slack)"
        )
    if retain < keep:
        raise SparkfsError(
            f"VACUUM {full_name} RETAIN {retain.total_seconds() / 3600:.2f} HOURS is shorter than the table's "
            f"{FILE_RETENTION_PROPERTY} ({keep}: storage.deleted_file_retention, or longer for a pin); "
            "Delta refuses it. Lower storage.deleted_file_retention if you mean it"
        )


def whole_hours(value: timedelta) -> timedelta:
    """``value`` rounded up to whole hours: Delta's VACUUM rounds its retention to the nearest
    hour, which could shorten it by up to half an hour."""
    return timedelta(hours=math.ceil(value.total_seconds() / 3600))


def _keep(lake: Lakehouse, needed: timedelta, margin: timedelta) -> timedelta:
    """The table's retention: ``storage.deleted_file_retention``, or a pin's need plus ``margin``,
    in whole hours."""
    floor = lake.settings.storage.deleted_file_retention
    return whole_hours(max(floor, needed + margin) if needed else floor)


def _set_file_retention(lake: Lakehouse, layer: str, table: str, keep: timedelta) -> None:
    """Set ``delta.deletedFileRetentionDuration`` to ``keep`` (when it differs): every VACUUM then
    keeps the pins, this job's, a manual one, and Databricks predictive optimization's."""
    current = lake.properties(layer, table).get(FILE_RETENTION_PROPERTY)
    if current is None or parse_delta_interval(current) != timedelta(seconds=int(keep.total_seconds())):
        lake.spark.sql(f"ALTER TABLE {lake.name(layer, table)} SET TBLPROPERTIES "
                       f"('{FILE_RETENTION_PROPERTY}' = '{delta_interval(keep)}')")


def _pin_of(pins: Iterable[Pin], layer: str, table: str) -> Pin | None:
    return oldest_pins(p for p in pins if (p.layer, p.table) == (layer, table)).get((layer, table))


def maintain_table(
    lake: Lakehouse,
    layer: str,
    table: str,
    pins: Sequence[Pin] = (),
    *,
    retain: timedelta | None = None,
    slack: timedelta = DEFAULT_SLACK,
    margin: timedelta = DEFAULT_MARGIN,
    vacuum: bool = True,
) -> MaintenanceResult:
    """OPTIMIZE (Z-ordered by keys and event time) and VACUUM one table, keeping its pins readable.

    First the table's ``delta.deletedFileRetentionDuration`` is set to ``storage.deleted_file_retention``
    or, when a pin needs longer, to the pin's need plus ``margin`` (time until the next run), so any
    VACUUM keeps the pin. ``retain``: the VACUUM retention; None: that property. A ``retain`` shorter
    than a pin needs raises :class:`PinnedVersionError` before anything is written or deleted.
    """
    started = time.perf_counter()
    pin = _pin_of(pins, layer, table)

    def needed_now() -> timedelta:
        if pin is None:
            return timedelta(0)
        return required_retention(lake, layer, table, pin.version, _now()) + slack

    if retain is not None:
        needed = needed_now()
        _check_retain(lake, layer, table, pin, retain, needed, _keep(lake, needed, margin), slack)
    if pin is not None:
        _ensure_log_retention(lake, layer, table, pin, _now())
    version_before = lake.version(layer, table)
    files_before = _file_count(lake, layer, table)
    columns = zorder_columns(lake, layer, table)
    optimizer = lake.table(layer, table).optimize()
    if columns:
        optimizer.executeZOrderBy(*columns)
    else:
        optimizer.executeCompaction()
    # A pin's need grows with the clock: taken again right before VACUUM, which counts its
    # retention back from its own start (OPTIMIZE may have taken minutes).
    needed = needed_now()
    keep = _keep(lake, needed, margin)
    _set_file_retention(lake, layer, table, keep)
    retention = whole_hours(max(retain if retain is not None else keep, needed))
    deleted = 0
    if vacuum:
        on_disk = _on_disk(lake, layer, table)
        lake.table(layer, table).vacuum(retention.total_seconds() / 3600)
        after = _on_disk(lake, layer, table)
        deleted = 0 if on_disk is None or after is None else on_disk - after
    return MaintenanceResult(
        table=lake.name(layer, table).replace("`", ""), version_before=version_before,
        version_after=lake.version(layer, table), files_before=files_before,
        files_after=_file_count(lake, layer, table), zorder_by=tuple(columns),
        oldest_pin=pin.version if pin else None, pinned_by=pin.by if pin else None,
        retention_hours=round(retention.total_seconds() / 3600, 4), files_deleted=deleted,
        seconds=round(time.perf_counter() - started, 3),
    )


def maintain(
    lake: Lakehouse,
    tables: Iterable[tuple[str, str]],
    pins: Sequence[Pin] = (),
    *,
    retain: timedelta | None = None,
    slack: timedelta = DEFAULT_SLACK,
    margin: timedelta = DEFAULT_MARGIN,
) -> list[MaintenanceResult]:
    """:func:`maintain_table` for each ``(layer, table)``. With ``retain``, every table is checked
    before any is touched, so a refused VACUUM leaves all of them as they were."""
    tables = list(tables)
    if retain is not None:
        now = _now()
        for layer, table in tables:
            pin = _pin_of(pins, layer, table)
            needed = timedelta(0) if pin is None else required_retention(lake, layer, table, pin.version, now) + slack
            _check_retain(lake, layer, table, pin, retain, needed, _keep(lake, needed, margin), slack)
    return [maintain_table(lake, layer, table, pins, retain=retain, slack=slack, margin=margin)
            for layer, table in tables]
