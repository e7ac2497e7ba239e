"""Fault injection: the features and inference jobs killed with SIGKILL at stage boundaries and
inside a MERGE, and runs of the features job at the same time.

Each job runs as ``python -m sparkfs run ...`` in a process group of its own (the Python driver
and its JVM), and a kill is what the out-of-memory killer does: SIGKILL to the whole group.

- **At a stage boundary:** when the stage's end line is logged (``[features] bronze.flights:
  succeeded ...``); a watcher reads the job's output and kills on that line.
- **Inside a MERGE:** once the MERGE has written its first data file into the table's folder and
  before it commits; a watcher polls the folder and kills on the first new Parquet file. The test
  then checks that the file is in no committed version (the kill came before the commit).

The kills form a chain: the run after a kill is killed at the next point (so it is also the
rerun of the point before it), and the last run completes, in the test's own process (a run
that is not killed needs no process of its own: that saves a Spark start); the uninterrupted
run the chain is compared with runs in the test's process too, while the killed ones run in
theirs (the test's JVM would wait idle otherwise). By default the
features job is killed at two points and the inference job at one, the fewest that leave
every distinct committed state; ``--all-kill-points`` kills after every stage. After every kill each
table's newest version is read by Spark and by delta-rs, an independent Delta reader, with the
same rows, and every version that existed before the killed run reads back unchanged. When
the chain has completed, its tables hold exactly an uninterrupted run's rows (count and
checksum; the columns that name the run that wrote a row aside), and ``ops.run_records`` shows
each killed run as ``abandoned``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import yaml
from deltalake import DeltaTable
from e2e_lakehouse import MODEL_TABLES, PREDICTIONS, SharedLakehouse
from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from run_suite import OWN_PROCESS_GROUP
from spark_settings import SHORT_LIVED_JAVA_OPTIONS, SPARK_CONF
from synthetic_landing import D1, D2, land_synthetic, private_conf, trim_conf

from sparkfs.core.config import load_settings
from sparkfs.core.lakehouse import EVENT_TIME_PROPERTY, KEYS_PROPERTY, checksum, open_lakehouse
from sparkfs.core.runs import RunWindow, current_records
from sparkfs.features.pipeline import load_pipeline
from sparkfs.jobs.context import JobContext
from sparkfs.jobs.features import features_job
from sparkfs.jobs.infer import infer_job
from sparkfs.ml.tracking import local_tracking_uri

pytestmark = pytest.mark.e2e

# The columns that name the run that wrote a row: the only ones two runs may write differently.
RUN_COLUMNS = ("_run_id", "_record_id")
REPO = Path(__file__).resolve().parents[1]
LAYERS = ("bronze", "silver", "gold", "ml", "ops", "monitoring")
JOB_TIMEOUT_S = 900
RUN_STARTED = re.compile(r" run ([0-9a-f]{16}):")  # "features run <id>: start=...", once Spark is up
# A day the shared lakehouse's model has not scored (it scored 2013-03-20).
INFER_DAY = date(2013, 3, 21)


@dataclass(frozen=True)
class Kill:
    """Where a run is killed: when ``after_stage`` has logged its end, or inside the MERGE into
    ``inside_merge_of`` (a layer and table)."""

    after_stage: str | None = None
    inside_merge_of: tuple[str, str] | None = None

    def __str__(self) -> str:
        return f"after {self.after_stage}" if self.after_stage else f"inside the MERGE into {self.inside_merge_of}"


# By default the fewest points that leave every distinct committed state, as each costs a Spark
# start: a kill between two stages and one inside a MERGE (its data files written, no commit).
# A kill between any two stages leaves what one between two others leaves (some tables written,
# the rest not), and a kill inside a table's MERGE leaves what one just before that stage does,
# plus orphaned files; `--all-kill-points` kills after every stage. The MERGEs killed midway,
# by the stage that runs them:
FEATURES_INSIDE = {"gold.carrier_delays": Kill(inside_merge_of=("gold", "carrier_delays"))}  # data files written, no commit
INFER_INSIDE = {"predict": Kill(inside_merge_of=("ml", PREDICTIONS))}  # predictions written, no commit
# A kill after a gold stage is not among them: it leaves bronze and silver committed, as the kill
# inside the gold MERGE does, and a committed table whose rerun MERGE matches every row, as each
# silver table's does after either kill.
FEATURES_KILLS = (
    Kill(after_stage="bronze.flights"),  # bronze appended; silver and gold not (the cheapest kill: the earliest)
    FEATURES_INSIDE["gold.carrier_delays"],  # bronze and silver merged and committed, a gold MERGE's files orphaned
)
INFER_KILLS = (INFER_INSIDE["predict"],)  # features looked up and audited, predictions written, no commit
INFER_STAGES = ("resolve_model", "features", "leakage_audit", "predict")  # skew_check is off in the e2e config


# (sources, gold tables): each features run of a fault test costs seconds per table, and the
# others take the same code paths (bronze insert, silver refine, gold MERGE).
Tables = tuple[tuple[str, ...], tuple[str, ...]]
CHAIN_TABLES: Tables = (("flights",), ("carrier_delays", "route_delays"))
BUSY_TABLES: Tables = (("flights", "weather"), ("weather_hourly", "carrier_delays"))


def every_stage(stages: Iterable[str], inside: dict[str, Kill]) -> tuple[Kill, ...]:
    """A kill after each of ``stages``, and the ``inside`` MERGE kills in the stages that run them."""
    chain: list[Kill] = []
    for stage in stages:
        chain += [inside[stage]] if stage in inside else []
        chain.append(Kill(after_stage=stage))
    return tuple(chain)


def kill_points(
    request: pytest.FixtureRequest, stages: Iterable[str], inside: dict[str, Kill], kills: tuple[Kill, ...]
) -> tuple[Kill, ...]:
    return every_stage(stages, inside) if request.config.getoption("--all-kill-points") else kills


def features_stages() -> list[str]:
    pipeline = load_pipeline(REPO / "conf", Path("."))
    return ([f"bronze.{s.name}" for s in pipeline.config.sources] + [f"silver.{s.name}" for s in pipeline.config.silver]
            + [f"gold.{t.name}" for t in pipeline.feature_tables])


@dataclass(frozen=True)
class Project:
    """A conf folder and a data folder the jobs run on, in schemas ``<name>_<layer>``."""

    conf: Path
    data: Path
    name: str

    def environment(self) -> dict[str, str]:
        return {"SPARKFS_CONF_DIR": str(self.conf), "SPARKFS_DATA_DIR": str(self.data), "SPARKFS_ENV": "local"}

    def folder(self, layer: str, table: str) -> Path:
        return self.data / "warehouse" / f"{self.name}_{layer}" / table

    def tables(self) -> list[Path]:
        return sorted(p.parent for p in (self.data / "warehouse").glob(f"{self.name}_*/*/_delta_log"))

    def context(self, spark: SparkSession) -> JobContext:
        """The job context an in-process run of this project uses (as ``sparkfs.connect()`` loads it)."""
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.environment().items():
                patch.setenv(key, value)
            settings = load_settings()
        return JobContext(settings, spark, open_lakehouse(spark, settings))


def project(root: Path, name: str, *, landing: Path | None = None, tracking_uri: str | None = None,
            keep: Tables | None = None) -> Project:
    """``root/conf`` with an overlay for the test (schemas of its own, a small local Spark): a copy
    of the repository's reading ``landing`` (only the sources and gold tables of ``keep``, when
    given), or the one there already."""
    conf = private_conf(root / "conf", landing) if landing else root / "conf"
    if keep:
        trim_conf(conf, *keep)
    overlay = conf / "env" / "local.yaml"
    local = yaml.safe_load(overlay.read_text()) or {}
    local["storage"] = {**local.get("storage", {}), "schemas": {layer: f"{name}_{layer}" for layer in LAYERS}}
    local["spark"] = {"master": "local[2]", "driver_memory": "1g", "shuffle_partitions": 2,
                      "java_options": SHORT_LIVED_JAVA_OPTIONS, "conf": SPARK_CONF}
    if tracking_uri:
        local["mlflow"] = {"tracking_uri": tracking_uri}
    overlay.write_text(yaml.safe_dump(local))
    return Project(conf, root / "data", name)


def parquet_files(folder: Path) -> set[str]:
    if not folder.exists():
        return set()
    return {str(p.relative_to(folder)) for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts}


def run_job(proj: Project, args: Iterable[str], kill: Kill | None = None, started: threading.Event | None = None) -> str:
    """Run ``sparkfs <args>`` on ``proj`` in a process group of its own; kill it at ``kill``; set
    ``started`` when the run has begun (Spark is up, its run record written). Returns what it
    printed; fails when a kill point was never reached or a run did not succeed."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFS_")} | proj.environment()
    proc = subprocess.Popen([sys.executable, "-m", "sparkfs", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=environ, **OWN_PROCESS_GROUP)
    killed = threading.Event()

    def kill_group() -> None:
        if not killed.is_set():
            killed.set()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)

    timer = threading.Timer(JOB_TIMEOUT_S, kill_group)
    timer.start()
    if kill and kill.inside_merge_of:
        folder = proj.folder(*kill.inside_merge_of)
        before = parquet_files(folder)

        def watch() -> None:
            while proc.poll() is None and not killed.is_set():
                if parquet_files(folder) - before:
                    kill_group()
                time.sleep(0.002)

        threading.Thread(target=watch, daemon=True).start()
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if started is not None and RUN_STARTED.search(line):
            started.set()
        if kill and kill.after_stage and re.search(rf"\] {re.escape(kill.after_stage)}: succeeded", line):
            kill_group()
    proc.wait()
    timer.cancel()
    out = "".join(lines)
    if kill:
        assert proc.returncode == -signal.SIGKILL, f"never killed {kill}: exit {proc.returncode}\n{out[-4000:]}"
    else:
        assert proc.returncode == 0, f"sparkfs {' '.join(args)} exited {proc.returncode}\n{out[-4000:]}"
    return out


def fingerprint(folder: Path, version: int | None = None) -> tuple[int, int]:
    """Rows and an order-independent hash of a table version, read by delta-rs (not Spark)."""
    rows = DeltaTable(str(folder), version=version).to_pandas()
    rows = rows.drop(columns=[c for c in RUN_COLUMNS if c in rows.columns]).astype(str)
    return len(rows), int(pd.util.hash_pandas_object(rows, index=False).sum())


def versions(proj: Project) -> dict[Path, tuple[int, tuple[int, int]]]:
    """Every table's current version and its fingerprint."""
    return {t: (DeltaTable(str(t)).version(), fingerprint(t)) for t in proj.tables()}


def assert_intact(spark: SparkSession, proj: Project, before: dict[Path, tuple[int, tuple[int, int]]], kill: Kill) -> None:
    """After a kill: every table's newest version is read by Spark and by delta-rs with the same
    rows, and every version that existed before the killed run is unchanged."""
    for table in proj.tables():
        independent = fingerprint(table)
        by_spark = spark.read.format("delta").load(str(table)).count()
        assert by_spark == independent[0], f"{table.name} after a kill {kill}: Spark {by_spark}, delta-rs {independent[0]}"
    for table, (version, print_before) in before.items():
        assert fingerprint(table, version) == print_before, f"{table} v{version} changed after a kill {kill}"


def assert_killed_before_commit(proj: Project, kill: Kill, files_before: set[str]) -> None:
    """The MERGE had written data files (the kill's trigger) that no committed version holds."""
    assert kill.inside_merge_of is not None
    folder = proj.folder(*kill.inside_merge_of)
    written = parquet_files(folder) - files_before
    committed = {str(Path(uri).relative_to(folder)) for uri in DeltaTable(str(folder)).file_uris()}
    assert written - committed, f"the kill {kill} came after the commit: every new file is committed"


def kill_chain(spark: SparkSession, proj: Project, args: list[str], kills: Iterable[Kill],
               complete: Callable[[JobContext], object]) -> list[str]:
    """Run ``args`` killed at each of ``kills`` in turn, checking the tables after each kill, then
    ``complete`` (the same job, in this process) on ``proj``. Returns the killed runs' ids."""
    killed_runs = []
    for kill in kills:
        before = versions(proj)
        files = parquet_files(proj.folder(*kill.inside_merge_of)) if kill.inside_merge_of else set()
        out = run_job(proj, args, kill)
        found = RUN_STARTED.search(out)
        assert found, f"no run id in the output of the run killed {kill}:\n{out[-3000:]}"
        killed_runs.append(found.group(1))
        assert_intact(spark, proj, before, kill)
        if kill.inside_merge_of:
            assert_killed_before_commit(proj, kill, files)
    complete(proj.context(spark))
    return killed_runs


def table_checksums(spark: SparkSession, proj: Project, layers: Iterable[str]) -> dict[str, tuple[int, int]]:
    """Row count and checksum of every table of ``layers``, by '<layer>/<table>', read by Spark."""
    sums = {}
    for layer in layers:
        for table in (proj.data / "warehouse" / f"{proj.name}_{layer}").glob("*/_delta_log"):
            df = spark.read.format("delta").load(str(table.parent))
            sums[f"{layer}/{table.parent.name}"] = checksum(df.drop(*RUN_COLUMNS))
    return sums


def run_statuses(spark: SparkSession, proj: Project, run_ids: list[str]) -> dict[str, str]:
    records = current_records(spark.read.format("delta").load(str(proj.folder("ops", "run_records"))))
    rows = records.where((F.col("stage") == "run") & F.col("run_id").isin(run_ids)).select("run_id", "status").collect()
    return {r["run_id"]: r["status"] for r in rows}


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def test_the_features_job_killed_anywhere_loses_nothing_and_its_rerun_equals_an_uninterrupted_run(
    spark: SparkSession, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    land_synthetic(tmp_path / "landing")
    every_table = request.config.getoption("--all-kill-points")  # every stage of the whole conf
    keep = None if every_table else CHAIN_TABLES
    chain = project(tmp_path / "chain", "faults", landing=tmp_path / "landing", keep=keep)
    reference = project(tmp_path / "ref", "faultsref", landing=tmp_path / "landing", keep=keep)
    kills = kill_points(request, features_stages(), FEATURES_INSIDE, FEATURES_KILLS)

    # The uninterrupted run, in this process while the killed ones run in theirs.
    with ThreadPoolExecutor(1) as pool, quiet():
        uninterrupted = pool.submit(features_job, reference.context(spark), RunWindow(D1, D1))
        killed = kill_chain(spark, chain, ["run", "features", "--date", D1.isoformat()], kills,
                            lambda ctx: features_job(ctx, RunWindow(D1, D1)))
        uninterrupted.result()

    layers = ("bronze", "silver", "gold")
    got, expected = table_checksums(spark, chain, layers), table_checksums(spark, reference, layers)
    tables = 16 if every_table else 4  # 6 bronze, 6 silver, 4 gold; or 1, 1, 2
    assert len(expected) == tables and all(rows for rows, _ in expected.values())
    assert got == expected
    # The run after each kill found it dead and marked it (a later run marks the last one).
    assert run_statuses(spark, chain, killed) == dict.fromkeys(killed, "abandoned")


def test_the_inference_job_killed_inside_its_merge_scores_each_flight_once(
    spark: SparkSession, e2e_lakehouse: SharedLakehouse, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    tracking = local_tracking_uri(e2e_lakehouse.ctx.settings)  # the registered model is the shared one
    e2e_lakehouse.clone(tmp_path / "chain", "faultinf", MODEL_TABLES)
    chain = project(tmp_path / "chain", "faultinf", tracking_uri=tracking)
    reference = e2e_lakehouse.clone(tmp_path / "ref", "faultinfref", MODEL_TABLES)

    with ThreadPoolExecutor(1) as pool, quiet():  # the uninterrupted run beside the killed ones
        uninterrupted = pool.submit(infer_job, reference, RunWindow(INFER_DAY, INFER_DAY))
        killed = kill_chain(spark, chain, ["run", "infer", "--date", INFER_DAY.isoformat()],
                            kill_points(request, INFER_STAGES, INFER_INSIDE, INFER_KILLS),
                            lambda ctx: infer_job(ctx, RunWindow(INFER_DAY, INFER_DAY)))
        uninterrupted.result()

    got = spark.read.format("delta").load(str(chain.folder("ml", PREDICTIONS)))
    expected = reference.lake.read("ml", PREDICTIONS)
    assert got.where(F.col("score_date") == INFER_DAY).count() > 0
    assert checksum(got) == checksum(expected)
    assert run_statuses(spark, chain, killed) == dict.fromkeys(killed, "abandoned")


def test_concurrent_runs_of_one_day_and_of_two_days_duplicate_and_lose_no_row(
    spark: SparkSession, e2e_lakehouse: SharedLakehouse, tmp_path: Path
) -> None:
    land_synthetic(tmp_path / "landing")
    busy = project(tmp_path / "busy", "busy", landing=tmp_path / "landing", keep=BUSY_TABLES)
    # Two runs of D1 and one of D2, all at once: the first D1 in a process of its own, the second
    # D1 and the D2 in the test's process, on two threads of its session (another cold JVM would
    # only slow the machine down), started when the first D1 has started its run, so that their
    # stages overlap: writers in two processes, and two writers in one.
    ctx = busy.context(spark)
    d1_started = threading.Event()
    with ThreadPoolExecutor(3) as pool, quiet():
        other = pool.submit(run_job, busy, ["run", "features", "--date", D1.isoformat()], started=d1_started)
        while not d1_started.wait(0.5):
            if other.done():
                pytest.fail(f"the D1 run ended before its run began:\n{other.result()[-3000:]}")
        runs = [other, *(pool.submit(features_job, ctx, RunWindow(day, day)) for day in (D1, D2))]
        for run in runs:
            run.result()

    # The shared lakehouse ran D1 then D2, one after the other, on the same landing files.
    shared = Project(e2e_lakehouse.conf, e2e_lakehouse.data, "shared")
    not_compared = (*RUN_COLUMNS, "_source_file")  # the landing folders differ
    compared = []
    for table in busy.tables():
        layer = table.parent.name.removeprefix("busy_")
        if layer not in ("bronze", "silver", "gold"):
            continue
        compared.append(f"{layer}.{table.name}")
        got = spark.read.format("delta").load(str(table)).drop(*not_compared)
        expected = spark.read.format("delta").load(str(shared.folder(layer, table.name))).drop(*not_compared)
        if layer != "gold":
            assert checksum(got) == checksum(expected), f"{layer}.{table.name}"
            continue
        # A gold row's rolling windows depend on whether the other day's silver had landed when
        # it was computed; its keys may not: each once, none lost.
        config = DeltaTable(str(table)).metadata().configuration
        keys = [k for k in (*config[KEYS_PROPERTY].split(","), config[EVENT_TIME_PROPERTY]) if k]
        assert got.count() == got.select(*keys).distinct().count() == expected.count(), f"gold.{table.name}"
        assert got.select(*keys).exceptAll(expected.select(*keys)).isEmpty(), f"gold.{table.name}"
    sources, gold = BUSY_TABLES
    assert sorted(compared) == sorted([*(f"{layer}.{t}" for layer in ("bronze", "silver") for t in sources),
                                       *(f"gold.{t}" for t in gold)])
