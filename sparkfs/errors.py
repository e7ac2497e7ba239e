"""Exception classes: each says what was expected and what was found."""

from __future__ import annotations


class SparkfsError(Exception):
    """Base class for every error sparkfs raises on purpose."""


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


class DimensionTooLargeError(SparkfsError):
    """A table asked to be broadcast is larger than the broadcast limit."""


class MissingSourceDataError(SparkfsError):
    """A run needs raw files for a day, and the landing zone has none (nor does bronze)."""


class ValidationFailedError(SparkfsError):
    """A STRICT validation failed: too many rows rejected, or a table-level expectation failed."""
