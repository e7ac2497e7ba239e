"""Property-based: the AS-OF join equals DuckDB's ``ASOF LEFT JOIN`` on random data.

Random spines and feature tables with ties between spine and feature times, null keys, null
timestamps, null feature values, duplicate spine rows, two key columns, mixed time zones,
lookbacks hitting the (t - w, t] edge exactly, and bin sizes that send intervals down the fine
path, the keys-only path, or both; and the union + window plan. A spine whose rows all share
one time goes through the instant plan, also as known at (against a brute force).

Each example joins several independent cases at once: a case number leads the keys, so a case's
rows never meet another's, and one Spark join checks them all (a join costs the same fixed
planning and scheduling time for eight small cases as for one).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

import duckdb
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkfs.pit import as_of_join

T0 = datetime(2024, 1, 1, tzinfo=timezone.utc)
ZONES = [timezone.utc, timezone(timedelta(hours=-5)), timezone(timedelta(hours=5, minutes=30))]
SPINE_SCHEMA = "case long, k1 string, k2 long, ts timestamp, label long"
FEATURE_SCHEMA = "case long, k1 string, k2 long, ts timestamp, v double, w string"
KEYS = ["case", "k1", "k2"]
CASES = 8  # independent cases per example, joined at once

k1s = st.sampled_from(["a", "b", None])
k2s = st.sampled_from([1, 2])
zones = st.sampled_from(ZONES)
LOOKBACKS = [None, timedelta(minutes=1), timedelta(minutes=3), timedelta(minutes=10)]
# Whole minutes (0..12) so times collide often; each value in a random zone.
instants = st.builds(lambda m, z: (T0 + timedelta(minutes=m)).astimezone(z), st.integers(0, 12), zones)
feature_rows = st.lists(
    st.tuples(k1s, k2s, instants, st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
              st.sampled_from(["x", "y", None])),
    max_size=15,
    unique_by=lambda r: (r[0], r[1], r[2]),   # feature tables are unique on (keys, event time)
)
bin_sizes = st.sampled_from([timedelta(seconds=20), timedelta(minutes=1), timedelta(minutes=7), timedelta(days=1)])


@st.composite
def spine_rows(draw: st.DrawFn, features: list[tuple], lookback: timedelta | None) -> list[tuple]:
    """Spine rows: often on a feature row's key and time, or exactly at / 1 µs inside its lookback edge."""
    offsets = [timedelta(0)] + ([lookback, lookback - timedelta(microseconds=1)] if lookback else [])
    row = st.tuples(k1s, k2s, st.one_of(st.none(), instants), st.integers(0, 1))
    if features:
        on_feature = st.builds(
            lambda f, off, z, y: (f[0], f[1], (f[2] + off).astimezone(z), y),
            st.sampled_from(features), st.sampled_from(offsets), zones, st.integers(0, 1),
        )
        row = st.one_of(row, on_feature, on_feature)
    rows = draw(st.lists(row, min_size=1, max_size=12))
    return rows + draw(st.lists(st.sampled_from(rows), max_size=2))   # duplicate spine rows


@st.composite
def cases(draw: st.DrawFn, lookback: timedelta | None) -> list[tuple[list[tuple], list[tuple]]]:
    """``CASES`` pairs of (spine rows, feature rows), each spine drawn against its own features."""
    drawn = []
    for _ in range(CASES):
        features = draw(feature_rows)
        drawn.append((draw(spine_rows(features, lookback)), features))
    return drawn


def numbered(rows_per_case: list[list[tuple]]) -> list[tuple]:
    """The rows of all cases, each led by its case's number (the first key)."""
    return [(case, *row) for case, rows in enumerate(rows_per_case) for row in rows]


def joined(spark: SparkSession, batch: list[tuple[list[tuple], list[tuple]]], lookback: timedelta | None,
           feature_schema: str = FEATURE_SCHEMA, **options: object) -> Counter:
    """``as_of_join`` of every case of ``batch`` at once: its rows, counted."""
    spine_df = spark.createDataFrame(numbered([spine for spine, _ in batch]), SPINE_SCHEMA)
    feature_df = spark.createDataFrame(numbered([features for _, features in batch]), feature_schema)
    out = as_of_join(spine_df, feature_df, KEYS, spine_time="ts", event_time="ts", lookback=lookback,
                     **options)  # type: ignore[arg-type]
    return Counter(tuple(r) for r in out.select(*KEYS, F.unix_micros("ts"), "label", "v", "w").collect())


def utc_naive(value: datetime | None) -> pd.Timestamp:
    return pd.NaT if value is None else pd.Timestamp(value.astimezone(timezone.utc).replace(tzinfo=None))


def micros(value: pd.Timestamp) -> int | None:
    return None if pd.isna(value) else int(value.value // 1000)


def oracle(batch: list[tuple[list[tuple], list[tuple]]], lookback: timedelta | None) -> Counter:
    """DuckDB's ASOF LEFT JOIN of every case of ``batch`` (the case number a key), counted."""
    spine_pd = pd.DataFrame(
        [(c, k1, k2, utc_naive(t), y) for c, k1, k2, t, y in numbered([spine for spine, _ in batch])],
        columns=["c", "k1", "k2", "ts", "label"],
    ).astype({"ts": "datetime64[us]", "k2": "Int64"})
    feats_pd = pd.DataFrame(
        [(c, k1, k2, utc_naive(t), v, w) for c, k1, k2, t, v, w in numbered([features for _, features in batch])],
        columns=["c", "k1", "k2", "fts", "v", "w"],
    ).astype({"c": "int64", "fts": "datetime64[us]", "k2": "Int64", "v": "float64", "w": "object"})
    con = duckdb.connect()
    con.register("spine_pd", spine_pd)
    con.register("feats_pd", feats_pd)
    rows = con.sql(
        "SELECT s.c, s.k1, s.k2, s.ts, s.label, f.fts, f.v, f.w FROM spine_pd s "
        "ASOF LEFT JOIN feats_pd f ON s.c = f.c AND s.k1 = f.k1 AND s.k2 = f.k2 AND s.ts >= f.fts"
    ).df()
    out: Counter = Counter()
    for r in rows.itertuples(index=False):
        hit = not pd.isna(r.fts) and (lookback is None or r.fts > r.ts - lookback)
        v = r.v if hit and not pd.isna(r.v) else None
        w = r.w if hit and isinstance(r.w, str) else None
        k2 = None if pd.isna(r.k2) else int(r.k2)
        out[(int(r.c), r.k1, k2, micros(r.ts), int(r.label), v, w)] += 1
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), lookback=st.sampled_from(LOOKBACKS), bin_size=bin_sizes,
       plan=st.sampled_from(["intervals", "intervals", "union", "union-wide"]))
@pytest.mark.slow
def test_as_of_join_matches_duckdb_asof(spark: SparkSession, data: st.DataObject, lookback: timedelta | None,
                                        bin_size: timedelta, plan: str) -> None:
    batch = data.draw(cases(lookback))
    # Rows go in unsorted, in the order hypothesis drew them.
    assert joined(spark, batch, lookback, plan=plan, bin_size=bin_size) == oracle(batch, lookback)


@st.composite
def one_instant_cases(draw: st.DrawFn, features: st.SearchStrategy[list[tuple]]) -> list[tuple[list[tuple], list[tuple]]]:
    """``CASES`` pairs of (spine rows, feature rows) whose spine rows all look up at one time (each
    in a random zone), or have no time: one instant for every case, as the instant plan needs."""
    t = T0 + timedelta(minutes=draw(st.integers(0, 12)))
    timed = st.builds(lambda z: t.astimezone(z), zones)
    at = st.one_of(st.none(), timed, timed)  # most rows have the time
    spine = st.lists(st.tuples(k1s, k2s, at, st.integers(0, 1)), min_size=1, max_size=12)
    return [(draw(spine), draw(features)) for _ in range(CASES)]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=one_instant_cases(feature_rows), lookback=st.sampled_from(LOOKBACKS))
@pytest.mark.slow
def test_a_spine_at_one_instant_matches_duckdb_asof(spark: SparkSession, batch: list[tuple[list[tuple], list[tuple]]],
                                                    lookback: timedelta | None) -> None:
    assert joined(spark, batch, lookback, plan="instant") == oracle(batch, lookback)


known_rows = st.lists(
    st.tuples(k1s, k2s, instants, st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
              st.sampled_from(["x", "y", None]), st.one_of(st.none(), instants)),
    max_size=15,
    unique_by=lambda r: (r[0], r[1], r[2]),
)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=one_instant_cases(known_rows), lookback=st.sampled_from(LOOKBACKS))
@pytest.mark.slow
def test_a_spine_at_one_instant_as_known_at_matches_a_brute_force(
    spark: SparkSession, batch: list[tuple[list[tuple], list[tuple]]], lookback: timedelta | None
) -> None:
    """As known at (a row counts once ``known <= t``): the instant plan equals a brute force over
    the rows (the latest visible row by event time, inside the lookback)."""
    got = joined(spark, batch, lookback, FEATURE_SCHEMA + ", known timestamp", known_at="known", plan="instant")
    expected: Counter = Counter()
    for case, (spine, features) in enumerate(batch):
        for k1, k2, t, label in spine:
            visible = [f for f in features if k1 is not None and (f[0], f[1]) == (k1, k2) and t is not None
                       and f[5] is not None and f[2] <= t and f[5] <= t and (lookback is None or f[2] > t - lookback)]
            hit = max(visible, key=lambda f: f[2], default=None)
            at = None if t is None else micros(utc_naive(t))
            expected[(case, k1, k2, at, label, hit[3] if hit else None, hit[4] if hit else None)] += 1
    assert got == expected
