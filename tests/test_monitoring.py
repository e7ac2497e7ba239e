"""Drift against a reference profile, computed in Spark, equals scipy on the same data and bins."""

from __future__ import annotations

import math
from datetime import date

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.spatial.distance import jensenshannon
from scipy.stats import chi2_contingency, ks_2samp

from sparkfs.core.config import Settings
from sparkfs.core.errors import ConfigError, SchemaMismatchError
from sparkfs.monitoring.day_counts import NULL_CHUNK, day_counts, ks_grids
from sparkfs.monitoring.drift import (
    PSI_FLOOR,
    DriftMetric,
    DriftThresholds,
    day_to_day_highs,
    drift,
    ks_p_value,
    limits_for,
)
from sparkfs.monitoring.profile import ReferenceProfile, profile_reference

CARRIERS = ["AA", "B6", "DL", "UA"]


def frame(spark: SparkSession, rng: np.random.Generator, rows: int, *, shift: float = 0.0, day: str = "d0",
          weights: tuple[float, ...] = (0.4, 0.3, 0.2, 0.1), null_share: float = 0.05) -> pd.DataFrame:
    delay = rng.normal(10 + shift * 5, 5, rows).round(1)      # ties: values repeat at 0.1 steps
    delay[rng.random(rows) < null_share] = np.nan
    carrier = rng.choice(CARRIERS, rows, p=list(weights)).astype(object)
    carrier[rng.random(rows) < null_share] = None
    return pd.DataFrame({"day": day, "delay": delay, "hour": rng.integers(5, 23, rows).astype(float),
                         "carrier": carrier})


def to_spark(spark: SparkSession, pdf: pd.DataFrame) -> DataFrame:
    records = [
        tuple(None if (isinstance(v, float) and math.isnan(v)) else v for v in row)
        for row in pdf.itertuples(index=False)
    ]
    return spark.createDataFrame(records, "day string, delay double, hour double, carrier string")


def by(metrics: list[DriftMetric], chunk: str, feature: str, metric: str) -> DriftMetric:
    found = [m for m in metrics if (m.chunk, m.feature, m.metric) == (chunk, feature, metric)]
    assert len(found) == 1, (chunk, feature, metric, metrics)
    return found[0]


def numpy_psi(edges: list[float], reference: np.ndarray, current: np.ndarray) -> float:
    """PSI written independently: numpy's searchsorted puts a value in the bin of the edges below it."""
    def shares(values: np.ndarray) -> np.ndarray:
        values = values[~np.isnan(values)]
        counts = np.bincount(np.searchsorted(np.asarray(edges), values, side="left"), minlength=len(edges) + 1)
        return np.clip(counts / counts.sum(), PSI_FLOOR, None)
    e, a = shares(reference), shares(current)
    return float(np.sum((a - e) * np.log(a / e)))


def test_profile_bins_counts_and_round_trip(spark: SparkSession) -> None:
    rng = np.random.default_rng(1)
    ref = frame(spark, rng, 2000)
    profile = profile_reference(to_spark(spark, ref), numeric=["delay", "hour"], categorical=["carrier"])
    assert profile.rows == 2000
    delay = profile.numeric["delay"]
    assert len(delay.edges) == 9 and delay.edges == sorted(delay.edges)
    # each decile bin holds about a tenth of the non-null rows, every non-null row is in one bin
    assert sum(delay.counts) == ref["delay"].notna().sum() and delay.nulls == ref["delay"].isna().sum()
    assert all(abs(share - 0.1) < 0.03 for share in delay.shares)
    assert profile.categorical["carrier"].counts == ref["carrier"].value_counts().sort_index().to_dict()
    assert ReferenceProfile.from_json(profile.to_json()) == profile


@pytest.mark.slow
def test_drift_equals_scipy_on_the_same_data_and_bins(spark: SparkSession) -> None:
    rng = np.random.default_rng(7)
    ref = frame(spark, rng, 3000)
    same = frame(spark, rng, 800, day="same")
    moved = frame(spark, rng, 600, day="moved", shift=0.6, weights=(0.1, 0.2, 0.3, 0.4), null_share=0.3)
    reference_df = to_spark(spark, ref)
    profile = profile_reference(reference_df, numeric=["delay", "hour"], categorical=["carrier"])
    metrics = drift(to_spark(spark, pd.concat([same, moved])), profile, reference=reference_df, chunk_by="day")

    for chunk, cur in (("same", same), ("moved", moved)):
        for feature in ("delay", "hour"):
            expected_psi = numpy_psi(profile.numeric[feature].edges, ref[feature].to_numpy(), cur[feature].to_numpy())
            assert by(metrics, chunk, feature, "psi").value == pytest.approx(expected_psi, abs=1e-6)
            ks = ks_2samp(ref[feature].dropna(), cur[feature].dropna(), method="asymp")
            got = by(metrics, chunk, feature, "ks")
            assert got.value == pytest.approx(ks.statistic, abs=1e-6)
            assert got.p_value == pytest.approx(ks.pvalue, abs=1e-6)
            null_change = cur[feature].isna().mean() - ref[feature].isna().mean()
            assert by(metrics, chunk, feature, "null_share_change").value == pytest.approx(null_change, abs=1e-9)
        ref_counts = ref["carrier"].value_counts().reindex(CARRIERS, fill_value=0)
        cur_counts = cur["carrier"].value_counts().reindex(CARRIERS, fill_value=0)
        assert by(metrics, chunk, "carrier", "js").value == pytest.approx(
            jensenshannon(ref_counts, cur_counts, base=2), abs=1e-6)
        chi2 = chi2_contingency([ref_counts.to_numpy(), cur_counts.to_numpy()])
        got = by(metrics, chunk, "carrier", "chi2")
        assert (got.value, got.p_value) == (pytest.approx(chi2.statistic, abs=1e-6), pytest.approx(chi2.pvalue, abs=1e-6))
        assert by(metrics, chunk, "carrier", "js").rows == len(cur)

    # The moved chunk is what the levels are for; the same-distribution chunk raises nothing.
    assert by(metrics, "moved", "delay", "psi").level == "alert"
    assert by(metrics, "moved", "carrier", "js").level in ("warn", "alert")
    assert by(metrics, "moved", "carrier", "null_share_change").level == "alert"
    assert [m for m in metrics if m.chunk == "same" and m.level != "ok"] == []


def test_ks_is_exact_with_ties_values_outside_the_reference_and_a_pandas_reference(spark: SparkSession) -> None:
    ref = pd.DataFrame({"day": "r", "delay": [1.0, 2.0, 2.0, 3.0, 3.0, np.nan], "hour": 1.0, "carrier": "AA"})
    day = pd.DataFrame({"day": ["a"] * 4 + ["b"] * 3, "delay": [0.0, 2.0, 2.0, 2.5, 2.5, 4.0, np.nan],
                        "hour": 1.0, "carrier": "AA"})
    profile = profile_reference(to_spark(spark, ref), numeric=["delay"])

    metrics = drift(to_spark(spark, day), profile, reference=ref, chunk_by="day")

    for chunk, rows in day.groupby("day"):
        expected = ks_2samp(ref["delay"].dropna(), rows["delay"].dropna(), method="asymp")
        got = by(metrics, str(chunk), "delay", "ks")
        assert (got.value, got.p_value) == (pytest.approx(expected.statistic, abs=1e-12),
                                            pytest.approx(expected.pvalue, abs=1e-9))
        assert got.rows == len(rows)


def test_ks_on_a_reference_of_many_values_equals_nannymls_estimate(spark: SparkSession) -> None:
    """Above 10,000 distinct reference values KS is counted on NannyML's grid: the same statistic
    as NannyML's univariate KS (within 1e-6), and within the grid's resolution of the exact one."""
    from sparkfs.monitoring.performance import nannyml

    rng = np.random.default_rng(11)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 12_000)})
    day = pd.DataFrame({"x": np.concatenate([rng.normal(0.3, 1.2, 3_000), [np.nan] * 50])})
    profile = profile_reference(spark.createDataFrame(ref), numeric=["x"])

    got = by(drift(spark.createDataFrame(day.astype(object).where(day.notna(), None), "x double"), profile,
                   reference=ref), "all", "x", "ks")

    calculator = nannyml().UnivariateDriftCalculator(column_names=["x"], chunk_number=1,
                                                     continuous_methods=["kolmogorov_smirnov"])
    expected = calculator.fit(ref).calculate(day).filter(period="analysis").to_df()
    assert got.value == pytest.approx(float(expected[("x", "kolmogorov_smirnov", "value")].iloc[0]), abs=1e-6)
    exact = ks_2samp(ref["x"], day["x"].dropna(), method="asymp")
    assert got.value == pytest.approx(exact.statistic, abs=2e-3) and got.value != exact.statistic
    assert got.p_value == pytest.approx(ks_p_value(got.value, 3_000, 12_000), abs=1e-12)


def test_a_mean_shift_of_one_sd_is_a_psi_alert(spark: SparkSession) -> None:
    rng = np.random.default_rng(3)
    ref = to_spark(spark, frame(spark, rng, 3000))
    profile = profile_reference(ref, numeric=["delay"])
    shifted = drift(to_spark(spark, frame(spark, rng, 1000, shift=1.0)), profile)
    psi = by(shifted, "all", "delay", "psi")
    assert psi.value > 0.25 and psi.level == "alert"
    ks = by(drift(to_spark(spark, frame(spark, rng, 1000, shift=1.0)), profile, reference=ref), "all", "delay", "ks")
    assert ks.p_value is not None and ks.p_value < 0.01 and ks.value > 0.1 and ks.level == "alert"


def test_a_column_all_null_in_a_day_has_no_ks_and_its_null_share_is_an_alert(spark: SparkSession) -> None:
    """Seen on the real December: a feature with no value on one day must not stop the monitor."""
    rng = np.random.default_rng(5)
    ref = frame(spark, rng, 1000)
    reference_df = to_spark(spark, ref)
    profile = profile_reference(reference_df, numeric=["delay", "hour"])
    empty = frame(spark, rng, 200, day="empty")
    empty["delay"] = np.nan

    metrics = drift(to_spark(spark, empty), profile, reference=reference_df, chunk_by="day")

    assert [m for m in metrics if m.feature == "delay" and m.metric == "ks"] == []
    assert by(metrics, "empty", "hour", "ks").p_value is not None  # the other column is compared
    assert by(metrics, "empty", "delay", "null_share_change").level == "alert"


@pytest.mark.slow
def test_thirty_days_drawn_from_the_reference_raise_no_alert(spark: SparkSession) -> None:
    rng = np.random.default_rng(11)
    ref_pdf = frame(spark, rng, 5000)
    reference = to_spark(spark, ref_pdf)
    profile = profile_reference(reference, numeric=["delay", "hour"], categorical=["carrier"])
    days = pd.concat([frame(spark, rng, 500, day=f"2013-12-{d:02d}") for d in range(1, 31)])
    metrics = drift(to_spark(spark, days), profile, reference=reference, chunk_by="day")
    assert len({m.chunk for m in metrics}) == 30
    assert [m for m in metrics if m.level == "alert"] == []
    # 90 KS / chi-squared tests at p < 0.01: about one is significant by chance, with an
    # immaterial effect, so a warning (observed with this seed: 1 warning, chi-squared, 0 alerts).
    warnings = [m for m in metrics if m.level == "warn"]
    assert len(warnings) <= 3 and {m.metric for m in warnings} <= {"ks", "chi2"}
    assert max(m.value for m in metrics if m.metric == "psi") < 0.1


def test_bad_input_is_a_clear_error(spark: SparkSession) -> None:
    rng = np.random.default_rng(5)
    ref = to_spark(spark, frame(spark, rng, 100))
    with pytest.raises(ConfigError, match="at least 2 bins"):
        profile_reference(ref, numeric=["delay"], bins=1)
    with pytest.raises(ConfigError, match="empty"):
        profile_reference(ref.limit(0), numeric=["delay"])
    profile = profile_reference(ref, numeric=["delay"])
    with pytest.raises(SchemaMismatchError, match="delay"):
        drift(ref.drop("delay"), profile)


@pytest.mark.parametrize("engine", ["jvm", "python"])
def test_day_counts_add_up_partitions_with_null_chunks_empty_partitions_and_nan(spark: SparkSession, engine: str) -> None:
    """Each partition counts its rows and the partitions' counts are added up: the sums are the
    rows' counts, whatever the partitions hold (several chunks, none, a null chunk), in both engines."""
    day = pd.DataFrame({"day": ["a", "a", "b", None, "a", "b"], "delay": [1.0, 2.0, np.nan, 2.0, 9.0, 2.0],
                        "hour": 1.0, "carrier": ["AA", None, "AA", "DL", "AA", None]})
    rows_df = to_spark(spark, day).withColumn("delay", F.when(F.col("delay") == 9.0, F.lit(float("nan")))
                                              .otherwise(F.col("delay"))).repartition(8)  # some empty
    grids = ks_grids(pd.DataFrame({"delay": [2.0, 2.0, 3.0, np.nan]}), ["delay"])

    counts = day_counts(rows_df, "day", {"delay": [1.5, 2.5]}, grids, ["carrier"], engine=engine)

    assert counts.rows == {"a": 3, "b": 2, NULL_CHUNK: 1}
    # nulls (a NaN is one), then bins (-inf, 1.5], (1.5, 2.5], (2.5, inf)
    assert {k: v.tolist() for k, v in counts.bins.items()} == {
        ("a", "delay"): [1, 1, 1, 0], ("b", "delay"): [1, 0, 1, 0], (NULL_CHUNK, "delay"): [0, 0, 1, 0]}
    # buckets: below 2.0, equal to 2.0, between 2.0 and 3.0, equal to 3.0, above 3.0
    assert {k: v.tolist() for k, v in counts.ks.items()} == {
        ("a", "delay"): [1, 1, 0, 0, 0], ("b", "delay"): [0, 1, 0, 0, 0], (NULL_CHUNK, "delay"): [0, 1, 0, 0, 0]}
    assert counts.categories == {("a", "carrier"): {"AA": 2, None: 1}, ("b", "carrier"): {"AA": 1, None: 1},
                                 (NULL_CHUNK, "carrier"): {"DL": 1}}


def test_the_jvm_and_python_engines_count_every_edge_case_alike(spark: SparkSession) -> None:
    """The JVM aggregate and the Python workers give the same counts, bucket for bucket: values on
    the bin edges and on the KS cells' edges, below and above the reference, -0.0 against 0.0,
    infinities, NaN, nulls, unicode and empty categories, a null chunk, with and without chunks,
    and no rows at all."""
    rng = np.random.default_rng(7)
    exact_reference = np.array([-1.0, 0.0, 0.5, 2.0, 2.0, 7.25])
    wide_reference = rng.normal(0, 1, 12_000)  # more distinct values than an exact grid holds: cells
    grids = ks_grids(pd.DataFrame({"exact": np.resize(exact_reference, 12_000), "wide": wide_reference}),
                     ["exact", "wide"])
    assert grids["exact"].values is not None and grids["wide"].cells
    cell_edges = np.linspace(grids["wide"].low, grids["wide"].high, grids["wide"].cells + 1)
    edges = {"exact": [-1.0, 0.0, 2.0], "wide": [-0.5, 0.0, 0.5]}
    special = [-0.0, 0.0, -1.0, 2.0, 7.25, 8.0, -9.0, float("inf"), float("-inf"), float("nan"), None,
               0.5, -0.5, math.nextafter(0.5, 1), math.nextafter(-1.0, -2)]
    n = 6_000
    exact = [*special, *rng.choice([*exact_reference, 1.0, -3.0], n - len(special))]
    wide = [*rng.choice(cell_edges, 2_000), *(cell_edges[:3_000] + rng.normal(0, 1e-12, 3_000)),
            grids["wide"].low, grids["wide"].high, *special, *rng.normal(0, 2, n - 5_002 - len(special))]
    labels = ["é", "", "a b", "x" * 40, None, "日本"]
    rows = [(f"d{i % 7}" if i % 11 else None, _none(exact[i]), _none(wide[i]), labels[i % len(labels)])
            for i in range(n)]
    rows_df = spark.createDataFrame(rows, "day string, exact double, wide double, label string").repartition(3)

    for frame_ in (rows_df, rows_df.limit(0)):
        for chunk_by in ("day", None):
            jvm = day_counts(frame_, chunk_by, edges, grids, ["label"], engine="jvm")
            python = day_counts(frame_, chunk_by, edges, grids, ["label"], engine="python")
            assert jvm.rows == python.rows
            for found in ("bins", "ks"):
                a, b = getattr(jvm, found), getattr(python, found)
                assert a.keys() == b.keys() and all(a[k].tolist() == b[k].tolist() for k in a), (found, chunk_by)
            assert jvm.categories == python.categories
    assert sum(jvm.rows.values()) == 0 and sum(day_counts(rows_df, None, edges, grids, ["label"]).rows.values()) == n


def _none(value: float | None) -> float | None:
    return None if value is None else float(value)


def entity_days(rng: np.random.Generator, days: list[str], levels: np.ndarray, *, shift: float = 0.0) -> pd.DataFrame:
    """A served per-entity feature, as a 06:00 batch serves it: each carrier's value of the day
    (its own level plus that day's noise) repeated on every one of its 5-15 flights."""
    out = []
    for day in days:
        values = levels + rng.normal(0, 2, len(levels)) + shift
        for entity, value in enumerate(values):
            flights = int(rng.integers(5, 16))
            out.append(pd.DataFrame({"day": day, "delay": round(float(value), 1),
                                     "hour": rng.integers(5, 23, flights).astype(float), "carrier": f"C{entity:02d}"}))
    return pd.concat(out, ignore_index=True)


@pytest.mark.slow
def test_a_per_entity_feature_is_flagged_against_the_references_own_days(spark: SparkSession) -> None:
    """16 values a day are not 160 independent rows: against the fixed levels every day of an
    unchanged process alerts; against the reference's day-to-day spread none does, and a shift of
    one standard deviation of the feature still alerts every day."""
    rng = np.random.default_rng(13)
    levels = rng.normal(10, 5, 16)  # the carriers' long-run levels
    ref_pdf = entity_days(rng, [f"ref{d:02d}" for d in range(30)], levels)
    reference = to_spark(spark, ref_pdf)
    profile = profile_reference(reference.drop("day"), numeric=["delay", "hour"], categorical=["carrier"])
    highs = day_to_day_highs(reference, profile, chunk_by="day")
    same = to_spark(spark, entity_days(rng, [f"2013-12-{d:02d}" for d in range(1, 31)], levels))
    shifted = to_spark(spark, entity_days(rng, [f"2014-01-{d:02d}" for d in range(1, 6)], levels,
                                          shift=float(ref_pdf["delay"].std())))
    whole = reference.drop("day")

    fixed = drift(same, profile, reference=whole, chunk_by="day")
    calibrated = drift(same, profile, reference=whole, chunk_by="day", day_to_day=highs)
    moved = drift(shifted, profile, reference=whole, chunk_by="day", day_to_day=highs)

    alerting = lambda metrics: sorted({m.chunk for m in metrics if m.feature == "delay" and m.level == "alert"})  # noqa: E731
    assert len(alerting(fixed)) >= 25                 # the fixed levels: an alarm (nearly) every day; observed 29
    assert set(highs) == {"psi", "ks", "js", "chi2"} and highs["psi"]["delay"] > 0.25 > highs["psi"]["hour"]
    for feature in ("delay", "hour"):  # each reference day against the whole reference, by scipy
        expected = max(ks_2samp(part[feature], ref_pdf[feature], method="asymp").statistic
                       for _, part in ref_pdf.groupby("day"))
        assert highs["ks"][feature] == pytest.approx(expected, abs=1e-9)
    assert alerting(calibrated) == []                 # observed with this seed: 0 alerts, 30 days
    assert len(alerting(moved)) == 5
    # hour is per flight: its days stay below the fixed alert level, which therefore holds
    assert limits_for("psi", "hour", DriftThresholds(), highs)[1] == 0.25


def test_the_levels_rise_to_the_references_day_to_day_high_and_never_fall() -> None:
    t = DriftThresholds()
    highs = {"psi": {"delay": 2.0, "hour": 0.05}, "ks": {"delay": 0.4}}
    assert limits_for("psi", "delay", t, highs) == (2.0, 2.5)
    assert limits_for("psi", "hour", t, highs) == (0.1, 0.25)
    assert limits_for("psi", "other", t, highs) == (0.1, 0.25)
    assert limits_for("ks", "delay", t, highs) == (0.4, 0.5)   # effects: any significant one warns without
    assert limits_for("ks", "delay", t) == (0.0, 0.1)
    assert limits_for("null_share_change", "delay", t, {"null_share_change": {"delay": 0.9}}) == (0.05, 0.2)
    assert limits_for("psi", "delay", t.model_copy(update={"day_to_day": False}), highs) == (0.1, 0.25)


def test_the_console_shows_the_first_alerts_and_where_the_rest_are(settings: Settings) -> None:
    from sparkfs.jobs.monitor import SHOWN_ALERTS, MonitorResult, describe_monitoring
    from sparkfs.ml.config import load_training_config
    from sparkfs.monitoring.monitor import ChunkReport, MonitoredModel
    from sparkfs.monitoring.tables import AlertRow, DriftRow

    features = [f"f{i}" for i in range(SHOWN_ALERTS + 2)]
    report = ChunkReport("2013-12-14", drift=[DriftRow("m", "1", "psi", f, "2013-12-14", 1.0, None, "alert", 10, "r")
                                              for f in features],
                         alerts=[AlertRow("m", "1", "psi", f, "2013-12-14", "alert", "drift", 1.0, 0.25, "r",
                                          f"{f} drifted") for f in features])
    result = MonitorResult(MonitoredModel("m", "1", "run"), report, {})

    text = describe_monitoring(result, load_training_config(settings), date(2013, 12, 14))

    shown = [line for line in text.splitlines() if line.startswith("  alert: ")]
    assert shown == [f"  alert: f{i} drifted" for i in range(SHOWN_ALERTS)]
    assert text.splitlines()[-1] == "  ... and 2 more alert(s) in `monitoring.alerts`"
