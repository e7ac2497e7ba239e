"""What every job receives: settings, the session and the lakehouse, built from the arguments.

The common arguments (``--env``, ``--conf-dir``, ``--catalog``, ``--date`` / ``--start --end``)
are parsed here once for the CLI, the ``spark-submit`` scripts and the wheel entry points.
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from datetime import date

from pyspark.sql import SparkSession

from sparkfs.core.config import Settings, load_settings
from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import Lakehouse, open_lakehouse
from sparkfs.core.runs import RunWindow
from sparkfs.core.session import get_spark


@dataclass(frozen=True)
class JobContext:
    settings: Settings
    spark: SparkSession
    lake: Lakehouse


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", default=None, help="environment overlay: local (default), dev, prod")
    parser.add_argument("--conf-dir", default=None, help="folder holding sparkfs.yaml (default: ./conf)")
    parser.add_argument("--catalog", default=None, help="Unity Catalog catalog (overrides config)")
    parser.add_argument("--date", type=date.fromisoformat, help="run for one event date (YYYY-MM-DD)")
    parser.add_argument("--start", type=date.fromisoformat, help="first event date of a range")
    parser.add_argument("--end", type=date.fromisoformat, help="last event date of a range (inclusive)")


def window_from_args(args: argparse.Namespace) -> RunWindow | None:
    if args.date and (args.start or args.end):
        raise SparkfsError("give either --date or --start/--end, not both")
    if args.date:
        return RunWindow(args.date, args.date)
    if args.start or args.end:
        if not (args.start and args.end):
            raise SparkfsError("a range needs both --start and --end")
        return RunWindow(args.start, args.end)
    return None


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


def job_context(args: argparse.Namespace) -> JobContext:
    settings = settings_from_args(args)
    spark = get_spark(settings)
    return JobContext(settings, spark, open_lakehouse(spark, settings))


def setup_logging() -> None:
    level = os.environ.get("SPARKFS_LOG_LEVEL", "INFO").upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("py4j", "urllib3", "alembic", "mlflow", "great_expectations"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
