"""The notebooks run top to bottom against a small local lakehouse, and their helpers are right.

The lakehouse is the shared end-to-end one (``e2e_lakehouse.py``: the synthetic flights, a model
trained and registered on them, its own MLflow file); each notebook executes in a fresh Jupyter
kernel (a separate process with its own Spark, as a user's would be) pointed at it through
``SPARKFS_CONF_DIR`` and ``SPARKFS_DATA_DIR``, by ``notebooks/execute.py``. Any cell error fails the
test with the cell's output. The notebooks and these tests only read the lakehouse, so both
notebooks start as soon as it is built, side by side and at the lowest CPU priority, while the
tests before this module run (``notebook_runs``, ``conftest.py``); the test here checks what they
saved.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from e2e_lakehouse import MODEL, NOTEBOOKS, NotebookRun, SharedLakehouse
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from sparkfs.core.config import load_settings
from sparkfs.core.lakehouse import open_lakehouse
from sparkfs.ml import explore
from sparkfs.ml.config import load_training_config

REPO = Path(__file__).resolve().parents[1]
DAY = "2013-03-20"  # the day the shared lakehouse scored (e2e_lakehouse.SCORED_DAY)


def _runner() -> ModuleType:
    spec = importlib.util.spec_from_file_location("notebook_runner", REPO / "notebooks" / "execute.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def project(e2e_lakehouse: SharedLakehouse) -> Iterator[explore.Project]:
    """What a notebook's open_project() gives, on this test's session; the notebooks' kernels
    find the same lakehouse through the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in e2e_lakehouse.environment().items():
            patch.setenv(key, value)
        settings = load_settings()
        yield explore.Project(settings, open_lakehouse(e2e_lakehouse.ctx.spark, settings),
                              load_training_config(settings))


@pytest.mark.e2e
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_notebook_runs_top_to_bottom_and_plots(notebook_runs: dict[str, NotebookRun], notebook: str) -> None:
    executed = notebook_runs[notebook].result()
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs, "no output saved"
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot in the saved outputs"


def test_parameters_must_exist_in_the_parameters_cell() -> None:
    import nbformat

    notebook = nbformat.read(REPO / "notebooks" / "explore_feature_tables.ipynb", as_version=4)
    _runner().set_parameters(notebook, {"DAY": '"2013-01-02"'})
    assert 'DAY = "2013-01-02"' in next(c.source for c in notebook.cells if "parameters" in c.metadata.get("tags", []))
    with pytest.raises(ValueError, match="parameter NOPE is not assigned"):
        _runner().set_parameters(notebook, {"NOPE": "1"})


@pytest.mark.slow
def test_feature_tables_read_their_documentation_from_delta(project: explore.Project) -> None:
    tables = explore.feature_tables(project.lake).set_index("table")
    assert tables.loc["e2e_weather", "keys"] == "origin"
    assert tables.loc["e2e_weather", "event_time"] == "obs_ts"
    assert tables.loc["e2e_weather", "description"] == "hourly wind at each origin airport"
    columns = explore.feature_columns(project.lake, "e2e_weather").set_index("column")
    assert columns.loc["wind_speed", "description"] == "wind speed (mph)"
    assert explore.numeric_columns(project.lake, "e2e_weather") == ["wind_speed"]


def test_histograms_count_every_non_null_value(spark: SparkSession) -> None:
    df = spark.createDataFrame([(0.0,), (1.0,), (1.0,), (10.0,), (None,)], "x double")
    h = explore.histograms(df, ["x"], bins=10)["x"]
    assert h["count"].sum() == 4 and h.attrs["nulls"] == 1
    assert list(h["count"])[:2] == [1, 2] and list(h["count"])[-1] == 1  # max lands in the last bin
    assert h["bin_start"].iloc[0] == 0.0 and h["bin_end"].iloc[-1] == pytest.approx(10.0)


@pytest.mark.slow
def test_one_flight_gets_the_latest_feature_row_at_or_before_its_time(project: explore.Project) -> None:
    flight = explore.pick_flight(project, DAY)
    assert str(flight["sched_dep_ts"].date()) == DAY
    row = explore.lookup_flight(project, flight).df.collect()
    assert len(row) == 1
    t = flight[project.config.lookup_timestamp]
    lookups = [("obs_ts", "wind_speed", "wind_speed"),
               ("day_ts", "dep_delay_mean_7d", "carrier_dep_delay_mean_7d")]
    for i, (event_time, feature, column) in enumerate(lookups):
        lookback = pd.Timedelta(project.config.lookups[i].lookback)
        timeline = explore.feature_timeline(project, flight, lookup=i, around=50)
        visible = timeline[(timeline[event_time] <= pd.Timestamp(t))
                           & (timeline[event_time] > pd.Timestamp(t) - lookback)]
        expected = visible.sort_values(event_time)[feature].iloc[-1] if len(visible) else None
        assert row[0][column] == expected
        assert (timeline["minutes_after_lookup"] > 0).any()  # rows after t are shown, not used


@pytest.mark.slow
def test_champion_summary_and_scores(project: explore.Project) -> None:
    model = explore.champion(project)
    assert (model.name, model.alias) == (MODEL, "champion")
    metrics = explore.model_metrics(model).set_index("metric")
    assert {"roc_auc", "pr_auc", "log_loss", "f1"} <= set(metrics.index)
    assert (metrics["ci_low"] <= metrics["model"]).all() and (metrics["model"] <= metrics["ci_high"]).all()
    ts = explore.training_set(project, days=14)
    scored = explore.score_training_set(model, ts, project.config.keys, project.config.label)
    assert scored["rows"].sum() == ts.df.count()
    labelled = ts.df.where(F.col(project.config.label).isNotNull()).count()
    assert labelled > 0

