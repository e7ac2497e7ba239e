"""The invariants every built training set is checked against, in one pass over the result.

Output rows == spine rows; no matched feature time after its spine time, nor (with a lookback)
at or before ``spine_ts - lookback``; no tie on (keys, event time[, sequence]) behind a match.
Ties are found by the plans themselves: the fetch counts table rows per matched (keys, event
time[, sequence]), and ``"union-wide"`` marks them in its window; both leave a ``tie`` column
that marks each spine row behind a tie once.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from sparkfs.core.errors import DuplicateKeyError, TrainingSetInvariantError
from sparkfs.core.lakehouse import SEQUENCE_PROPERTY
from sparkfs.pit.columns import column
from sparkfs.pit.lookup import ResolvedLookup, micros


def check_training_set(
    joined: DataFrame, spine_rows: int, lookups: Sequence[ResolvedLookup]
) -> dict[str, int]:
    """One aggregate pass over the (persisted) result: row count, time-rule and tie violations.

    Returns the counts: ``rows``, ``spine_rows``, and per lookup with an event time
    ``<name>.matched``, ``<name>.after_spine``, ``<name>.ties`` (and ``<name>.before_lookback``
    with a lookback), where ``<name>`` is the lookup's key (its table, ``<table>#2`` for a second
    lookup on one table: :func:`~sparkfs.pit.lookup.lookup_names`). Raises
    :class:`DuplicateKeyError` or :class:`TrainingSetInvariantError` on a violation.
    """
    aggs = [F.count(F.lit(1)).alias("rows")]
    for lk in lookups:
        if lk.event_time is None:
            continue
        matched, spine_us = F.col(lk.col("mt")), F.unix_micros(column(lk.spine_time or ""))
        aggs.append(F.count(F.when(matched > spine_us, 1)).alias(f"{lk.index}_after_spine"))
        if lk.lookback is not None:
            too_old = spine_us - matched >= F.lit(micros(lk.lookback))
            aggs.append(F.count(F.when(too_old, 1)).alias(f"{lk.index}_before_lookback"))
        aggs.append(F.count(F.when(F.col(lk.col("tie")), 1)).alias(f"{lk.index}_ties"))
        aggs.append(F.count(matched).alias(f"{lk.index}_matched"))
    row = joined.agg(*aggs).first()
    assert row is not None
    counts = {k: int(v) for k, v in row.asDict().items()}
    checks = {"rows": counts.pop("rows"), "spine_rows": spine_rows}
    names = {str(lk.index): lk.name for lk in lookups}
    for alias, value in counts.items():  # "<index>_<check>" -> "<name>.<check>"
        index, _, check = alias.partition("_")
        checks[f"{names[index]}.{check}"] = value
    for lk in lookups:
        ties = checks.get(f"{lk.name}.ties", 0)
        if ties:
            sample = (
                joined.where(F.col(lk.col("tie")))
                .select(*[column(s) for _, s in lk.key_map], column(lk.spine_time or ""))
                .limit(3).collect()
            )
            raise DuplicateKeyError(_tie_message(lk, ties, [r.asDict() for r in sample]))
    if checks["rows"] != checks["spine_rows"]:
        static = [lk.what for lk in lookups if lk.event_time is None]
        raise TrainingSetInvariantError(
            f"training set has {checks['rows']} rows but the spine has {checks['spine_rows']}"
            + (f"; static tables {static} may hold duplicate keys" if static else "")
        )
    bad = {k: v for k, v in checks.items() if k.endswith((".after_spine", ".before_lookback")) and v}
    if bad:
        raise TrainingSetInvariantError(f"point-in-time rule violated: {bad}")
    return checks


def _tie_message(lk: ResolvedLookup, spine_rows: int, sample: list[dict[str, object]]) -> str:
    rows = f"{spine_rows} spine row{'' if spine_rows == 1 else 's'}"
    if lk.sequence:
        return (
            f"{lk.what} has more than one row per (keys, {lk.event_time}, {lk.sequence}) behind "
            f"{rows}: the rows tie on the sequence column '{lk.sequence}' too; e.g. spine rows {sample}"
        )
    return (
        f"{lk.what} has more than one row per (keys, {lk.event_time}) behind {rows}, and no "
        f"sequence column decides (table property '{SEQUENCE_PROPERTY}'); e.g. spine rows {sample}"
    )
