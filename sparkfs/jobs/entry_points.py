"""Entry points: ``main(name)`` for ``spark-submit jobs/<name>.py`` and one function per job for
the wheel's console scripts (``sparkfs-<name>``, a Databricks ``python_wheel_task``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sparkfs.core.errors import UsageError
from sparkfs.jobs.console import log_level, report_error, setup_logging
from sparkfs.jobs.context import Parser, add_common_arguments, add_verbose_argument
from sparkfs.jobs.registry import job_named, run_job


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of one job (used by ``jobs/<name>.py`` and the wheel's ``sparkfs-<name>``)."""
    job = job_named(name)
    parser = Parser(prog=f"sparkfs-{name}", description=f"sparkfs {name} job: {job.summary}. Dates: {job.dates}.")
    add_common_arguments(parser)
    add_verbose_argument(parser, top=True)
    args = parser.parse_args(argv)
    try:
        level = log_level(args.verbose)
    except UsageError as exc:
        return report_error(exc)
    setup_logging(level)
    return run_job(name, args, verbose=level <= logging.DEBUG)


def run_entry_point(name: str) -> None:
    """Run job ``name`` from a wheel entry point; a failure raises ``SystemExit`` with its code.

    A returned code becomes an exit status only through a console-script wrapper; a Databricks
    ``python_wheel_task`` calls the function itself, so a failure must raise to fail the task
    (and to keep the tasks that depend on it from starting).
    """
    code = main(name)
    if code:
        raise SystemExit(code)


# Wheel entry points (pyproject [project.scripts]; Databricks python_wheel_task).
def smoke() -> None:
    run_entry_point("smoke")


def features() -> None:
    run_entry_point("features")


def train() -> None:
    run_entry_point("train")


def infer() -> None:
    run_entry_point("infer")


def daily() -> None:
    run_entry_point("daily")


def monitor() -> None:
    run_entry_point("monitor")



def maintain() -> None:
    run_entry_point("maintain")
