"""The reference a model's inputs are compared with: profiled once, when the model is tested.

For each numeric column: the reference's quantile bin edges (deciles by default, ties merged)
and how many of its non-null rows fall in each bin; for each categorical column: how many rows
hold each value; for both, the nulls. The profile is small JSON (logged with
the model), so a daily drift run reads the reference's *rows* only for the KS test.

Bins are right-closed: bin 0 is ``(-inf, e1]``, bin i is ``(e_i, e_i+1]``, the last is
``(e_k, +inf)``; a value's bin is the number of edges below it.

Example::

    profile = profile_reference(test_split_df, numeric=["distance", "dep_hour"], categorical=["carrier"])
    profile.numeric["distance"].edges        # 9 inner edges for 10 bins
    ReferenceProfile.from_json(profile.to_json()) == profile
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from sparkfs.core.checks import require_columns
from sparkfs.core.errors import ConfigError

FEATURE, VALUE = "feature", "value"


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NumericProfile(_Frozen):
    edges: list[float]          # inner bin edges, increasing
    counts: list[int]           # non-null reference rows per bin (len(edges) + 1)
    nulls: int

    @property
    def shares(self) -> list[float]:
        total = sum(self.counts)
        return [c / total if total else 0.0 for c in self.counts]

    @property
    def null_share(self) -> float:
        return self.nulls / (self.nulls + sum(self.counts))


class CategoricalProfile(_Frozen):
    counts: dict[str, int]      # non-null reference rows per value
    nulls: int

    @property
    def null_share(self) -> float:
        return self.nulls / (self.nulls + sum(self.counts.values()))


class ReferenceProfile(_Frozen):
    rows: int
    numeric: dict[str, NumericProfile] = Field(default_factory=dict)
    categorical: dict[str, CategoricalProfile] = Field(default_factory=dict)

    def to_json(self) -> str:
        return self.model_dump_json(indent=2)

    @classmethod
    def from_json(cls, text: str) -> ReferenceProfile:
        return cls.model_validate_json(text)


def bin_index(value: Column, edges: Column) -> Column:
    """The right-closed bin of ``value`` among increasing ``edges`` (an array column)."""
    return F.size(F.filter(edges, lambda edge: value > edge))


def long_numeric(df: DataFrame, columns: Sequence[str], *keep: str) -> DataFrame:
    """One row per (row, numeric column): ``feature`` and its ``value`` as a double."""
    pairs = [F.struct(F.lit(c).alias(FEATURE), F.col(f"`{c}`").cast("double").alias(VALUE)) for c in columns]
    return df.select(*keep, F.explode(F.array(*pairs)).alias("p")).select(*keep, f"p.{FEATURE}", f"p.{VALUE}")


def long_categorical(df: DataFrame, columns: Sequence[str], *keep: str) -> DataFrame:
    """One row per (row, categorical column): ``feature`` and its ``value`` as a string."""
    pairs = [F.struct(F.lit(c).alias(FEATURE), F.col(f"`{c}`").cast("string").alias(VALUE)) for c in columns]
    return df.select(*keep, F.explode(F.array(*pairs)).alias("p")).select(*keep, f"p.{FEATURE}", f"p.{VALUE}")


def profile_reference(
    df: DataFrame,
    numeric: Sequence[str] = (),
    categorical: Sequence[str] = (),
    *,
    bins: int = 10,
    accuracy: int = 100_000,
) -> ReferenceProfile:
    """Profile ``df`` (e.g. a model's test split) with two aggregations over its rows."""
    if bins < 2:
        raise ConfigError(f"a reference profile needs at least 2 bins, got {bins}")
    require_columns(df, [*numeric, *categorical], "the reference rows")
    rows = df.count()
    if rows == 0:
        raise ConfigError("the reference rows are empty: nothing to profile drift against")
    profile = ReferenceProfile(rows=rows)
    numeric_profiles: dict[str, NumericProfile] = {}
    if numeric:
        long = long_numeric(df, numeric)
        quantiles = [i / bins for i in range(1, bins)]
        edges_rows = long.groupBy(FEATURE).agg(
            F.percentile_approx(VALUE, quantiles, accuracy).alias("edges"),
            F.count(VALUE).alias("non_null"),
        ).collect()
        edges = {r[FEATURE]: sorted(set(r["edges"] or [])) for r in edges_rows}
        edges_df = df.sparkSession.createDataFrame(
            [(name, edges.get(name, [])) for name in numeric], f"{FEATURE} string, edges array<double>"
        )
        counts = (
            long.where(F.col(VALUE).isNotNull())
            .join(F.broadcast(edges_df), FEATURE)
            .groupBy(FEATURE, bin_index(F.col(VALUE), F.col("edges")).alias("bin"))
            .count()
            .collect()
        )
        for name in numeric:
            present = {r["bin"]: r["count"] for r in counts if r[FEATURE] == name}
            feature_edges = edges.get(name, [])
            numeric_profiles[name] = NumericProfile(
                edges=feature_edges,
                counts=[present.get(i, 0) for i in range(len(feature_edges) + 1)],
                nulls=rows - sum(present.values()),
            )
    categorical_profiles: dict[str, CategoricalProfile] = {}
    if categorical:
        freq = long_categorical(df, categorical).groupBy(FEATURE, VALUE).count().collect()
        for name in categorical:
            present = {r[VALUE]: r["count"] for r in freq if r[FEATURE] == name and r[VALUE] is not None}
            categorical_profiles[name] = CategoricalProfile(
                counts=dict(sorted(present.items())), nulls=rows - sum(present.values())
            )
    return profile.model_copy(update={"numeric": numeric_profiles, "categorical": categorical_profiles})
