"""The lineage that sparkfs records, sent on as OpenLineage run events, so the lineage tools a team
already runs (Marquez, DataHub, a catalog's OpenLineage endpoint) see sparkfs's tables and models.

:func:`~sparkfs.core.lineage.record_lineage` calls :func:`emit_lineage` with the edges it writes.
Each table or model version written is one COMPLETE event of a child job ``sparkfs.<job>.<target>``
whose parent is the sparkfs run (``sparkfs.<job>``, the run record's id as a UUID): the inputs are
the sources read, at their versions (``version`` facet), the output is the version written, with
its columns, types and descriptions (``schema`` facet), and, where the writer knows it exactly,
which input columns fed each of its columns (``columnLineage`` facet, see
:mod:`sparkfs.core.column_lineage`): a gold feature table's columns <- the silver columns its
builder computes them from, per the table's declaration (rolling features are AGGREGATIONs, with
the keys and event time as INDIRECT WINDOW inputs), and a predictions table's ``probability`` and
``prediction`` <- the columns the model was given (the looked-up gold features and spine columns).
Bronze and silver writes send none: bronze appends landed files, and silver is made from bronze by
the source's conform function, Python whose column mapping sparkfs is not told; a registered model
is not a table. A column whose inputs are not all among the event's inputs is left out.

Names (``lineage.namespace`` in ``conf/sparkfs.yaml``, default ``sparkfs``):

- a table: namespace ``<namespace>``, name its full name (``sparkfs_gold.carrier_delays``; on
  Databricks ``catalog.schema.table``), with a ``storage`` facet (delta, parquet) when local;
- a landed file: namespace ``<namespace>/landing``, name its path under the landing folder;
- a registered model: namespace ``<namespace>/mlflow``, name the model's name.

Where the events go is the OpenLineage client's transport configuration, ``lineage.transport``:
by default a JSON-lines file, ``<data_dir>/lineage/openlineage.jsonl``; ``{type: console}``,
``{type: http, url: ...}`` (Marquez, DataHub) or any other transport the client knows;
``{type: noop}`` sends nothing. A transport that fails is a warning: the data was written, and its
lineage is in ``ops.lineage`` whatever happens here.

Example::

    emit_lineage(lake.settings, lake, edges, job="features", run_id="909d41bdd2684977")
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from openlineage.client.event_v2 import InputDataset, RunEvent

    from sparkfs.core.column_lineage import ColumnLineage
    from sparkfs.core.config import Settings
    from sparkfs.core.lakehouse import Lakehouse
    from sparkfs.core.lineage import LineageEdge

log = logging.getLogger(__name__)

PRODUCER = "https://github.com/sparkfs/sparkfs"
EVENTS_FILE = "lineage/openlineage.jsonl"


def run_uuid(*parts: object) -> str:
    """A stable UUID for a sparkfs run (or one of its writes): OpenLineage wants UUIDs, and the
    same run must keep its id when its lineage is sent again."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "sparkfs:" + "/".join(str(p) for p in parts)))


def transport_config(settings: Settings) -> dict[str, Any]:
    """The OpenLineage client's ``transport`` section: the configured one, or the default file."""
    configured = settings.lineage.transport
    if configured is not None:
        return dict(configured)
    path = settings.data_path / EVENTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    return {"type": "file", "log_file_path": str(path), "append": True}


def lineage_events(
    settings: Settings, lake: Lakehouse, edges: Sequence[LineageEdge], *, job: str, run_id: str,
    event_time: datetime | None = None, columns: Mapping[tuple[str, int], ColumnLineage] | None = None,
) -> list[RunEvent]:
    """One COMPLETE event per target version in ``edges`` (see the module's text); ``columns``:
    the column lineage known of some of them, by (target, target version)."""
    from openlineage.client.event_v2 import Job, OutputDataset, Run, RunEvent, RunState
    from openlineage.client.facet_v2 import job_type_job, parent_run

    namespace = settings.lineage.namespace
    when = (event_time or datetime.now(timezone.utc)).isoformat()
    parent = parent_run.ParentRunFacet(
        run=parent_run.Run(runId=run_uuid(run_id)), job=parent_run.Job(namespace=namespace, name=f"sparkfs.{job}"),
        producer=PRODUCER,
    )
    job_type = job_type_job.JobTypeJobFacet(processingType="BATCH", integration="SPARKFS", jobType="JOB",
                                            producer=PRODUCER)
    by_target: dict[tuple[str, int], list[LineageEdge]] = defaultdict(list)
    for edge in edges:
        by_target[(edge.target, edge.target_version)].append(edge)
    events = []
    for (target, version), sources in sorted(by_target.items()):
        output = _dataset(OutputDataset, settings, lake, "model" if target.startswith("model:") else "table", target,
                          version)
        layer, _, table = target.partition(".")
        if not target.startswith("model:") and lake.exists(layer, table):
            output.facets["schema"] = _schema(lake, layer, table)
        column_lineage = _column_lineage(settings, lake, (columns or {}).get((target, version), {}),
                                         {e.source for e in sources if e.source_kind == "table"})
        if column_lineage is not None:
            output.facets["columnLineage"] = column_lineage
        inputs = [_input(settings, lake, e) for e in sorted(set(sources), key=lambda e: (e.source_kind, e.source))]
        events.append(RunEvent(
            eventType=RunState.COMPLETE, eventTime=when, producer=PRODUCER,
            run=Run(runId=run_uuid(run_id, target, version), facets={"parent": parent}),
            job=Job(namespace=namespace, name=f"sparkfs.{job}.{target}", facets={"jobType": job_type}),
            inputs=inputs, outputs=[output],
        ))
    return events


def emit_lineage(
    settings: Settings, lake: Lakehouse, edges: Sequence[LineageEdge], *, job: str, run_id: str,
    columns: Mapping[tuple[str, int], ColumnLineage] | None = None,
) -> int:
    """Send the events of ``edges`` through the configured transport; how many were sent (0 when
    the transport failed: a warning says why)."""
    if not edges:
        return 0
    try:
        from openlineage.client import OpenLineageClient

        client = OpenLineageClient(config={"transport": transport_config(settings)})
        events = lineage_events(settings, lake, edges, job=job, run_id=run_id, columns=columns)
        for event in events:
            client.emit(event)
        return len(events)
    except Exception as exc:  # the client's transports raise their own types
        log.warning("OpenLineage events of the %s run %s not sent (%s: %s); ops.lineage has its lineage",
                    job, run_id, type(exc).__name__, exc)
        return 0


def _schema(lake: Lakehouse, layer: str, table: str) -> Any:
    """The written table's columns with their types and descriptions (the Delta column comments),
    as the table stands now: just after the write the event is about."""
    from openlineage.client.facet_v2 import schema_dataset

    fields = [
        schema_dataset.SchemaDatasetFacetFields(name=f.name, type=f.dataType.simpleString(),
                                                description=f.metadata.get("comment"), ordinal_position=i)
        for i, f in enumerate(lake.spark.table(lake.name(layer, table)).schema.fields, start=1)
    ]
    return schema_dataset.SchemaDatasetFacet(fields=fields, producer=PRODUCER)


def _column_lineage(settings: Settings, lake: Lakehouse, columns: ColumnLineage, read: set[str]) -> Any:
    """The ``columnLineage`` facet of the columns whose inputs the event lists among its inputs
    (one input field per table column, with every way it fed the column); None when none is left."""
    from openlineage.client.facet_v2 import column_lineage_dataset as facet

    fields = {}
    for column, inputs in columns.items():
        if not inputs or any(i.source not in read for i in inputs):
            continue
        by_field: dict[tuple[str, str], list[Any]] = defaultdict(list)
        for i in inputs:
            by_field[(i.source, i.column)].append(
                facet.Transformation(type=i.type, subtype=i.subtype, description=i.description))
        fields[column] = facet.Fields(inputFields=[
            facet.InputField(namespace=settings.lineage.namespace, name=_table_name(lake, source), field=field,
                             transformations=transformations)
            for (source, field), transformations in by_field.items()])
    return facet.ColumnLineageDatasetFacet(fields=fields, producer=PRODUCER) if fields else None


def _input(settings: Settings, lake: Lakehouse, edge: LineageEdge) -> InputDataset:
    from openlineage.client.event_v2 import InputDataset

    return _dataset(InputDataset, settings, lake, edge.source_kind, edge.source, edge.source_version)


def _dataset(kind: Any, settings: Settings, lake: Lakehouse, node_kind: str, node: str, version: int | None) -> Any:
    from openlineage.client.facet_v2 import dataset_version_dataset, storage_dataset

    namespace = settings.lineage.namespace
    facets: dict[str, Any] = {}
    if version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(version),
                                                                                producer=PRODUCER)
    if node_kind == "file":
        return kind(namespace=f"{namespace}/landing", name=node, facets=facets)
    if node_kind == "model":
        return kind(namespace=f"{namespace}/mlflow", name=node.removeprefix("model:"), facets=facets)
    layer, _, table = node.partition(".")
    location = lake.location(layer, table)
    if location is not None:
        facets["storage"] = storage_dataset.StorageDatasetFacet(storageLayer="delta", fileFormat="parquet",
                                                                producer=PRODUCER)
    return kind(namespace=namespace, name=_table_name(lake, node), facets=facets)


def _table_name(lake: Lakehouse, node: str) -> str:
    """A table's dataset name: its full name, unquoted (``sparkfs_gold.carrier_delays``)."""
    layer, _, table = node.partition(".")
    return lake.name(layer, table).replace("`", "")
