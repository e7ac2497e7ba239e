"""The one place a SparkSession is built.

On Databricks this returns the active session. Locally it builds a ``local[*]`` session with the
Delta extension and catalog, UTC everywhere, a persistent warehouse under the project's data
directory, and Delta's jars resolved from Maven Central into the local Ivy cache (once; later
starts use the cache). Library code takes the session as an argument and never calls this.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from pyspark.sql import SparkSession

from sparkfs.core.config import Settings
from sparkfs.core.errors import DeltaJarsUnavailableError, JavaNotFoundError, JavaVersionError

MIN_JAVA = 17
DELTA_VERSION = "4.4.0"
DELTA_PACKAGE = f"io.delta:delta-spark_4.2_2.13:{DELTA_VERSION}"


def on_databricks() -> bool:
    return "DATABRICKS_RUNTIME_VERSION" in os.environ


def find_java(java_home: str | None = None) -> str:
    """The java executable Spark will use: ``$JAVA_HOME/bin/java``, else ``java`` on PATH."""
    java_home = java_home if java_home is not None else os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
        raise JavaNotFoundError(
            f"JAVA_HOME is {java_home!r} but {candidate} is not an executable; "
            f"point JAVA_HOME at a JDK {MIN_JAVA}+ or unset it to use java from PATH"
        )
    found = shutil.which("java")
    if not found:
        raise JavaNotFoundError(
            f"Java not found: Spark needs a JDK {MIN_JAVA} or newer. Install one "
            f"(e.g. 'apt-get install openjdk-17-jdk-headless' or 'brew install openjdk@17') "
            f"and put it on PATH or set JAVA_HOME"
        )
    return found


def java_major_version(java: str) -> int:
    """Major version printed by ``java -version`` (1.8 -> 8, 17.0.15 -> 17)."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if not match:
        raise JavaNotFoundError(f"could not read the Java version from '{java} -version': {text.strip()!r}")
    major, minor = int(match.group(1)), int(match.group(2) or 0)
    return minor if major == 1 else major


def check_java(java_home: str | None = None) -> int:
    """Fail with a clear message when Java is missing or older than Spark 4 needs."""
    java = find_java(java_home)
    version = java_major_version(java)
    if version < MIN_JAVA:
        raise JavaVersionError(
            f"{java} is Java {version}; Spark 4 needs Java {MIN_JAVA} or newer. "
            f"Install a JDK {MIN_JAVA}+ and set JAVA_HOME to it"
        )
    return version


def ivy_dir() -> Path:
    """The Ivy cache Spark resolves ``spark.jars.packages`` into (Spark 4 default)."""
    return Path(os.environ.get("SPARKFS_IVY_DIR", Path.home() / ".ivy2.5.2")).expanduser()


def delta_jars_cached(ivy: Path | None = None) -> bool:
    jars = (ivy or ivy_dir()) / "jars"
    return (jars / f"io.delta_delta-spark_4.2_2.13-{DELTA_VERSION}.jar").is_file()


def get_spark(settings: Settings) -> SparkSession:
    """A Delta-enabled SparkSession for ``settings`` (the active one on Databricks).

    Locally: ``spark.master`` and the other ``spark:`` settings, the session time zone UTC, and
    Delta's jars from the local Ivy cache (resolved from Maven Central on the first start; a
    :class:`~sparkfs.core.errors.DeltaJarsUnavailableError` says what to do when that cannot
    happen). Java is checked first.

    Example::

        settings = load_settings()          # conf/ found from the working folder
        spark = get_spark(settings)
    """
    if on_databricks():
        return SparkSession.builder.getOrCreate()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()
    from delta import configure_spark_with_delta_pip

    # Python workers (pandas UDFs, MLflow's spark_udf) must run this interpreter, not whatever
    # `python3` is first on PATH (often a system Python without pandas).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    warehouse = settings.data_path / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    spark_cfg = settings.spark
    builder = (
        SparkSession.builder.master(spark_cfg.master)
        .appName(spark_cfg.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.driver.memory", spark_cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(spark_cfg.shuffle_partitions))
        .config("spark.default.parallelism", str(spark_cfg.shuffle_partitions))
        .config("spark.databricks.delta.snapshotPartitions", str(spark_cfg.shuffle_partitions))
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.jars.ivy", str(ivy_dir()))
        .config("spark.ui.showConsoleProgress", "true")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    for key, value in spark_cfg.conf.items():
        builder = builder.config(key, value)
    builder = configure_spark_with_delta_pip(builder)
    was_cached = delta_jars_cached()
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # py4j/pyspark raise several types when the JVM cannot start
        if not was_cached:
            raise DeltaJarsUnavailableError(
                f"Spark could not start: Delta's jars ({DELTA_PACKAGE}) are not in the Ivy cache "
                f"{ivy_dir()} and could not be resolved from Maven Central (offline or blocked?). "
                f"Run 'make setup' once on a machine that reaches Maven Central, or copy a filled "
                f"{ivy_dir()} here. Spark said: {exc}"
            ) from exc
        raise
    spark.sparkContext.setLogLevel(spark_cfg.log_level)
    if not delta_on_classpath(spark):
        under_submit = "PYSPARK_GATEWAY_PORT" in os.environ
        raise DeltaJarsUnavailableError(
            "Delta's classes are not on Spark's classpath"
            + (
                f": under spark-submit the JVM starts before sparkfs runs, so pass the jar yourself: "
                f"spark-submit --packages {DELTA_PACKAGE} jobs/<job>.py ... (or 'make submit JOB=<job>')"
                if under_submit
                else f"; expected {DELTA_PACKAGE} from the Ivy cache {ivy_dir()}"
            )
        )
    return spark


def delta_on_classpath(spark: SparkSession) -> bool:
    """True when the JVM can load Delta's catalog class."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    loader = jvm.java.lang.Thread.currentThread().getContextClassLoader()
    try:
        jvm.java.lang.Class.forName("org.apache.spark.sql.delta.catalog.DeltaCatalog", False, loader)
    except Exception:
        return False
    return True
