"""Point-in-time training sets: the AS-OF join of feature tables onto a spine, and its spec.

The public API lives in :mod:`sparkfs.pit.api` (the time rule is in its docstring) and
:mod:`sparkfs.pit.spec`; the other modules are the join's parts: :mod:`~sparkfs.pit.lookup`
(resolving a lookup), :mod:`~sparkfs.pit.planner` (choosing a plan), :mod:`~sparkfs.pit.union`,
:mod:`~sparkfs.pit.intervals` and :mod:`~sparkfs.pit.presort` (the plans),
:mod:`~sparkfs.pit.fetch` (the matched rows' features), :mod:`~sparkfs.pit.checks` (the
invariants checked after a build), :mod:`~sparkfs.pit.provenance` (which feature rows were used,
and the leakage audit) and :mod:`~sparkfs.pit.columns` (column helpers).
"""

from __future__ import annotations

from sparkfs.pit.api import (
    FeatureLookup,
    TrainingSet,
    as_of_join,
    create_training_set,
    rebuild_training_set,
)
from sparkfs.pit.spec import LookupSpec, SpineSource, TrainingSetSpec

__all__ = [
    "FeatureLookup",
    "LookupSpec",
    "SpineSource",
    "TrainingSet",
    "TrainingSetSpec",
    "as_of_join",
    "create_training_set",
    "rebuild_training_set",
]
