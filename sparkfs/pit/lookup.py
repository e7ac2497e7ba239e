"""A feature lookup, and what it becomes once checked against its table and the spine.

:class:`FeatureLookup` is what a user asks for; :class:`TableLayout` is how its table is laid out
(keys, event time, sequence: read from the table's properties, or from a spec on a rebuild).
:func:`resolve` checks the lookup against the table's columns and layout and the spine, and
returns a :class:`ResolvedLookup`: everything the join needs, with the names of the internal
columns the plans add (all start with :data:`INTERNAL_PREFIX`). Names are compared the way Spark
compares them (case-insensitively unless ``spark.sql.caseSensitive``), so a clash is reported here
rather than by Spark as an ambiguous reference. :func:`spine_bounds` measures the spine once for
all lookups: its row count and the range of each spine timestamp column.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import (
    ColumnNameClashError,
    LookupKeyError,
    SchemaMismatchError,
    SparkfsError,
)
from sparkfs.core.lakehouse import (
    EVENT_DATE_PROPERTY,
    EVENT_TIME_PROPERTY,
    KEYS_PROPERTY,
    KNOWN_AT_PROPERTY,
    SEQUENCE_PROPERTY,
)
from sparkfs.pit.columns import column

# Every column the join adds for its own use starts with this; user columns may not.
INTERNAL_PREFIX = "__pit"
# Spark timestamps run from year 1 to year 9999: a longer lookback cannot exclude a row, so it
# counts as none (which also keeps ``time +- lookback`` within a long).
LONGEST_LOOKBACK = datetime.max - datetime.min


@dataclass(frozen=True, init=False)
class FeatureLookup:
    """Which features to take from which gold feature table, and how to match them to the spine.

    ``lookup_key`` names the spine columns that hold the table's keys: a list of names equal to
    the table's keys (``sparkfs.keys``), or a mapping ``{table_key: spine_column}`` when they are
    named differently. ``timestamp_lookup_key`` is the spine's timestamp column (default: the
    ``timestamp_key`` of :func:`create_training_set`); static tables ignore it. ``features``
    defaults to every column that is not a key, the event time, the sequence or a ``known_at``
    column (the lookup's, or the table's ``sparkfs.known_at``).
    Output columns are ``<prefix>_<feature>`` (or ``<feature>`` without a prefix). ``lookback``
    keeps rows with ``feature_ts > spine_ts - lookback`` only: the window ``(t - lookback, t]``;
    a lookback longer than Spark's whole timestamp range (years 1 to 9999, ``LONGEST_LOOKBACK``;
    e.g. ``timedelta.max``) excludes nothing and counts as no lookback.
    ``known_at`` names a column of the table holding when each row was written (e.g. its ingest
    time): rows written after the spine time do not count, so late rows do not leak.

    Databricks Feature Engineering's names are accepted for the same concepts: ``table_name``
    for ``table`` (a gold table's name, not a Unity Catalog path), ``feature_names`` for
    ``features``, ``lookback_window`` for ``lookback``; ``lookup_key`` and
    ``timestamp_lookup_key`` are already FE's. Giving both names of one argument is an error.

    Example::

        FeatureLookup("carrier_delays", ["carrier"], "prediction_ts",
                      ["carrier_dep_delay_mean_7d"], lookback=timedelta(days=1))
        FeatureLookup("planes", {"tailnum": "plane_tailnum"}, prefix="plane")   # static, renamed key
        FeatureLookup(table_name="carrier_delays", lookup_key="carrier",       # FE's names
                      feature_names=["carrier_dep_delay_mean_7d"], lookback_window=timedelta(days=1))
    """

    table: str
    lookup_key: str | Sequence[str] | Mapping[str, str]
    timestamp_lookup_key: str | None = None
    features: Sequence[str] | None = None
    lookback: timedelta | None = None
    prefix: str | None = None
    known_at: str | None = None

    def __init__(
        self,
        table: str | None = None,
        lookup_key: str | Sequence[str] | Mapping[str, str] | None = None,
        timestamp_lookup_key: str | None = None,
        features: Sequence[str] | None = None,
        lookback: timedelta | None = None,
        prefix: str | None = None,
        known_at: str | None = None,
        *,
        table_name: str | None = None,
        feature_names: Sequence[str] | None = None,
        lookback_window: timedelta | None = None,
    ) -> None:
        table = _one_of("table", table, "table_name", table_name)
        if not table:
            raise SparkfsError("FeatureLookup needs a table: FeatureLookup('carrier_delays', ...) "
                               "or FeatureLookup(table_name='carrier_delays', ...)")
        if lookup_key is None:
            raise SparkfsError(f"FeatureLookup on '{table}' needs a lookup_key (the spine's key columns)")
        values = {
            "table": table, "lookup_key": lookup_key, "timestamp_lookup_key": timestamp_lookup_key,
            "features": _one_of("features", features, "feature_names", feature_names),
            "lookback": _one_of("lookback", lookback, "lookback_window", lookback_window),
            "prefix": prefix, "known_at": known_at,
        }
        for name, value in values.items():
            object.__setattr__(self, name, value)


def _one_of(name: str, value: Any, fe_name: str, fe_value: Any) -> Any:
    """The argument given under sparkfs's name or under Databricks FE's name, not both."""
    if value is not None and fe_value is not None:
        raise SparkfsError(f"FeatureLookup got both {name}= and {fe_name}= (the same argument): give one")
    return fe_value if value is None else value


@dataclass(frozen=True)
class TableLayout:
    """How a feature table is laid out: its keys, event time (None: static) and sequence column,
    the column saying when each row became known (``sparkfs.known_at``; None: not recorded), and
    a partition column holding the event time's UTC date (``sparkfs.event_date``: reads prune by it)."""

    keys: tuple[str, ...]
    event_time: str | None
    sequence: str | None
    known_at: str | None = None
    event_date: str | None = None

    @classmethod
    def from_properties(cls, properties: Mapping[str, str], what: str) -> TableLayout:
        """The layout a feature table declares in its table properties (``sparkfs.keys``, ...)."""
        keys = tuple(k.strip() for k in properties.get(KEYS_PROPERTY, "").split(",") if k.strip())
        if not keys:
            raise LookupKeyError(
                f"{what} is not a feature table: it has no '{KEYS_PROPERTY}' table property "
                f"(properties: {sorted(properties)})"
            )
        return cls(
            keys, properties.get(EVENT_TIME_PROPERTY) or None, properties.get(SEQUENCE_PROPERTY) or None,
            properties.get(KNOWN_AT_PROPERTY) or None, properties.get(EVENT_DATE_PROPERTY) or None,
        )


@dataclass(frozen=True)
class ResolvedLookup:
    """A lookup validated against its table and the spine: everything the join needs.

    ``lookback`` is None when the lookup has none or one too long to matter (``LONGEST_LOOKBACK``).
    """

    index: int
    feature_df: DataFrame
    key_map: tuple[tuple[str, str], ...]  # (table key, spine column)
    event_time: str | None
    spine_time: str | None
    sequence: str | None
    known_at: str | None
    features: tuple[str, ...]
    outputs: tuple[str, ...]
    lookback: timedelta | None
    what: str
    name: str  # the lookup's key in TrainingSet.checks and .plans (see lookup_names)
    table_known_at: str | None = None  # the table's own "when known" column (TableLayout.known_at)
    event_date: str | None = None  # the table's UTC event-date partition column (TableLayout.event_date)

    def can_match(self, lo: int, hi: int) -> Column:
        """The feature rows a spine whose times span ``lo..hi`` (microseconds) can match: none
        after ``hi``; with a lookback, none at or before ``lo - lookback``. A table partitioned by
        the event's UTC date (``event_date``) is pruned to those dates, a day of margin either
        side, so a small spine reads only the history its window needs."""
        assert self.event_time is not None
        lookback = micros(self.lookback)
        event_us = F.unix_micros(column(self.event_time))
        rows = event_us.isNotNull() & (event_us <= hi)
        if lookback is not None:
            rows &= event_us > lo - lookback
        if self.event_date:
            rows &= column(self.event_date) <= F.lit(utc_date(hi) + timedelta(days=1))
            if lookback is not None:
                rows &= column(self.event_date) >= F.lit(utc_date(lo - lookback) - timedelta(days=1))
        return rows

    def col(self, name: str) -> str:
        """The name of this lookup's internal column ``name``."""
        return f"{INTERNAL_PREFIX}{self.index}_{name}"

    @property
    def keys(self) -> list[str]:
        """Internal names the plans give the key columns (the same on the spine and table side)."""
        return [self.col(f"k{j}") for j in range(len(self.key_map))]

    @property
    def label(self) -> str:
        """Names this lookup among the others, also a second lookup on the same table."""
        return self.name


def lookup_names(tables: Sequence[str]) -> list[str]:
    """The keys of a training set's lookups in ``TrainingSet.checks`` and ``.plans``: the table's
    name; the second lookup on a table ``<table>#2``, the third ``<table>#3``. A key depends only
    on the lookups before it, so adding a lookup at the end renames none.

    Example::

        lookup_names(["weather", "carrier_delays", "weather"])   # ['weather', 'carrier_delays', 'weather#2']
    """
    seen: dict[str, int] = {}
    names = []
    for table in tables:
        seen[table] = seen.get(table, 0) + 1
        names.append(table if seen[table] == 1 else f"{table}#{seen[table]}")
    return names


def micros(delta: timedelta | None) -> int | None:
    if delta is None:
        return None
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def utc_date(us: int) -> date:
    """The UTC date of an instant in microseconds since the epoch (clamped to Spark's range)."""
    return (datetime(1970, 1, 1) + timedelta(microseconds=max(min(us, MAX_US), MIN_US))).date()


# The instants (microseconds since the epoch) utc_date clamps to: Spark's timestamp range, a day inside.
MIN_US = int((datetime(1, 1, 2) - datetime(1970, 1, 1)) / timedelta(microseconds=1))
MAX_US = int((datetime(9999, 12, 30) - datetime(1970, 1, 1)) / timedelta(microseconds=1))


def name_folding(df: DataFrame) -> Callable[[str], str]:
    """How ``df``'s session tells column names apart: as they are with ``spark.sql.caseSensitive``,
    else case-insensitively (Spark's default)."""
    sensitive = str(df.sparkSession.conf.get("spark.sql.caseSensitive", "false")).lower() == "true"
    return str if sensitive else str.lower


def check_spine_names(spine_df: DataFrame) -> None:
    """Spine columns must not look like the join's internal columns."""
    fold = name_folding(spine_df)
    reserved = [c for c in spine_df.columns if fold(c).startswith(fold(INTERNAL_PREFIX))]
    if reserved:
        raise ColumnNameClashError(
            f"spine columns {reserved} use the reserved prefix '{INTERNAL_PREFIX}'; rename them"
        )


def resolve(
    lookup: FeatureLookup,
    index: int,
    spine_df: DataFrame,
    feature_df: DataFrame,
    layout: TableLayout,
    what: str | None,
    taken: Collection[str],
    name: str | None = None,
) -> ResolvedLookup:
    """Check ``lookup`` against its table (``feature_df`` laid out as ``layout``) and the spine;
    ``taken`` holds the column names already in the output (spine and earlier lookups); ``name``
    is the lookup's key among the others (default: its table)."""
    what = what or "the feature DataFrame"
    table_keys, event_time, sequence = layout.keys, layout.event_time, layout.sequence
    lk_key = lookup.lookup_key
    if isinstance(lk_key, Mapping):
        key_map = {str(k): str(v) for k, v in lk_key.items()}
    else:
        names = [lk_key] if isinstance(lk_key, str) else list(lk_key)
        key_map = {k: k for k in names}
    if sorted(key_map) != sorted(table_keys):
        raise LookupKeyError(
            f"lookup key {sorted(key_map)} is not the key of {what}: its keys are {list(table_keys)}"
            " (name the spine columns with a mapping {table_key: spine_column} if they differ)"
        )
    ordered = tuple((k, key_map[k]) for k in table_keys)
    require_columns(feature_df, [*table_keys, *([event_time] if event_time else [])], what)
    require_columns(spine_df, [s for _, s in ordered], "the spine")
    ftypes, stypes = dict(feature_df.dtypes), dict(spine_df.dtypes)
    for k, s in ordered:
        if ftypes[k] != stypes[s]:
            raise SchemaMismatchError(
                f"key column types differ: spine '{s}' is {stypes[s]}, {what} '{k}' is {ftypes[k]}"
            )
    spine_time = lookup.timestamp_lookup_key
    lookback = lookup.lookback
    if event_time is None:
        if lookback is not None or lookup.known_at is not None:
            raise SparkfsError(f"{what} is a static table (no event time): lookback and known_at do not apply")
        spine_time = None
    else:
        if spine_time is None:
            raise SchemaMismatchError(
                f"{what} has event time '{event_time}': set timestamp_lookup_key (or timestamp_key)"
            )
        require_columns(spine_df, [spine_time], "the spine")
        schema = {f.name: f.dataType for f in feature_df.schema.fields}
        spine_schema = {f.name: f.dataType for f in spine_df.schema.fields}
        extra = [c for c in (lookup.known_at,) if c]
        require_columns(feature_df, extra, what)
        for col, dtype, where in [
            (spine_time, spine_schema[spine_time], "the spine"),
            (event_time, schema[event_time], what),
            *[(c, schema[c], what) for c in extra],
        ]:
            if not isinstance(dtype, T.TimestampType):
                raise SchemaMismatchError(
                    f"'{col}' in {where} is {dtype.simpleString()}; point-in-time joins compare "
                    "instants and need timestamp (TimestampType; cast timestamp_ntz with a time zone)"
                )
        if lookback is not None and lookback <= timedelta(0):
            raise SparkfsError(f"lookback must be positive, got {lookback}")
        if lookback is not None and lookback > LONGEST_LOOKBACK:
            lookback = None
    if sequence:
        require_columns(feature_df, [sequence], what)
    reserved = {*table_keys, *(c for c in (event_time, sequence, lookup.known_at, layout.known_at) if c)}
    if lookup.features is None:
        features = tuple(c for c in feature_df.columns if c not in reserved)
    else:
        features = tuple(lookup.features)
        require_columns(feature_df, list(features), what)
    outputs = tuple(f"{lookup.prefix}_{f}" if lookup.prefix else f for f in features)
    _check_output_names(outputs, taken, what, name_folding(spine_df))
    return ResolvedLookup(
        index, feature_df, ordered, event_time, spine_time, sequence, lookup.known_at,
        features, outputs, lookback, what, name or lookup.table,
        layout.known_at if event_time and layout.known_at in feature_df.columns else None,
        layout.event_date if event_time and layout.event_date in feature_df.columns else None,
    )


def _check_output_names(
    outputs: Sequence[str], taken: Collection[str], what: str, fold: Callable[[str], str]
) -> None:
    """Output names must be new (compared as Spark compares them) and not look internal."""
    internal = sorted(o for o in outputs if fold(o).startswith(fold(INTERNAL_PREFIX)))
    if internal:
        raise ColumnNameClashError(
            f"feature columns {internal} from {what} use the reserved prefix '{INTERNAL_PREFIX}'; "
            "set a prefix on the FeatureLookup"
        )
    seen = {fold(t): t for t in taken}
    clashes: dict[str, str] = {}
    for o in outputs:
        if fold(o) in seen:
            clashes[o] = seen[fold(o)]
        seen[fold(o)] = o
    if clashes:
        differ = {o: t for o, t in clashes.items() if o != t}
        raise ColumnNameClashError(
            f"feature columns {sorted(clashes)} from {what} clash with spine or earlier feature "
            "columns"
            + (f" ({', '.join(f'{o!r} vs {t!r}' for o, t in sorted(differ.items()))}: column "
               "names are case-insensitive unless spark.sql.caseSensitive is set)" if differ else "")
            + "; set a prefix on the FeatureLookup"
        )


def spine_bounds(
    spine_df: DataFrame, lookups: Sequence[ResolvedLookup]
) -> tuple[dict[str, tuple[int, int] | None], int]:
    """Min and max spine time (microseconds) per spine timestamp column, and the spine's row
    count, in one aggregate job."""
    cols = sorted({lk.spine_time for lk in lookups if lk.spine_time})
    aggs = [F.count(F.lit(1)).alias("rows")]
    for i, c in enumerate(cols):
        us = F.unix_micros(column(c))
        aggs += [F.min(us).alias(f"lo{i}"), F.max(us).alias(f"hi{i}")]
    row = spine_df.agg(*aggs).first()
    assert row is not None
    bounds = {
        c: None if row[f"lo{i}"] is None else (int(row[f"lo{i}"]), int(row[f"hi{i}"]))
        for i, c in enumerate(cols)
    }
    return bounds, int(row["rows"])
