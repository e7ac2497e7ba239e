"""Property-based: the AS-OF join equals DuckDB's ``ASOF LEFT JOIN`` on random data.

Random spines and feature tables with ties between spine and feature times, null keys, null
timestamps, null feature values, duplicate spine rows, two key columns, mixed time zones,
lookbacks hitting the (t - w, t] edge exactly, and bin sizes that send intervals down the fine
path, the keys-only path, or both; and the union + window plan. A spine whose rows all share
one time goes through the instant plan, also as known at (against a brute force).
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
SPINE_SCHEMA = "k1 string, k2 long, ts timestamp, label long"
FEATURE_SCHEMA = "k1 string, k2 long, ts timestamp, v double, w string"

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


def utc_naive(value: datetime | None) -> pd.Timestamp:
    return pd.NaT if value is None else pd.Timestamp(value.astimezone(timezone.utc).replace(tzinfo=None))


def micros(value: pd.Timestamp) -> int | None:
    return None if pd.isna(value) else int(value.value // 1000)


def oracle(spine: list[tuple], features: list[tuple], lookback: timedelta | None) -> Counter:
    spine_pd = pd.DataFrame(
        [(k1, k2, utc_naive(t), y) for k1, k2, t, y in spine], columns=["k1", "k2", "ts", "label"]
    ).astype({"ts": "datetime64[us]", "k2": "Int64"})
    feats_pd = pd.DataFrame(
        [(k1, k2, utc_naive(t), v, w) for k1, k2, t, v, w in features], columns=["k1", "k2", "fts", "v", "w"]
    ).astype({"fts": "datetime64[us]", "k2": "Int64", "v": "float64", "w": "object"})
    con = duckdb.connect()
    con.register("spine_pd", spine_pd)
    con.register("feats_pd", feats_pd)
    joined = con.sql(
        "SELECT s.k1, s.k2, s.ts, s.label, f.fts, f.v, f.w FROM spine_pd s "
        "ASOF LEFT JOIN feats_pd f ON s.k1 = f.k1 AND s.k2 = f.k2 AND s.ts >= f.fts"
    ).df()
    out: Counter = Counter()
    for r in joined.itertuples(index=False):
        hit = not pd.isna(r.fts) and (lookback is None or r.fts > r.ts - lookback)
        v = r.v if hit and not pd.isna(r.v) else None
        w = r.w if hit and isinstance(r.w, str) else None
        k2 = None if pd.isna(r.k2) else int(r.k2)
        out[(r.k1, k2, micros(r.ts), int(r.label), v, w)] += 1
    return out


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), features=feature_rows, lookback=st.sampled_from(LOOKBACKS), bin_size=bin_sizes,
       plan=st.sampled_from(["intervals", "intervals", "union", "union-wide"]))
@pytest.mark.slow
def test_as_of_join_matches_duckdb_asof(spark: SparkSession, data: st.DataObject, features: list[tuple],
                                        lookback: timedelta | None, bin_size: timedelta, plan: str) -> None:
    spine = data.draw(spine_rows(features, lookback))
    # Rows go in unsorted, in the order hypothesis drew them.
    spine_df = spark.createDataFrame(spine, SPINE_SCHEMA)
    feature_df = spark.createDataFrame(features, FEATURE_SCHEMA)
    out = as_of_join(spine_df, feature_df, ["k1", "k2"], spine_time="ts", event_time="ts",
                     lookback=lookback, plan=plan, bin_size=bin_size)
    got = Counter(
        tuple(r) for r in out.select("k1", "k2", F.unix_micros("ts"), "label", "v", "w").collect()
    )
    assert got == oracle(spine, features, lookback)


@st.composite
def one_instant_spine(draw: st.DrawFn) -> list[tuple]:
    """Spine rows that all look up at one time (each in a random zone), or have no time."""
    t = T0 + timedelta(minutes=draw(st.integers(0, 12)))
    timed = st.builds(lambda z: t.astimezone(z), zones)
    at = st.one_of(st.none(), timed, timed)  # most rows have the time
    return draw(st.lists(st.tuples(k1s, k2s, at, st.integers(0, 1)), min_size=1, max_size=12))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spine=one_instant_spine(), features=feature_rows, lookback=st.sampled_from(LOOKBACKS))
@pytest.mark.slow
def test_a_spine_at_one_instant_matches_duckdb_asof(spark: SparkSession, spine: list[tuple], features: list[tuple],
                                                    lookback: timedelta | None) -> None:
    spine_df = spark.createDataFrame(spine, SPINE_SCHEMA)
    out = as_of_join(spine_df, spark.createDataFrame(features, FEATURE_SCHEMA), ["k1", "k2"], spine_time="ts",
                     event_time="ts", lookback=lookback, plan="instant")
    got = Counter(tuple(r) for r in out.select("k1", "k2", F.unix_micros("ts"), "label", "v", "w").collect())
    assert got == oracle(spine, features, lookback)


known_rows = st.lists(
    st.tuples(k1s, k2s, instants, st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)),
              st.sampled_from(["x", "y", None]), st.one_of(st.none(), instants)),
    max_size=15,
    unique_by=lambda r: (r[0], r[1], r[2]),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spine=one_instant_spine(), features=known_rows, lookback=st.sampled_from(LOOKBACKS))
@pytest.mark.slow
def test_a_spine_at_one_instant_as_known_at_matches_a_brute_force(
    spark: SparkSession, spine: list[tuple], features: list[tuple], lookback: timedelta | None
) -> None:
    """As known at (a row counts once ``known <= t``): the instant plan equals a brute force over
    the rows (the latest visible row by event time, inside the lookback)."""
    spine_df = spark.createDataFrame(spine, SPINE_SCHEMA)
    feature_df = spark.createDataFrame(features, FEATURE_SCHEMA + ", known timestamp")
    out = as_of_join(spine_df, feature_df, ["k1", "k2"], spine_time="ts", event_time="ts", known_at="known",
                     lookback=lookback, plan="instant")
    got = Counter(tuple(r) for r in out.select("k1", "k2", F.unix_micros("ts"), "label", "v", "w").collect())
    expected: Counter = Counter()
    for k1, k2, t, label in spine:
        visible = [f for f in features if k1 is not None and (f[0], f[1]) == (k1, k2) and t is not None
                   and f[5] is not None and f[2] <= t and f[5] <= t and (lookback is None or f[2] > t - lookback)]
        hit = max(visible, key=lambda f: f[2], default=None)
        at = None if t is None else micros(utc_naive(t))
        expected[(k1, k2, at, label, hit[3] if hit else None, hit[4] if hit else None)] += 1
    assert got == expected
