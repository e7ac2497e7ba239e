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
    with ctx.one_day(window), record_run(ctx.lake, "features", params) as run:
        run_pipeline(ctx.lake, pipeline, window, run)
    print(summary(run.stages, window, run.run_id))


def summary(stages: Sequence[StageRecord], window: RunWindow, run_id: str) -> str:
    """Two lines: the run, then each layer's rows out, tables, rejects and seconds (from its first
    stage's start to its last stage's end: a layer's stages run side by side). Each stage logged its
    own line as it finished; ``sparkfs_ops.run_records`` has them all.

    Example::

        features 2013-01-01..2013-03-31 (run 640ad44a) in 261.3s; rows out per layer:
          upstream 183 (2.9s) -> bronze 92,048 (5 tables, 64.0s) -> silver 92,048 (5 tables, 0 rejected, 142.3s) -> ...
    """
    total = wall_seconds(stages)
    layers: dict[str, list[StageRecord]] = {}
    for s in stages:
        layers.setdefault(s.stage.split(".")[0], []).append(s)
    parts = []
    for layer, records in layers.items():
        tables = sum(1 for s in records if "." in s.stage)
        rejected = [s.rows_rejected for s in records if s.rows_rejected is not None]
        about = [f"{tables} table{'' if tables == 1 else 's'}" if tables else "",
                 f"{sum(rejected):,} rejected" if rejected else "", f"{wall_seconds(records):.1f}s"]
        parts.append(f"{layer} {sum(s.rows_out or 0 for s in records):,} ({', '.join(a for a in about if a)})")
    return f"features {window} (run {run_id}) in {total:.1f}s; rows out per layer:\n  " + " -> ".join(parts)


def wall_seconds(stages: Sequence[StageRecord]) -> float:
    """Seconds from the first of ``stages`` starting to the last one ending (stages of a layer
    overlap: their durations do not add up)."""
    if not stages:
        return 0.0
    start = min(s.started_at for s in stages)
    return max((s.started_at - start).total_seconds() + s.duration_s for s in stages)
