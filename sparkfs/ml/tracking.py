"""MLflow tracking and model registry, configured from :class:`~sparkfs.core.config.Settings`.

Locally (``mlflow.tracking_uri: null``) runs and the registry live in one SQLite file,
``<data_dir>/mlflow.db``, and artifacts under ``<data_dir>/mlartifacts``: nothing to start, and
``mlflow ui --backend-store-uri sqlite:///<data_dir>/mlflow.db`` shows them. The experiment's
artifact location is set explicitly, so artifacts never land relative to the current folder.

MLflow stores that location, and every run's and model version's, as an absolute path: a data
folder that was moved or copied still points at the old one. Rather than let new runs write into
the old folder, :func:`configure_mlflow` refuses a local store whose experiment keeps its
artifacts outside ``<data_dir>/mlartifacts`` (:class:`~sparkfs.core.errors.ConfigError`, saying
what to do). On
Databricks the configured URIs are used (``databricks`` tracking, ``databricks-uc`` registry);
a Unity Catalog model name is ``<catalog>.<ml schema>.<model>``.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sparkfs.core.config import Settings
from sparkfs.core.errors import ConfigError, ModelNotFoundError

log = logging.getLogger(__name__)


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
        if root is not None and settings.mlflow.tracking_uri is None:
            _check_artifacts_inside(name, artifact_location, root)
    mlflow.set_experiment(experiment_id=experiment_id)
    return TrackingTarget(tracking_uri, registry_uri, experiment_id, name, artifact_location)


def _check_artifacts_inside(experiment: str, location: str, root: Path) -> None:
    """A local experiment's artifacts must be under this data folder's ``mlartifacts``."""
    parsed = urlparse(location)
    if parsed.scheme not in ("", "file"):
        return
    path = Path(unquote(parsed.path))
    if path.resolve().is_relative_to(root.resolve()):
        return
    raise ConfigError(
        f"MLflow experiment '{experiment}' in {root.parent / 'mlflow.db'} keeps its artifacts in "
        f"{path}, outside this data folder ({root.parent}): the folder was moved or copied, and "
        "MLflow records artifact locations as absolute paths, so new runs would write into the "
        "old folder. Move the folder back; or keep the tables and start a new MLflow store here "
        f"(remove {root.parent / 'mlflow.db'} and {root}; runs and registered models are lost); or "
        "set mlflow.experiment to a new name (new runs go here; older models still point there)"
    )


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
    """Register ``model_uri`` as a new version of ``name`` and point ``alias`` at it.

    MLflow prints "Successfully registered model" and "Created version" to stderr; those lines go
    to sparkfs's log at DEBUG instead (shown with ``-v``): the caller reports the version.
    """
    printed = io.StringIO()
    with contextlib.redirect_stderr(printed):
        version = mlflow.register_model(model_uri, name, tags=tags)
    for line in printed.getvalue().splitlines():
        log.debug("mlflow: %s", line)
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
