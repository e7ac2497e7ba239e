"""The set-up several benchmarks share: a lakehouse of ``conf/``'s settings on a folder of its own,
removed afterwards (imported by the scripts next to it, which Python finds on their path)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sparkfs.core.config import StorageSettings, load_settings
from sparkfs.core.lakehouse import Lakehouse
from sparkfs.core.session import get_spark


@contextmanager
def scratch_lakehouse(name: str, *, java_options: str | None = None,
                      conf: dict[str, str] | None = None) -> Iterator[Lakehouse]:
    """A session and lakehouse on a temporary folder ``sparkfs-bench-<name>-*``, Spark's own log at
    ERROR; ``java_options`` replaces ``conf/``'s, ``conf`` is added to its ``spark.conf``."""
    root = Path(tempfile.mkdtemp(prefix=f"sparkfs-bench-{name}-"))
    try:
        settings = load_settings()
        spark = {"log_level": "ERROR", "conf": {**settings.spark.conf, **(conf or {})}}
        if java_options is not None:
            spark["java_options"] = java_options
        spark_settings = settings.spark.model_copy(update=spark)
        settings = settings.model_copy(update={"storage": StorageSettings(data_dir=str(root)), "spark": spark_settings})
        yield Lakehouse(get_spark(settings), settings)
    finally:
        shutil.rmtree(root, ignore_errors=True)
