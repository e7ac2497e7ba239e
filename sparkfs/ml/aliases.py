"""Every move of a model alias, recorded: who moved it, when, from which version to which, and why.

Training moves the alias when a model passes the gate (``action="train"``); ``sparkfs model
promote`` points it at a chosen version and ``sparkfs model rollback`` back at the version it
pointed to before the current one, both through :func:`move_alias`, which moves the alias in the
MLflow registry and appends the move to the Delta table ``ops.alias_moves``.

Example::

    move = move_alias(lake, "flight_delay", "champion", "3", action="promote", reason="ticket 42")
    rollback(lake, "flight_delay", "champion", reason="v3 drifts").to_version   # "2"
"""

from __future__ import annotations

import getpass
import os
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pyspark.sql import functions as F

from sparkfs.core.errors import ModelNotFoundError
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.merge import merge_upsert

ALIAS_TABLE = ("ops", "alias_moves")
SCHEMA = ("model_name string, alias string, from_version string, to_version string, action string, "
          "reason string, moved_by string, moved_at timestamp, run_id string")


@dataclass(frozen=True)
class AliasMove:
    model_name: str
    alias: str
    from_version: str | None
    to_version: str
    action: str            # train, promote, rollback
    reason: str
    moved_by: str
    moved_at: datetime     # UTC
    run_id: str | None = None

    def describe(self) -> str:
        return (f"{self.model_name}@{self.alias}: {self.from_version or 'none'} -> {self.to_version} "
                f"({self.action} by {self.moved_by} at {self.moved_at:%Y-%m-%d %H:%M:%S} UTC: {self.reason})")


def current_version(name: str, alias: str) -> str | None:
    """The version behind ``name@alias``; None when the model or the alias does not exist."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def who() -> str:
    """The user moving the alias: Databricks' job user when set, else the login name."""
    return os.environ.get("DATABRICKS_USER") or os.environ.get("USER") or getpass.getuser()


def record_move(lake: Lakehouse, move: AliasMove) -> None:
    """Append ``move`` to ``ops.alias_moves`` (a MERGE on model, alias and time: a retry of
    the same record writes it once)."""
    layer, table = ALIAS_TABLE
    df = lake.spark.createDataFrame([tuple(asdict(move).values())], SCHEMA)
    lake.create(layer, table, df.schema, comment="Every move of a model alias: who, when, from, to, why")
    merge_upsert(lake, layer, table, df, ["model_name", "alias", "moved_at"])


def move_alias(lake: Lakehouse, name: str, alias: str, version: str, *, action: str, reason: str,
               run_id: str | None = None) -> AliasMove:
    """Point ``name@alias`` at ``version`` and record the move; an unknown version is an error."""
    client = MlflowClient()
    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFoundError(f"model {name} has no version {version}") from exc
    move = AliasMove(name, alias, current_version(name, alias), str(version), action, reason, who(),
                     datetime.now(timezone.utc).replace(tzinfo=None), run_id)
    client.set_registered_model_alias(name, alias, str(version))
    record_move(lake, move)
    return move


def alias_moves(lake: Lakehouse, name: str, alias: str) -> list[AliasMove]:
    """The recorded moves of ``name@alias``, newest first."""
    layer, table = ALIAS_TABLE
    if not lake.exists(layer, table):
        return []
    rows = (lake.read(layer, table).where((F.col("model_name") == name) & (F.col("alias") == alias))
            .orderBy(F.col("moved_at").desc()).collect())
    return [AliasMove(**r.asDict()) for r in rows]


def rollback(lake: Lakehouse, name: str, alias: str, *, reason: str) -> AliasMove:
    """Point ``name@alias`` back at the version it pointed to before the current one (the
    ``from_version`` of the move that made the current version current)."""
    current = current_version(name, alias)
    if current is None:
        raise ModelNotFoundError(f"model {name} has no alias '{alias}': nothing to roll back")
    made_current = next((m for m in alias_moves(lake, name, alias) if m.to_version == current), None)
    if made_current is None or made_current.from_version is None:
        raise ModelNotFoundError(
            f"{name}@{alias} is version {current} and no earlier version is recorded in "
            f"{lake.name(*ALIAS_TABLE)}: promote a version instead (sparkfs model promote --version V)")
    return move_alias(lake, name, alias, made_current.from_version, action="rollback", reason=reason)
