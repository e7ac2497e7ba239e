"""The column lineage of a gold feature table: each of its columns with the silver columns it is
computed from, sent as OpenLineage's ``columnLineage`` facet with the table's write.

A gold row is made in two steps (:func:`~sparkfs.features.feature_tables.compute`), and each is
traced the way it is known:

- the builder (``build: module:function``, the project's code) returns rows read from silver; its
  columns are read off the analyzed plan of what it returns
  (:func:`~sparkfs.core.column_lineage.plan_column_inputs`). In the example, ``event_ts`` is
  ``coalesce(dep_ts, sched_dep_ts)`` of silver flights: a TRANSFORMATION of both;
- sparkfs then makes the table as ``conf/feature_tables.yaml`` declares it: keys, event time and
  the other documented columns are kept as built (doubles rounded to ``ROUND_DECIMALS``, a
  TRANSFORMATION), the partition column is the UTC date of the event time, ``known_at`` the
  running maximum of ``_ingested_at`` per entity, and each rolling feature an AGGREGATION of its
  ``value`` column over a trailing window partitioned by the keys and ordered by the event time,
  whose keys and event time are therefore INDIRECT WINDOW inputs.

A column is sent only when every step of it is known (see :mod:`sparkfs.core.column_lineage` for
what the plan reading leaves out). The run's event-time filter, and the builder's own filters and
joins, decide which rows exist rather than a column's value; they are not listed.

Example::

    feature_table_column_lineage(lake, spec, date(2013, 4, 1), date(2013, 4, 1))["carrier_dep_delay_mean_7d"]
    # (ColumnInput("silver.flights", "dep_delay", "DIRECT", "AGGREGATION", "mean over ..."),
    #  ColumnInput("silver.flights", "carrier", "INDIRECT", "WINDOW", ...), ...)
"""

from __future__ import annotations

from datetime import date

from pyspark.sql import types as T

from sparkfs.core.column_lineage import (
    AGGREGATION,
    TRANSFORMATION,
    WINDOW,
    ColumnInput,
    indirect,
    plan_column_inputs,
    then,
)
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.features.feature_tables import (
    KNOWN_AT,
    LANDED_AT,
    ROUND_DECIMALS,
    FeatureSpan,
    FeatureTableSpec,
)


def feature_table_column_lineage(
    lake: Lakehouse, spec: FeatureTableSpec, first: date, last: date
) -> dict[str, tuple[ColumnInput, ...]]:
    """The silver columns each column of ``spec``'s table is computed from, as a run for event
    dates ``[first, last]`` computes them (the builder is called for that span, as the run calls
    it; only its plan is read, no Spark job runs). A column not known exactly is left out."""
    built_df = spec.builder()(lake, FeatureSpan.for_dates(first, last, spec.history))
    built = plan_column_inputs(lake, built_df)
    doubles = {f.name for f in built_df.schema.fields if isinstance(f.dataType, T.DoubleType | T.FloatType)}

    def kept(column: str) -> tuple[ColumnInput, ...] | None:
        inputs = built.get(column)
        if inputs is None or column not in doubles:
            return inputs
        return then(inputs, TRANSFORMATION, f"rounded to {ROUND_DECIMALS} decimals")

    if spec.event_time is None:
        found = {c: kept(c) for c in spec.documented_columns()}
        return {c: inputs for c, inputs in found.items() if inputs}
    event_time = spec.event_time
    window_by = [built.get(c) for c in [*spec.keys, event_time]]
    window = None if any(w is None for w in window_by) else indirect(
        [i for w in window_by for i in w or ()], WINDOW,
        f"window partitioned by {', '.join(spec.keys)}, ordered by {event_time}")
    rolling = spec.rolling.generated() if spec.rolling else {}
    found = {}
    for column in spec.documented_columns():
        if column == spec.partition_by:
            event = kept(event_time)
            found[column] = None if event is None else then(event, TRANSFORMATION, f"UTC date of {event_time}")
        elif column == KNOWN_AT:
            found[column] = _windowed(built.get(LANDED_AT), window, f"running maximum of {LANDED_AT} up to the row's "
                                      f"{event_time}")
        elif column in rolling:
            agg, name, suffix = rolling[column]
            found[column] = _windowed(built.get(agg.value), window,
                                      f"{name} of {agg.value} over the trailing {suffix} window (t - {suffix}, t]")
        else:
            found[column] = kept(column)
    return {c: inputs for c, inputs in found.items() if inputs}


def _windowed(
    value: tuple[ColumnInput, ...] | None, window: tuple[ColumnInput, ...] | None, description: str
) -> tuple[ColumnInput, ...] | None:
    """An aggregate of ``value`` over a window whose partitioning and ordering inputs are ``window``."""
    if value is None or window is None:
        return None
    return tuple(dict.fromkeys([*then(value, AGGREGATION, description), *window]))
