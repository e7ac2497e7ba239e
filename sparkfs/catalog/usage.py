"""Which registered model versions use which gold tables and features, read from the MLflow registry.

Every registered version that sparkfs trained carries lineage tags (``sparkfs.table_version.<table>``,
``sparkfs.run_id``) and its run holds the training-set spec (``lineage/training_set_spec.json``):
the tables it read at their Delta versions and the features it looked up. That is the index of
usage; nothing else has to be kept in step with it.

Example::

    uses = model_uses(settings)
    [u.label for u in uses if "carrier_delays" in u.features]     # ['flight_delay v3 @champion']
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sparkfs.core.config import Settings
from sparkfs.ml.assembly import SPEC_ARTIFACT
from sparkfs.pit.api import FEATURE_LAYER
from sparkfs.pit.spec import TrainingSetSpec

log = logging.getLogger(__name__)

TABLE_VERSION_TAG = "sparkfs.table_version."
RUN_ID_TAG = "sparkfs.run_id"


@dataclass(frozen=True)
class ModelUse:
    """One registered model version and what it was trained on.

    ``table_versions``: every table its training set read (gold lookups and the spine) with the
    Delta version; ``features``: per gold table, the features it looked up (from the spec;
    empty when the spec could not be read).
    """

    model: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    table_versions: Mapping[str, int]
    features: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    spec: TrainingSetSpec | None = None

    @property
    def label(self) -> str:
        aliases = " ".join(f"@{a}" for a in self.aliases)
        return f"{self.model} v{self.version}" + (f" {aliases}" if aliases else "")

    def uses_table(self, table: str) -> bool:
        return table in self.table_versions or table in self.features

    def uses_feature(self, table: str, feature: str) -> bool:
        return feature in self.features.get(table, ())

    def pins(self) -> dict[tuple[str, str], int]:
        """``{(layer, table): version}`` of every table the training set read: what a VACUUM must
        keep readable. Tables known only from tags (no spec) are taken to be gold lookups."""
        if self.spec is None:
            return {(FEATURE_LAYER, t): v for t, v in self.table_versions.items()}
        pins = {(FEATURE_LAYER, lk.table): lk.version for lk in self.spec.lookups}
        spine = self.spec.spine
        if spine.layer and spine.table and spine.version is not None:
            pins[(spine.layer, spine.table)] = spine.version
        return pins

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "aliases": list(self.aliases),
                "run_id": self.run_id, "table_versions": dict(self.table_versions),
                "features": {t: list(f) for t, f in self.features.items()}}


def _uses_from_spec(spec: TrainingSetSpec) -> dict[str, tuple[str, ...]]:
    features: dict[str, list[str]] = {}
    for lookup in spec.lookups:
        features.setdefault(lookup.table, []).extend(lookup.features)
    return {t: tuple(dict.fromkeys(f)) for t, f in features.items()}


def _load_spec(run_id: str | None) -> TrainingSetSpec | None:
    if not run_id:
        return None
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        return TrainingSetSpec.from_dict(mlflow.artifacts.load_dict(f"runs:/{run_id}/{SPEC_ARTIFACT}"))
    except (MlflowException, OSError, ValueError) as exc:  # a version logged without a spec
        log.debug("no training-set spec for run %s: %s", run_id, exc)
        return None


def model_uses(settings: Settings, *, configure: bool = True) -> list[ModelUse]:
    """Every registered model version with the tables (and versions) and features it was trained on.

    Reads the registry ``settings`` point at (``configure=False``: MLflow as already configured).
    Versions registered without sparkfs's tags are listed with no tables.
    """
    from mlflow.tracking import MlflowClient

    if configure:
        from sparkfs.ml.tracking import configure_mlflow

        configure_mlflow(settings)
    client = MlflowClient()
    uses = []
    for registered in client.search_registered_models():
        aliases_of: dict[str, list[str]] = {}
        for alias, version in (registered.aliases or {}).items():
            aliases_of.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name = '{registered.name}'"):
            tags = dict(mv.tags or {})
            run_id = tags.get(RUN_ID_TAG) or mv.run_id
            spec = _load_spec(run_id)
            versions = {k.removeprefix(TABLE_VERSION_TAG): int(v) for k, v in tags.items()
                        if k.startswith(TABLE_VERSION_TAG) and v.isdigit()}
            if spec is not None:
                versions = {**spec.table_versions(), **versions}
            uses.append(ModelUse(
                model=registered.name, version=str(mv.version),
                aliases=tuple(sorted(aliases_of.get(str(mv.version), []))), run_id=run_id,
                table_versions=versions, features=_uses_from_spec(spec) if spec else {}, spec=spec,
            ))
    return sorted(uses, key=lambda u: (u.model, int(u.version) if u.version.isdigit() else 0))
