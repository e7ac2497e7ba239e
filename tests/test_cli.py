"""The ``sparkfs`` command as a user meets it: mistakes are caught before any JVM starts, each
error is one ``error:`` line with what to do, exit statuses follow one rule, and ``--help``
documents the jobs and every ``SPARKFS_*`` variable.

The command runs in a subprocess exactly as ``python -m sparkfs`` does; a hook at exit reports
whether pyspark was imported and whether a JVM was started, which proves the check ran first
(more robustly than a wall-clock bound on a busy machine). No test here starts Spark.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from sparkfs.core.config import Settings
from sparkfs.core.errors import ConfigError, SparkfsError, UsageError
from sparkfs.core.runs import StageRecord, describe_stage
from sparkfs.jobs.console import log_level, mark_spark_log, report_error
from sparkfs.jobs.context import job_context
from sparkfs.jobs.tables import format_history, unsigned_hex

REPO = Path(__file__).resolve().parents[1]
# Runs the command like `python -m sparkfs`, then says what it loaded.
RUN = """
import atexit, runpy, sys
def report():
    pyspark = sys.modules.get("pyspark")
    jvm = pyspark is not None and pyspark.SparkContext._gateway is not None
    sys.__stderr__.write(f"\\n@@pyspark={pyspark is not None} jvm={jvm}\\n")
atexit.register(report)
sys.argv = ["sparkfs", *sys.argv[1:]]
runpy.run_module("sparkfs", run_name="__main__", alter_sys=True)
"""


# Runs several commands in one interpreter, each as `main(argv)` with its own variables and its
# own captured output, then says what they loaded: one start instead of one per command.
RUN_EACH = """
import contextlib, io, json, os, sys
from sparkfs.jobs.cli import main
done = []
for argv, env in json.loads(sys.argv[1]):
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    os.environ.clear()
    os.environ.update(saved)
    done.append([code, out.getvalue(), err.getvalue()])
pyspark = sys.modules.get("pyspark")
jvm = pyspark is not None and pyspark.SparkContext._gateway is not None
print(json.dumps({"done": done, "pyspark": pyspark is not None, "jvm": jvm}))
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str  # stderr without the exit hook's line
    pyspark: bool
    jvm: bool

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def sparkfs(*args: str, cwd: Path = REPO, **env: str) -> Result:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFS_")}
    environ.update(env, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", RUN, *args], capture_output=True, text=True,
                          cwd=cwd, env=environ, timeout=120)
    hook = re.search(r"\n?@@pyspark=(\w+) jvm=(\w+)\n", done.stderr)
    assert hook, done.stderr
    return Result(done.returncode, done.stdout, done.stderr.replace(hook.group(0), ""),
                  hook.group(1) == "True", hook.group(2) == "True")


def sparkfs_each(*commands: tuple[str, ...] | tuple[tuple[str, ...], dict[str, str]]) -> list[Result]:
    """Each command (its arguments, or its arguments and its variables), run in turn in one
    interpreter; whether pyspark or a JVM was loaded is said for all of them together."""
    calls = [(list(c[0]), c[1]) if c and isinstance(c[0], tuple) else (list(c), {}) for c in commands]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SPARKFS_")}
    done = subprocess.run([sys.executable, "-c", RUN_EACH, json.dumps(calls)], capture_output=True,
                          text=True, cwd=REPO, env={**environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    return [Result(code, out, err, report["pyspark"], report["jvm"]) for code, out, err in report["done"]]


def assert_usage_error(result: Result, *expected: str) -> None:
    """Exit status 2, exactly one ``error:`` line naming ``expected``, no traceback, no pyspark."""
    assert result.code == 2, result
    assert len(result.error_lines) == 1, result.err
    for text in expected:
        assert text in result.err, result.err
    assert "Traceback" not in result.err
    assert not result.pyspark and not result.jvm


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A local lakehouse with two (empty) Delta table folders: what ``history`` checks on disk."""
    for folder in ("sparkfs_gold/carrier_delays", "sparkfs_ops/run_records"):
        (tmp_path / "warehouse" / folder / "_delta_log").mkdir(parents=True)
    return tmp_path


# --- mistakes, caught before Spark ---------------------------------------------------------------

def test_a_job_that_needs_a_date_says_so() -> None:
    jobs = ("features", "infer", "daily")
    for job, result in zip(jobs, sparkfs_each(*(("run", job) for job in jobs)), strict=True):
        assert_usage_error(result, f"the {job} job needs --date YYYY-MM-DD, or --start/--end for a backfill")


def test_a_bad_date_shows_what_was_expected_and_found() -> None:
    month, compact = sparkfs_each(("run", "features", "--date", "2013-13-01"), ("run", "infer", "--date", "20130101"))
    assert_usage_error(month, "--date: expected YYYY-MM-DD, found '2013-13-01'", "sparkfs run --help")
    assert_usage_error(compact, "found '20130101'")


def test_a_range_must_run_forward_and_have_both_ends() -> None:
    backwards, open_ended, one_day = sparkfs_each(
        ("backfill", "features", "--start", "2013-02-01", "--end", "2013-01-01"),
        ("run", "infer", "--start", "2013-02-01"),
        ("backfill", "features", "--date", "2013-01-01"),
    )
    assert_usage_error(backwards, "--start 2013-02-01 is after --end 2013-01-01")
    assert_usage_error(open_ended, "--start needs --end")
    assert_usage_error(one_day, "backfill needs --start S --end E", "sparkfs run features --date D")


def test_an_unknown_job_suggests_the_nearest() -> None:
    assert_usage_error(sparkfs("run", "featurs", "--date", "2013-01-01"),
                       "unknown job 'featurs'; did you mean 'features'?")


def test_history_of_a_missing_table_suggests_one_that_exists(data_dir: Path) -> None:
    here = {"SPARKFS_DATA_DIR": str(data_dir)}
    short, qualified = sparkfs_each((("history", "gold.carrier_delay"), here),
                                    (("history", "sparkfs_ops.run_record"), here))
    assert_usage_error(short, "no table gold.carrier_delay", "did you mean gold.carrier_delays?")
    assert_usage_error(qualified, "did you mean ops.run_records?")


def test_config_errors_come_before_spark(tmp_path: Path) -> None:
    assert_usage_error(sparkfs("tables", "--env", "nowhere"), "unknown environment 'nowhere'",
                       "known: ['dev', 'local', 'prod']")
    conf = tmp_path / "conf"
    (conf / "env").mkdir(parents=True)
    (conf / "sparkfs.yaml").write_text("spark: [unclosed\n")
    (conf / "env" / "local.yaml").write_text("{}\n")
    assert_usage_error(sparkfs("tables", "--conf-dir", str(conf)), "sparkfs.yaml: not valid YAML")


def test_a_bad_job_config_stops_the_job_before_spark(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "env").mkdir(parents=True)
    for name in ("sparkfs.yaml", "env/local.yaml"):
        (conf / name).write_text((REPO / "conf" / name).read_text())
    (conf / "training.yaml").write_text((REPO / "conf" / "training.yaml").read_text() + "\nmodel_nmae: x\n")
    result = sparkfs("run", "train", "--conf-dir", str(conf), SPARKFS_DATA_DIR=str(tmp_path / "data"))
    assert_usage_error(result, "training.yaml: invalid configuration", "unknown key 'model_nmae'")


def test_an_expectation_only_great_expectations_rejects_is_checked_while_spark_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Importing Great Expectations takes seconds: the features job checks its suites' kwargs with
    it while the JVM starts, not before. The check before Spark lets such a suite through; the
    one run meanwhile names it."""
    from sparkfs.jobs.cli import build_parser
    from sparkfs.jobs.registry import JOBS, check_job

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    suites = conf / "expectations.yaml"
    bad = suites.read_text().replace("kwargs: {min_value: 1}}", "kwargs: {min_value: [1, 2]}}", 1)
    assert bad != suites.read_text()
    suites.write_text(bad)
    monkeypatch.setenv("SPARKFS_DATA_DIR", str(tmp_path / "data"))
    args = build_parser().parse_args(["run", "features", "--date", "2013-01-01", "--conf-dir", str(conf)])

    settings = check_job("features", args)

    late = JOBS["features"].check_while_starting
    assert late is not None
    with pytest.raises(ConfigError, match=r"expectations.yaml: suite 'flights', expect_table_row_count_to_be_between"):
        late(settings)


@pytest.mark.slow
def test_a_python_c_program_that_checks_the_suites_runs_to_its_end() -> None:
    """pyspark's Spark Connect modules, which Great Expectations imports, end a ``python -c``
    program (exit 0, "Skipping doctests" on stderr) when zstandard is missing: taken for a doctest
    run. A check in a script must not stop silently halfway."""
    code = ("from sparkfs.features.expectations import load_suites; "
            "print(len(load_suites('conf/expectations.yaml')), 'suites checked')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip().endswith("suites checked"), done.stderr


def test_work_given_to_do_while_spark_starts_runs_on_a_thread_and_its_error_stops_the_job(
    spark: object, settings: Settings
) -> None:
    ran_on, entered = [], []

    def check() -> None:
        ran_on.append(threading.current_thread())
        raise ConfigError("the suite is wrong")

    with pytest.raises(ConfigError, match="the suite is wrong"), job_context(settings, while_starting=check) as ctx:
        entered.append(ctx)
    assert entered == [] and len(ran_on) == 1 and ran_on[0] is not threading.main_thread()


def test_a_databricks_environment_on_a_laptop_says_what_it_means() -> None:
    result = sparkfs("tables", "--env", "dev")
    assert_usage_error(result, "environment 'dev' means Databricks", "Unity Catalog catalog 'main'",
                       "MLflow at 'databricks'", "This machine is not Databricks",
                       "drop --env")


def test_commands_without_dates_reject_them() -> None:
    options = [(option, command) for command in (("tables",), ("history", "gold.planes"), ("setup",))
               for option in ("--date", "--start", "--end")]
    results = sparkfs_each(*((*command, option, "2013-01-01") for option, command in options))
    for (option, _), result in zip(options, results, strict=True):
        assert_usage_error(result, f"unrecognized arguments: {option} 2013-01-01")


def test_log_levels_verbose_works_and_a_bad_one_is_a_clear_error() -> None:
    verbose, loud = sparkfs_each((("run", "features"), {"SPARKFS_LOG_LEVEL": "verbose"}),
                                 (("run", "features"), {"SPARKFS_LOG_LEVEL": "loud"}))
    assert_usage_error(verbose, "features job needs --date")
    assert_usage_error(loud, "SPARKFS_LOG_LEVEL is 'loud'; expected one of debug, verbose, info")
    assert log_level(environ={"SPARKFS_LOG_LEVEL": "Verbose"}) == logging.DEBUG
    assert log_level(environ={}) == logging.INFO
    assert log_level(True, environ={"SPARKFS_LOG_LEVEL": "error"}) == logging.DEBUG


def test_a_failure_that_is_not_a_usage_error_exits_1_with_one_error_line(tmp_path: Path) -> None:
    """Java missing: the command ran (setup) and failed; no JVM could start."""
    result = sparkfs("setup", JAVA_HOME=str(tmp_path), SPARKFS_DATA_DIR=str(tmp_path / "data"))
    assert result.code == 1, result
    assert len(result.error_lines) == 1 and "JAVA_HOME" in result.error_lines[0], result.err
    assert "Traceback" not in result.err and not result.jvm


def test_spark_submit_script_checks_its_arguments_too() -> None:
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "infer.py"), "--date", "2013-02-30"],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.returncode == 2
    assert done.stderr.startswith("error: --date: expected YYYY-MM-DD, found '2013-02-30'"), done.stderr


# --- conventions ---------------------------------------------------------------------------------

def test_version() -> None:
    result = sparkfs("--version")
    assert result.code == 0 and re.match(r"sparkfs \d+\.\d+\.\d+ \(pyspark ", result.out), result
    assert not result.pyspark


def test_run_help_says_what_each_job_does_and_what_its_date_means() -> None:
    result = sparkfs("run", "--help")
    assert result.code == 0 and not result.pyspark
    text = " ".join(result.out.split())  # the help text wraps lines
    for job in ("features", "infer", "train", "daily", "smoke"):
        assert re.search(rf"\n  {job} +\S", result.out), f"{job} is not listed:\n{result.out}"
    assert "--date D: the events of day D" in text
    assert "--date D: the spine's rows on day D" in text
    assert "--date D: on the configured start up to D" in text
    assert "--date R: the run date (the day the scheduler starts the job; features are built for R-1" in text


def environment_variables() -> set[str]:
    """Every ``SPARKFS_*`` name the package, conf/, jobs/, notebooks/ and the tests' helpers read
    (not the test files: they make up names on purpose)."""
    names: set[str] = set()
    for folder, pattern in (("sparkfs", "*.py"), ("conf", "*.yaml"), ("jobs", "*.py"),
                            ("notebooks", "*.py"), ("tests", "*.py")):
        for path in (REPO / folder).rglob(pattern):
            if not path.name.startswith("test_"):
                names |= set(re.findall(r"\bSPARKFS_[A-Z_]*[A-Z]", path.read_text()))
    return names


def test_every_environment_variable_is_documented_in_help_and_readme() -> None:
    names = environment_variables()
    assert {"SPARKFS_ENV", "SPARKFS_DATA_DIR", "SPARKFS_LOG_LEVEL"} <= names  # the scan works
    help_text = sparkfs("--help").out
    readme = (REPO / "README.md").read_text().split("\n## Running jobs\n", 1)[1].split("\n## ", 1)[0]
    assert not sorted(n for n in names if n not in help_text), help_text
    assert not sorted(n for n in names if n not in readme), "README's Running jobs section"


# --- what errors and logs look like --------------------------------------------------------------

def test_report_error_prints_once_with_the_status_of_its_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert report_error(UsageError("bad argument")) == 2
    assert report_error(ConfigError("bad conf")) == 2
    assert report_error(SparkfsError("the job failed\n  because")) == 1
    assert capsys.readouterr().err == "error: bad argument\nerror: bad conf\nerror: the job failed\n  because\n"

    failure = RuntimeError("deep down\nmore lines")
    mark_spark_log(failure, Path("/tmp/spark.log"))
    assert report_error(failure) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: RuntimeError: deep down\n") and "more lines" not in err
    assert "run the command again with -v" in err and "Spark's own log: /tmp/spark.log" in err


def test_stage_lines_leave_out_what_is_unknown() -> None:
    record = StageRecord("merge", datetime(2013, 1, 1), table_name="`sparkfs_ops`.`smoke_events`",
                         table_version=1, rows_in=4, rows_out=1234, status="succeeded", duration_s=3.21)
    assert describe_stage(record) == "succeeded in 3.2s; rows in 4, out 1,234; sparkfs_ops.smoke_events v1"
    assert describe_stage(StageRecord("upstream", datetime(2013, 1, 1), status="failed")) == "failed in 0.0s"


def test_checksums_print_as_unsigned_hex() -> None:
    assert unsigned_hex(-1) == "ffffffffffffffff"
    assert unsigned_hex(-(2**64) - 1) == "ffffffffffffffff"  # a sum beyond 64 bits is folded
    assert unsigned_hex(2**64 + 5) == "0000000000000005"
    assert unsigned_hex(0x72E16A3D3D423120) == "72e16a3d3d423120"


def test_history_lines_align_and_leave_unreported_counts_blank() -> None:
    rows = [
        {"version": 1, "timestamp_utc": "2013-01-02 03:04:05", "operation": "MERGE",
         "rows_inserted": 1234, "rows_updated": 0, "rows_deleted": 0},
        {"version": 0, "timestamp_utc": "2013-01-01 00:00:00", "operation": "CREATE TABLE",
         "rows_inserted": None, "rows_updated": None, "rows_deleted": None},
    ]
    header, merge, create = format_history(rows)
    assert merge.split() == ["1", "2013-01-02", "03:04:05", "MERGE", "1,234", "0", "0"]
    assert create.split() == ["0", "2013-01-01", "00:00:00", "CREATE", "TABLE"]
    assert len(merge) == len(header) and create == create.rstrip()


LOGGING = """
import logging, sys, warnings
from sparkfs.jobs.console import setup_logging
setup_logging(logging.DEBUG if sys.argv[1] == "debug" else logging.INFO)
if sys.argv[1] == "info":
    import mlflow  # it configures its own logging at import unless told not to
logging.getLogger("sparkfs.core.runs").info("stage done")
logging.getLogger("sparkfs.core.runs").debug("details")
logging.getLogger("mlflow.store").info("mlflow plumbing")
logging.getLogger("mlflow.pyfunc").warning("mlflow pickling note")
logging.getLogger("somelib").warning("a warning of another library")
warnings.warn("a library's deprecation", FutureWarning)
"""


@pytest.mark.parametrize("level", ["info", "debug"])
def test_log_lines_have_one_format_and_libraries_speak_only_when_verbose(level: str) -> None:
    # A fresh environment: a job run in this process earlier (another test) may have set the
    # variables a quiet run sets for its children (PYTHONWARNINGS, TQDM_DISABLE).
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("PYTHONWARNINGS", "TQDM_DISABLE", "MLFLOW_CONFIGURE_LOGGING")}
    done = subprocess.run([sys.executable, "-c", LOGGING, level], capture_output=True, text=True,
                          timeout=120, env={**inherited, "PYTHONPATH": str(REPO)})
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d sparkfs\.core\.runs: stage done", lines[0]), lines
    assert re.search(r"^\d\d:\d\d:\d\d WARNING somelib: a warning of another library$", done.stderr, re.M)
    verbose = level == "debug"
    for text in ("details", "mlflow plumbing", "mlflow pickling note", "a library's deprecation"):
        assert (text in done.stderr) == verbose, (text, done.stderr)
    if verbose:  # MLflow's lines come through sparkfs's handler, in its format
        assert re.search(r"^\d\d:\d\d:\d\d WARNING mlflow\.pyfunc: mlflow pickling note$", done.stderr, re.M)


def test_simulate_needs_a_start_and_a_positive_number_of_days() -> None:
    no_days, no_start = sparkfs_each(("simulate", "--start", "2013-12-01", "--days", "0"), ("simulate", "--days", "3"))
    assert_usage_error(no_days, "--days must be at least 1, got 0")
    assert_usage_error(no_start, "the following arguments are required: --start")
