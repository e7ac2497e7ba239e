"""``sparkfs run features``: bronze -> silver -> gold for a day (or a backfill range)."""

from __future__ import annotations

from collections.abc import Sequence

from sparkfs.core.errors import SparkfsError
from sparkfs.core.runs import RunWindow, StageRecord, record_run
from sparkfs.features.pipeline import load_pipeline, run_pipeline
from sparkfs.jobs.context import JobContext


def features_job(ctx: JobContext, window: RunWindow | None) -> None:
    """The registered ``features`` job: the flights pipeline (or whatever ``conf/`` declares) for ``window``."""
    if window is None:
        raise SparkfsError("the features job needs --date D, or --start S --end E for a backfill")
    pipeline = load_pipeline(ctx.settings.conf_dir, ctx.settings.data_path)
    params = {"start": window.start, "end": window.end}
    with record_run(ctx.lake, "features", params) as run:
        run_pipeline(ctx.lake, pipeline, window, run)
    print(summary(run.stages, window, run.run_id))


def summary(stages: Sequence[StageRecord], window: RunWindow, run_id: str) -> str:
    """A table of what each stage did, for the console."""
    lines = [f"\nfeatures {window} (run {run_id}):",
             f"  {'stage':<24}{'rows in':>10}{'rows out':>10}{'rejected':>10}{'version':>9}{'seconds':>9}"]
    for s in stages:
        cells = [s.rows_in, s.rows_out, s.rows_rejected, s.table_version]
        text = "".join(f"{'' if v is None else v:>10}" for v in cells[:3]) + f"{'' if cells[3] is None else cells[3]:>9}"
        lines.append(f"  {s.stage:<24}{text}{s.duration_s:>9.1f}")
    return "\n".join(lines)
