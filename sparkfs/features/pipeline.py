"""The feature pipeline: bronze -> silver -> gold for a window of event dates.

``sparkfs run features --date D`` and ``sparkfs backfill features --start S --end E`` call
:func:`run_pipeline` with a :class:`~sparkfs.core.runs.RunWindow`; a daily run is a window of one day,
and a backfill processes its whole window in one pass through the same code. What runs is
declared in ``conf/``:

- ``conf/pipeline.yaml`` -- where raw data lands, the raw ``sources`` (bronze), the ``silver``
  tables (types, conforming function, keys, suite) and the ``validation`` policy;
- ``conf/expectations.yaml`` -- the Great Expectations suites silver validates with;
- ``conf/feature_tables.yaml`` -- the gold feature tables.

Each stage (``upstream``, ``bronze.<source>``, ``silver.<table>``, ``gold.<table>``) records its row
counts in/out, rejected rows, duration and the Delta version it wrote in ``ops.run_records``.
The stages of one layer are independent and run side by side (``parallel_stages`` at a time);
the next layer starts when all of them have ended, and not at all when one failed.
Every write is idempotent, so re-running a day or a range changes nothing. What cannot have
changed is skipped: a once-delivered source's silver table when bronze has no new version, and a
static feature table (no event time) when neither its declaration nor the versions of the tables
its builder reads changed since it was built.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pyspark.sql import DataFrame

from sparkfs.core.column_lineage import ColumnLineage
from sparkfs.core.config import StrictModel, import_ref, load_yaml
from sparkfs.core.conflicts import retry_on_conflict
from sparkfs.core.errors import ConfigError, TableNotFoundError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.lineage import LineageEdge, edges_from_reads, record_lineage, table_node
from sparkfs.core.runs import RunRecorder, RunWindow, StageRecord
from sparkfs.features.bronze import SourceSpec, ingest
from sparkfs.features.column_lineage import feature_table_column_lineage
from sparkfs.features.expectations import ExpectationSpec, load_suites, save_results
from sparkfs.features.feature_tables import (
    FeatureTableSpec,
    compute,
    load_feature_tables,
    write_feature_table,
)
from sparkfs.features.silver import SilverSpec, ValidationPolicy, refine

log = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.yaml"
# Gold table property of a static feature table: what its rows were last built from (_built_from).
BUILT_FROM_PROPERTY = "sparkfs.built_from"


class PipelineConfig(StrictModel):
    """``conf/pipeline.yaml``."""

    landing_dir: str = "landing"  # relative to storage.data_dir, or absolute
    upstream: str | None = Field(None, pattern=r"^[\w.]+:\w+$")  # simulates deliveries (examples)
    expectations_file: str = "expectations.yaml"
    feature_tables_file: str = "feature_tables.yaml"
    validation: ValidationPolicy = ValidationPolicy()
    # Stages of one layer run side by side, this many at a time (1: one after the other).
    parallel_stages: int = Field(3, ge=1)
    sources: list[SourceSpec] = Field(min_length=1)
    silver: list[SilverSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _sources_known(self) -> PipelineConfig:
        known = {s.name for s in self.sources}
        unknown = sorted({t.source for t in self.silver} - known)
        if unknown:
            raise ValueError(f"silver tables read sources {unknown} that 'sources' does not declare ({sorted(known)})")
        return self


@dataclass(frozen=True)
class Pipeline:
    """The pipeline's whole declaration, loaded and cross-checked."""

    config: PipelineConfig
    suites: dict[str, list[ExpectationSpec]]
    feature_tables: list[FeatureTableSpec]
    landing_dir: Path

    def source(self, name: str) -> SourceSpec:
        return next(s for s in self.config.sources if s.name == name)

    def source_of(self, silver_table: str) -> str:
        """The raw source behind ``silver_table``; a table the pipeline does not declare is a
        :class:`~sparkfs.core.errors.ConfigError` listing the ones it does."""
        silver = {spec.name: spec.source for spec in self.config.silver}
        if silver_table not in silver:
            raise ConfigError(f"{PIPELINE_FILE} declares no silver table {silver_table!r}; it has {sorted(silver)}")
        return silver[silver_table]


def load_pipeline(conf_dir: Path | str, data_path: Path, *, check_expectation_kwargs: bool = True) -> Pipeline:
    """Load ``pipeline.yaml`` and the suites and feature tables it names; check they fit together
    (the expectations' kwargs through Great Expectations unless ``check_expectation_kwargs`` is
    false: see :func:`~sparkfs.features.expectations.load_suites`)."""
    conf_dir = Path(conf_dir)
    config = load_yaml(conf_dir / PIPELINE_FILE, PipelineConfig)
    suites = load_suites(conf_dir / config.expectations_file, check_kwargs=check_expectation_kwargs)
    missing = sorted({t.expectations for t in config.silver} - set(suites))
    if missing:
        raise ConfigError(
            f"{conf_dir / PIPELINE_FILE}: silver tables use suites {missing} that "
            f"{config.expectations_file} does not define (it has {sorted(suites)})"
        )
    tables = load_feature_tables(conf_dir / config.feature_tables_file)
    landing = Path(config.landing_dir).expanduser()
    return Pipeline(config, suites, tables, landing if landing.is_absolute() else data_path / landing)


def run_pipeline(
    lake: Lakehouse, pipeline: Pipeline, window: RunWindow, run: RunRecorder,
    *, sources: Collection[str] | None = None, next_day: Collection[str] = (),
) -> None:
    """Run every stage for ``window``, recording each in ``run``.

    ``sources`` (names of raw sources) refreshes only those: their delivery, bronze and silver
    tables, and no gold table. ``next_day`` (names of raw sources) also takes those sources'
    delivery of the day after the window, in the same stages: the daily job takes R's schedule,
    before R's outcomes exist, with R-1's outcomes. Gold is built for ``window`` and the day after
    it (:func:`gold_span`).
    """
    days = list(window.days())
    names = [s.name for s in pipeline.config.sources]
    unknown = sorted((set(sources or ()) | set(next_day)) - set(names))
    if unknown:
        raise ConfigError(f"{PIPELINE_FILE} declares no sources {unknown}; it has {names}")
    edges: list[LineageEdge] = []
    columns: dict[tuple[str, int], ColumnLineage] = {}
    validations: list[dict[str, Any]] = []
    try:
        _run_stages(lake, pipeline, days, run, edges, columns, validations, sources=sources,
                    next_day=next_day, gold_window=gold_span(window))
    finally:
        # The run's GE verdicts and lineage in one write each (one per stage cost seconds each),
        # also when a later stage failed: every verdict is kept, every committed version traced.
        try:
            save_results(lake, validations)
        finally:
            record_lineage(lake, edges, job=run.job, run_id=run.run_id, columns=columns)


@dataclass
class _Found:
    """What a stage leaves for the run's single writes at its end (see :func:`run_pipeline`)."""

    edges: list[LineageEdge] = field(default_factory=list)
    columns: dict[tuple[str, int], ColumnLineage] = field(default_factory=dict)
    validations: list[dict[str, Any]] = field(default_factory=list)


def _run_stages(
    lake: Lakehouse, pipeline: Pipeline, days: list[date], run: RunRecorder, edges: list[LineageEdge],
    columns: dict[tuple[str, int], ColumnLineage], validations: list[dict[str, Any]], *,
    sources: Collection[str] | None, next_day: Collection[str], gold_window: RunWindow,
) -> None:
    after = [days[-1] + timedelta(days=1)]
    days_of = {s.name: days + after if s.name in next_day else days for s in pipeline.config.sources}
    if pipeline.config.upstream:
        with _stage(run, lake.spark, "upstream") as st:
            deliver = _upstream(pipeline.config.upstream)
            st.rows_out = deliver(pipeline.landing_dir, days, sources=sources)
            if next_day:
                st.rows_out += deliver(pipeline.landing_dir, after, sources=next_day)
            st.details["landing_dir"] = str(pipeline.landing_dir)

    def each(stage: Callable[..., None], items: list[Any]) -> None:
        """``stage`` for every item of one layer, ``parallel_stages`` at a time; what they found is
        kept in declaration order, also when one of them failed."""
        found = [_Found() for _ in items]
        try:
            in_parallel(pipeline.config.parallel_stages, [partial(stage, item, f) for item, f in zip(items, found, strict=True)])
        finally:
            for f in found:
                edges.extend(f.edges)
                columns.update(f.columns)
                validations.extend(f.validations)

    taken = None if sources is None else {*sources, *next_day}
    bronze = [s for s in pipeline.config.sources if taken is None or s.name in taken]
    each(partial(_bronze_stage, lake, pipeline, days_of, run), bronze)
    silver = [s for s in pipeline.config.silver if taken is None or s.source in taken]
    each(partial(_silver_stage, lake, pipeline, days_of, run), silver)
    gold = pipeline.feature_tables if sources is None else []
    built = {table.name: threading.Event() for table in gold}
    each(partial(_gold_stage, lake, gold, built, gold_window, run), gold)


def in_parallel(threads: int, tasks: Sequence[Callable[[], None]]) -> None:
    """Run ``tasks``, up to ``threads`` at a time (threads sharing the session), started in their
    order. The tasks of one layer are independent: one that fails does not stop the others; when
    all have ended, the first failure (in the tasks' order) is raised. A day's stage is mostly
    fixed costs on Spark's driver (planning, Delta's log, commits), which overlap.

    Example: ``in_parallel(3, [partial(refine_one, spec) for spec in specs])``.
    """
    if threads == 1 or len(tasks) <= 1:
        failures: list[Exception] = []
        for task in tasks:
            try:
                task()
            except Exception as exc:  # the siblings still run, as they would side by side
                failures.append(exc)
        if failures:
            raise failures[0]
        return
    pool = ThreadPoolExecutor(max_workers=min(threads, len(tasks)), thread_name_prefix="sparkfs-stage")
    futures = [pool.submit(task) for task in tasks]
    try:
        wait(futures)
    finally:  # an interrupt: stages not yet started never start; running ones end their commit
        pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        future.result()


def _bronze_stage(
    lake: Lakehouse, pipeline: Pipeline, days_of: dict[str, list[date]], run: RunRecorder, source: SourceSpec,
    found: _Found,
) -> None:
    with _stage(run, lake.spark, f"bronze.{source.name}") as st:
        ingested = ingest(lake, source, pipeline.landing_dir, days_of[source.name], run.run_id)
        st.table_name, st.table_version = ingested.table, ingested.version
        if ingested.version is not None:
            target = table_node("bronze", source.name)
            found.edges.extend(LineageEdge(target, ingested.version, "file", f) for f in ingested.files)
        st.rows_out = ingested.rows_written
        st.details |= {"files_new": ingested.files_new, "files_skipped": ingested.files_skipped}


def _silver_stage(
    lake: Lakehouse, pipeline: Pipeline, days_of: dict[str, list[date]], run: RunRecorder, spec: SilverSpec,
    found: _Found,
) -> None:
    with _stage(run, lake.spark, f"silver.{spec.name}") as st:
        daily = pipeline.source(spec.source).arrival == "daily"
        with lake.track_reads() as reads:
            refined = refine(
                lake, spec, pipeline.suites[spec.expectations], pipeline.config.validation,
                days_of[spec.source] if daily else None, run.run_id, validations=found.validations,
            )
        st.table_name = refined.table
        st.rows_in, st.rows_out, st.rows_rejected = refined.rows_in, refined.rows_out, refined.rows_rejected
        st.details |= {
            "skipped_up_to_date": refined.skipped,
            "rows_superseded": refined.rows_superseded,
            "rejects_by_expectation": refined.rejects_by_expectation,
        }
        if outside := [v.describe() for v in refined.volumes if not v.ok]:
            st.details["volume_outside_band"] = outside  # WARN: published all the same
        if refined.merge:
            st.table_version = refined.merge.version
            if refined.merge.rows_inserted or refined.merge.rows_updated:
                target = table_node("silver", spec.name)
                # Bronze is what silver is made from; its own table and quarantine are not.
                bronze_reads = [r for r in reads if r[0] == "bronze"]
                found.edges.extend(edges_from_reads(lake, target, refined.merge.version, bronze_reads))
            st.details |= {"inserted": refined.merge.rows_inserted, "updated": refined.merge.rows_updated}
        if refined.quarantine:
            st.details["quarantine_version"] = refined.quarantine.version


def _gold_stage(
    lake: Lakehouse, gold: list[FeatureTableSpec], built: dict[str, threading.Event], window: RunWindow,
    run: RunRecorder, table: FeatureTableSpec, found: _Found,
) -> None:
    try:
        with _stage(run, lake.spark, f"gold.{table.name}") as st:
            rows_df, reads = _planned(lake, gold, built, window, table)
            built_from = _built_from(lake, table, reads)
            if built_from is not None and lake.exists("gold", table.name) and (
                    lake.properties("gold", table.name).get(BUILT_FROM_PROPERTY) == built_from):
                st.table_name, st.table_version = lake.name("gold", table.name), lake.version("gold", table.name)
                st.rows_in = st.rows_out = 0
                st.details["skipped_up_to_date"] = True
                return
            rows_df = rows_df.persist()
            try:
                merged = write_feature_table(lake, table, rows_df)
            finally:
                rows_df.unpersist()
            if merged.rows_inserted or merged.rows_updated:
                target = table_node("gold", table.name)
                found.edges.extend(edges_from_reads(lake, target, merged.version, reads))
                # Which silver columns fed each gold column: sent with the OpenLineage event only.
                found.columns[(target, merged.version)] = feature_table_column_lineage(
                    lake, table, window.start, window.end)
            if built_from is not None:  # one more commit, only when the table was built from something new
                properties = {BUILT_FROM_PROPERTY: built_from}
                retry_on_conflict(partial(lake.ensure_properties, "gold", table.name, properties), merged.table,
                                  "setting the built-from property")
            st.table_name, st.table_version = merged.table, merged.version
            st.rows_in, st.rows_out = merged.source_rows, merged.rows_inserted + merged.rows_updated
            st.details |= {"inserted": merged.rows_inserted, "updated": merged.rows_updated}
    finally:
        built[table.name].set()


def _planned(
    lake: Lakehouse, gold: list[FeatureTableSpec], built: dict[str, threading.Event], window: RunWindow,
    table: FeatureTableSpec,
) -> tuple[DataFrame, list[tuple[str, str, int | None]]]:
    """The feature table's rows for ``window`` (planned, not run) and the reads they make. A builder
    that reads a feature table declared before its own reads it as this run wrote it, as if the
    tables were built one after the other: the plan waits for that table and is made again (also
    when the table did not exist before this run)."""
    earlier = {t.name for t in gold[:gold.index(table)]}
    try:
        with lake.track_reads() as reads:
            rows_df = compute(lake, table, window.start, window.end)
    except TableNotFoundError:
        if not earlier:
            raise
        wait_for = earlier
    else:
        wait_for = {name for layer, name, _ in reads if layer == "gold" and name in earlier}
        if not wait_for:
            return rows_df, reads
    for name in sorted(wait_for):
        built[name].wait()
    with lake.track_reads() as reads:
        return compute(lake, table, window.start, window.end), reads


def _built_from(lake: Lakehouse, table: FeatureTableSpec, reads: list[tuple[str, str, int | None]]) -> str | None:
    """What a static feature table's rows follow from: its declaration and the version of each
    table its builder read (``<layer>.<table>@<version>``). None for a table with an event time,
    whose rows also depend on the run's window, or when the builder read nothing through the
    lakehouse (no versions to compare). Kept in the table's :data:`BUILT_FROM_PROPERTY`; a run
    that finds the same string skips the table (its MERGE would change nothing). The versions are
    looked up just after the builder's reads: an input committed to in between (a concurrent
    run) is recorded one version ahead, and the table catches up with that input's next change."""
    if table.event_time is not None or not reads:
        return None
    versions = sorted({f"{layer}.{name}@{lake.version(layer, name) if version is None else version}"
                       for layer, name, version in reads})
    declaration = hashlib.sha256(table.model_dump_json().encode()).hexdigest()[:16]
    return f"declaration {declaration}; read " + ", ".join(versions)


def gold_span(window: RunWindow) -> RunWindow:
    """The event dates (UTC) gold is built for after the silver of ``window``'s days: those days and
    the next. A daily source's day is a local date (the suite checks each row's date is its
    delivery's), and a New York evening's events fall on the next UTC date: without the day after,
    no run would build those hours when D is run after D+1 (a late or repeated delivery, two runs
    at once). The span follows from the window alone, so a run killed after silver and run again
    builds what an uninterrupted run builds. (The daily job at R 06:00 passes R-1..R itself.)

    Example: ``gold_span(RunWindow(date(2013, 1, 1), date(2013, 1, 1)))`` is 2013-01-01..2013-01-02.
    """
    return RunWindow(window.start, window.end + timedelta(days=1))


# An upstream hook: (landing dir, days, sources=None: all) -> files delivered.
Upstream = Callable[..., int]


def _upstream(ref: str) -> Upstream:
    fn: Upstream = import_ref(ref, f"{PIPELINE_FILE}: upstream")
    return fn


@contextmanager
def _stage(run: RunRecorder, spark: object, name: str) -> Iterator[StageRecord]:
    """A recorded stage whose name also labels its Spark jobs (console progress, Spark UI)."""
    context = getattr(spark, "sparkContext", None)
    if context is not None:
        context.setJobDescription(f"{run.job} {name}")
    try:
        with run.stage(name) as record:
            yield record
    finally:
        if context is not None:
            context.setJobDescription(None)

