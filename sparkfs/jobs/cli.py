"""The ``sparkfs`` command: ``run <job>``, ``backfill <job>``, ``simulate``, ``smoke``, ``setup``, ``tables``,
``history``, ``runs``, ``model promote|rollback``, ``catalog``, ``lineage``.

Arguments, dates, the environment and the configuration are checked before Spark starts, so a
mistake costs a second, not a JVM start (the expectations' kwargs, checked through Great
Expectations, while the JVM starts: its import alone takes seconds). Exit status: 0 done, 1 the
command ran and failed, 2 it could not start as given (see :func:`~sparkfs.jobs.console.exit_status`).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import platform
import sys
import textwrap
import time
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sparkfs import __version__
from sparkfs.core.errors import UsageError
from sparkfs.jobs.catalog import catalog_command
from sparkfs.jobs.console import log_level, report_error, setup_logging
from sparkfs.jobs.context import (
    Parser,
    add_common_arguments,
    add_config_arguments,
    add_verbose_argument,
    check_environment,
    job_context,
    parse_day,
    settings_from_args,
)
from sparkfs.jobs.lineage import add_lineage_arguments, lineage_command
from sparkfs.jobs.registry import JOBS, run_job
from sparkfs.jobs.tables import (
    check_local_table,
    format_history,
    format_tables,
    history_rows,
    suggest_table,
    summarize_table,
)

log = logging.getLogger("sparkfs.jobs")

# Every SPARKFS_* variable the code and conf/ read (tests/test_cli.py keeps this list complete).
ENVIRONMENT = {
    "SPARKFS_ENV": "environment overlay conf/env/<env>.yaml, like --env (default local)",
    "SPARKFS_CONF_DIR": "folder holding sparkfs.yaml, like --conf-dir (default: the nearest ./conf)",
    "SPARKFS_DATA_DIR": "local lakehouse root: tables, MLflow store, Spark logs (default .sparkfs)",
    "SPARKFS_LOG_LEVEL": "debug (= verbose, same as -v), info (default), warning or error",
    "SPARKFS_IVY_DIR": "Ivy cache holding Delta's jars (default ~/.ivy2.5.2)",
    "SPARKFS_SPARK_MASTER": "spark.master of the local session (default local[*])",
    "SPARKFS_DRIVER_MEMORY": "driver memory of the local session (default 6g)",
    "SPARKFS_CATALOG": "Unity Catalog catalog of --env dev / prod (default main / prod)",
    "SPARKFS_LANDING_DIR": "where raw files land, relative to the data dir (default landing)",
    "SPARKFS_GATE_MIN_MARGIN": "how much the model must beat the baseline to be registered (default 0.02)",
    "SPARKFS_SKEW_CHECK": "true: infer first checks training/serving skew (default false)",
    "SPARKFS_FAIL_ON_ALERT": "true: the monitor job exits 1 when it writes an alert (default false)",
    "SPARKFS_BUNDLE_SCHEMA": "tests only: the Databricks bundle JSON schema the bundle tests use",
}
EXIT_STATUS = ("0 done; 1 the command ran and failed; 2 it could not start as given (arguments, "
               "unknown job, table or environment, configuration)")
HISTORY_LIMIT = 20


def _epilog() -> str:
    width = max(map(len, ENVIRONMENT))
    lines = ["environment variables:"]
    lines += [f"  {name:<{width}}  {text}" for name, text in ENVIRONMENT.items()]
    return "\n".join([*lines, "", *textwrap.wrap(f"exit status: {EXIT_STATUS}", 100)])


def _jobs_epilog() -> str:
    width = max(map(len, JOBS))
    lines = ["jobs (what --date means for each):"]
    for name, job in sorted(JOBS.items()):
        indent = " " * (width + 4)
        lines += [f"  {name:<{width}}  {job.summary}",
                  *textwrap.wrap(job.dates, 100, initial_indent=indent, subsequent_indent=indent)]
    return "\n".join(lines)


def _version() -> str:
    def installed(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return (f"sparkfs {__version__} (pyspark {installed('pyspark')}, delta-spark {installed('delta-spark')}, "
            f"Python {platform.python_version()})")


# --- setup ---------------------------------------------------------------------------------------

def _setup(args: argparse.Namespace, verbose: bool) -> int:
    """Check Java, resolve Delta's jars into the Ivy cache and compile sparkfs's Java code (first
    time), start Spark once, and archive the classes a Spark job loads (first time: a JVM of its
    own runs a small Delta job; later local starts map the archive)."""
    from sparkfs.core.jvm import class_archive, sparkfs_jar, write_class_archive
    from sparkfs.core.session import (
        DELTA_PACKAGE,
        cached_delta_jars,
        check_java,
        find_java,
        ivy_dir,
    )

    settings = settings_from_args(args)
    check_environment(settings)
    java = check_java()
    if cached_delta_jars() is None:
        log.info("resolving %s and its dependencies from Maven Central into %s (first time only)",
                 DELTA_PACKAGE, ivy_dir())
    with job_context(settings, verbose=verbose, command="setup", attach=False) as ctx:
        jars = cached_delta_jars() or []
        own = sparkfs_jar(ivy_dir() / "sparkfs", build=False)
        print(f"ready: Java {java}, Spark {ctx.spark.version}, {DELTA_PACKAGE} ({len(jars)} jars in "
              f"{ivy_dir() / 'jars'}), "
              + (f"sparkfs's JVM code {own.name}" if own else "no javac: drift is counted in Python workers")
              + f"; tables live in {ctx.lake.warehouse}")
    archive = class_archive(ivy_dir() / "sparkfs", find_java(), own)
    if not archive.is_file():
        log.info("archiving the classes a Spark job loads, so that later starts map them (first time only)")
        started = time.monotonic()
        if write_class_archive(settings, archive):
            print(f"class-data archive: {archive} ({archive.stat().st_size / 2**20:.0f} MB, "
                  f"{time.monotonic() - started:.0f} s); every local Spark start maps it")
    return 0


# --- tables --------------------------------------------------------------------------------------

def _tables(args: argparse.Namespace, verbose: bool) -> int:
    """Each table with its Delta version, row count, size and last write (``--checksum``: content too)."""
    with job_context(settings_from_args(args), verbose=verbose, command="tables", attach=False) as ctx:
        lake = ctx.lake
        summaries = [
            summarize_table(lake, layer, table, with_checksum=args.checksum)
            for layer in lake.settings.storage.schemas
            for table in lake.tables(layer)
        ]
    if args.json:
        print(json.dumps([s.to_dict() for s in summaries], indent=2))
        return 0
    where = lake.warehouse if lake.is_local else f"the catalog {lake.settings.storage.catalog}"
    if not summaries:
        print(f"no tables yet in {where}: 'sparkfs run features --date D' writes them")
        return 0
    print("\n".join(format_tables(summaries)))
    print(f"{len(summaries)} tables in {where}; 'sparkfs history <table>' shows a table's writes")
    return 0


# --- history -------------------------------------------------------------------------------------

def _history(args: argparse.Namespace, verbose: bool) -> int:
    """A table's Delta history, newest first: every write with its operation and rows written."""
    settings = settings_from_args(args)
    check_environment(settings)
    if settings.storage.catalog is None:
        check_local_table(settings, args.table)  # before Spark starts
    limit = None if args.limit == 0 else args.limit
    with job_context(settings, verbose=verbose, command="history", attach=False) as ctx:
        lake = ctx.lake
        layer, table = lake.resolve(args.table)
        if not lake.exists(layer, table):  # on Databricks: known only now
            names = [f"{lay}.{t}" for lay in lake.settings.storage.schemas for t in lake.tables(lay)]
            raise UsageError(f"no table {args.table}; {suggest_table(f'{layer}.{table}', names)}")
        full_name = lake.name(layer, table).replace("`", "")
        rows = history_rows(lake, layer, table, limit)
    if args.json:
        print(json.dumps({"table": full_name, "history": rows}, indent=2))
        return 0
    print(f"Delta history of {full_name}, newest first:")
    print("\n".join(format_history(rows)))
    if limit is not None and len(rows) == limit:
        print(f"  (the newest {limit}; --limit N for more, --limit 0 for all)")
    return 0


# --- model promote / rollback -------------------------------------------------------------------

def _model(args: argparse.Namespace, verbose: bool) -> int:
    """Move the model's alias by hand, recorded in ops.alias_moves like training's moves."""
    if args.action == "promote" and not args.version:
        raise UsageError("sparkfs model promote needs --version V (the registered version to point the alias at)")
    if args.action == "rollback" and args.version:
        raise UsageError("sparkfs model rollback takes no --version: it goes back to the version before the current one")
    settings = settings_from_args(args)
    check_environment(settings)
    from sparkfs.ml.aliases import move_alias, rollback
    from sparkfs.ml.config import load_training_config
    from sparkfs.ml.tracking import configure_mlflow, registered_model_name

    config = load_training_config(settings)
    alias = args.alias or config.alias
    with job_context(settings, verbose=verbose, command="model", attach=False) as ctx:
        configure_mlflow(settings, config.experiment)
        name = registered_model_name(settings, args.model or config.model_name)
        if args.action == "promote":
            move = move_alias(ctx.lake, name, alias, args.version, action="promote", reason=args.reason)
        else:
            move = rollback(ctx.lake, name, alias, reason=args.reason)
    print(move.describe())
    return 0


# --- runs ----------------------------------------------------------------------------------------

def _runs(args: argparse.Namespace, verbose: bool) -> int:
    """The newest runs from ``ops.run_records``: job, status (abandoned: its process is gone), stage."""
    from sparkfs.core.runs import recent_runs

    with job_context(settings_from_args(args), verbose=verbose, command="runs", attach=False) as ctx:
        runs = recent_runs(ctx.lake, args.limit)
    if args.json:
        print(json.dumps([r.to_dict() for r in runs], indent=2))
        return 0
    if not runs:
        print("no runs recorded yet: 'sparkfs run features --date D' records one")
        return 0
    print(f"the newest {len(runs)} runs, newest first:")
    for r in runs:
        took = "" if r.duration_s is None else f" in {r.duration_s:.1f}s"
        where = f", at stage {r.last_stage}" if r.status != "succeeded" and r.last_stage else ""
        print(f"  {r.started_at:%Y-%m-%d %H:%M:%S}  {r.run_id}  {r.job:<9} {r.status}{took}{where}  {r.params}")
        if r.status in ("failed", "abandoned") and r.error:
            print(f"      {r.error.splitlines()[0][:160]}")
    return 0


# --- the command ---------------------------------------------------------------------------------

def _run(args: argparse.Namespace, verbose: bool) -> int:
    return run_job(args.job, args, verbose=verbose)


def _backfill(args: argparse.Namespace, verbose: bool) -> int:
    if args.date or not (args.start and args.end):
        raise UsageError(f"backfill needs --start S --end E (both inclusive); for one day: "
                         f"sparkfs run {args.job} --date D")
    return run_job(args.job, args, verbose=verbose)


def _simulate(args: argparse.Namespace, verbose: bool) -> int:
    if args.days < 1:
        raise UsageError(f"--days must be at least 1, got {args.days}")
    run = argparse.Namespace(**vars(args), job="daily", date=None,
                             end=args.start + timedelta(days=args.days - 1))
    return run_job("daily", run, verbose=verbose)


def _smoke(args: argparse.Namespace, verbose: bool) -> int:
    return run_job("smoke", args, verbose=verbose)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="sparkfs", description="Batch feature engineering on Spark + Delta Lake.",
                    epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=_version())
    add_verbose_argument(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, text: str, *, jobs: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".",
                           epilog=_jobs_epilog() if jobs else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        add_verbose_argument(p)
        return p

    for name, func, text in (("run", _run, "run a job for one date (or a range)"),
                             ("backfill", _backfill, "run a job over --start..--end (the same code as run)")):
        p = command(name, func, text, jobs=True)
        p.add_argument("job", metavar="JOB", help=f"one of: {', '.join(sorted(JOBS))}")
        add_common_arguments(p)

    simulate = command("simulate", _simulate, "run the daily job day by day from --start for --days "
                       "days, as the scheduler would (a simulated calendar; the same as backfill daily)")
    simulate.add_argument("--start", type=parse_day, required=True, metavar="S", help="the first run date")
    simulate.add_argument("--days", type=int, required=True, metavar="N", help="how many run dates")
    add_config_arguments(simulate)

    add_common_arguments(command("smoke", _smoke, "create a Delta table, MERGE into it, print its history"))
    add_config_arguments(command("setup", _setup, "check Java, resolve Delta's jars, archive the JVM's classes (once each), start Spark"))

    tables = command("tables", _tables, "list the tables: Delta version, rows, size, last write")
    tables.add_argument("--checksum", action="store_true",
                        help="add a checksum of each table's content (reads every row: slow)")
    tables.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_config_arguments(tables)

    history = command("history", _history, "a table's Delta history: operations, rows written")
    history.add_argument("table", metavar="TABLE",
                         help="<layer>.<table> or <schema>.<table>, e.g. gold.carrier_delays")
    history.add_argument("--limit", type=int, default=HISTORY_LIMIT, metavar="N",
                         help=f"newest N writes (default {HISTORY_LIMIT}; 0: all)")
    history.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_config_arguments(history)

    model = command("model", _model, "move a model's alias: promote a version, or roll back to the one before")
    model.add_argument("action", choices=["promote", "rollback"], metavar="{promote,rollback}",
                       help="promote: point the alias at --version; rollback: back to the version before")
    model.add_argument("--version", help="the registered version to promote")
    model.add_argument("--reason", default="moved by hand", help="why (recorded with the move)")
    model.add_argument("--model", help="registered model name (default: model_name of conf/training.yaml)")
    model.add_argument("--alias", help="the alias (default: alias of conf/training.yaml)")
    add_config_arguments(model)

    catalog = command("catalog", catalog_command,
                      "list or search feature tables and features: docs, freshness, usage by models")
    catalog.add_argument("--search", metavar="TEXT",
                         help="features whose name or description (or table, owner, tags) contain TEXT")
    catalog.add_argument("--pii", action="store_true", help="only the columns tagged pii in conf")
    catalog.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_config_arguments(catalog)
    shows = catalog.add_subparsers(dest="catalog_command", metavar="show")
    show = shows.add_parser("show", help="one table or feature with the model versions that use it")
    show.add_argument("name", metavar="NAME", help="a table (carrier_delays) or a feature "
                      "(carrier_dep_delay_mean_7d or carrier_delays.carrier_dep_delay_mean_7d)")
    show.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="print JSON (for scripts)")

    lineage = command("lineage", lineage_command,
                      "where a table, feature or model came from (--upstream) or what it feeds (--downstream)")
    add_lineage_arguments(lineage)
    add_config_arguments(lineage)

    runs = command("runs", _runs, "list recent job runs and their status (abandoned: killed mid-run)")
    runs.add_argument("--limit", type=int, default=HISTORY_LIMIT, metavar="N",
                      help=f"newest N runs (default {HISTORY_LIMIT})")
    runs.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    add_config_arguments(runs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a usage error exits here with status 2
    try:
        level = log_level(args.verbose)
    except UsageError as exc:
        return report_error(exc)
    setup_logging(level)
    verbose = level <= logging.DEBUG
    try:
        return int(args.func(args, verbose))
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # printed once, with the exit status it implies
        return report_error(exc, verbose=verbose)


if __name__ == "__main__":
    sys.exit(main())
