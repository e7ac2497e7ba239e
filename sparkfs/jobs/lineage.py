"""``sparkfs lineage NAME [--upstream | --downstream]``: the lineage graph as text, and a Mermaid file.

NAME is a table (``gold.carrier_delays``, ``sparkfs_ml.flight_delay_predictions``), a feature
(``gold.carrier_delays.carrier_dep_delay_mean_7d``) or a model (``model:flight_delay``,
``flight_delay@champion``). Downstream of a gold table or feature is its impact: the registered
model versions (with aliases) trained on it, then everything recorded downstream.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sparkfs.core.errors import UsageError
from sparkfs.jobs.context import job_context, settings_from_args

if TYPE_CHECKING:
    from sparkfs.catalog.usage import ModelUse
    from sparkfs.core.lakehouse import Lakehouse


def resolve_name(lake: Lakehouse, name: str, uses: list[ModelUse]) -> tuple[str, int | None, str | None]:
    """``(node, version, feature)`` for a table, feature or model name."""
    from sparkfs.core.lineage import model_node, table_node

    if name.startswith("model:") or "@" in name:
        model, _, alias = name.removeprefix("model:").partition("@")
        if not alias:
            return model_node(model), None, None
        version = next((u.version for u in uses if u.model == model and alias in u.aliases), None)
        if version is None:
            raise UsageError(f"no registered model version {model}@{alias}; 'sparkfs catalog' lists the models in use")
        return model_node(model), int(version), None
    parts = name.replace("`", "").split(".")
    layers = {*lake.settings.storage.schemas, *lake.settings.storage.schemas.values()}
    if len(parts) == 3 and parts[0] in layers:
        layer, table = lake.resolve(".".join(parts[:2]))
        return table_node(layer, table), None, parts[2]
    layer, table = lake.resolve(name)
    return table_node(layer, table), None, None


def lineage_command(args: argparse.Namespace, verbose: bool) -> int:
    from sparkfs.catalog.lineage import downstream, impact, upstream
    from sparkfs.catalog.usage import model_uses

    settings = settings_from_args(args)
    with job_context(settings, verbose=verbose, command="lineage", attach=False) as ctx:
        lake = ctx.lake
        uses = model_uses(settings)
        node, version, feature = resolve_name(lake, args.name, uses)
        version = args.version if args.version is not None else version
        found = None
        if args.downstream and node.startswith("gold."):
            found = impact(lake, node.removeprefix("gold."), feature, uses)
            graph = found.downstream or downstream(lake, node, version, uses=uses)
        elif args.downstream:
            graph = downstream(lake, node, version, uses=uses)
        else:
            graph = upstream(lake, node, version)
        out = Path(args.out) if args.out else settings.data_path / "lineage" / f"{node.replace(':', '_')}.mmd"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(graph.mermaid())
    if args.json:
        data = graph.to_dict()
        if found is not None:
            data["model_versions"] = [u.to_dict() for u in found.model_versions]
        print(json.dumps(data, indent=2))
        return 0
    print("\n".join(found.lines() if found is not None else graph.lines()))
    print(f"\nMermaid picture: {out}")
    return 0


def add_lineage_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME", help="a table (gold.carrier_delays), a feature "
                        "(gold.carrier_delays.carrier_dep_delay_mean_7d) or a model (flight_delay@champion)")
    way = parser.add_mutually_exclusive_group()
    way.add_argument("--upstream", action="store_true", help="what it was made from (the default)")
    way.add_argument("--downstream", action="store_true",
                     help="what was made from it; for a gold table or feature: the models it affects")
    parser.add_argument("--version", type=int, help="the table's (or model's) version (default: the newest)")
    parser.add_argument("--out", help="the Mermaid file to write (default <data dir>/lineage/<name>.mmd)")
    parser.add_argument("--json", action="store_true", help="print JSON (for scripts)")
