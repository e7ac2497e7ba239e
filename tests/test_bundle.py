"""The Databricks Asset Bundle, checked offline: typed models, JSON schema, entry points, files,
Quartz cron, task dependencies, references; and that each check fails on a broken bundle."""

from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

import bundle_checks as bc
import pytest

from sparkfs.jobs.context import add_common_arguments, settings_from_args, window_from_args
from sparkfs.jobs.registry import JOBS

DAILY, TRAINING, MAINTENANCE = "resources/daily.yml", "resources/training.yml", "resources/maintenance.yml"
START = datetime(2026, 1, 1)  # where the schedules' runs are computed from (a Thursday)


@pytest.fixture(scope="module")
def bundle() -> bc.Bundle:
    return bc.load_bundle()


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    path = bc.find_schema()
    if path is None:
        pytest.skip(
            f"no copy of the CLI's bundle schema: looked for {bc.SCHEMA_RELPATH} next to the clone "
            f"and above it, and ${bc.SCHEMA_VAR}; the typed-model checks still ran"
        )
    return bc.load_schema(path)


def daily(b: bc.Bundle) -> dict[str, Any]:
    return b.files[DAILY]["resources"]["jobs"]["sparkfs_daily"]


def task(job: dict[str, Any], key: str) -> dict[str, Any]:
    return next(t for t in job["tasks"] if t["task_key"] == key)


# --- the real bundle passes every check -----------------------------------------------------------

CHECKS = [
    bc.key_problems, bc.typed_model_problems, bc.entry_point_problems, bc.file_problems,
    bc.cron_problems, bc.task_problems, bc.reference_problems, bc.target_problems,
    bc.access_problems, bc.wheel_dependency_problems,
]


def test_bundle_reads_every_include(bundle: bc.Bundle) -> None:
    assert sorted(bundle.files) == ["databricks.yml", DAILY, MAINTENANCE, TRAINING]
    assert sorted(k for _, k, _ in bundle.jobs()) == ["sparkfs_daily", "sparkfs_weekly_maintenance",
                                                      "sparkfs_weekly_training"]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_bundle_passes(bundle: bc.Bundle, check: Any) -> None:
    assert check(bundle) == []


def test_bundle_valid_against_cli_schema(bundle: bc.Bundle, schema: dict[str, Any]) -> None:
    assert bc.schema_problems(bundle, schema) == []


def test_known_keys_match_cli_schema(schema: dict[str, Any]) -> None:
    target = schema["$defs"]["github.com"]["databricks"]["cli"]["bundle"]["config.Target"]
    target = target.get("oneOf", [target])[0]
    assert set(schema["properties"]) == bc.TOP_LEVEL_KEYS
    assert set(target["properties"]) == bc.TARGET_KEYS


# --- what the jobs do ------------------------------------------------------------------------------

def test_daily_job_runs_the_daily_loop_at_six_for_the_trigger_date(bundle: bc.Bundle) -> None:
    job = daily(bundle)
    runs = bc.parse_quartz(job["schedule"]["quartz_cron_expression"]).runs(START, 365)
    assert runs == [datetime(2026, 1, 1, 6) + timedelta(days=n) for n in range(365)]  # all of 2026
    assert job["schedule"]["timezone_id"] == "UTC"
    [loop, monitor] = job["tasks"]  # features for R-1, R's schedule, R-1's labels, predictions for R
    assert monitor["python_wheel_task"]["entry_point"] == "sparkfs-monitor"
    assert monitor["depends_on"] == [{"task_key": "daily"}]
    assert monitor["python_wheel_task"]["parameters"] == loop["python_wheel_task"]["parameters"]
    assert loop["python_wheel_task"]["entry_point"] == "sparkfs-daily"
    assert loop["python_wheel_task"]["parameters"][:2] == ["--date", "{{job.parameters.date}}"]
    # The run date is the trigger's date; the job derives R-1 itself.
    date_param = next(p for p in job["parameters"] if p["name"] == "date")
    assert date_param["default"] == "{{job.trigger.time.iso_date}}"


def test_training_job_runs_once_a_week(bundle: bc.Bundle) -> None:
    job = bundle.job("sparkfs_weekly_training")
    runs = bc.parse_quartz(job["schedule"]["quartz_cron_expression"]).runs(START, 53)
    assert [b - a for a, b in pairwise(runs)] == [timedelta(weeks=1)] * 52
    assert [t["python_wheel_task"]["entry_point"] for t in job["tasks"]] == ["sparkfs-train"]


def test_maintenance_runs_once_a_week_apart_from_the_daily_and_training_runs(bundle: bc.Bundle) -> None:
    job = bundle.job("sparkfs_weekly_maintenance")
    runs = bc.parse_quartz(job["schedule"]["quartz_cron_expression"]).runs(START, 53)
    assert [b - a for a, b in pairwise(runs)] == [timedelta(weeks=1)] * 52
    assert {(r.weekday(), r.hour) for r in runs} == {(6, 4)}  # Sundays 04:00 UTC
    assert [t["python_wheel_task"]["entry_point"] for t in job["tasks"]] == ["sparkfs-maintain"]


def test_every_task_retries_times_out_and_alerts(bundle: bc.Bundle) -> None:
    for _, key, job in bundle.jobs():
        assert job["email_notifications"]["on_failure"] == ["${var.alert_email}"], key
        assert job["timeout_seconds"] > 0, key
        for t in job["tasks"]:
            assert t["max_retries"] >= 1 and t["timeout_seconds"] > 0, (key, t["task_key"])
            assert t["environment_key"] == "sparkfs", (key, t["task_key"])


def test_wheel_entry_points_are_registered_jobs(bundle: bc.Bundle) -> None:
    scripts = bc.pyproject(bundle.root)["project"]["scripts"]
    for _, _, _, t in bc.wheel_tasks(bundle):
        module, _, func = scripts[t["python_wheel_task"]["entry_point"]].partition(":")
        assert module == "sparkfs.jobs.entry_points" and func in JOBS


def resolve(text: str, job: dict[str, Any], target: str, b: bc.Bundle, run_date: str) -> str:
    """What Databricks would pass: job parameter defaults, bundle variables, the synced root."""
    spec = b.main["targets"][target]
    variables = {k: (spec.get("variables") or {}).get(k, v.get("default")) for k, v in b.main["variables"].items()}
    params = {p["name"]: p["default"] for p in job["parameters"]}
    text = re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: params[m.group(1)], text)
    text = text.replace("{{job.trigger.time.iso_date}}", run_date).replace("${bundle.target}", target)
    text = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(variables[m.group(1)]), text)
    text = text.replace("${workspace.file_path}", str(b.root))  # the bundle root is synced there
    assert "${" not in text and "{{" not in text, f"unresolved reference in {text!r}"
    return text


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_task_parameters_parse_into_settings(bundle: bc.Bundle, target: str) -> None:
    """The argv each task gets on Databricks parses with the jobs' own parser and loads the
    target's settings from the synced conf/ folder."""
    for _, key, job, t in bc.wheel_tasks(bundle):
        argv = [resolve(a, job, target, bundle, "2013-06-01") for a in t["python_wheel_task"]["parameters"]]
        parser = argparse.ArgumentParser()
        add_common_arguments(parser)
        args = parser.parse_args(argv)
        window = window_from_args(args)
        assert window is not None and str(window) == "2013-06-01", key
        settings = settings_from_args(args)
        assert settings.env == target
        assert Path(settings.conf_dir) == bundle.root / "conf"
        assert settings.storage.catalog == {"dev": "main", "prod": "prod"}[target]
        assert settings.mlflow.tracking_uri == "databricks"


def test_entry_point_failure_exits_nonzero(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A python_wheel_task calls the function itself: a failed job must raise, not return 1."""
    from sparkfs.jobs import entry_points

    monkeypatch.setattr(sys, "argv", ["sparkfs-smoke", "--env", "nowhere", "--date", "2013-01-01"])
    with pytest.raises(SystemExit) as exc:
        entry_points.smoke()
    assert exc.value.code == 2  # an unknown environment is a usage error: nothing ran
    assert "unknown environment 'nowhere'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(JOBS))
def test_spark_submit_script_per_job(name: str) -> None:
    script = bc.ROOT / "jobs" / f"{name}.py"
    out = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=bc.ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"usage: sparkfs-{name}" in out.stdout and "--conf-dir" in out.stdout


# --- each check fails on a broken bundle, naming the problem ----------------------------------------

def test_misspelled_job_key_fails_typed_model(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    job = daily(broken)
    job["shedule"] = job.pop("schedule")
    task(job, "daily")["python_wheel_task"]["entry_pont"] = "x"
    problems = bc.typed_model_problems(broken)
    assert problems == [f"{DAILY}: resources.jobs.sparkfs_daily: Unexpected field 'shedule' for class Job"]
    del job["shedule"]
    assert bc.typed_model_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily: Unexpected field 'entry_pont' for class PythonWheelTask"
    ]


def test_bad_enum_and_missing_required_fail_typed_model(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    daily(broken)["schedule"]["pause_status"] = "PAUSE"
    del broken.job("sparkfs_weekly_training")["tasks"][0]["task_key"]
    problems = bc.typed_model_problems(broken)
    assert len(problems) == 2
    assert "'PAUSE' is not a valid PauseStatus" in problems[0]
    assert problems[1].startswith(f"{TRAINING}: resources.jobs.sparkfs_weekly_training:") and "task_key" in problems[1]


def test_misspelled_keys_fail_schema(bundle: bc.Bundle, schema: dict[str, Any]) -> None:
    broken = bundle.copy()
    task(daily(broken), "daily")["max_retires"] = 2
    broken.main["targets"]["prod"]["mdoe"] = "production"
    broken.main["artifacts"]["sparkfs_wheel"]["dynamic_version"] = "yes"
    assert bc.schema_problems(broken, schema) == [
        "databricks.yml: artifacts.sparkfs_wheel.dynamic_version: 'yes' is not of type boolean (nor a ${...} reference)",
        "databricks.yml: targets.prod: Additional properties are not allowed ('mdoe' was unexpected)",
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks.0: Additional properties are not allowed ('max_retires' was unexpected)",
    ]


def test_misspelled_top_level_and_target_keys(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    broken.main["variabels"] = {}
    broken.main["targets"]["dev"]["defualt"] = True
    problems = bc.key_problems(broken)
    assert len(problems) == 2
    assert problems[0].startswith("databricks.yml: unknown top-level key 'variabels'; valid: artifacts, bundle")
    assert problems[1].startswith("databricks.yml: targets.dev: unknown key 'defualt'; valid: artifacts")


def test_missing_entry_point(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    task(daily(broken), "daily")["python_wheel_task"]["entry_point"] = "sparkfs-inference"
    [problem] = bc.entry_point_problems(broken)
    assert problem.startswith(
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[daily].python_wheel_task: entry_point "
        "'sparkfs-inference' is not in pyproject.toml [project.scripts]; declared: ['sparkfs', 'sparkfs-daily'"
    )


def test_entry_point_that_does_not_import(bundle: bc.Bundle, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "sparkfs"\n[project.scripts]\n'
        '"sparkfs-daily" = "sparkfs.nowhere:daily"\n"sparkfs-train" = "sparkfs.jobs.registry:JOBS"\n'
        '"sparkfs-monitor" = "sparkfs.jobs.entry_points:monitor"\n'
        '"sparkfs-maintain" = "sparkfs.jobs.entry_points:maintain"\n'
    )
    problems = bc.entry_point_problems(bc.Bundle(tmp_path, bundle.files))
    assert len(problems) == 2
    assert "'sparkfs-daily' = sparkfs.nowhere:daily does not import: No module named 'sparkfs.nowhere'" in problems[0]
    assert "'sparkfs-train' = sparkfs.jobs.registry:JOBS is not callable" in problems[1]
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "sparkfs"\n[project.scripts]\n'
        '"sparkfs-daily" = "sparkfs.jobs.entry_points:no_such_function"\n"sparkfs-train" = "sparkfs.jobs.entry_points:train"\n'
        '"sparkfs-monitor" = "sparkfs.jobs.entry_points:monitor"\n'
        '"sparkfs-maintain" = "sparkfs.jobs.entry_points:maintain"\n'
    )
    [problem] = bc.entry_point_problems(bc.Bundle(tmp_path, bundle.files))
    assert "'sparkfs-daily' = sparkfs.jobs.entry_points:no_such_function does not import" in problem


def test_wrong_package_name(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    task(daily(broken), "daily")["python_wheel_task"]["package_name"] = "sparkfs_jobs"
    [problem] = bc.entry_point_problems(broken)
    assert "package_name 'sparkfs_jobs' is not this project ('sparkfs')" in problem


def test_unknown_depends_on_task(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    task(daily(broken), "daily")["depends_on"] = [{"task_key": "feature"}]
    assert bc.task_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[daily].depends_on: 'feature' is not a task "
        "of this job; tasks: ['daily', 'monitor']"
    ]


def test_depends_on_a_task_of_another_job(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    task(daily(broken), "daily")["depends_on"] = [{"task_key": "train"}]
    [problem] = bc.task_problems(broken)
    assert "'train' is not a task of this job" in problem


def two_tasks(broken: bc.Bundle) -> bc.Bundle:
    """The daily job split into tasks ``features`` and ``inference`` (depending on it), to break."""
    features, inference = copy.deepcopy(task(daily(broken), "daily")), copy.deepcopy(task(daily(broken), "daily"))
    features["task_key"], inference["task_key"] = "features", "inference"
    inference["depends_on"] = [{"task_key": "features"}]
    daily(broken)["tasks"] = [features, inference]
    return broken


def test_depends_on_cycle_and_duplicate_keys(bundle: bc.Bundle) -> None:
    broken = two_tasks(bundle.copy())
    task(daily(broken), "features")["depends_on"] = [{"task_key": "inference"}]
    assert bc.task_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily: depends_on makes a cycle: features -> inference -> features"
    ]
    publish = copy.deepcopy(task(daily(broken), "inference"))
    publish["task_key"], publish["depends_on"] = "publish", [{"task_key": "inference"}]
    daily(broken)["tasks"].append(publish)
    task(daily(broken), "features")["depends_on"] = [{"task_key": "publish"}]
    assert bc.task_problems(broken) == [  # the arrows read "depends on"
        f"{DAILY}: resources.jobs.sparkfs_daily: depends_on makes a cycle: features -> publish -> inference -> features"
    ]
    daily(broken)["tasks"].remove(publish)
    task(daily(broken), "features")["depends_on"] = [{"task_key": "features"}]
    assert bc.task_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily: depends_on makes a cycle: features -> features"
    ]
    task(daily(broken), "features")["depends_on"] = []
    renamed = task(daily(broken), "inference")
    renamed["task_key"], renamed["depends_on"] = "features", []
    [problem] = bc.task_problems(broken)
    assert "task_key 'features' is used by more than one task" in problem


def test_task_without_compute_or_with_unknown_environment(bundle: bc.Bundle) -> None:
    broken = two_tasks(bundle.copy())
    del task(daily(broken), "features")["environment_key"]
    task(daily(broken), "inference")["environment_key"] = "default"
    assert bc.task_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[features]: no compute: set environment_key "
        "(serverless), job_cluster_key, new_cluster or existing_cluster_id",
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[inference]: environment_key 'default' is not in "
        "the job's environments ['sparkfs']",
    ]


def test_missing_files(bundle: bc.Bundle) -> None:
    broken = two_tasks(bundle.copy())
    broken.main["include"] = ["resources/*.yml", "jobs/*.yaml"]
    job = daily(broken)
    job["environments"][0]["spec"]["dependencies"] = ["../build/*.whl"]
    params = task(job, "features")["python_wheel_task"]["parameters"]
    params[params.index("${workspace.file_path}/conf")] = "${workspace.file_path}/config"
    task(job, "inference")["notebook_task"] = {"notebook_path": "../notebooks/score"}
    problems = bc.file_problems(broken)
    assert problems[0] == "databricks.yml: include 'jobs/*.yaml' matches no file"
    assert problems[1].startswith(
        f"{DAILY}: resources.jobs.sparkfs_daily.environments[sparkfs]: wheel '../build/*.whl' is not built by any whl artifact"
    )
    assert problems[2] == (
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[features]: '${{workspace.file_path}}/config' names "
        "config, which is not in the bundle root (synced to workspace.file_path)"
    )
    assert problems[3] == (
        f"{DAILY}: resources.jobs.sparkfs_daily.tasks[inference].notebook_task.notebook_path: "
        "'../notebooks/score' does not exist"
    )
    assert len(problems) == 4


def test_bad_cron_and_time_zone(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    daily(broken)["schedule"]["quartz_cron_expression"] = "0 6 * * *"  # unix cron, not Quartz
    broken.job("sparkfs_weekly_training")["schedule"]["timezone_id"] = "Mars/Olympus"
    assert bc.cron_problems(broken) == [
        f"{DAILY}: resources.jobs.sparkfs_daily.schedule.quartz_cron_expression: '0 6 * * *' has 5 fields; "
        "Quartz needs 6 or 7: seconds minutes hours day-of-month month day-of-week [year]",
        f"{TRAINING}: resources.jobs.sparkfs_weekly_training.schedule.timezone_id: 'Mars/Olympus' is not "
        "a known time zone (e.g. UTC, Europe/Berlin)",
    ]
    daily(broken)["schedule"]["quartz_cron_expression"] = "0 0 6 ? * 8"  # Quartz counts SUN-SAT 1-7
    assert bc.cron_problems(broken)[0] == (
        f"{DAILY}: resources.jobs.sparkfs_daily.schedule.quartz_cron_expression: '0 0 6 ? * 8': "
        "day-of-week field '8': 8 is out of range 1-7 (1 = SUN ... 7 = SAT)"
    )
    daily(broken)["schedule"]["quartz_cron_expression"] = "0 0 25 * * ?"
    assert bc.cron_problems(broken)[0].startswith(
        f"{DAILY}: resources.jobs.sparkfs_daily.schedule.quartz_cron_expression: '0 0 25 * * ?': "
        "hours field '25' is not valid (hours: 0-23)"
    )


def test_undeclared_references(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    job = daily(broken)
    job["email_notifications"]["on_failure"] = ["${var.alert_mail}"]
    params = task(job, "daily")["python_wheel_task"]["parameters"]
    params[params.index("{{job.parameters.date}}")] = "{{job.parameters.run_date}}"
    problems = bc.reference_problems(broken)
    assert problems == [
        f"{DAILY}: '${{var.alert_mail}}' is not a declared variable; declared: ['admin_group', 'alert_email', 'catalog', 'reader_group', 'service_principal']",
        f"{DAILY}: resources.jobs.sparkfs_daily: '{{{{job.parameters.run_date}}}}' is not a job parameter; "
        "parameters: ['catalog', 'date', 'env']",
    ]


def test_bad_targets(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    targets = broken.main["targets"]
    targets["prod"]["default"] = True
    targets["prod"]["mode"] = "prod"
    targets["dev"]["variables"]["catalogue"] = "x"
    assert bc.target_problems(broken) == [
        "databricks.yml: targets: exactly one target needs 'default: true'; found ['dev', 'prod']",
        "databricks.yml: targets.dev.variables: 'catalogue' is not declared under variables; "
        "declared: ['admin_group', 'alert_email', 'catalog', 'reader_group', 'service_principal']",
        "databricks.yml: targets.prod.mode: 'prod'; the CLI accepts 'development' or 'production'",
    ]
    targets["prod"]["mode"] = "production"
    del targets["prod"]["workspace"], targets["prod"]["permissions"]
    assert bc.target_problems(broken)[-2:] == [
        "databricks.yml: targets.prod: a production target needs workspace.root_path",
        "databricks.yml: targets.prod: a production target needs permissions",
    ]


def test_prod_is_locked_down(bundle: bc.Bundle) -> None:
    prod = bundle.main["targets"]["prod"]
    assert prod["workspace"]["root_path"].startswith("/Workspace/Users/${var.service_principal}/")
    assert prod["run_as"] == {"service_principal_name": "${var.service_principal}"}
    assert {p.get("group_name") or p.get("service_principal_name"): p["level"] for p in prod["permissions"]} == {
        "${var.service_principal}": "CAN_MANAGE", "${var.admin_group}": "CAN_MANAGE", "${var.reader_group}": "CAN_VIEW",
    }
    schemas = prod["resources"]["schemas"]
    assert sorted(s["name"] for s in schemas.values()) == [
        "sparkfs_bronze", "sparkfs_gold", "sparkfs_ml", "sparkfs_monitoring", "sparkfs_ops", "sparkfs_silver"]
    assert all(s["lifecycle"]["prevent_destroy"] for s in schemas.values())


def test_an_open_prod_target_is_flagged(bundle: bc.Bundle) -> None:
    broken = bundle.copy()
    prod = broken.main["targets"]["prod"]
    prod["workspace"]["root_path"] = "/Workspace/Shared/.bundle/${bundle.name}/${bundle.target}"
    prod["permissions"].append({"level": "CAN_MANAGE", "group_name": "users"})
    schemas = prod["resources"]["schemas"]
    del schemas["sparkfs_ops"]
    schemas["sparkfs_silver"]["grants"] = [{"principal": "${var.service_principal}", "privileges": ["MODIFY"]}]  # no readers
    schemas["sparkfs_gold"]["grants"] = [{"principal": "${var.reader_group}", "privileges": ["USE_SCHEMA", "SELECT", "MODIFY"]}]
    assert bc.access_problems(broken) == [
        "databricks.yml: targets.prod.workspace.root_path: /Workspace/Shared/.bundle/${bundle.name}/${bundle.target} "
        "is writable by all workspace users; deploy under /Workspace/Users/${var.service_principal}/...",
        "databricks.yml: targets.prod.permissions: group 'users' has CAN_MANAGE; at most CAN_VIEW",
        "databricks.yml: targets.prod: schema 'sparkfs_gold' grants write privileges to ['${var.reader_group}']; "
        "only the service principal ${var.service_principal} may write",
        "databricks.yml: targets.prod.resources.schemas: no schema 'sparkfs_ops' with grants; the jobs write it",
        "databricks.yml: targets.prod: schema 'sparkfs_silver' grants no reader group (a variable) ['SELECT', 'USE_SCHEMA']",
    ]
    prod["run_as"] = {"user_name": "someone@example.com"}
    assert bc.access_problems(broken)[1] == (
        "databricks.yml: targets.prod.run_as: the prod jobs must run as a service principal given by a variable "
        "(service_principal_name: ${var.<name>}); found {'user_name': 'someone@example.com'}"
    )


def test_wheel_requiring_spark(bundle: bc.Bundle, tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "sparkfs"\ndependencies = ["pandas>=2", "PySpark==4.2.0", "delta_spark>=4"]\n'
    )
    problems = bc.wheel_dependency_problems(bc.Bundle(tmp_path, bundle.files))
    assert [p.split(";")[0] for p in problems] == [
        "pyproject.toml: [project.dependencies] has 'delta_spark>=4'",
        "pyproject.toml: [project.dependencies] has 'PySpark==4.2.0'",
    ]


# --- Quartz cron, checked and run by croniter ----------------------------------------------------

DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")  # datetime.weekday() order


def fired(expression: str, field: str, count: int = 1200) -> set[Any]:
    """The values of one part of the first ``count`` fire times after START (fewer when a year
    field ends the schedule)."""
    runs = bc.parse_quartz(expression).runs(START, count)
    assert runs, expression
    if field == "weekday":
        return {DAY_NAMES[t.weekday()] for t in runs}
    return {getattr(t, field) for t in runs}


@pytest.mark.parametrize(
    ("expression", "field", "expected"),
    [
        ("0 0 6 * * ?", "hour", {6}),
        ("0 0/15 * * * ?", "minute", {0, 15, 30, 45}),
        ("0 5/20 * * * ?", "minute", {5, 25, 45}),
        ("*/20 * * * * ?", "second", {0, 20, 40}),
        ("0 0 22-2 * * ?", "hour", {22, 23, 0, 1, 2}),  # Quartz wraps a range past the end
        ("0 0 9-17/4 ? * MON-FRI", "hour", {9, 13, 17}),
        ("0 0 9 ? * MON-FRI", "weekday", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
        ("0 0 9 ? * 2-6", "weekday", {"Mon", "Tue", "Wed", "Thu", "Fri"}),  # 1 = SUN in Quartz
        ("0 0 9 ? * mon,WED,7", "weekday", {"Mon", "Wed", "Sat"}),
        ("0 0 9 ? * 1/2", "weekday", {"Sun", "Tue", "Thu", "Sat"}),  # the step is not a day
        ("0 0 9 ? * FRI-MON", "weekday", {"Fri", "Sat", "Sun", "Mon"}),
        ("0 0 9 ? * L", "weekday", {"Sat"}),  # alone, L is the last day of the week
        ("0 0 0 1,15 JAN-MAR,DEC ?", "month", {1, 2, 3, 12}),
        ("0 0 0 1,15 * ?", "day", {1, 15}),
        ("0 0 12 * * ?", "day", set(range(1, 32))),
        ("0 0 12 * * ? 2030", "year", {2030}),
        ("0 0 12 * * ? 2026-2028", "year", {2026, 2027, 2028}),
        ("0 0 8 ? * MON", "weekday", {"Mon"}),
        ("0 0 8 ? * MON", "day", set(range(1, 32))),  # '?': any day of the month
    ],
)
def test_quartz_runs(expression: str, field: str, expected: set[Any]) -> None:
    assert fired(expression, field) == expected


def test_quartz_without_year_field() -> None:
    assert fired("0 0 12 * * ?", "year") == {2026, 2027, 2028, 2029}


def in_last_week(t: datetime) -> bool:
    return (t + timedelta(weeks=1)).month != t.month


@pytest.mark.parametrize(
    ("expression", "fires_on"),
    [
        ("0 0 0 L * ?", lambda t: (t + timedelta(days=1)).day == 1),
        ("0 0 0 15W * ?", lambda t: t.weekday() < 5 and 14 <= t.day <= 16),
        ("0 0 0 ? * 6#3", lambda t: DAY_NAMES[t.weekday()] == "Fri" and 15 <= t.day <= 21),
        ("0 0 0 ? * FRI#1", lambda t: DAY_NAMES[t.weekday()] == "Fri" and t.day <= 7),
        ("0 0 0 ? * 5L", lambda t: DAY_NAMES[t.weekday()] == "Thu" and in_last_week(t)),
        ("0 0 0 ? * FRIL", lambda t: DAY_NAMES[t.weekday()] == "Fri" and in_last_week(t)),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_quartz_special_days(expression: str, fires_on: Any) -> None:
    runs = bc.parse_quartz(expression).runs(START, 24)
    assert all(fires_on(t) for t in runs), runs
    assert len({(t.year, t.month) for t in runs}) == 24  # once a month


@pytest.mark.parametrize("expression", ["0 0 0 L-3 * ?", "0 0 0 LW * ?"])
def test_quartz_only_days_are_checked_not_run(expression: str) -> None:
    cron = bc.parse_quartz(expression)
    assert cron.quartz_only == expression.split()[3] and cron.croniter == "0 0 0 L * ?"
    with pytest.raises(ValueError, match="croniter cannot compute"):
        cron.runs(START, 1)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 6 * * *", "has 5 fields; Quartz needs 6 or 7"),
        ("0 0 6 * * ? 2030 x", "has 8 fields"),
        ("0 0 6 * * *", "exactly one of day-of-month ('*') and day-of-week ('*') must be '?'"),
        ("0 0 6 ? * ?", "exactly one of day-of-month ('?') and day-of-week ('?') must be '?'"),
        ("0 0 6 1 * MON", "exactly one of day-of-month ('1') and day-of-week ('MON') must be '?'"),
        ("60 0 6 * * ?", "seconds field '60' is not valid (seconds: 0-59)"),
        ("0 0 24 * * ?", "hours field '24' is not valid (hours: 0-23)"),
        ("0 0 6 0 * ?", "day-of-month field '0' is not valid (day-of-month: 1-31"),
        ("0 0 6 * 13 ?", "month field '13' is not valid (month: 1-12 or JAN-DEC)"),
        ("0 0 6 ? * 8", "day-of-week field '8': 8 is out of range 1-7 (1 = SUN ... 7 = SAT)"),
        ("0 0 6 ? * 0", "day-of-week field '0': 0 is out of range 1-7"),  # croniter's SUN
        ("0 0 6 ? * MONDAY", "day-of-week field 'MONDAY' is not valid (day-of-week: 1-7 (1 = SUN) or SUN-SAT"),
        ("0 0 6 * JANUARY ?", "month field 'JANUARY' is not valid (month: 1-12 or JAN-DEC)"),
        ("0 0 6 ? * MON-", "day-of-week field 'MON-' is not valid"),
        ("0 0/0 6 * * ?", "minutes field '0/0' is not valid (minutes: 0-59)"),
        ("0 0/61 6 * * ?", "minutes field '0/61': step '61' is larger than the field's 60 values"),
        ("0 0/x 6 * * ?", "minutes field '0/x' is not valid"),
        ("0 0 6,,7 * * ?", "hours field '6,,7' is not valid"),
        ("? 0 6 * * ?", "seconds field '?' is not valid"),
        ("0 0 6 L,15 * ?", "L / W forms are 'L', 'L-n', 'LW' or 'nW', alone"),
        ("0 0 6 W15 * ?", "L / W forms"),  # croniter's spelling, not Quartz's
        ("0 0 6 32W * ?", "day-of-month field '32W' is not valid"),
        ("0 0 6 L-31 * ?", "offset in 'L-31' must be 1-30"),
        ("0 0 6 ? * 6#6", "day-of-week field '6#6' is not valid"),
        ("0 0 6 ? * 6#2,7", "'#' and 'L' forms are 'n#k', 'nL' or 'L', alone"),
        ("0 0 6 ? * 2#1,3#2", "'#' and 'L' forms"),  # croniter takes a list; Quartz one '#'
        ("0 0 6 ? * 9L", "9 is out of range 1-7"),
        ("0 0 6 * * ? 1969", "year field '1969' is not valid (year: 1970-2099)"),
        ("0 0 6 W * ?", "L / W forms"),
    ],
)
def test_quartz_rejects(expression: str, message: str) -> None:
    with pytest.raises(ValueError) as exc:
        bc.parse_quartz(expression)
    assert message in str(exc.value)
    assert f"'{expression}'" in str(exc.value)
