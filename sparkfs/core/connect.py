"""One call from nothing to a ready lakehouse: settings, then the session, then the tables."""

from __future__ import annotations

from pathlib import Path

from sparkfs.core.config import load_settings
from sparkfs.core.lakehouse import Lakehouse, open_lakehouse
from sparkfs.core.session import get_spark


def connect(
    env: str | None = None,
    conf_dir: Path | str | None = None,
    *,
    data_dir: Path | str | None = None,
) -> Lakehouse:
    """The lakehouse of a project, ready to read: :func:`~sparkfs.core.config.load_settings`,
    :func:`~sparkfs.core.session.get_spark` and :func:`~sparkfs.core.lakehouse.open_lakehouse`
    in one call.

    ``env`` and ``conf_dir`` are those of ``load_settings`` (defaults: ``SPARKFS_ENV`` or
    ``local``; ``SPARKFS_CONF_DIR`` or the nearest ``conf/``); ``data_dir`` replaces
    ``storage.data_dir`` (default: ``SPARKFS_DATA_DIR`` or ``.sparkfs``). Locally the session is
    the running one, else a new local Delta-enabled session; on Databricks, the notebook's. The
    returned lakehouse carries both: ``lake.spark`` and ``lake.settings``.

    Example::

        import sparkfs

        lake = sparkfs.connect()                   # ./conf, env local, tables under .sparkfs/
        lake.read("gold", "carrier_delays").show(3)
        lake.spark.sql("SELECT count(*) FROM sparkfs_ops.run_records").show()
    """
    settings = load_settings(conf_dir, env)
    if data_dir is not None:
        storage = settings.storage.model_copy(update={"data_dir": str(data_dir)})
        settings = settings.model_copy(update={"storage": storage})
    return open_lakehouse(get_spark(settings), settings)
