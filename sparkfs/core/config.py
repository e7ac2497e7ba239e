"""Typed configuration, loaded once at the edge.

``conf/sparkfs.yaml`` holds the base settings; ``conf/env/<env>.yaml`` overlays it (deep merge)
for one environment (``local``, ``dev``, ``prod``). Every YAML file is read by :func:`load_yaml`,
which expands ``${VAR}`` / ``${VAR:-default}`` and validates into pydantic models that reject
unknown keys and wrong types with an error naming the file, the key and what would be valid.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sparkfs.core.durations import Duration
from sparkfs.core.errors import ConfigError

ENV_VAR = "SPARKFS_ENV"
CONF_DIR_VAR = "SPARKFS_CONF_DIR"
DEFAULT_ENV = "local"
BASE_FILE = "sparkfs.yaml"

M = TypeVar("M", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for every config model: unknown keys are errors, values are not coerced loosely."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class SparkSettings(StrictModel):
    master: str = "local[*]"
    app_name: str = "sparkfs"
    driver_memory: str = "4g"
    shuffle_partitions: int | None = Field(None, ge=1)  # None: the local master's cores (local_cores)
    log_level: str = "WARN"
    # Options for the local driver JVM, after the ones sparkfs sets (e.g. JIT or GC flags).
    java_options: str = ""
    conf: dict[str, str] = Field(default_factory=dict)
    # Runtime SQL confs set for a run over one day's data (each day of ``run daily`` and ``run
    # monitor``, a one-day ``run features`` / ``run infer``) and restored after it; backfills and
    # training keep ``conf``. conf/env/local.yaml turns code generation off there.
    day_conf: dict[str, str] = Field(default_factory=dict)


def local_cores(master: str) -> int | None:
    """The cores of a local master (``local``, ``local[4]``, ``local[*]``, ``local[2,3]``); None for a cluster.

    A local session's default shuffle and Delta snapshot partitions: on a laptop a daily run's
    data is small, and each partition is a task on one of those cores (8 partitions on 2 cores
    made a daily run's ~600 Spark jobs about 1.5x slower).
    """
    found = re.fullmatch(r"local(?:\[(\d+|\*)(?:,\d+)?\])?", master.strip())
    if not found:
        return None
    cores = found.group(1) or "1"
    return os.cpu_count() or 1 if cores == "*" else int(cores)


class StorageSettings(StrictModel):
    """Where tables live. Locally: ``data_dir``; on Databricks: Unity Catalog ``catalog``.

    ``log_retention`` and ``deleted_file_retention`` become every gold table's
    ``delta.logRetentionDuration`` / ``delta.deletedFileRetentionDuration`` at creation: how long
    Delta keeps old versions readable. ``sparkfs run maintain`` keeps longer whatever a registered
    model's training set pins.
    """

    data_dir: str = ".sparkfs"
    catalog: str | None = None
    schemas: dict[str, str] = Field(
        default_factory=lambda: {
            "bronze": "sparkfs_bronze",
            "silver": "sparkfs_silver",
            "gold": "sparkfs_gold",
            "ml": "sparkfs_ml",
            "ops": "sparkfs_ops",
            "monitoring": "sparkfs_monitoring",
        }
    )
    log_retention: Duration = timedelta(days=3650)
    deleted_file_retention: Duration = timedelta(days=7)


class MlflowSettings(StrictModel):
    tracking_uri: str | None = None  # None: a SQLite file under data_dir
    registry_uri: str | None = None
    experiment: str = "sparkfs"


class LineageSettings(StrictModel):
    """Where sparkfs sends its lineage as OpenLineage events (:mod:`sparkfs.core.openlineage`)."""

    namespace: str = "sparkfs"
    # The OpenLineage client's transport config ({type: console}, {type: http, url: ...}, ...);
    # None: a JSON-lines file under the data dir; {type: noop}: nothing is sent.
    transport: dict[str, Any] | None = None


class Settings(StrictModel):
    """``conf/sparkfs.yaml`` with its environment overlay: Spark, storage and MLflow settings.

    Example::

        settings = load_settings(env="local")
        settings.storage.schemas["gold"], settings.data_path
    """

    project: str = "sparkfs"
    env: str = DEFAULT_ENV
    spark: SparkSettings = SparkSettings()
    storage: StorageSettings = StorageSettings()
    mlflow: MlflowSettings = MlflowSettings()
    lineage: LineageSettings = LineageSettings()
    # Filled by the loader, not by YAML: the folder the conf files came from.
    conf_dir: str = ""

    @property
    def project_root(self) -> Path:
        return Path(self.conf_dir).resolve().parent

    @property
    def data_path(self) -> Path:
        """``storage.data_dir`` made absolute (relative paths are relative to the project root)."""
        path = Path(self.storage.data_dir).expanduser()
        return path if path.is_absolute() else (self.project_root / path).resolve()


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _expand(value: Any, file: Path, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, file, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, file, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise ConfigError(
            f"{file}: key '{key}' uses ${{{name}}}, but the environment variable {name} is not set "
            f"(set it, or write ${{{name}:-default}})"
        )

    expanded = _VAR.sub(substitute, value)
    # A value that is only a variable keeps YAML typing ("8" -> 8) after expansion.
    if expanded != value and _VAR.fullmatch(value):
        return yaml.safe_load(expanded) if expanded else None
    return expanded


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping with env vars expanded; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(raw).__name__}")
    return _expand(raw, path, "")


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    """Overlay wins key by key; nested mappings merge, everything else is replaced."""
    merged = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def validate(model: type[M], data: Mapping[str, Any], source: str) -> M:
    """Validate ``data`` into ``model``; a failure names ``source``, the key and what is valid."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, model, source)) from exc


def load_yaml(path: Path | str, model: type[M]) -> M:
    """Read one YAML file into a typed model (the one loader every conf file goes through)."""
    path = Path(path)
    return validate(model, read_yaml(path), str(path))


def _describe(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<top level>"
        if err["type"] == "extra_forbidden":
            valid = _fields_at(model, err["loc"][:-1])
            hint = f"; valid keys here: {', '.join(sorted(valid))}" if valid else ""
            lines.append(f"  unknown key '{key}'{hint}")
        else:
            found = err.get("input")
            lines.append(f"  key '{key}': {err['msg']} (found {found!r})")
    return "\n".join(lines)


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = field.annotation
        args = getattr(current, "__args__", ())
        nested = [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]
        if nested:
            current = nested[0]
    fields = getattr(current, "model_fields", None)
    if not fields:
        return []
    return [f.alias or name for name, f in fields.items()]


def find_conf_dir(start: Path | None = None) -> Path:
    """``$SPARKFS_CONF_DIR``, else the nearest ``conf/sparkfs.yaml`` at or above ``start``."""
    if os.environ.get(CONF_DIR_VAR):
        return Path(os.environ[CONF_DIR_VAR]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "conf" / BASE_FILE).is_file():
            return folder / "conf"
    raise ConfigError(
        f"no conf/{BASE_FILE} found in {here} or any parent folder; "
        f"run from the project folder, pass --conf-dir, or set {CONF_DIR_VAR}"
    )


def load_settings(conf_dir: Path | str | None = None, env: str | None = None) -> Settings:
    """Load ``sparkfs.yaml`` with the ``env/<env>.yaml`` overlay into :class:`Settings`.

    ``conf_dir`` defaults to ``SPARKFS_CONF_DIR`` or the nearest ``conf/`` above the working
    folder; ``env`` to ``SPARKFS_ENV`` or ``local``. Unknown keys and wrong types are a
    :class:`~sparkfs.core.errors.ConfigError` naming the file and the key.

    Example::

        settings = load_settings()                 # ./conf, env local
        dev = load_settings("conf", env="dev")     # Unity Catalog names, Databricks MLflow
    """
    folder = Path(conf_dir).resolve() if conf_dir else find_conf_dir()
    env = env or os.environ.get(ENV_VAR) or DEFAULT_ENV
    overlay_path = folder / "env" / f"{env}.yaml"
    if not overlay_path.is_file():
        known = sorted(p.stem for p in (folder / "env").glob("*.yaml"))
        raise ConfigError(f"unknown environment '{env}': no {overlay_path}; known: {known}")
    base, overlay = read_yaml(folder / BASE_FILE), read_yaml(overlay_path)
    for name, data in ((BASE_FILE, base), (f"env/{env}.yaml", overlay)):
        if "env" in data or "conf_dir" in data:
            raise ConfigError(f"{folder / name}: 'env' and 'conf_dir' are set by the loader, not in YAML")
        # Validate each file alone first, so an error names the file the bad key is in.
        validate(Settings, data, str(folder / name))
    merged = deep_merge(base, overlay)
    merged.update(env=env, conf_dir=str(folder))
    return validate(Settings, merged, f"{folder / BASE_FILE} + env/{env}.yaml")


def import_ref(ref: str, what: str) -> Any:
    """The object a ``"module:name"`` reference in a conf file names (e.g. a builder function).

    ``what`` says where the reference came from, for the error when it cannot be imported.
    """
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{what}: {ref!r} cannot be loaded ({type(exc).__name__}: {exc})") from exc
