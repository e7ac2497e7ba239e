"""``sparkfs run maintain``: OPTIMIZE and VACUUM every table, keeping every pinned version readable."""

from __future__ import annotations

from sparkfs.catalog.upkeep import maintain_table, pins_of_models
from sparkfs.catalog.usage import model_uses
from sparkfs.core.runs import RunWindow, record_run
from sparkfs.jobs.context import JobContext


def maintain_job(ctx: JobContext, window: RunWindow | None) -> None:
    """Every table of every layer: OPTIMIZE (Z-ordered on a feature table's keys and event time)
    and VACUUM with a retention that keeps each registered model version's training set readable."""
    lake = ctx.lake
    uses = model_uses(ctx.settings)
    pins = pins_of_models(uses)
    tables = [(layer, table) for layer in lake.settings.storage.schemas for table in lake.tables(layer)]
    results = []
    with record_run(lake, "maintain", {"tables": len(tables), "pins": len(pins)}) as run:
        for layer, table in tables:
            with run.stage(f"{layer}.{table}") as stage:
                result = maintain_table(lake, layer, table, pins)
                stage.table_name, stage.table_version = result.table, result.version_after
                stage.rows_in, stage.rows_out = result.files_before, result.files_after
                stage.details.update(result.to_dict())
                results.append(result)
    print(f"\nmaintained {len(results)} tables ({len(pins)} pinned versions from {len(uses)} registered "
          "model versions):")
    width = max([len(r.table) for r in results] + [5])
    print(f"  {'table':<{width}}  {'files':>13}  {'deleted':>7}  {'retention':>10}  pinned")
    for r in results:
        pinned = f"v{r.oldest_pin} by {r.pinned_by}" if r.oldest_pin is not None else "-"
        print(f"  {r.table:<{width}}  {r.files_before:>5} -> {r.files_after:<5}  {r.files_deleted:>7}  "
              f"{r.retention_hours:>9.1f}h  {pinned}")
