from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from datetime import date
from pathlib import Path

import pytest

from sparkfs.core import jvm
from sparkfs.core.config import load_settings
from sparkfs.core.errors import JavaNotFoundError, JavaVersionError
from sparkfs.core.runs import RunWindow
from sparkfs.core.session import check_java, find_java, ivy_dir, java_major_version
from sparkfs.jobs.context import JobContext

REPO = Path(__file__).resolve().parents[1]


def fake_jdk(root: Path, version_line: str) -> Path:
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True)
    java = bin_dir / "java"
    java.write_text(f"#!/bin/sh\necho '{version_line}' >&2\n")
    java.chmod(0o755)
    return root


def test_java_home_without_java_says_so(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFoundError, match="JAVA_HOME.*not an executable"):
        check_java(str(tmp_path))


def test_old_java_is_rejected_with_the_version_found(tmp_path: Path) -> None:
    home = fake_jdk(tmp_path, 'openjdk version "1.8.0_392"')
    with pytest.raises(JavaVersionError, match="Java 8; Spark 4 needs Java 17"):
        check_java(str(home))


def test_java_version_parsing(tmp_path: Path) -> None:
    home = fake_jdk(tmp_path, 'openjdk version "21.0.2" 2024-01-16')
    assert java_major_version(str(home / "bin" / "java")) == 21


def test_java_missing_from_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaNotFoundError, match="Java not found"):
        check_java()


def test_sparkfs_java_code_is_compiled_once_and_without_javac_there_is_no_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    assert jvm.sparkfs_jar(tmp_path, build=False) is None
    jar = jvm.sparkfs_jar(tmp_path)
    assert jar is not None and jar.parent == tmp_path
    with zipfile.ZipFile(jar) as archive:
        assert "sparkfs/monitoring/DayCountsAggregate.class" in archive.namelist()
    built = jar.stat().st_mtime_ns
    assert jvm.sparkfs_jar(tmp_path) == jar and jar.stat().st_mtime_ns == built  # not compiled again

    monkeypatch.setattr(jvm, "find_javac", lambda: None)
    caplog.set_level(logging.INFO, logger=jvm.__name__)
    assert jvm.sparkfs_jar(tmp_path / "elsewhere") is None
    assert "no javac" in caplog.text


def test_the_session_loads_sparkfs_java_code(spark) -> None:  # type: ignore[no-untyped-def]
    from sparkfs.monitoring.day_counts import _jvm_aggregate

    assert _jvm_aggregate(spark.range(1)) is not None
    assert jvm.submit_jars().startswith("--jars ")  # the jar the session was started with


def test_the_local_session_reads_and_writes_files_through_sparkfs_local_file_system(spark) -> None:  # type: ignore[no-untyped-def]
    jvm_ = spark.sparkContext._jvm
    path = jvm_.org.apache.hadoop.fs.Path("file:///tmp")
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    file_context = jvm_.org.apache.hadoop.fs.FileContext.getFileContext(path.toUri(), conf)
    assert path.getFileSystem(conf).getClass().getName() == "sparkfs.core.LocalFiles$Checksummed"
    assert file_context.getDefaultFileSystem().getClass().getName() == "sparkfs.core.LocalFiles$Fs"


def test_a_rename_onto_a_file_fails_and_keeps_it_as_the_file_system_pyspark_registers(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    jvm_ = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    ours, hives = getattr(jvm_.sparkfs.core, "LocalFiles$Checksummed")(), jvm_.org.apache.hadoop.hive.ql.io.ProxyLocalFileSystem()
    for who, fs in (("ours", ours), ("hives", hives)):
        fs.initialize(jvm_.java.net.URI("file:///"), conf)
        (tmp_path / f"{who}-a").write_text("a")
        (tmp_path / f"{who}-b").write_text("b")
        (tmp_path / f"{who}-dir").mkdir()
        path = lambda name, who=who: jvm_.org.apache.hadoop.fs.Path((tmp_path / f"{who}-{name}").as_uri())  # noqa: E731
        assert fs.rename(path("a"), path("b")) is False
        assert (tmp_path / f"{who}-a").read_text() == "a" and (tmp_path / f"{who}-b").read_text() == "b"
        assert fs.rename(path("a"), path("c")) is True and (tmp_path / f"{who}-c").read_text() == "a"
        assert fs.rename(path("c"), path("dir")) is True and (tmp_path / f"{who}-dir" / f"{who}-c").read_text() == "a"


def test_sparkfs_local_file_system_answers_as_hadoops(spark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # Hadoop's RawLocalFileSystem starts a readlink / chmod process for these calls; sparkfs's
    # answers in the JVM. Same statuses (or the same exception), same permission bits on disk.
    from py4j.protocol import Py4JJavaError

    jvm_ = spark.sparkContext._jvm
    hadoop_fs = jvm_.org.apache.hadoop.fs
    ours, hadoops = getattr(jvm_.sparkfs.core, "LocalFiles$Raw")(), hadoop_fs.RawLocalFileSystem()
    for fs in (ours, hadoops):
        fs.initialize(jvm_.java.net.URI("file:///"), spark.sparkContext._jsc.hadoopConfiguration())
    (tmp_path / "file").write_text("abc")
    (tmp_path / "dir").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "file")
    (tmp_path / "dir-link").symlink_to(tmp_path / "dir")
    (tmp_path / "dangling").symlink_to(tmp_path / "gone")

    def link_status(fs, path: str):  # type: ignore[no-untyped-def]
        try:
            found = fs.getFileLinkStatus(hadoop_fs.Path(path))
        except Py4JJavaError as error:
            return error.java_exception.getClass().getName()
        return (found.isFile(), found.isDirectory(), found.isSymlink(), found.getLen(),
                found.getPermission().toShort(), found.getPath().toString(),
                found.getSymlink().toString() if found.isSymlink() else None)

    names = ["file", "dir", "link", "dir-link", "dangling", "missing"]
    for path in [*(str(tmp_path / n) for n in names), *((tmp_path / n).as_uri() for n in names)]:
        assert link_status(ours, path) == link_status(hadoops, path), path
    assert link_status(ours, str(tmp_path / "link"))[2] is True  # a link found where Hadoop finds one

    for mode in ("640", "755", "700", "000", "1777"):
        for who, fs in (("ours", ours), ("hadoops", hadoops)):
            (tmp_path / f"f{mode}{who}").write_text("x")
            (tmp_path / f"d{mode}{who}").mkdir()
            for kind in "fd":
                fs.setPermission(hadoop_fs.Path(str(tmp_path / f"{kind}{mode}{who}")), hadoop_fs.permission.FsPermission(mode))
        for kind in "fd":
            assert (tmp_path / f"{kind}{mode}ours").stat().st_mode == (tmp_path / f"{kind}{mode}hadoops").stat().st_mode
        assert (tmp_path / f"f{mode}ours").stat().st_mode & 0o7777 == int(mode, 8)
    with pytest.raises(Py4JJavaError, match="NoSuchFile|No such file"):
        ours.setPermission(hadoop_fs.Path(str(tmp_path / "missing")), hadoop_fs.permission.FsPermission("644"))
    for kind in "fd":
        for who in ("ours", "hadoops"):
            (tmp_path / f"{kind}000{who}").chmod(0o700)  # let pytest clean up


def test_the_session_maps_the_class_archive_setup_wrote(spark) -> None:  # type: ignore[no-untyped-def]
    jvm_ = spark.sparkContext._jvm
    archive = jvm.class_archive(ivy_dir() / "sparkfs", find_java(), jvm.sparkfs_jar(ivy_dir() / "sparkfs", build=False))
    assert archive.is_file(), f"no class-data archive {archive}: `sparkfs setup` (make setup) writes it"
    assert f"-XX:SharedArchiveFile={archive}" in spark.sparkContext.getConf().get("spark.driver.extraJavaOptions")
    jcmd = Path(find_java()).resolve().with_name("jcmd")
    info = subprocess.run([str(jcmd), str(jvm_.java.lang.ProcessHandle.current().pid()), "VM.info"],
                          capture_output=True, text=True, check=True).stdout
    mapped = re.search(r"CDS archive\(s\) mapped at: .*?, size (\d+)", info)
    # The JDK's own archive alone is ~12 MB; with sparkfs's on top of it, what a job loads is there too.
    assert mapped and int(mapped.group(1)) > archive.stat().st_size // 2, info[:2000]


def test_a_class_archive_is_named_for_the_jars_as_they_are_on_disk(tmp_path: Path) -> None:
    # The JVM skips an archive (silently, with -Xlog:cds*=off) once a jar on its class path has
    # another size or time than when the archive was written: a venv made again by pip is that.
    own = tmp_path / "sparkfs-jvm-4.2.0-abc123.jar"
    own.write_bytes(b"jar")
    first = jvm.class_archive(tmp_path, find_java(), own)
    assert jvm.class_archive(tmp_path, find_java(), own) == first
    os.utime(own, ns=(own.stat().st_atime_ns, own.stat().st_mtime_ns + 1_000_000))
    touched = jvm.class_archive(tmp_path, find_java(), own)
    own.write_bytes(b"jar!")
    resized = jvm.class_archive(tmp_path, find_java(), own)
    assert len({first, touched, resized}) == 3
    assert first.name.endswith("-abc123.jsa") and first.name.split("-")[1] == touched.name.split("-")[1]


def test_a_new_class_archive_replaces_those_no_jvm_maps_and_keeps_other_venvs(tmp_path: Path) -> None:
    own = tmp_path / "sparkfs-jvm-4.2.0-abc123.jar"
    own.write_bytes(b"jar")
    earlier = jvm.class_archive(tmp_path, find_java(), own)
    other_venv = tmp_path / "classes-0123456789ab-ba9876543210-abc123.jsa"
    unstamped = tmp_path / "classes-0123456789ab-abc123.jsa"
    for path in (earlier, other_venv, unstamped):
        path.write_bytes(b"old")
    own.write_bytes(b"rebuilt")
    archive = jvm.class_archive(tmp_path, find_java(), own)
    written = tmp_path / ".partial"
    written.write_bytes(b"new")
    jvm.replace_class_archive(written, archive)
    assert sorted(tmp_path.glob("*.jsa")) == sorted([archive, other_venv])
    assert archive.read_bytes() == b"new"


def test_without_a_jvm_that_starts_no_class_archive_is_written_and_nothing_is_left(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = load_settings(REPO / "conf")
    settings = settings.model_copy(update={"spark": settings.spark.model_copy(update={"driver_memory": "1k"})})
    archive = tmp_path / "classes-test.jsa"
    assert jvm.write_class_archive(settings, archive, timeout_s=300) is False
    assert "no class-data archive" in caplog.text
    assert list(tmp_path.iterdir()) == []


def test_listing_a_tables_files_runs_no_more_tasks_than_the_session_has_partitions(spark, lake) -> None:  # type: ignore[no-untyped-def]
    # VACUUM lists the table's folder in a Spark job; Spark's default allows 10,000 tasks for it,
    # which made a VACUUM of a small local table take ~30 s on two cores.
    lake.create("gold", "listing", spark.range(3).schema)
    spark.range(3).write.format("delta").mode("append").saveAsTable(lake.name("gold", "listing"))
    tracker, group = spark.sparkContext.statusTracker(), "test-listing-tasks"
    spark.sparkContext.setJobGroup(group, "VACUUM of a small table")
    try:
        lake.table("gold", "listing").vacuum()
    finally:
        for key in ("spark.jobGroup.id", "spark.job.description", "spark.job.interruptOnCancel"):
            spark.sparkContext.setLocalProperty(key, None)  # type: ignore[arg-type]
    stages = [tracker.getStageInfo(s) for j in tracker.getJobIdsForGroup(group) for s in tracker.getJobInfo(j).stageIds]
    partitions = int(spark.conf.get("spark.sql.shuffle.partitions"))
    assert stages and max(s.numTasks for s in stages if s) <= partitions


def test_session_is_utc_with_delta(spark) -> None:  # type: ignore[no-untyped-def]
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"
    assert "DeltaSparkSessionExtension" in spark.conf.get("spark.sql.extensions")


def test_a_one_day_run_tunes_the_session_and_puts_it_back(spark, lake, settings) -> None:  # type: ignore[no-untyped-def]
    """``spark.day_conf`` holds for a one-day run only: a backfill's window keeps the session as
    it is, and afterwards (also after an error) each key is back: its value, or unset."""
    day_conf = {"spark.sql.shuffle.partitions": "7", "spark.sql.sparkfs.test.only": "day"}
    tuned = settings.model_copy(update={"spark": settings.spark.model_copy(update={"day_conf": day_conf})})
    ctx = JobContext(tuned, spark, lake)
    partitions = spark.conf.get("spark.sql.shuffle.partitions")
    assert partitions != "7"

    def current() -> tuple[str | None, str | None]:
        return spark.conf.get("spark.sql.shuffle.partitions"), spark.conf.get("spark.sql.sparkfs.test.only", None)

    with ctx.one_day(RunWindow(date(2013, 1, 1), date(2013, 1, 31))):
        assert current() == (partitions, None)
    with ctx.one_day(RunWindow(date(2013, 1, 1), date(2013, 1, 1))):
        assert current() == ("7", "day")
    assert current() == (partitions, None)
    with pytest.raises(ZeroDivisionError), ctx.one_day():
        assert current() == ("7", "day")
        1 / 0  # noqa: B018
    assert current() == (partitions, None)
    # The local environment turns code generation off for a day; Databricks keeps its own.
    assert load_settings(REPO / "conf", "local").spark.day_conf["spark.sql.codegen.wholeStage"] == "false"
    assert load_settings(REPO / "conf", "prod").spark.day_conf == {}


def test_unresolvable_delta_jars_give_a_clear_error(tmp_path: Path) -> None:
    """Offline: an empty Ivy cache and a resolver that cannot reach anything."""
    ivy_settings = tmp_path / "ivysettings.xml"
    ivy_settings.write_text(
        textwrap.dedent(
            f"""\
            <ivysettings>
              <settings defaultResolver="nowhere"/>
              <resolvers>
                <filesystem name="nowhere">
                  <artifact pattern="{tmp_path}/missing/[artifact]-[revision].[ext]"/>
                </filesystem>
              </resolvers>
            </ivysettings>
            """
        )
    )
    script = textwrap.dedent(
        f"""\
        from sparkfs.core.config import Settings, SparkSettings, StorageSettings
        from sparkfs.core.errors import DeltaJarsUnavailableError
        from sparkfs.core.session import get_spark
        s = Settings(conf_dir={str(REPO / 'conf')!r},
                     storage=StorageSettings(data_dir={str(tmp_path / 'data')!r}),
                     spark=SparkSettings(master="local[1]", conf={{"spark.jars.ivySettings": {str(ivy_settings)!r}}}))
        try:
            get_spark(s)
        except DeltaJarsUnavailableError as exc:
            print("CLEAR-ERROR:", exc)
        """
    )
    env = dict(os.environ, SPARKFS_IVY_DIR=str(tmp_path / "ivy"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "CLEAR-ERROR:" in out.stdout, out.stdout + out.stderr
    assert "could not be resolved from Maven Central" in out.stdout
    assert "make setup" in out.stdout


class _ResolvedSession:
    """What remember_delta_jars reads from a session: its jar settings as Spark set them after Ivy."""

    def __init__(self, **conf: str) -> None:
        settings = {key.replace("_", "."): value for key, value in conf.items()}
        getter = type("Conf", (), {"get": lambda _self, key, default=None: settings.get(key, default)})
        self.sparkContext = type("Context", (), {"getConf": lambda _self: getter()})()


def test_jars_resolved_once_are_used_as_files_until_one_goes_missing(tmp_path: Path) -> None:
    from sparkfs.core.session import cached_delta_jars, remember_delta_jars

    ivy = tmp_path / "ivy"
    (ivy / "jars").mkdir(parents=True)
    delta = ivy / "jars" / "io.delta_delta-spark_4.2_2.13-4.4.0.jar"
    storage = ivy / "jars" / "io.delta_delta-storage-4.4.0.jar"
    for jar in (delta, storage):
        jar.write_bytes(b"PK")
    assert cached_delta_jars(ivy) is None  # never resolved: Ivy has to run

    own = tmp_path / "my own.jar"  # a user's spark.jars entry is not Delta's
    urls = f"file://{delta},file://{storage},{own.as_uri()}"
    assert remember_delta_jars(_ResolvedSession(spark_jars=urls), ivy) == [delta, storage]  # type: ignore[arg-type]
    assert cached_delta_jars(ivy) == [delta, storage]
    # spark.jars given (sparkfs's own jar): Spark lists the resolved jars beside it in spark.repl.local.jars
    resolved = _ResolvedSession(spark_jars=str(own), spark_repl_local_jars=f"{own.as_uri()},file://{storage},file://{delta}")
    assert remember_delta_jars(resolved, ivy) == [storage, delta]  # type: ignore[arg-type]

    storage.unlink()  # a cleaned cache: resolve again rather than start without a jar
    assert cached_delta_jars(ivy) is None


@pytest.mark.slow
def test_the_first_start_writes_down_the_jars_ivy_resolved(tmp_path: Path) -> None:
    """A real first start: Ivy resolves Delta (from a copy of this machine's Ivy cache, no manifest
    yet) while sparkfs's own jar is in ``spark.jars``; the next starts must find the files listed."""
    import shutil

    from sparkfs.core.session import DELTA_PACKAGE, DELTA_VERSION, cached_delta_jars, jar_manifest

    ivy = tmp_path / "ivy"
    for folder in ("cache", "jars"):
        shutil.copytree(ivy_dir() / folder, ivy / folder)
    own = jvm.sparkfs_jar(ivy_dir() / "sparkfs", build=False)
    assert own is not None, "tests run after `make setup`, which compiles sparkfs's jar"
    (ivy / "sparkfs").mkdir()
    shutil.copy2(own, ivy / "sparkfs" / own.name)
    assert cached_delta_jars(ivy) is None
    script = textwrap.dedent(
        f"""\
        from sparkfs.core.config import Settings, SparkSettings, StorageSettings
        from sparkfs.core.session import get_spark
        s = Settings(conf_dir={str(REPO / 'conf')!r}, storage=StorageSettings(data_dir={str(tmp_path / 'data')!r}),
                     spark=SparkSettings(master="local[1]", conf={{"spark.ui.enabled": "false"}}))
        spark = get_spark(s)
        print("JARS:", spark.sparkContext.getConf().get("spark.jars"))
        spark.stop()
        """
    )
    env = dict(os.environ, SPARKFS_IVY_DIR=str(ivy))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"sparkfs/{own.name}" in out.stdout  # the start Ivy resolved for had sparkfs's jar in spark.jars
    jars = cached_delta_jars(ivy)
    assert jars is not None, f"{jar_manifest(ivy)} missing after a start that resolved {DELTA_PACKAGE}"
    names = {jar.name for jar in jars}
    assert {f"io.delta_delta-spark_4.2_2.13-{DELTA_VERSION}.jar", f"io.delta_delta-storage-{DELTA_VERSION}.jar"} <= names
    assert all(jar.parent == ivy / "jars" for jar in jars)
