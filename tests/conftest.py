"""One Delta-enabled SparkSession for the whole test run, on a throwaway lakehouse."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import SparkSession
from spark_settings import JAVA_OPTIONS, SPARK_CONF

from sparkfs.core.config import Settings, SparkSettings, StorageSettings
from sparkfs.core.lakehouse import Lakehouse, open_lakehouse
from sparkfs.core.session import get_spark

REPO = Path(__file__).resolve().parents[1]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all-kill-points", action="store_true",
                     help="tests/test_faults.py: kill the jobs after every stage, not one per layer (~20 min more)")
    parser.addoption("--shared-session", choices=("only", "none"), default=None,
                     help="run only the tests that use the shared SparkSession, or only those that do not "
                          "(tests/run_suite.py runs the two sets side by side)")


# Run last, in this order. The notebooks start in the background (at the lowest priority) once
# the shared lakehouse is built and use what CPU the tests leave idle; their test waits for them,
# so it comes last, when they have had the most time. The fault tests keep both cores busy with
# JVMs of their own.
LAST_MODULES = ("test_faults.py", "test_notebooks.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """:data:`LAST_MODULES` last, each test still building what it needs. ``--shared-session``:
    a test uses the shared session when the ``spark`` fixture is among the fixtures it needs,
    directly or through another (``lake``, ``e2e_lakehouse``, ...)."""
    last = {name: place for place, name in enumerate(LAST_MODULES, start=1)}
    items.sort(key=lambda item: last.get(item.path.name, 0))  # stable: the rest keep their order
    wanted = config.getoption("--shared-session")
    if wanted is None:
        return
    keep, drop = [], []
    for item in items:
        uses = "spark" in getattr(item, "fixturenames", ())
        (keep if uses == (wanted == "only") else drop).append(item)
    items[:] = keep
    config.hook.pytest_deselected(items=drop)


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    data_dir = tmp_path_factory.mktemp("lakehouse")
    return Settings(
        env="test",
        conf_dir=str(REPO / "conf"),
        spark=SparkSettings(
            master="local[2]",
            app_name="sparkfs-tests",
            driver_memory="4g",  # one session for ~370 tests: room for what they cache
            shuffle_partitions=2,
            log_level="ERROR",
            java_options=JAVA_OPTIONS,
            conf=SPARK_CONF,
        ),
        storage=StorageSettings(data_dir=str(data_dir)),
    )


@pytest.fixture(scope="session")
def spark(settings: Settings) -> Iterator[SparkSession]:
    session = get_spark(settings)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def lake(spark: SparkSession, settings: Settings) -> Lakehouse:
    return open_lakehouse(spark, settings)


@pytest.fixture(scope="session")
def e2e_lakehouse(spark: SparkSession, settings: Settings, tmp_path_factory: pytest.TempPathFactory,  # type: ignore[no-untyped-def]
                  request: pytest.FixtureRequest):
    """The end-to-end lakehouse many e2e tests read (see ``e2e_lakehouse.py``), built once, by the
    first test that asks for it. When this run includes the notebooks' test, they start on it at
    once (``notebook_runs``), in the background."""
    from e2e_lakehouse import build_shared_lakehouse, start_notebooks

    shared = build_shared_lakehouse(spark, settings, tmp_path_factory.mktemp("shared"))
    if any("notebook_runs" in getattr(item, "fixturenames", ()) for item in request.session.items):
        start_notebooks(shared, tmp_path_factory.mktemp("notebooks"))
    yield shared
    for run in shared.notebooks.values():  # a run cut short (-x, Ctrl-C) leaves no kernel behind
        run.stop()


@pytest.fixture(scope="session")
def notebook_runs(e2e_lakehouse):  # type: ignore[no-untyped-def]
    """The notebooks executing on the shared lakehouse, started when it was built."""
    return e2e_lakehouse.notebooks


@pytest.fixture(scope="session")
def _synthetic_model(spark: SparkSession, settings: Settings):  # type: ignore[no-untyped-def]
    from synthetic_flights import train_synthetic_model

    return train_synthetic_model(spark, settings)


@pytest.fixture
def synthetic_model(_synthetic_model, settings: Settings):  # type: ignore[no-untyped-def]
    """One model on the synthetic flights for the whole run (``synthetic_flights``), trained and
    registered in the session's MLflow store by the first test that asks for it; the tests that
    read it never change it. MLflow points at that store again (a test before may have pointed it
    at another lakehouse's)."""
    from sparkfs.ml.tracking import configure_mlflow

    configure_mlflow(settings)
    return _synthetic_model


@pytest.fixture(autouse=True, scope="module")
def _drop_cached_tables() -> Iterator[None]:
    """Training sets and MERGE batches are cached while in use; a module's leftovers must not
    fill the shared session's heap for the modules after it. (Asks for no session: modules
    that need none start none.)"""
    yield
    active = SparkSession.getActiveSession()
    if active is not None:
        active.catalog.clearCache()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """A test that runs a command sets up sparkfs's logging (a handler on the root logger bound
    to the stderr of that moment, which pytest captures and closes); the tests after it must not
    inherit that handler or the levels it set."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    yield
    root.handlers = [h for h in root.handlers if h in handlers or type(h).__module__.startswith("_pytest")]
    root.setLevel(level)
    for name, saved in levels.items():
        logging.getLogger(name).setLevel(saved)
