"""Which feature row each spine row used, and the audit that proves none was used too early.

:func:`feature_times_column` is the ``feature_times`` column of
:func:`~sparkfs.pit.api.create_training_set`: per lookup, the matched row's event time and its
table's ``known_at`` (when the row's inputs had landed; :func:`with_known_at` makes the join fetch
it). :func:`audit_feature_times` checks both against each row's cutoff; inference runs it on every
batch before writing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.errors import LeakageError
from sparkfs.pit.lookup import ResolvedLookup


def with_known_at(lk: ResolvedLookup) -> ResolvedLookup:
    """``lk`` that also fetches the matched row's ``table_known_at`` (as internal column ``kat``)."""
    if lk.table_known_at is None:
        return lk
    return replace(lk, features=(*lk.features, lk.table_known_at), outputs=(*lk.outputs, lk.col("kat")))


def feature_times_column(lookups: Sequence[ResolvedLookup]) -> Column:
    """The ``feature_times`` struct of :func:`create_training_set`, from the joined internal columns.

    A struct (one field per lookup), not a map: rows stay comparable, so a MERGE can tell an
    unchanged row from a changed one."""
    fields: list[Column] = []
    for lk in lookups:
        if lk.event_time is None:
            continue
        known = F.col(lk.col("kat")) if lk.table_known_at else F.lit(None).cast("timestamp")
        fields.append(F.struct(F.timestamp_micros(F.col(lk.col("mt"))).alias("event_ts"),
                               known.alias("known_at")).alias(lk.name))
    return F.struct(*fields)


@dataclass(frozen=True)
class FeatureTimesAudit:
    """What :func:`audit_feature_times` found, per lookup name: ``used`` (rows that matched a
    feature row), ``after_cutoff`` (its event time after the row's cutoff), ``landed_after`` (its
    ``known_at`` after the cutoff: it had not landed yet) and ``unproven`` (matched, but the table
    records no ``known_at``, so landing cannot be shown)."""

    cutoff: str
    counts: dict[str, dict[str, int]]

    @property
    def violations(self) -> int:
        return sum(c["after_cutoff"] + c["landed_after"] for c in self.counts.values())

    def raise_on_violation(self, what: str) -> None:
        """Raise :class:`LeakageError` naming the lookups and counts when any row broke the rule."""
        bad = {name: {k: v for k, v in c.items() if k in ("after_cutoff", "landed_after") and v}
               for name, c in self.counts.items()}
        bad = {name: c for name, c in bad.items() if c}
        if bad:
            raise LeakageError(
                f"{what}: feature rows from after the cutoff '{self.cutoff}' were used: {bad} "
                "(after_cutoff: event time later; landed_after: known_at later, i.e. not landed yet). "
                "Look those tables up as known at the cutoff (lookup known_at: known_at)"
            )


def audit_feature_times(df: DataFrame, feature_times: str, cutoff: str) -> FeatureTimesAudit:
    """Prove, for every row of ``df``, that each feature row it used (``feature_times``, as added
    by ``create_training_set(..., feature_times=...)``) had its event time and its landing time
    (``known_at``) at or before the row's ``cutoff`` column. One aggregate over the rows.

    Example::

        audit = audit_feature_times(predictions_df, "feature_times", "prediction_ts")
        audit.raise_on_violation("predictions of 2013-12-02")
    """
    names = [f.name for f in df.schema[feature_times].dataType.fields]  # type: ignore[attr-defined]
    if not names:
        return FeatureTimesAudit(cutoff, {})
    per_lookup = F.create_map(*[part for n in names for part in (F.lit(n), F.col(feature_times)[n])])
    used = df.select(F.col(cutoff).alias("cutoff"), F.explode(per_lookup).alias("lookup", "row"))
    event_ts, known = F.col("row.event_ts"), F.col("row.known_at")
    matched = event_ts.isNotNull()
    rows = used.groupBy("lookup").agg(
        F.count(F.when(matched, 1)).alias("used"),
        F.count(F.when(matched & (event_ts > F.col("cutoff")), 1)).alias("after_cutoff"),
        F.count(F.when(matched & (known > F.col("cutoff")), 1)).alias("landed_after"),
        F.count(F.when(matched & known.isNull(), 1)).alias("unproven"),
    ).collect()
    counts = {r["lookup"]: {k: int(r[k]) for k in ("used", "after_cutoff", "landed_after", "unproven")}
              for r in rows}
    return FeatureTimesAudit(cutoff, counts)
