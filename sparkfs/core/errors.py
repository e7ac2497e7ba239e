"""Exception classes: each says what was expected and what was found."""

from __future__ import annotations


class SparkfsError(Exception):
    """Base class for every error sparkfs raises on purpose."""


class UsageError(SparkfsError):
    """A command was called wrong: a missing or malformed argument, an unknown job, table or
    environment. Found before any work starts; the ``sparkfs`` command exits with status 2."""


class ConfigError(SparkfsError):
    """A config file is missing, malformed, or has an unknown key or a wrong type."""


class EnvironmentSetupError(SparkfsError):
    """The machine cannot run a local lakehouse (Java missing or too old, Delta jars unavailable)."""


class JavaNotFoundError(EnvironmentSetupError):
    pass


class JavaVersionError(EnvironmentSetupError):
    pass


class DeltaJarsUnavailableError(EnvironmentSetupError):
    pass


class SchemaMismatchError(SparkfsError):
    """A DataFrame lacks required columns or has columns of the wrong type."""


class DuplicateKeyError(SparkfsError):
    """A batch holds more than one row for the same key, and no rule says which one wins."""


class TableNotFoundError(SparkfsError):
    """A table was read by name but does not exist in the lakehouse."""


class GateFailedError(SparkfsError):
    """A trained model did not pass the performance gate, so it was logged but not registered."""

    def __init__(self, message: str, reasons: list[str], run_id: str | None = None) -> None:
        super().__init__(message)
        self.reasons = reasons
        self.run_id = run_id


class ModelNotFoundError(SparkfsError):
    """A registered model, or the alias asked for, does not exist in the model registry."""


class FeatureSchemaMismatchError(SchemaMismatchError):
    """The features built for scoring do not match the model signature (missing, extra, mistyped)."""


class TrainingDataError(SparkfsError):
    """The training set cannot train or evaluate a model (an empty split, a single class)."""


class TrainingServingSkewError(SparkfsError):
    """Features built by the inference path differ from the ones the model was trained on."""


class LookupKeyError(SparkfsError):
    """A feature lookup names keys that are not the feature table's keys, or the table has none."""


class ColumnNameClashError(SparkfsError):
    """Two output columns of a training set would have the same name."""


class TrainingSetInvariantError(SparkfsError):
    """A built training set broke a point-in-time invariant (row count, time rule)."""


class DimensionTooLargeError(SparkfsError):
    """A table asked to be broadcast is larger than the broadcast limit."""


class MissingSourceDataError(SparkfsError):
    """A run needs raw files for a day, and the landing zone has none (nor does bronze)."""


class ValidationFailedError(SparkfsError):
    """A STRICT validation failed: too many rows rejected, or a table-level expectation failed."""


class LeakageError(SparkfsError):
    """A prediction used a feature row from after its prediction time, or one that landed after it."""


class MonitoringAlertError(SparkfsError):
    """The monitor found alert-level drift or performance loss and ``fail_on_alert`` is set."""


class WriteConflictError(SparkfsError):
    """A Delta write kept losing commit races to concurrent writers, and its retries ran out."""
