"""One end-to-end lakehouse for the whole test run, built once and read by many tests.

The features job runs over two days of synthetic landing files (``land_synthetic``: one daily run
for D1, one for D2), then the synthetic flights are written next to its tables (``build_e2e``), a
model ``flight_delay`` is trained and registered by ``train_job`` and 2013-03-20 is scored by
``infer_job`` into ``flight_delay_predictions``. Its conf folder (the repository's, reading that
landing zone) and data folder are what a reader's ``sparkfs.connect()`` or a notebook's
``open_project()`` finds through :meth:`SharedLakehouse.environment`.

The tests that read it never write to it. A test that writes (a rerun, a correction, monitoring)
takes :meth:`SharedLakehouse.clone`: a copy of the Delta folders it needs, in schemas of its own,
with its own conf and data folder; the registered model is read from the shared MLflow store.

The notebooks only read it too, so :func:`start_notebooks` executes them as soon as it is built,
in processes of their own at the lowest CPU priority (their kernels' JVMs then use the CPU the
test session leaves idle), and ``tests/test_notebooks.py`` checks what they saved.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import nbformat
import pytest
import yaml
from pyspark.sql import SparkSession
from run_suite import LOWEST_PRIORITY, OWN_PROCESS_GROUP, lowest_priority_sessions
from spark_settings import SHORT_LIVED_JAVA_OPTIONS, SPARK_CONF
from synthetic_flights import build_e2e
from synthetic_landing import D1, D2, land_synthetic, private_conf

from sparkfs.core.config import MlflowSettings, Settings, load_settings
from sparkfs.core.lakehouse import Lakehouse, open_lakehouse
from sparkfs.core.runs import RunWindow
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.features import features_job
from sparkfs.jobs.infer import infer_job
from sparkfs.jobs.train import train_job
from sparkfs.ml.tracking import configure_mlflow, local_tracking_uri

MODEL = "flight_delay"
PREDICTIONS = "flight_delay_predictions"
SCORED_DAY = date(2013, 3, 20)
LAYERS = ("bronze", "silver", "gold", "ml", "ops", "monitoring")
# The synthetic flights and the model's feature tables (what train, infer and monitor read).
MODEL_TABLES = (("silver", "e2e_flights"), ("gold", "e2e_weather"), ("gold", "e2e_carrier_stats"),
                ("ml", PREDICTIONS))


@dataclass(frozen=True)
class SharedLakehouse:
    root: Path
    ctx: JobContext
    printed: dict[str, str]  # what each job printed: "features D1", "features D2", "train", "infer"
    notebooks: dict[str, NotebookRun] = field(default_factory=dict)  # started by start_notebooks

    @property
    def conf(self) -> Path:
        return Path(self.ctx.settings.conf_dir)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def lake(self) -> Lakehouse:
        return self.ctx.lake

    def environment(self) -> dict[str, str]:
        """What points ``load_settings()`` (and so ``sparkfs.connect()`` and a notebook) here."""
        return {"SPARKFS_CONF_DIR": str(self.conf), "SPARKFS_DATA_DIR": str(self.data), "SPARKFS_ENV": "local"}

    def use_mlflow(self) -> None:
        """Point MLflow at this lakehouse's store (a test before may have pointed it elsewhere)."""
        configure_mlflow(self.ctx.settings)

    def clone(self, root: Path, name: str, tables: Iterable[tuple[str, str]]) -> JobContext:
        """A private copy of ``tables`` (layer, table): their Delta folders, so every version
        and its history is kept, in schemas ``<name>_<layer>`` under ``root/data``, with a copy
        of the conf folder in ``root/conf``. MLflow reads the shared store: the registered model
        is the shared one (a clone must not train or register)."""
        conf = root / "conf"
        shutil.copytree(self.conf, conf)
        settings = self.ctx.settings
        schemas = {layer: f"{name}_{layer}" for layer in LAYERS}
        storage = settings.storage.model_copy(update={"data_dir": str(root / "data"), "schemas": schemas})
        mlflow = MlflowSettings(tracking_uri=local_tracking_uri(settings), experiment=settings.mlflow.experiment)
        private = settings.model_copy(update={"conf_dir": str(conf), "storage": storage, "mlflow": mlflow})
        for layer, table in tables:
            source = self.data / "warehouse" / settings.storage.schemas[layer] / table
            shutil.copytree(source, private.data_path / "warehouse" / schemas[layer] / table)
        self.use_mlflow()
        return JobContext(private, self.ctx.spark, open_lakehouse(self.ctx.spark, private))


# Each notebook with the parameters it runs with here (see ``notebooks/execute.py``).
NOTEBOOKS = {
    "explore_feature_tables.ipynb": {"TABLE": '"e2e_carrier_stats"', "DAY": f'"{SCORED_DAY}"'},
    "training_set_and_model.ipynb": {"START": "None", "END": "None", "BY": '"carrier"'},
}
NOTEBOOK_TIMEOUT_S = 900


@dataclass(frozen=True)
class NotebookRun:
    """``notebooks/execute.py`` running one notebook in a process group of its own."""

    name: str
    process: subprocess.Popen[bytes]
    saved: Path  # the executed notebook, with its outputs
    log: Path  # what execute.py printed: the failing cell's output when one fails

    def result(self) -> nbformat.NotebookNode:
        """The executed notebook; fails with the failing cell's output when a cell failed."""
        try:
            status = self.process.wait(timeout=NOTEBOOK_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.stop()
            pytest.fail(f"{self.name} did not finish in {NOTEBOOK_TIMEOUT_S} s:\n{self.log.read_text()[-4000:]}")
        if status != 0:
            pytest.fail(f"{self.name} failed (exit {status}):\n{self.log.read_text()[-6000:]}")
        return nbformat.read(self.saved, as_version=4)

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_notebooks(shared: SharedLakehouse, folder: Path) -> None:
    """Start every notebook of :data:`NOTEBOOKS` on ``shared`` (through its environment), each in
    a fresh kernel, at the lowest priority (``run_suite``); their runs go into ``shared.notebooks``."""
    runner = Path(__file__).resolve().parents[1] / "notebooks" / "execute.py"
    for name, parameters in NOTEBOOKS.items():
        log = folder / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [*LOWEST_PRIORITY, sys.executable, str(runner), name, "--output", str(folder),
                 *(f"-p{key}={value}" for key, value in parameters.items())],
                env={**os.environ, **shared.environment()}, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, **OWN_PROCESS_GROUP,
            )
        lowest_priority_sessions(process)  # the kernel, which Jupyter starts in a session of its own
        shared.notebooks[name] = NotebookRun(name, process, folder / name, log)


def write_conf(root: Path) -> Path:
    """The repository's conf reading ``root/landing``, in schemas ``shared_<layer>``, with the
    session settings a notebook's kernel (or another reader's process) starts with: the test
    settings of a JVM that lives a minute (``spark_settings``)."""
    conf = private_conf(root / "conf", root / "landing")
    overlay = conf / "env" / "local.yaml"
    local = yaml.safe_load(overlay.read_text()) or {}
    local["storage"] = {**local.get("storage", {}), "schemas": {layer: f"shared_{layer}" for layer in LAYERS}}
    local["spark"] = {**local.get("spark", {}), "master": "local[2]", "driver_memory": "1g", "shuffle_partitions": 2,
                      "java_options": SHORT_LIVED_JAVA_OPTIONS, "conf": SPARK_CONF}
    overlay.write_text(yaml.safe_dump(local))
    return conf


def build_shared_lakehouse(spark: SparkSession, session: Settings, root: Path) -> SharedLakehouse:
    """Land, run the features job for D1 then D2, write the synthetic flights, train, score."""
    conf = write_conf(root)
    land_synthetic(root / "landing")
    environment = {"SPARKFS_CONF_DIR": str(conf), "SPARKFS_DATA_DIR": str(root / "data"), "SPARKFS_ENV": "local"}
    with pytest.MonkeyPatch.context() as patch:
        for key, value in environment.items():
            patch.setenv(key, value)
        settings = load_settings()  # as a reader's sparkfs.connect() loads them
    ctx = JobContext(settings, spark, open_lakehouse(spark, settings))
    printed = {
        "features D1": printed_by(features_job, ctx, RunWindow(D1, D1)),
        "features D2": printed_by(features_job, ctx, RunWindow(D2, D2)),
    }
    build_e2e(ctx.lake, MODEL, conf, inference={"table": PREDICTIONS})
    printed["train"] = printed_by(train_job, ctx, None)
    printed["infer"] = printed_by(infer_job, ctx, RunWindow(SCORED_DAY, SCORED_DAY))
    configure_mlflow(session)  # the session's store again, as the tests before left it
    return SharedLakehouse(root, ctx, printed)


def printed_by(job: Callable[[JobContext, RunWindow | None], None], ctx: JobContext, window: RunWindow | None) -> str:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        job(ctx, window)
    return out.getvalue()
