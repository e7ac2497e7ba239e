"""The registry of jobs: each name maps to its ``job(ctx, window)`` function, run with one error rule."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable

from sparkfs.core.errors import SparkfsError
from sparkfs.core.runs import RunWindow
from sparkfs.jobs.context import JobContext, job_context, window_from_args

log = logging.getLogger("sparkfs")

JobFn = Callable[[JobContext, "RunWindow | None"], None]

# name -> "module:function"; imported only when the job runs, so the CLI starts fast.
JOBS: dict[str, str] = {
    "smoke": "sparkfs.jobs.smoke:smoke_job",
    "features": "sparkfs.jobs.features:features_job",
    "train": "sparkfs.jobs.train:train_job",
    "infer": "sparkfs.jobs.infer:infer_job",
}


def resolve_job(name: str) -> JobFn:
    if name not in JOBS:
        raise SparkfsError(f"unknown job '{name}'; jobs: {sorted(JOBS)}")
    module, func = JOBS[name].split(":")
    try:
        job: JobFn = getattr(importlib.import_module(module), func)
    except (ModuleNotFoundError, AttributeError) as exc:
        raise SparkfsError(f"job '{name}' is registered as {JOBS[name]} but cannot be loaded: {exc}") from exc
    return job


def run_job(name: str, args: argparse.Namespace) -> int:
    """Run job ``name``; a sparkfs error prints its message and returns 1 (no traceback)."""
    try:
        job = resolve_job(name)
        window = window_from_args(args)
        ctx = job_context(args)
        job(ctx, window)
    except SparkfsError as exc:
        log.error("%s failed: %s", name, str(exc).splitlines()[0])  # the whole text goes to stderr
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
