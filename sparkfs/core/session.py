"""The one place a SparkSession is built.

On Databricks this returns the active session. Locally it builds a ``local[*]`` session with the
Delta extension and catalog, UTC everywhere, a persistent warehouse under the project's data
directory, and Delta's jars: resolved from Maven Central into the local Ivy cache by the first
start (``sparkfs setup``), which also writes down which jar files that resolution chose; later
starts put those files on the classpath directly (``spark.jars``), without Ivy and without its
report. sparkfs's own Java code goes there too (:mod:`sparkfs.core.jvm`, compiled on the first
start), with the local file system it brings (``LocalFiles.java``: Hadoop's, without a process
per file), and the JVM maps the class-data archive ``sparkfs setup`` wrote. Spark logs through
the quiet log4j2 profile shipped next to this module (the level is ``spark.log_level``), so only
warnings and errors are written from the JVM's first line on.
Library code takes the session as an argument and never calls this.

Importing this module does not import pyspark (the ``sparkfs`` command checks its arguments and
``on_databricks()`` before it pays for that).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from sparkfs.core.config import Settings, local_cores
from sparkfs.core.errors import DeltaJarsUnavailableError, JavaNotFoundError, JavaVersionError
from sparkfs.core.jvm import archive_option, class_archive, sparkfs_jar

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

MIN_JAVA = 17
DELTA_VERSION = "4.4.0"
DELTA_PACKAGE = f"io.delta:delta-spark_4.2_2.13:{DELTA_VERSION}"
# Spark's log4j2 defaults at ``-Dsparkfs.spark.log.level`` (see get_spark), shipped as package data.
LOG4J2_PROPERTIES = Path(__file__).with_name("log4j2.properties")


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


def jar_manifest(ivy: Path | None = None) -> Path:
    """Where the jar files of the last Ivy resolution of :data:`DELTA_PACKAGE` are listed."""
    return (ivy or ivy_dir()) / "sparkfs" / f"{DELTA_PACKAGE.replace(':', '_')}.jars"


def cached_delta_jars(ivy: Path | None = None) -> list[Path] | None:
    """The jar files a previous resolution of Delta put in the Ivy cache, when every one of them
    is still there; None when Ivy has to resolve them (first start, or a cleaned cache)."""
    manifest = jar_manifest(ivy)
    if not manifest.is_file():
        return None
    jars = [Path(line) for line in manifest.read_text().splitlines() if line.strip()]
    if not jars or not all(jar.is_file() for jar in jars):
        return None
    return jars


def remember_delta_jars(spark: SparkSession, ivy: Path | None = None) -> list[Path]:
    """Write down the Ivy-cache jars a resolution of ``spark.jars.packages`` put on the classpath.

    Spark lists them as paths or ``file:`` URLs in ``spark.jars`` when that was empty before, and
    in ``spark.repl.local.jars`` (the jars of ``spark.jars`` and the resolved ones) when it was
    not: sparkfs's own jar is there on every start. Only the ones in the Ivy cache are Delta's (a
    user's own ``spark.jars`` stay in the settings).
    """
    jar_dir = (ivy or ivy_dir()).resolve() / "jars"
    conf = spark.sparkContext.getConf()
    urls = ",".join(conf.get(key, "") or "" for key in ("spark.jars", "spark.repl.local.jars"))
    jars = [Path(unquote(urlparse(url).path)) for url in urls.split(",") if url.strip()]
    jars = list(dict.fromkeys(jar for jar in jars if jar.parent.resolve() == jar_dir))
    if jars:
        manifest = jar_manifest(ivy)
        manifest.parent.mkdir(parents=True, exist_ok=True)
        manifest.write_text("".join(f"{jar}\n" for jar in jars))
    return jars


# Hadoop's two APIs for `file:` paths, as sparkfs's classes (sparkfs/core/LocalFiles.java): what
# Hadoop's local file system does, without starting a `chmod` process for every file it writes and
# a `readlink` one for both ends of every rename (each Delta commit) where Hadoop's native library
# is missing, as it is from pyspark's jars.
LOCAL_FILE_SYSTEMS = {
    "spark.hadoop.fs.file.impl": "sparkfs.core.LocalFiles$Checksummed",
    "spark.hadoop.fs.AbstractFileSystem.file.impl": "sparkfs.core.LocalFiles$Fs",
}


def get_spark(settings: Settings) -> SparkSession:
    """A Delta-enabled SparkSession for ``settings`` (the active one on Databricks).

    Locally: ``spark.master`` and the other ``spark:`` settings, the session time zone UTC, Spark's
    log level ``spark.log_level`` from the JVM's start (console progress bars off unless
    ``spark.conf`` turns them on), and Delta's jars from the local Ivy cache: the files a previous
    start resolved, else resolved from Maven Central now (a
    :class:`~sparkfs.core.errors.DeltaJarsUnavailableError` says what to do when that cannot
    happen). Java is checked first.

    Example::

        settings = load_settings()          # conf/ found from the working folder
        spark = get_spark(settings)
    """
    from pyspark.sql import SparkSession

    if on_databricks():
        return SparkSession.builder.getOrCreate()
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    check_java()

    # Python workers (pandas UDFs, MLflow's spark_udf) must run this interpreter, not whatever
    # `python3` is first on PATH (often a system Python without pandas).
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)

    warehouse = settings.data_path / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    spark_cfg = settings.spark
    partitions = spark_cfg.shuffle_partitions or local_cores(spark_cfg.master) or 200  # 200: Spark's default
    # sparkfs's own Java code (compiled on the first start: sparkfs.core.jvm).
    jar = sparkfs_jar(ivy_dir() / "sparkfs")
    # The classes `sparkfs setup` archived for this Java, pyspark and jar (none: loaded as before).
    archive = "" if "ArchiveClassesAtExit" in spark_cfg.java_options else archive_option(
        class_archive(ivy_dir() / "sparkfs", find_java(), jar))
    # The driver JVM reads its log4j2 profile when it starts, before setLogLevel could run.
    java_options = (
        f"-Duser.timezone=UTC -Dlog4j2.configurationFile={LOG4J2_PROPERTIES.as_uri()} "
        f"-Dsparkfs.spark.log.level={spark_cfg.log_level} {archive} {spark_cfg.java_options}"
    ).strip()
    builder = (
        SparkSession.builder.master(spark_cfg.master)
        .appName(spark_cfg.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.driver.memory", spark_cfg.driver_memory)
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.default.parallelism", str(partitions))
        .config("spark.databricks.delta.snapshotPartitions", str(partitions))
        # Listing a table's folder in parallel (VACUUM, a read of many files) runs up to this
        # many tasks; Spark's default, 10,000, made a VACUUM of a small local table take 30 s.
        .config("spark.sql.sources.parallelPartitionDiscovery.parallelism", str(partitions))
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.jars.ivy", str(ivy_dir()))
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.databricks.delta.schema.autoMerge.enabled", "false")
    )
    for key, value in spark_cfg.conf.items():
        builder = builder.config(key, value)
    cached = cached_delta_jars()
    # sparkfs's own jar, then the user's jars.
    own = [*([str(jar)] if jar else []), *filter(None, [spark_cfg.conf.get("spark.jars", "")])]
    if jar and "PYSPARK_GATEWAY_PORT" not in os.environ:
        # The local file system without a chmod / readlink process per file (LocalFiles.java).
        # spark-submit opens the jars' paths before it loads them: the classes must be on the
        # JVM's own class path. (Under spark-submit the JVM is up already: Hadoop's classes stay.)
        class_path = spark_cfg.conf.get("spark.driver.extraClassPath")
        builder = builder.config("spark.driver.extraClassPath", os.pathsep.join(filter(None, [str(jar), class_path])))
        for key, value in LOCAL_FILE_SYSTEMS.items():
            if key not in spark_cfg.conf:
                builder = builder.config(key, value)
    if cached:
        # The jars Ivy resolved before, as files: no resolution, no report, no network.
        builder = builder.config("spark.jars", ",".join([*(str(jar) for jar in cached), *own]))
    else:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder.config("spark.jars", ",".join(own)) if own else builder)
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
    if not cached:
        remember_delta_jars(spark)
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


@contextmanager
def session_conf(spark: SparkSession, conf: Mapping[str, str]) -> Iterator[None]:
    """``conf`` set on ``spark`` (runtime SQL confs) for the ``with`` block; each key's earlier
    value, or its absence, comes back after it, also when the block raises."""
    before = {key: spark.conf.get(key, None) for key in conf}
    for key, value in conf.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, earlier in before.items():
            if earlier is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, earlier)
