"""What every job receives: settings, the session and the lakehouse, built from the arguments.

The common arguments (``--env``, ``--conf-dir``, ``--catalog``; ``--date`` / ``--start --end`` for
jobs) are declared here once for the CLI, the ``spark-submit`` scripts and the wheel entry points,
and checked here before any JVM starts: a bad date, a range that ends before it starts, an
unknown environment, a configuration that does not load, a Databricks environment on a laptop.
Nothing in this module imports pyspark until :func:`job_context` starts Spark.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, NoReturn

from sparkfs.core.config import Settings, load_settings
from sparkfs.core.errors import UsageError
from sparkfs.core.session import on_databricks, session_conf
from sparkfs.jobs.console import (
    jvm_output_to,
    mark_spark_log,
    quiet_query_context_lines,
    spark_log_file,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

    from sparkfs.core.lakehouse import Lakehouse
    from sparkfs.core.runs import RunWindow

log = logging.getLogger("sparkfs.jobs")

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    spark: SparkSession
    lake: Lakehouse

    def one_day(self, window: RunWindow | None = None) -> AbstractContextManager[object]:
        """The session tuned for one day's data (``spark.day_conf``) for the ``with`` block; a
        ``window`` of several days (a backfill) keeps it as it is."""
        if window is not None and window.start != window.end:
            return nullcontext()
        return session_conf(self.spark, self.settings.spark.day_conf)


class Parser(argparse.ArgumentParser):
    """argparse with sparkfs's error format: one ``error: ...`` line and where to read more."""

    def error(self, message: str) -> NoReturn:
        message = message.removeprefix("argument ")  # "argument --date: expected ..." -> "--date: ..."
        self.exit(2, f"error: {message}\n  '{self.prog} --help' lists what it takes\n")


def add_verbose_argument(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``-v``: Spark's, Ivy's and MLflow's own output too (progress bars, warnings, tracebacks).

    Accepted before or after the subcommand; below the top level it does not reset the top's value.
    """
    parser.add_argument("-v", "--verbose", action="store_true",
                        default=False if top else argparse.SUPPRESS,
                        help="show Spark's, Ivy's and MLflow's output too, and full tracebacks "
                             "(same as SPARKFS_LOG_LEVEL=debug)")


def parse_day(text: str) -> date:
    """``YYYY-MM-DD`` -> date; anything else is an argument error that shows what was found."""
    try:
        if _DAY.fullmatch(text):
            return date.fromisoformat(text)
        reason = ""
    except ValueError as exc:
        reason = f" ({exc})"
    raise argparse.ArgumentTypeError(f"expected YYYY-MM-DD, found {text!r}{reason}")


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--env``, ``--conf-dir``, ``--catalog``: which settings a command runs with."""
    group = parser.add_argument_group("configuration")
    group.add_argument("--env", default=None,
                       help="environment overlay conf/env/<env>.yaml: local (default; $SPARKFS_ENV), "
                            "dev, prod (dev and prod are Databricks)")
    group.add_argument("--conf-dir", default=None,
                       help="folder holding sparkfs.yaml (default: $SPARKFS_CONF_DIR, else the nearest ./conf)")
    group.add_argument("--catalog", default=None, help="Unity Catalog catalog (overrides storage.catalog)")


def add_window_arguments(parser: argparse.ArgumentParser) -> None:
    """``--date`` or ``--start``/``--end``: which event dates a job processes."""
    group = parser.add_argument_group("dates (YYYY-MM-DD)")
    group.add_argument("--date", type=parse_day, metavar="D", help="one event date (a daily run)")
    group.add_argument("--start", type=parse_day, metavar="S", help="first event date of a range (a backfill)")
    group.add_argument("--end", type=parse_day, metavar="E", help="last event date of a range, inclusive")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Everything a job takes: the configuration and the dates."""
    add_config_arguments(parser)
    add_window_arguments(parser)


def check_window(args: argparse.Namespace) -> tuple[date, date] | None:
    """``(start, end)`` from ``--date`` or ``--start/--end``; None when neither is given."""
    day, start, end = getattr(args, "date", None), getattr(args, "start", None), getattr(args, "end", None)
    if day and (start or end):
        raise UsageError("give either --date D or --start S --end E, not both")
    if day:
        return day, day
    if start or end:
        if not (start and end):
            given, missing = ("--start", "--end") if start else ("--end", "--start")
            raise UsageError(f"{given} needs {missing} too: a range is --start S --end E (both inclusive)")
        if end < start:
            raise UsageError(f"--start {start} is after --end {end}; the range must run forward")
        return start, end
    return None


def window_from_args(args: argparse.Namespace) -> RunWindow | None:
    """The :class:`~sparkfs.core.runs.RunWindow` of ``--date`` or ``--start/--end`` (checked)."""
    window = check_window(args)
    if window is None:
        return None
    from sparkfs.core.runs import RunWindow

    return RunWindow(*window)


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings for ``--conf-dir`` / ``--env``, with ``--catalog`` overriding ``storage.catalog``.

    On Databricks the bundle passes ``--conf-dir ${workspace.file_path}/conf`` (the synced copy of
    ``conf/``), because a job's working directory is not the project folder there.
    """
    settings = load_settings(args.conf_dir, args.env)
    if args.catalog:
        storage = settings.storage.model_copy(update={"catalog": args.catalog})
        settings = settings.model_copy(update={"storage": storage})
    return settings


def check_environment(settings: Settings) -> None:
    """A Databricks environment (one with a Unity Catalog catalog) needs Databricks.

    Locally it would start a laptop Spark that knows no such catalog and show an empty lakehouse.
    """
    catalog = settings.storage.catalog
    if catalog is None or on_databricks():
        return
    schemas = sorted(settings.storage.schemas.values())
    tracking = settings.mlflow.tracking_uri or "a local SQLite store"
    raise UsageError(
        f"environment '{settings.env}' means Databricks: tables in the Unity Catalog catalog "
        f"'{catalog}' (schemas {', '.join(schemas)}), MLflow at '{tracking}'. This machine is not "
        f"Databricks (DATABRICKS_RUNTIME_VERSION is not set), and a local Spark knows no such catalog.\n"
        f"  Run it there (databricks bundle deploy -t {settings.env}, then databricks bundle run -t "
        f"{settings.env} <job>), or drop --env / SPARKFS_ENV to use the local lakehouse in "
        f"{settings.data_path}"
    )


def quiet_settings(settings: Settings, verbose: bool) -> Settings:
    """``settings`` with Spark's console progress bars on only for ``-v`` (unless conf sets them)."""
    conf = {"spark.ui.showConsoleProgress": "true" if verbose else "false", **settings.spark.conf}
    return settings.model_copy(update={"spark": settings.spark.model_copy(update={"conf": conf})})


@contextmanager
def job_context(
    settings: Settings, *, verbose: bool = False, command: str = "job", attach: bool = True,
    while_starting: Callable[[], object] | None = None,
) -> Iterator[JobContext]:
    """``settings`` (see :func:`settings_from_args`), a Spark session and the lakehouse, for the
    ``with`` block.

    Unless ``verbose``, the JVM's own output (start-up, Ivy, warnings) goes to a log file under
    ``<data_dir>/logs``; an exception leaving the block carries that file's path (see
    :func:`~sparkfs.jobs.console.spark_log_of`) so the error can name it. ``attach=False`` skips
    registering every local table by name (commands that read tables by path do not need it).
    ``while_starting`` runs on a thread of its own while the JVM starts (work that needs no Spark,
    such as a conf check that imports a slow library); its error is raised once Spark is up,
    before the lakehouse is opened.
    """
    check_environment(settings)
    settings = quiet_settings(settings, verbose)
    from sparkfs.core.lakehouse import Lakehouse, open_lakehouse  # pyspark: only once args are good
    from sparkfs.core.session import get_spark

    log_file = None
    started = time.perf_counter()
    meanwhile = _on_a_thread(while_starting) if while_starting else None
    try:
        # Under spark-submit or on Databricks the JVM is already running: nothing to redirect.
        if on_databricks() or "PYSPARK_GATEWAY_PORT" in os.environ:
            spark = get_spark(settings)  # the running session
        elif verbose:
            log.info("starting Spark (%s)", settings.spark.master)
            spark = get_spark(settings)
        else:
            log_file = spark_log_file(settings.data_path, command)
            log.info("starting Spark (%s); its own log: %s", settings.spark.master, log_file)
            with jvm_output_to(log_file):
                spark = get_spark(settings)
            quiet_query_context_lines()
        # Quiet: the "starting" line is enough (the job's own lines follow); -v says when it is up.
        log.log(logging.INFO if verbose else logging.DEBUG,
                "Spark %s ready in %.1fs", spark.version, time.perf_counter() - started)
        if meanwhile is not None:
            meanwhile.result()
        lake = open_lakehouse(spark, settings) if attach else Lakehouse(spark, settings)
        yield JobContext(settings, spark, lake)
    except BaseException as exc:
        if log_file is not None:
            mark_spark_log(exc, log_file)
        raise


def _on_a_thread(work: Callable[[], object]) -> Future[object]:
    """Run ``work`` on a daemon thread; its result or error in the future returned."""
    future: Future[object] = Future()

    def run() -> None:
        try:
            future.set_result(work())
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name="sparkfs-while-spark-starts", daemon=True).start()
    return future
