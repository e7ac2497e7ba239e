"""MLflow tracking and model registry, configured from :class:`~sparkfs.core.config.Settings`.

Locally (``mlflow.tracking_uri: null``) runs and the registry live in one SQLite file,
``<data_dir>/mlflow.db``, and artifacts under ``<data_dir>/mlartifacts``: nothing to start, and
``mlflow ui --backend-store-uri sqlite:///<data_dir>/mlflow.db`` shows them. The experiment's
artifact location is set explicitly, so artifacts never land relative to the current folder. On
Databricks the configured URIs are used (``databricks`` tracking, ``databricks-uc`` registry);
a Unity Catalog model name is ``<catalog>.<ml schema>.<model>``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sparkfs.core.config import Settings
from sparkfs.core.errors import ModelNotFoundError


@dataclass(frozen=True)
class TrackingTarget:
    tracking_uri: str
    registry_uri: str
    experiment_id: str
    experiment_name: str
    artifact_location: str | None

    @property
    def ui_command(self) -> str:
        """The command that shows these runs (locally: the MLflow UI on the SQLite file)."""
        if self.tracking_uri.startswith("sqlite:"):
            return f"mlflow ui --backend-store-uri {self.tracking_uri}"
        return f"open the MLflow experiment {self.experiment_name} at {self.tracking_uri}"


def local_tracking_uri(settings: Settings) -> str:
    return f"sqlite:///{settings.data_path / 'mlflow.db'}"


def _artifact_root(settings: Settings, tracking_uri: str) -> Path | None:
    """Artifacts next to a SQLite store; a remote server or Databricks decides for itself."""
    if settings.mlflow.tracking_uri is None:
        return settings.data_path / "mlartifacts"
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    return None


def configure_mlflow(settings: Settings, experiment: str | None = None) -> TrackingTarget:
    """Point MLflow at the configured tracking server and registry; create the experiment.

    Returns where runs go. Idempotent: an existing experiment is reused as it is.
    """
    tracking_uri = settings.mlflow.tracking_uri or local_tracking_uri(settings)
    registry_uri = settings.mlflow.registry_uri or tracking_uri
    if tracking_uri.startswith("sqlite:"):
        settings.data_path.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(registry_uri)
    name = experiment or settings.mlflow.experiment
    root = _artifact_root(settings, tracking_uri)
    found = mlflow.get_experiment_by_name(name)
    if found is None:
        location = (root / name.strip("/").replace("/", "_")).as_uri() if root else None
        experiment_id = mlflow.create_experiment(name, artifact_location=location)
        artifact_location = location
    else:
        experiment_id, artifact_location = found.experiment_id, found.artifact_location
    mlflow.set_experiment(experiment_id=experiment_id)
    return TrackingTarget(tracking_uri, registry_uri, experiment_id, name, artifact_location)


def registered_model_name(settings: Settings, name: str) -> str:
    """``name`` locally; ``<catalog>.<ml schema>.<name>`` in Unity Catalog (unless already dotted)."""
    registry = settings.mlflow.registry_uri or ""
    if registry.startswith("databricks-uc") and "." not in name:
        catalog = settings.storage.catalog
        if not catalog:
            raise ModelNotFoundError(
                f"registry {registry} needs a three-level model name, but storage.catalog is not set"
            )
        return f"{catalog}.{settings.storage.schemas['ml']}.{name}"
    return name


def register_with_alias(
    model_uri: str, name: str, alias: str, tags: dict[str, str] | None = None
) -> ModelVersion:
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it."""
    version = mlflow.register_model(model_uri, name, tags=tags)
    MlflowClient().set_registered_model_alias(name, alias, version.version)
    return version


def model_by_alias(name: str, alias: str) -> ModelVersion:
    """The model version behind ``name@alias``; a missing model or alias is a clear error."""
    client = MlflowClient()
    try:
        registered = client.get_registered_model(name)
    except MlflowException as exc:
        known = sorted(m.name for m in client.search_registered_models(max_results=50))
        raise ModelNotFoundError(
            f"no registered model named '{name}' in {mlflow.get_registry_uri()}; "
            f"registered models: {known}. Train one first: sparkfs run train"
        ) from exc
    aliases = dict(registered.aliases or {})
    if alias not in aliases:
        raise ModelNotFoundError(
            f"model '{name}' has no alias '{alias}'; its aliases: {sorted(aliases) or 'none'} "
            f"(a model gets '{alias}' when it passes the training gate)"
        )
    return client.get_model_version(name, str(aliases[alias]))
