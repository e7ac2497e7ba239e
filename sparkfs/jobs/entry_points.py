"""Entry points: ``main(name)`` for ``spark-submit jobs/<name>.py`` and one function per job for
the wheel's console scripts (``sparkfs-<name>``, a Databricks ``python_wheel_task``)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from sparkfs.jobs.context import add_common_arguments, setup_logging
from sparkfs.jobs.registry import run_job


def main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of one job (used by ``jobs/<name>.py`` and the wheel's ``sparkfs-<name>``)."""
    setup_logging()
    parser = argparse.ArgumentParser(prog=f"sparkfs-{name}", description=f"sparkfs {name} job")
    add_common_arguments(parser)
    return run_job(name, parser.parse_args(argv))


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
