"""What a command shows on the terminal: sparkfs's own log lines, errors, and nothing else by default.

sparkfs logs ``HH:MM:SS sparkfs.<module>: message``. Everything else that would talk -- the JVM
(its start-up, Ivy's resolution report, Spark's warnings and progress bars, Python workers),
MLflow's and Great Expectations' loggers, warnings and tqdm bars -- is kept off the terminal
unless ``-v`` (or ``SPARKFS_LOG_LEVEL=debug``) asks for it; the JVM's output goes to a log file
under ``<data_dir>/logs/`` that an error names.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkfs.core.errors import ConfigError, SparkfsError, UsageError

LOG_LEVEL_VAR = "SPARKFS_LOG_LEVEL"
LEVELS = {
    "debug": logging.DEBUG,
    "verbose": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
}
# Third-party loggers that speak at INFO about their own plumbing.
LIBRARY_LOGGERS = ("py4j", "urllib3", "alembic", "mlflow", "great_expectations", "nannyml", "numexpr")
KEEP_SPARK_LOGS = 20  # newest JVM log files kept under <data_dir>/logs


class _Formatter(logging.Formatter):
    """``HH:MM:SS sparkfs.stage: message``; the level is named only when it is a warning or worse."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname} " if record.levelno >= logging.WARNING else ""
        record.message = record.getMessage()
        text = f"{self.formatTime(record, '%H:%M:%S')} {level}{record.name}: {record.message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def log_level(verbose: bool = False, environ: dict[str, str] | None = None) -> int:
    """``-v`` -> DEBUG, else ``SPARKFS_LOG_LEVEL`` (debug/verbose, info, warning, error), else INFO."""
    if verbose:
        return logging.DEBUG
    text = (environ if environ is not None else os.environ).get(LOG_LEVEL_VAR, "").strip()
    if not text:
        return logging.INFO
    if text.lower() not in LEVELS:
        raise UsageError(
            f"{LOG_LEVEL_VAR} is {text!r}; expected one of {', '.join(LEVELS)} "
            f"(or unset it: INFO; -v shows Spark's and MLflow's output too)"
        )
    return LEVELS[text.lower()]


def setup_logging(level: int = logging.INFO) -> None:
    """sparkfs's log lines on stderr at ``level``, in one format.

    At DEBUG (``-v``) the libraries speak too, at INFO, through the same handler; otherwise
    their plumbing is quiet: MLflow, py4j, Great Expectations below ERROR, other libraries below
    WARNING, no Python warnings from libraries and no tqdm bars.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    verbose = level <= logging.DEBUG
    root.setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("sparkfs").setLevel(level)
    # Read when MLflow is imported (later, by the job): without it MLflow installs a handler and
    # format of its own and resets its level, so its lines would bypass everything above.
    os.environ.setdefault("MLFLOW_CONFIGURE_LOGGING", "false")
    if verbose:
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # Also read at import, and inherited by Spark's Python workers (whose output goes to the
    # JVM's log file anyway): tqdm takes its defaults from TQDM_* variables.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    # Python warnings (MLflow's pickling and env_manager notes, pandas and pyspark deprecations,
    # a ResourceWarning when a failed JVM start leaves a pipe open) say nothing a user of a job
    # can act on; sparkfs reports through its log lines, not warnings.
    warnings.filterwarnings("ignore")


def quiet_query_context_lines() -> None:
    """PySpark logs a failed query's context as a JSON line of its own on stderr; sparkfs reports
    the error once (:func:`report_error`), so without ``-v`` that line is not shown."""
    from pyspark.logger import PySparkLogger

    for name in ("DataFrameQueryContextLogger", "SQLQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def spark_log_file(data_path: Path, command: str) -> Path:
    """A new file for this command's JVM output under ``<data_dir>/logs``; older ones are pruned."""
    folder = data_path / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.glob("spark-*.log"))[:-KEEP_SPARK_LOGS]:
        old.unlink(missing_ok=True)
    return folder / f"spark-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{command}.log"


@contextmanager
def jvm_output_to(path: Path) -> Iterator[None]:
    """Start the JVM inside this block with its stdout and stderr going to ``path``.

    PySpark starts the JVM as a child process that inherits this process's file descriptors 1
    and 2; pointing them at the file while it starts gives the JVM (and the Python workers it
    forks later) the file for good. The descriptors are restored on exit, so sparkfs's own
    output still reaches the terminal.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with path.open("ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


_SPARK_LOG = "sparkfs_spark_log"


def mark_spark_log(exc: BaseException, log_file: Path) -> None:
    """Remember on ``exc`` the JVM log of the session it happened in (for :func:`report_error`)."""
    setattr(exc, _SPARK_LOG, log_file)


def spark_log_of(exc: BaseException) -> Path | None:
    log_file = getattr(exc, _SPARK_LOG, None)
    return log_file if isinstance(log_file, Path) else None


def exit_status(exc: BaseException) -> int:
    """2: the command could not start as given (arguments, environment, configuration); 1: it ran
    and failed."""
    return 2 if isinstance(exc, (UsageError, ConfigError)) else 1


def report_error(exc: BaseException, *, verbose: bool = False) -> int:
    """Print ``error: <what>`` (once, on stderr) with what to do, and return the exit status."""
    if isinstance(exc, SparkfsError):
        text = str(exc)
    else:  # not one of ours (a Spark or MLflow exception): its first line, the rest on request
        # py4j's own first line only names the JVM call ("An error occurred while calling o52.save").
        java = getattr(exc, "java_exception", None)
        first = next((line for line in str(exc if java is None else java).splitlines() if line.strip()), "")
        text = f"{type(exc).__name__}: {first}"
        if verbose:
            import traceback

            traceback.print_exception(exc, file=sys.stderr)
        else:
            text += "\n  the whole traceback: run the command again with -v"
    log_file = spark_log_of(exc)
    if log_file is not None and exit_status(exc) == 1:
        text += f"\n  Spark's own log: {log_file}"
    print(f"error: {text}", file=sys.stderr)
    return exit_status(exc)
