"""``sparkfs catalog``: list, search and show feature tables and features, with their usage.

The entries come from :mod:`sparkfs.catalog`; this module only turns them into lines or JSON.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sparkfs.jobs.context import job_context, settings_from_args

if TYPE_CHECKING:
    from sparkfs.catalog import FeatureEntry, ModelUse, TableEntry


def _share(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def format_features(features: Sequence[FeatureEntry]) -> list[str]:
    """One line per feature: table.feature, type, null share, PII flag, then its description."""
    if not features:
        return []
    width = max(len(f.qualified) for f in features)
    lines = [f"{'feature':<{width}}  {'type':<9}  {'nulls':>6}  description"]
    for f in features:
        flag = " [pii]" if f.pii else ""
        lines.append(f"{f.qualified:<{width}}  {(f.type or '-'):<9}  {_share(f.null_share):>6}  "
                     f"{f.description}{flag}")
    return lines


def format_tables(entries: Sequence[TableEntry]) -> list[str]:
    """One line per table: rows, latest event time, last write, version, owner, tags."""
    width = max([len(e.table) for e in entries] + [5])
    lines = [f"{'table':<{width}}  {'rows':>11}  {'latest event (UTC)':<19}  {'last write (UTC)':<19}  "
             f"{'version':>7}  owner / tags"]
    for e in entries:
        rows = "not written" if not e.exists else f"{e.rows or 0:,}"
        version = "" if e.version is None else str(e.version)
        lines.append(f"{e.table:<{width}}  {rows:>11}  {(e.latest_event_utc or '-'):<19}  "
                     f"{(e.last_write_utc or '-'):<19}  {version:>7}  {e.owner} [{', '.join(e.tags)}]")
    return lines


def format_show(entry: TableEntry, feature: FeatureEntry | None, uses: Sequence[ModelUse]) -> list[str]:
    """A table's or a feature's card: docs, freshness, and the model versions that use it."""
    lines = [f"table {entry.full_name}: {entry.description}",
             f"  owner {entry.owner}; tags {', '.join(entry.tags) or '-'}; keys {', '.join(entry.keys)}; "
             f"event time {entry.event_time or '- (static)'}"]
    if entry.exists:
        lines.append(f"  {entry.rows or 0:,} rows at version {entry.version}; last write {entry.last_write_utc} "
                     f"UTC; latest event {entry.latest_event_utc or '-'} UTC")
    else:
        lines.append("  not written yet ('sparkfs run features --date D' writes it)")
    if feature is not None:
        lines += [f"feature {feature.qualified} ({feature.type or 'not written'}"
                  f"{', nulls ' + _share(feature.null_share) if feature.null_share is not None else ''}"
                  f"{', pii' if feature.pii else ''})",
                  *textwrap.wrap(feature.description, 100, initial_indent="  ", subsequent_indent="  ")]
    else:
        lines += ["", *format_features(entry.features)]
    lines += ["", "used by:"]
    if not uses:
        lines.append("  no registered model version")
    for use in uses:
        version = use.table_versions.get(entry.table)
        at = f" (trained on {entry.table} v{version})" if version is not None else ""
        read = use.features.get(entry.table, ())
        what = f"; reads {', '.join(read)}" if read and feature is None else ""
        lines.append(f"  {use.label}{at}{what}")
    return lines


def catalog_command(args: argparse.Namespace, verbose: bool) -> int:
    """``sparkfs catalog [--search TEXT] [--pii] [--json]`` and ``sparkfs catalog show NAME``."""
    from sparkfs.catalog import describe_tables, find, model_uses, search_features
    from sparkfs.features.feature_tables import declared_feature_tables

    settings = settings_from_args(args)
    specs = declared_feature_tables(settings)  # conf errors before Spark starts
    name = getattr(args, "name", None)
    with job_context(settings, verbose=verbose, command="catalog", attach=False) as ctx:
        entries = describe_tables(ctx.lake, specs)
        if name is not None:
            entry, feature = find(entries, name)
            uses = [u for u in model_uses(settings)
                    if (u.uses_feature(entry.table, feature.name) if feature else u.uses_table(entry.table))]
    if name is not None:
        if args.json:
            out: dict[str, Any] = {"table": entry.to_dict(), "feature": feature.to_dict() if feature else None,
                                   "used_by": [u.to_dict() for u in uses]}
            print(json.dumps(out, indent=2))
        else:
            print("\n".join(format_show(entry, feature, uses)))
        return 0
    features = search_features(entries, args.search, pii_only=args.pii)
    if args.json:
        if args.search or args.pii:
            print(json.dumps([f.to_dict() for f in features], indent=2))
        else:
            print(json.dumps([e.to_dict() for e in entries], indent=2))
        return 0
    if not args.search and not args.pii:
        print("\n".join(format_tables(entries)))
        print()
    print("\n".join(format_features(features)) or "no feature matches")
    what = f"matching '{args.search}'" if args.search else "in the catalog"
    print(f"{len(features)} {'PII columns' if args.pii else 'features'} {what}; "
          "'sparkfs catalog show <table|feature>' shows one with the models that use it")
    return 0
