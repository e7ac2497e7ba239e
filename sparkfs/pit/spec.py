"""The training-set spec: a typed, JSON round-trippable record of how a training set was built.

Every table a training set read is recorded with its Delta version, and every lookup with the
table layout it was resolved against (keys, event time, sequence), so
:func:`~sparkfs.pit.api.rebuild_training_set` returns the same rows later, whatever MERGEs,
backfills or property changes happened since.

Example::

    spec = training_set.spec
    spec.table_versions()                     # {"flights": 12, "carrier_delays": 4}
    TrainingSetSpec.from_json(spec.to_json()) == spec
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from sparkfs.core.errors import SparkfsError

SPEC_FORMAT = 1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpineSource(_Record):
    """Where the spine came from: a table at a Delta version, or a DataFrame passed by the caller."""

    source: Literal["table", "dataframe"]
    layer: str | None = None
    table: str | None = None
    version: int | None = None


class LookupSpec(_Record):
    """One resolved feature lookup: the table at its version, and how its rows were matched."""

    table: str
    version: int
    lookup_key: dict[str, str]  # {table key: spine column}
    timestamp_lookup_key: str | None
    event_time: str | None
    sequence: str | None
    known_at: str | None
    features: list[str]
    outputs: list[str]
    lookback_us: int | None
    prefix: str | None


class TrainingSetSpec(_Record):
    """How a training set was built; ``rows`` is what a rebuild must return.

    Example::

        spec = TrainingSetSpec.from_json(path.read_text())
        rebuild_training_set(lake, spec).df      # the same rows, whatever was written since
    """

    format: int = SPEC_FORMAT
    spine: SpineSource
    label: str | None
    rows: int
    lookups: list[LookupSpec]

    def table_versions(self) -> dict[str, int]:
        """Every table read, with the Delta version it was read at (spine table included)."""
        versions = {lk.table: lk.version for lk in self.lookups}
        if self.spine.table is not None and self.spine.version is not None:
            versions = {self.spine.table: self.spine.version, **versions}
        return versions

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSetSpec:
        if data.get("format") != SPEC_FORMAT:
            raise SparkfsError(f"training-set spec format {data.get('format')!r} is not {SPEC_FORMAT}")
        return cls.model_validate(dict(data))

    @classmethod
    def from_json(cls, text: str) -> TrainingSetSpec:
        return cls.from_dict(json.loads(text))
