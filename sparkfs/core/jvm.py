"""sparkfs's own JVM code: its Java sources, compiled once per machine into a jar Spark loads.

One class so far: the aggregate that counts a day's drift in the task that scans the rows
(``sparkfs/monitoring/DayCountsAggregate.java``). :func:`sparkfs_jar` compiles every ``.java``
file of the package with the JDK's ``javac`` against the pinned pyspark's jars, into ``folder``
(the Ivy cache's ``sparkfs/``, next to the list of Delta's jars), under a name made of Spark's
version and a hash of the sources: a changed source or another Spark gets a jar of its own, and
an unchanged one is never compiled again. :func:`~sparkfs.core.session.get_spark` puts the jar on
the classpath. Without ``javac`` (a JRE only) there is no jar, and code with a JVM engine counts
with its Python one; the same happens on Databricks, where sparkfs does not start the JVM.

Example::

    jar = sparkfs_jar(ivy_dir() / "sparkfs")     # a Path, or None without javac
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

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
