"""Concurrent writers: retry a Delta commit that lost a race, a bounded number of times.

Delta commits optimistically: two writers that read the same version of a table both try to
commit, one wins, and the other fails with a concurrent-modification exception when what it read
was changed under it (``ConcurrentAppendException`` when the winner added files to partitions it
read, ``ConcurrentTransactionException`` for idempotent-write ids, ``MetadataChangedException``
for a concurrent create or schema change, ...). PySpark raises them as the classes of
``delta.exceptions`` once that module is imported (it patches PySpark's Py4J error conversion),
and otherwise as a ``Py4JJavaError`` or ``CapturedException`` whose text names the Java class;
:func:`is_write_conflict` recognizes both.

Every sparkfs write is idempotent (a MERGE on keys, an insert-only MERGE on a file's identity),
so re-running the whole write against the table's new version is always safe: it re-reads the
table and does only what is still missing. :func:`retry_on_conflict` does that with exponential
backoff (with jitter, so two losers do not collide again), logs each retry, and after the last
attempt raises :class:`~sparkfs.core.errors.WriteConflictError` naming the table.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import delta.exceptions as delta_exceptions

from sparkfs.core.errors import WriteConflictError

log = logging.getLogger(__name__)

T = TypeVar("T")

# Attempts in all (the first try included), and the backoff before retry n: BASE * 2**(n-1), capped.
MAX_ATTEMPTS = 6
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 8.0


class ConcurrentCreate(Exception):
    """Another process is creating the same table: its folder is there, its first commit not yet."""


_CONFLICT_CLASSES: tuple[type[BaseException], ...] = (
    ConcurrentCreate,
    delta_exceptions.DeltaConcurrentModificationException,
    delta_exceptions.ConcurrentWriteException,
    delta_exceptions.MetadataChangedException,
    delta_exceptions.ProtocolChangedException,
    delta_exceptions.ConcurrentAppendException,
    delta_exceptions.ConcurrentDeleteReadException,
    delta_exceptions.ConcurrentDeleteDeleteException,
    delta_exceptions.ConcurrentTransactionException,
)
# The Java names, for conflicts that reach Python unconverted (wrapped in another exception).
_CONFLICT_NAMES = (
    "io.delta.exceptions.",  # every class above lives there
    "DELTA_CONCURRENT_",  # their error classes (DELTA_CONCURRENT_APPEND, ...)
    "DELTA_METADATA_CHANGED",
    "DELTA_PROTOCOL_CHANGED",
    # Two first writes of one new table: the loser finds the table the winner just created.
    "DELTA_TABLE_ALREADY_EXISTS",
    "TABLE_OR_VIEW_ALREADY_EXISTS",
)


def is_write_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta saying another writer committed first (a retry may succeed)."""
    if isinstance(exc, _CONFLICT_CLASSES):
        return True
    text = f"{type(exc).__name__}: {exc}"
    return any(name in text for name in _CONFLICT_NAMES) or type(exc).__name__ in {
        c.__name__ for c in _CONFLICT_CLASSES
    }


def conflict_summary(exc: BaseException) -> str:
    """``ConcurrentAppendException: Files were added ...``: the exception's class and first line."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first_line}"[:300]


def retry_on_conflict(
    action: Callable[[], T],
    table: str,
    what: str,
    *,
    attempts: int = MAX_ATTEMPTS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``action``; when it loses a commit race, run it again (up to ``attempts`` times in all).

    ``action`` must be safe to repeat from the start (re-read the table, recompute what to write):
    every sparkfs write is. Each retry is logged at WARNING with the conflict and the wait; the
    last failure raises :class:`~sparkfs.core.errors.WriteConflictError`. Other errors pass through.

    Example: ``retry_on_conflict(lambda: builder.execute(), "`sparkfs_gold`.`planes`", "MERGE")``.
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except Exception as exc:
            if not is_write_conflict(exc):
                raise
            if attempt == attempts:
                raise WriteConflictError(
                    f"{what} into {table.replace('`', '')} lost {attempts} commit races in a row to "
                    f"other writers ({conflict_summary(exc)}); nothing of it was committed. Re-run the "
                    "job once the other runs on this table have finished (every write is idempotent, "
                    "so a re-run does only what is missing)"
                ) from exc
            wait = min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
            log.warning(
                "%s into %s: another writer committed first (%s); retry %d of %d in %.1fs",
                what, table.replace("`", ""), conflict_summary(exc), attempt, attempts - 1, wait,
            )
            sleep(wait)
    raise AssertionError("unreachable")  # the loop returns or raises


def create_table(execute: Callable[[], object], table: str, location: str | None) -> None:
    """Create a table (``execute``: a ``createIfNotExists`` builder's) that other writers may be
    creating at the same moment: the loser's retry finds the table there.

    Locally, the loser may instead find the winner's folder with its Delta log started but not
    its first commit ("non-empty location"): that is a race to retry too, not a broken folder.
    """

    def attempt() -> None:
        try:
            execute()
        except Exception as exc:
            creating = location is not None and (Path(location) / "_delta_log").is_dir()
            if creating and "DELTA_CREATE_TABLE_WITH_NON_EMPTY_LOCATION" in str(exc):
                raise ConcurrentCreate(f"{table} is being created by another writer") from exc
            raise

    retry_on_conflict(attempt, table, "create table")
