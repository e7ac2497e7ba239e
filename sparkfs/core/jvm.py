"""sparkfs's own JVM code: its Java sources, compiled once per machine into a jar Spark loads.

One class so far: the aggregate that counts a day's drift in the task that scans the rows
(``sparkfs/monitoring/DayCountsAggregate.java``). :func:`sparkfs_jar` compiles every ``.java``
file of the package with the JDK's ``javac`` against the pinned pyspark's jars, into ``folder``
(the Ivy cache's ``sparkfs/``, next to the list of Delta's jars), under a name made of Spark's
version and a hash of the sources: a changed source or another Spark gets a jar of its own, and
an unchanged one is never compiled again. :func:`~sparkfs.core.session.get_spark` puts the jar on
the classpath. Without ``javac`` (a JRE only) there is no jar, and code with a JVM engine counts
with its Python one; the same happens on Databricks, where sparkfs does not start the JVM.

It also keeps the JVM's class-data archive (:func:`write_class_archive`, run by ``sparkfs
setup``): the ~20,000 classes a Spark + Delta job loads, parsed and verified once and mapped by
every later start instead of being loaded again (a few seconds of CPU per start on two cores).

Example::

    jar = sparkfs_jar(ivy_dir() / "sparkfs")     # a Path, or None without javac
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sparkfs.core.config import Settings

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parents[1]


def java_sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.java"))


def find_javac() -> str | None:
    """``$JAVA_HOME/bin/javac``, else ``javac`` on PATH, else None."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "javac").is_file():
        return str(Path(java_home) / "bin" / "javac")
    return shutil.which("javac")


def sparkfs_jar(folder: Path, *, build: bool = True) -> Path | None:
    """The jar of sparkfs's Java sources for the installed pyspark, compiled into ``folder`` when it
    is not there yet (and ``build``); None when there is none and it cannot be built."""
    import pyspark

    sources = java_sources()
    if not sources:
        return None
    digest = hashlib.sha256(pyspark.__version__.encode())
    for source in sources:
        digest.update(source.relative_to(PACKAGE).as_posix().encode() + b"\0" + source.read_bytes())
    jar = folder / f"sparkfs-jvm-{pyspark.__version__}-{digest.hexdigest()[:12]}.jar"
    if jar.is_file() or not build:
        return jar if jar.is_file() else None
    javac = find_javac()
    if javac is None:
        log.info("no javac (a JDK's compiler) found: drift is counted in Python workers, more slowly")
        return None
    spark_jars = Path(pyspark.__file__).parent / "jars"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        classes = Path(tmp) / "classes"
        done = subprocess.run(
            [javac, "-nowarn", "-encoding", "UTF-8", "-d", str(classes), "-cp", f"{spark_jars}/*", *map(str, sources)],
            capture_output=True, text=True, check=False,
        )
        if done.returncode != 0:
            log.warning("could not compile sparkfs's Java code (drift is counted in Python workers, more "
                        "slowly): %s", (done.stderr or done.stdout).strip()[-2000:])
            return None
        built = Path(tmp) / jar.name
        with zipfile.ZipFile(built, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(classes.rglob("*.class")):
                archive.write(path, path.relative_to(classes).as_posix())
        os.replace(built, jar)  # atomic: a concurrent first start sees no half-written jar
    for older in folder.glob(f"sparkfs-jvm-{pyspark.__version__}-*.jar"):
        if older != jar:
            older.unlink(missing_ok=True)  # earlier sources' jars (a running JVM keeps its open file)
    return jar


def submit_jars() -> str:
    """``--jars <sparkfs's jar>`` for a ``spark-submit`` command line, or nothing without one."""
    from sparkfs.core.session import ivy_dir

    jar = sparkfs_jar(ivy_dir() / "sparkfs", build=False)
    return f"--jars {jar}" if jar else ""


# --- the class-data archive ----------------------------------------------------------------------

# An archive that does not fit the JVM (another Java, another class path) is skipped: silently,
# not with a warning on stdout in the middle of a job's story.
QUIET_ARCHIVE = "-Xlog:cds*=off"


def class_archive(folder: Path, java: str, jar: Path | None) -> Path:
    """Where the class-data archive of JVMs started with ``java``, the installed pyspark's jars and
    ``jar`` (sparkfs's, or None) is kept: ``classes-<place>-<stamp>-<jar>.jsa``. The JVM maps an
    archive only while every jar on its class path has the size and time it had when the archive
    was written, so the stamp covers them: a reinstalled venv (pip writes its jars anew) gets a new
    archive, which replaces the one of the same place (Java and venv) when it is written."""
    import pyspark

    binary = Path(java).resolve()
    jars = Path(pyspark.__file__).resolve().parent / "jars"
    place = hashlib.sha256(f"{binary}|{jars}".encode()).hexdigest()[:12]
    stats = [(f.name, f.stat()) for f in [binary, *sorted(jars.glob("*.jar")), *([jar] if jar else [])]]
    stamp = hashlib.sha256("|".join(
        [pyspark.__version__, *(f"{name}:{st.st_size}:{st.st_mtime_ns}" for name, st in stats)]).encode())
    own = jar.stem.rsplit("-", 1)[-1] if jar else "none"
    return folder / f"classes-{place}-{stamp.hexdigest()[:12]}-{own}.jsa"


def archive_option(archive: Path) -> str:
    """The JVM options that map ``archive`` when it is there (nothing when it is not)."""
    return f"-XX:SharedArchiveFile={archive} {QUIET_ARCHIVE}" if archive.is_file() else ""


def write_class_archive(settings: Settings, archive: Path, *, timeout_s: float = 600) -> bool:
    """Write ``archive`` (unless it is there): a JVM of its own runs a small Delta job (create,
    MERGE, read, aggregate, join, to pandas) on a temporary folder and archives the classes it
    loaded when it exits. False, with a warning, when the JVM wrote none: every start then
    loads its classes as before."""
    if archive.is_file():
        return True
    archive.parent.mkdir(parents=True, exist_ok=True)
    partial = archive.with_name(f".{archive.name}.{os.getpid()}")
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from sparkfs.core.jvm import _archive_workload; "
         "_archive_workload(sys.stdin.read(), sys.argv[1])", str(partial)],
        input=settings.model_dump_json(), capture_output=True, text=True, timeout=timeout_s, check=False)
    if done.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        log.warning("no class-data archive (every Spark start loads its classes, a few seconds more): %s",
                    (done.stderr or done.stdout).strip()[-2000:])
        return False
    replace_class_archive(partial, archive)
    return True


def replace_class_archive(written: Path, archive: Path) -> None:
    """Move ``written`` to ``archive`` (atomic: a JVM starting now maps all of it or none) and
    delete the archives no JVM maps any more: the same Java and venv's with other jars, and those
    named before the name had a stamp (``classes-<place>-<jar>.jsa``, ~200 MB each)."""
    os.replace(written, archive)
    place = archive.name.split("-")[1]
    for older in archive.parent.glob("classes-*.jsa"):
        if older != archive and (older.name.startswith(f"classes-{place}-") or older.name.count("-") == 2):
            older.unlink(missing_ok=True)


def _archive_workload(settings_json: str, partial: str) -> None:
    """In a process of its own: start Spark with ``-XX:ArchiveClassesAtExit``, run a small Delta
    job, and wait for the JVM to exit (it writes the archive then)."""
    from pyspark import SparkContext
    from pyspark.sql import functions as F
    from pyspark.sql.window import Window

    from sparkfs.core.config import Settings, StorageSettings
    from sparkfs.core.lakehouse import Lakehouse
    from sparkfs.core.merge import merge_upsert
    from sparkfs.core.session import get_spark

    settings = Settings.model_validate_json(settings_json)
    with tempfile.TemporaryDirectory(prefix="sparkfs-class-archive-") as root:
        java_options = f"{settings.spark.java_options} -XX:ArchiveClassesAtExit={partial} {QUIET_ARCHIVE}"
        settings = settings.model_copy(update={
            "storage": StorageSettings(data_dir=root),
            "spark": settings.spark.model_copy(update={"java_options": java_options.strip(), "log_level": "ERROR"}),
        })
        spark = get_spark(settings)
        gateway = SparkContext._gateway
        assert gateway is not None
        lake = Lakehouse(spark, settings)
        rows = spark.range(40).select(
            F.col("id").alias("k"), F.date_add(F.lit("2013-01-01").cast("date"), (F.col("id") % 4).cast("int")).alias("d"),
            (F.col("id") * 1.5).alias("v"), F.concat(F.lit("c"), (F.col("id") % 3).cast("string")).alias("c"))
        lake.create("gold", "archive", rows.schema, partition_by=["d"])
        for step in range(2):
            merge_upsert(lake, "gold", "archive", rows.withColumn("v", F.col("v") + step), keys=["k", "d"], partition_by="d")
        table = lake.read("gold", "archive")
        latest = Window.partitionBy("c").orderBy(F.col("d").desc())
        (table.where(F.col("d") >= F.lit("2013-01-02").cast("date"))
         .withColumn("n", F.row_number().over(latest)).join(rows.select("k", "c"), ["k", "c"], "left")
         .groupBy("c").agg(F.count("*"), F.avg("v"), F.max("d")).toPandas())
        lake.table("gold", "archive").history(1).collect()
        spark.stop()
        if gateway.proc is not None:  # the JVM exits when its stdin closes, and archives as it does
            gateway.proc.stdin.close()
            gateway.proc.wait(timeout=300)
    deadline = time.monotonic() + 5
    while not Path(partial).is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
