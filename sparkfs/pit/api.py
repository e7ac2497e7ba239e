"""Point-in-time correct training sets: an exact, linear AS-OF join over Delta feature tables.

Time rule, used for every lookup: a feature row matches a spine row when the keys are equal and
``feature_ts <= spine_ts``; the latest such row wins and **all** its features come from that one
row (a null in the winning row stays null). With a lookback ``L`` the row must also satisfy
``feature_ts > spine_ts - L``: a spine value at ``t`` sees events in ``(t - L, t]``, lower bound
exclusive, upper bound inclusive, the same edge rule as the trailing-window aggregates. Every spine
row comes out exactly once, also when its keys or its timestamp are null (with null features).
Timestamps are Spark ``TimestampType`` values, i.e. instants; they are compared as instants.

Feature rows tied on (keys, event time[, sequence]) make no pick: a tie behind a match raises ``DuplicateKeyError``.

"As known at" mode (``known_at=<column>``): a row only counts once it had been written, i.e. when
``known_at <= spine_ts`` as well. The answer at ``t`` is the latest row by event time among the
rows visible at ``t``. Rows with a null ``known_at`` never count. A MERGE that corrects a row in
place overwrites what was known before; keep corrections as new rows (e.g. the append-only bronze
layer, or a sequence column) where the old value must stay visible to earlier spine times.

How the join works (one function, used by training and inference alike): four exact plans, and
by default (``plan="auto"``) each lookup picks one (:mod:`sparkfs.pit.planner`):

- ``"instant"`` (:mod:`sparkfs.pit.instant`) for a spine at one time (a daily batch);
- ``"union"`` and ``"union-wide"`` (:mod:`sparkfs.pit.union`): spine and feature rows are
  shuffled and sorted by key once, and a window gives each spine row the last feature row before
  it; ``"union"`` moves only the narrow columns and then fetches the matched rows' features
  (:mod:`sparkfs.pit.fetch`), ``"union-wide"`` carries the features through the window;
- ``"intervals"`` (:mod:`sparkfs.pit.intervals`): an SCD type 2 view of the table joined as an
  equi-join on (keys, time bin) plus a range condition, so a hot key spreads over many tasks;
  each build is checked afterwards (:mod:`sparkfs.pit.checks`).

Example::

    ts = create_training_set(
        lake, spine_df,
        [FeatureLookup("carrier_delays", ["carrier"], "sched_dep", ["dep_delay_mean_7d"],
                       lookback=timedelta(days=7), prefix="carrier")],
        label="is_delayed",
    )
    ts.df, ts.spec                            # + carrier_dep_delay_mean_7d; every Delta version
    rebuild_training_set(lake, ts.spec).df   # the same rows, after later MERGEs
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import SparkfsError, TrainingSetInvariantError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.pit import planner
from sparkfs.pit.checks import check_training_set
from sparkfs.pit.columns import all_of, column
from sparkfs.pit.fetch import fetch_features
from sparkfs.pit.instant import instant_join
from sparkfs.pit.intervals import interval_join
from sparkfs.pit.lookup import (
    INTERNAL_PREFIX,
    FeatureLookup,
    ResolvedLookup,
    TableLayout,
    check_spine_names,
    lookup_names,
    micros,
    resolve,
    spine_bounds,
)
from sparkfs.pit.provenance import feature_times_column, with_known_at
from sparkfs.pit.spec import LookupSpec, SpineSource, TrainingSetSpec
from sparkfs.pit.union import union_join

__all__ = ["FeatureLookup", "TrainingSet", "as_of_join", "create_training_set", "rebuild_training_set"]

log = logging.getLogger(__name__)

FEATURE_LAYER = "gold"


@dataclass(frozen=True)
class TrainingSet:
    """A built training set: the rows, the spec to rebuild them, and the invariants checked.

    ``checks`` (``rows`` == ``spine_rows``; per lookup with an event time ``<key>.matched``,
    ``.after_spine``, ``.before_lookback``, ``.ties``) and ``plans`` (which plan joined a lookup,
    and why) share one key rule (:func:`~sparkfs.pit.lookup.lookup_names`): the lookup's table,
    ``<table>#2`` for a second lookup on it. ``load_df()`` is Databricks FE's name for ``df``.

    Example::

        ts = create_training_set(lake, spine_df, [FeatureLookup("carrier_delays", ["carrier"], "ts")])
        ts.checks["rows"], ts.checks["carrier_delays.matched"], ts.plans["carrier_delays"]
        ts.load_df()    # the rows, as ts.df
    """

    df: DataFrame
    spec: TrainingSetSpec
    checks: dict[str, int] = field(default_factory=dict)
    plans: dict[str, str] = field(default_factory=dict)

    def load_df(self) -> DataFrame:
        return self.df

    def spec_json(self) -> str:
        return self.spec.to_json()


@dataclass(frozen=True)
class _PinnedTable:
    """A lookup's feature table as one build reads it: a Delta version and the table's layout."""

    version: int
    layout: TableLayout


# ---------------------------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------------------------


def create_training_set(
    lake: Lakehouse,
    spine: DataFrame | str,
    lookups: Sequence[FeatureLookup],
    label: str | None = None,
    *,
    timestamp_key: str | None = None,
    plan: str = "auto",
    bin_size: timedelta | None = None,
    feature_times: str | None = None,
) -> TrainingSet:
    """Join point-in-time correct features from gold feature tables onto a spine.

    ``spine`` is a DataFrame or a table name (``"layer.table"``, or ``"table"`` in the gold layer)
    holding the entity keys, a timestamp and optionally the ``label``. Every spine column is kept;
    each lookup adds its feature columns. Time rule: keys equal, ``feature_ts <= spine_ts``, latest
    row wins whole, lookback window ``(t - lookback, t]``. Every table is read at the Delta version
    current now, and that version goes into ``spec`` so :func:`rebuild_training_set` returns the
    same rows later. Checked on every build (raises on failure): output rows == spine rows, no
    matched feature timestamp after (or a lookback before) its spine timestamp, no tie on
    (keys, event time) behind a match.

    ``feature_times`` names a column to add recording which feature row each spine row used
    (one field per lookup with an event time: the matched row's ``event_ts`` and ``known_at``; see
    :mod:`sparkfs.pit.provenance`, whose audit checks it against a cutoff).

    Example::

        ts = create_training_set(lake, "ml.flight_spine",
                                 [FeatureLookup("weather", ["origin"], "sched_dep")], label="y")
    """
    spine_df, spine_spec = _read_spine(lake, spine, None)
    current = {table: _current_table(lake, table) for table in dict.fromkeys(lk.table for lk in lookups)}
    tables = [current[lk.table] for lk in lookups]
    return _build(lake, spine_df, spine_spec, lookups, tables, label, timestamp_key, plan, bin_size,
                  feature_times)


def rebuild_training_set(
    lake: Lakehouse,
    spec: TrainingSetSpec | Mapping[str, Any],
    spine: DataFrame | None = None,
    *,
    plan: str = "auto",
    bin_size: timedelta | None = None,
) -> TrainingSet:
    """Rebuild a training set from its spec: every table at the Delta version the spec recorded.

    Later MERGEs and backfills do not change the result, nor do later changes of a table's
    ``sparkfs.*`` properties: each table is read with the keys, event time and sequence column
    the spec recorded. A spine that was a table is read at its recorded version; a spine that was
    a DataFrame must be passed again as ``spine``. ``spec`` may be the typed spec or its JSON dict
    (as logged with a model). ``plan`` and ``bin_size`` choose how to join, as in
    :func:`create_training_set`; every plan returns the same rows.

    Example::

        rebuilt = rebuild_training_set(lake, TrainingSetSpec.from_json(logged_json))
    """
    if not isinstance(spec, TrainingSetSpec):
        spec = TrainingSetSpec.from_dict(spec)
    spine_spec = spec.spine
    if spine is None:
        if spine_spec.source != "table":
            raise SparkfsError(
                "the spec's spine was a DataFrame: pass it again as rebuild_training_set(..., spine=df)"
            )
        spine_df, spine_spec = _read_spine(lake, f"{spine_spec.layer}.{spine_spec.table}", spine_spec.version)
    else:
        spine_df = spine
    lookups = [
        FeatureLookup(
            table=lk.table,
            lookup_key=dict(lk.lookup_key),
            timestamp_lookup_key=lk.timestamp_lookup_key,
            features=list(lk.features),
            lookback=None if lk.lookback_us is None else timedelta(microseconds=lk.lookback_us),
            prefix=lk.prefix,
            known_at=lk.known_at,
        )
        for lk in spec.lookups
    ]
    tables = [
        _PinnedTable(lk.version, TableLayout(tuple(lk.lookup_key), lk.event_time, lk.sequence))
        for lk in spec.lookups
    ]
    rebuilt = _build(lake, spine_df, spine_spec, lookups, tables, spec.label, None, plan, bin_size)
    if rebuilt.checks["rows"] != spec.rows:
        raise TrainingSetInvariantError(
            f"rebuilt training set has {rebuilt.checks['rows']} rows; the spec recorded {spec.rows}"
        )
    return rebuilt


def as_of_join(
    spine_df: DataFrame,
    feature_df: DataFrame,
    keys: str | Sequence[str] | Mapping[str, str],
    *,
    spine_time: str | None,
    event_time: str | None,
    features: Sequence[str] | None = None,
    lookback: timedelta | None = None,
    prefix: str | None = None,
    sequence: str | None = None,
    known_at: str | None = None,
    plan: str = "auto",
    bin_size: timedelta | None = None,
) -> DataFrame:
    """DataFrame-level AS-OF join: the same join :func:`create_training_set` runs, without Delta.

    ``keys`` are the feature DataFrame's key columns (present under the same names in the spine,
    or a mapping ``{feature_key: spine_column}``); ``event_time=None`` makes it a static key
    lookup. Time rule as in the module docstring: ``feature_ts <= spine_ts``, latest whole row,
    window ``(t - lookback, t]`` (a lookback longer than Spark's timestamp range, e.g.
    ``timedelta.max``, is no lookback). Runs two small aggregate jobs (spine time range, bin
    size); the join itself is lazy. It does not check for ties on (keys, event_time): feature
    tables are unique by construction, and :func:`create_training_set` checks it.

    Example::

        out = as_of_join(spine_df, prices_df, ["ticker"], spine_time="ts", event_time="ts",
                         features=["price"], lookback=timedelta(minutes=5), prefix="last")
    """
    table_keys = [keys] if isinstance(keys, str) else list(keys)
    lookup = FeatureLookup(
        "<DataFrame>", keys, spine_time, features, lookback, prefix, known_at
    )
    check_spine_names(spine_df)
    layout = TableLayout(tuple(table_keys), event_time, sequence)
    resolved = resolve(lookup, 0, spine_df, feature_df, layout, None, spine_df.columns, "<DataFrame>")
    bounds, spine_rows = spine_bounds(spine_df, [resolved])
    out = _join_lookup(spine_df, resolved, bounds, spine_rows, plan, micros(bin_size), {})
    return out.drop(*[c for c in out.columns if c.startswith(INTERNAL_PREFIX)])


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def _read_spine(
    lake: Lakehouse, spine: DataFrame | str, version: int | None
) -> tuple[DataFrame, SpineSource]:
    if isinstance(spine, DataFrame):
        return spine, SpineSource(source="dataframe")
    layer, _, table = spine.rpartition(".")
    layer = layer or FEATURE_LAYER
    pinned = lake.version(layer, table) if version is None else version
    source = SpineSource(source="table", layer=layer, table=table, version=pinned)
    return lake.read(layer, table, version=pinned), source


def _current_table(lake: Lakehouse, table: str) -> _PinnedTable:
    """A feature table's current version, with the layout its table properties declare."""
    version = lake.version(FEATURE_LAYER, table)
    what = _table_what(lake, table, version)
    return _PinnedTable(version, TableLayout.from_properties(lake.properties(FEATURE_LAYER, table), what))


def _table_what(lake: Lakehouse, table: str, version: int) -> str:
    return f"{lake.name(FEATURE_LAYER, table)}@v{version}"


def _build(
    lake: Lakehouse,
    spine_df: DataFrame,
    spine_spec: SpineSource,
    lookups: Sequence[FeatureLookup],
    tables: Sequence[_PinnedTable],
    label: str | None,
    timestamp_key: str | None,
    plan: str,
    bin_size: timedelta | None,
    feature_times: str | None = None,
) -> TrainingSet:
    if not lookups:
        raise SparkfsError("create_training_set needs at least one FeatureLookup")
    if label is not None:
        require_columns(spine_df, [label], "the spine")
    check_spine_names(spine_df)
    taken = list(spine_df.columns) + ([feature_times] if feature_times else [])
    resolved: list[ResolvedLookup] = []
    names = lookup_names([lk.table for lk in lookups])
    for i, (lookup, table) in enumerate(zip(lookups, tables, strict=True)):
        if lookup.timestamp_lookup_key is None and timestamp_key is not None:
            lookup = FeatureLookup(
                lookup.table, lookup.lookup_key, timestamp_key, lookup.features,
                lookup.lookback, lookup.prefix, lookup.known_at,
            )
        what = _table_what(lake, lookup.table, table.version)
        feature_df = lake.read(FEATURE_LAYER, lookup.table, version=table.version)
        resolved.append(resolve(lookup, i, spine_df, feature_df, table.layout, what, taken, names[i]))
        taken += resolved[-1].outputs

    bounds, spine_rows = spine_bounds(spine_df, resolved)
    joined = spine_df
    plans: dict[str, str] = {}
    for lk in resolved:
        joined = _join_lookup(joined, with_known_at(lk) if feature_times else lk, bounds, spine_rows,
                              plan, micros(bin_size), plans)
    joined = joined.persist(StorageLevel.MEMORY_AND_DISK)
    checks = check_training_set(joined, spine_rows, resolved)
    out = joined.select(
        *[column(c) for c in [*spine_df.columns, *(o for lk in resolved for o in lk.outputs)]],
        *([feature_times_column(resolved).alias(feature_times)] if feature_times else []),
    )
    spec = TrainingSetSpec(
        spine=spine_spec,
        label=label,
        rows=checks["rows"],
        lookups=[
            LookupSpec(
                table=lookups[lk.index].table,
                version=tables[lk.index].version,
                lookup_key=dict(lk.key_map),
                timestamp_lookup_key=lk.spine_time,
                event_time=lk.event_time,
                sequence=lk.sequence,
                known_at=lk.known_at,
                features=list(lk.features),
                outputs=list(lk.outputs),
                lookback_us=micros(lk.lookback),
                prefix=lookups[lk.index].prefix,
            )
            for lk in resolved
        ],
    )
    read = (f"{lk.name} v{tables[lk.index].version} ({plans[lk.name].split(':')[0]})" for lk in resolved)
    log.info("training set: %s rows; %s", f"{checks['rows']:,}", ", ".join(read))
    return TrainingSet(out, spec, checks, plans)


def _join_lookup(
    spine_df: DataFrame,
    lk: ResolvedLookup,
    bounds: Mapping[str, tuple[int, int] | None],
    spine_rows: int,
    plan: str,
    bin_us: int | None,
    chosen: dict[str, str],
) -> DataFrame:
    """Left-join one lookup's features onto the spine; adds the outputs and internal check columns.

    Records the plan it ran (and why) in ``chosen[lk.label]``.
    """
    keys = lk.keys
    renamed_keys = [column(k).alias(n) for (k, _), n in zip(lk.key_map, keys, strict=True)]
    on_keys = [column(s) == F.col(n) for (_, s), n in zip(lk.key_map, keys, strict=True)]
    outputs = [column(f).alias(o) for f, o in zip(lk.features, lk.outputs, strict=True)]
    if lk.event_time is None:
        chosen[lk.label] = "key lookup (static table)"
        static = lk.feature_df.select(*renamed_keys, *outputs)
        return spine_df.join(static, all_of(on_keys), "left").drop(*keys)

    assert lk.spine_time is not None
    span = bounds.get(lk.spine_time)
    if span is None:  # no spine row has a timestamp: nothing can match
        nulls = [F.lit(None).cast(lk.feature_df.schema[f].dataType).alias(o)
                 for f, o in zip(lk.features, lk.outputs, strict=True)]
        return spine_df.select("*", *nulls, F.lit(None).cast("long").alias(lk.col("mt")),
                               F.lit(False).alias(lk.col("tie")))
    lo, hi = span
    feature_df = lk.feature_df.where(lk.can_match(lo, hi))

    planner.check_plan(plan, lk, lo, hi)
    size = bin_us
    if plan == "auto":
        plan = planner.choose_plan(feature_df, lk, spine_df, spine_rows, chosen, one_instant=lo == hi)
    if plan == "intervals" and size is None:
        gap, _ = planner.sample_stats(feature_df, [k for k, _ in lk.key_map], lk.event_time)
        size = max(1, gap or hi - lo + 1)
    chosen.setdefault(lk.label, plan)
    log.debug("point-in-time join of %s: plan %s", lk.label, chosen[lk.label])
    if plan == "union-wide":
        return union_join(spine_df, feature_df, lk, hi, wide=True)
    if plan == "union":
        matched = union_join(spine_df, feature_df, lk, hi, wide=False)
    elif plan == "instant":
        matched = instant_join(spine_df, feature_df, lk, hi)
    else:
        assert size is not None
        matched = interval_join(spine_df, feature_df, lk, lo, hi, size)
    return fetch_features(matched, feature_df, lk, broadcast=planner.broadcasts_matches(spine_rows))
