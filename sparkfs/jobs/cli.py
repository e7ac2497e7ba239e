"""The ``sparkfs`` command: ``sparkfs run <job>``, ``sparkfs backfill <job>``, ``setup``, ``tables``, ``history``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sparkfs.core.errors import SparkfsError
from sparkfs.core.lakehouse import checksum
from sparkfs.jobs.context import add_common_arguments, job_context, setup_logging
from sparkfs.jobs.registry import JOBS, run_job


def _setup(args: argparse.Namespace) -> int:
    """Start a session once: fills the Ivy cache with Delta's jars and checks Java."""
    ctx = job_context(args)
    print(f"Spark {ctx.spark.version} with Delta ready; tables live in {ctx.lake.warehouse}")
    return 0


def _tables(args: argparse.Namespace) -> int:
    """Each local table with its Delta version, row count and content checksum."""
    ctx = job_context(args)
    lake = ctx.lake
    print(f"{'table':42s} {'version':>7s} {'rows':>10s}  checksum")
    for layer in lake.settings.storage.schemas:
        for table in lake.tables(layer):
            rows, digest = checksum(lake.read(layer, table))
            print(f"{lake.name(layer, table).replace('`', ''):42s} {lake.version(layer, table):7d} {rows:10d}  {digest:x}")
    return 0


def _history(args: argparse.Namespace) -> int:
    """A table's Delta history: every write with its operation and rows inserted / updated."""
    ctx = job_context(args)
    layer, table = ctx.lake.resolve(args.table)
    print(f"Delta history of {ctx.lake.name(layer, table).replace('`', '')}:")
    ctx.lake.history(layer, table, args.limit).show(args.limit or 1000, truncate=False)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sparkfs", description="Batch feature engineering on Spark + Delta")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a job for one date (or a range)")
    run.add_argument("job", choices=sorted(JOBS))
    add_common_arguments(run)

    backfill = sub.add_parser("backfill", help="run a job over --start..--end (same code as run)")
    backfill.add_argument("job", choices=sorted(JOBS))
    add_common_arguments(backfill)

    for name, func, text in (
        ("setup", _setup, "start Spark once: resolve Delta's jars, check Java"),
        ("tables", _tables, "list the lakehouse's tables"),
        ("smoke", None, "create a Delta table, MERGE into it, print its history"),
    ):
        p = sub.add_parser(name, help=text)
        add_common_arguments(p)
        p.set_defaults(func=func)

    history = sub.add_parser("history", help="a table's Delta history (operations, rows written)")
    history.add_argument("table", help="<layer>.<table> or <schema>.<table>, e.g. gold.carrier_delays")
    history.add_argument("--limit", type=int, default=None, help="newest N entries only")
    add_common_arguments(history)
    history.set_defaults(func=_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    if args.command == "backfill" and not (args.start and args.end):
        print("error: backfill needs --start and --end", file=sys.stderr)
        return 2
    if args.command in ("run", "backfill"):
        return run_job(args.job, args)
    if args.command == "smoke":
        return run_job("smoke", args)
    try:
        return int(args.func(args))
    except SparkfsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
