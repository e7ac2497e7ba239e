"""Offline checks of the Databricks Asset Bundle (``databricks.yml`` + its ``include`` files).

The Databricks CLI is not needed: each check reads the bundle as YAML and returns a list of
problems (empty when the bundle is fine), each naming the file, the key and what is wrong.

- :func:`key_problems` -- top-level and target keys are ones the CLI knows.
- :func:`typed_model_problems` -- every job parses with ``databricks.bundles.jobs.Job.from_dict``
  (the ``databricks-bundles`` package's typed models: unknown keys, missing required keys and bad
  enum values fail).
- :func:`schema_problems` -- every file validates against the CLI's JSON schema (when a copy of
  it is at hand: ``../shared/dab/bundle-schema.json``).
- :func:`entry_point_problems`, :func:`file_problems`, :func:`cron_problems`,
  :func:`task_problems`, :func:`reference_problems`, :func:`target_problems` -- what the schema
  cannot see: entry points in ``pyproject.toml`` that import, files that exist, Quartz cron
  syntax and time zones, ``depends_on`` / environment keys inside one job, ``${var.*}`` and
  ``{{job.parameters.*}}`` references; :func:`wheel_dependency_problems` -- the wheel does not
  pull in a second Spark on Databricks.

Cron schedules are checked by ``croniter`` (:func:`parse_quartz` translates Quartz's days of the
week and checks by rule what croniter does not know of Quartz: the field count, the ``?`` rule,
step and ``L``/``W``/``#`` limits, ``L-n`` and ``LW``), time zones by ``zoneinfo``, and
``depends_on`` cycles by ``graphlib.TopologicalSorter``.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from graphlib import CycleError, TopologicalSorter
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import CroniterBadDateError, CroniterError, croniter

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
BUNDLE_FILE = "databricks.yml"
SCHEMA_VAR = "SPARKFS_BUNDLE_SCHEMA"
SCHEMA_RELPATH = Path("shared") / "dab" / "bundle-schema.json"
# Installing any of these on Databricks would replace the runtime's own Spark.
RUNTIME_PROVIDED = {"pyspark", "delta-spark", "databricks-connect"}


@dataclass
class Bundle:
    """The bundle's files as plain dicts: ``files[relative path] = parsed YAML``."""

    root: Path
    files: dict[str, dict[str, Any]]

    @property
    def main(self) -> dict[str, Any]:
        return self.files[BUNDLE_FILE]

    def copy(self) -> Bundle:
        return Bundle(self.root, copy.deepcopy(self.files))

    def jobs(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """(file, job key, job dict) for every job of every file (targets' overrides excluded)."""
        for name, data in self.files.items():
            for key, job in ((data.get("resources") or {}).get("jobs") or {}).items():
                yield name, key, job

    def job(self, key: str) -> dict[str, Any]:
        return next(job for _, k, job in self.jobs() if k == key)


def load_bundle(root: Path = ROOT) -> Bundle:
    """Read ``databricks.yml`` and every file its ``include`` globs match (relative to ``root``)."""
    main = _read(root / BUNDLE_FILE)
    files = {BUNDLE_FILE: main}
    for pattern in main.get("include") or []:
        for path in sorted(root.glob(pattern)):
            files[path.relative_to(root).as_posix()] = _read(path)
    return Bundle(root, files)


def _read(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    return data


# The keys the CLI's schema allows at the top of a bundle file and in a target (the schema itself
# lets unknown top-level keys through; the CLI only warns). test_bundle keeps these in step with
# the schema when a copy is at hand.
TOP_LEVEL_KEYS = frozenset({
    "artifacts", "bundle", "environments", "experimental", "include", "permissions", "presets",
    "python", "resources", "run_as", "scripts", "sync", "targets", "variables", "workspace",
})
TARGET_KEYS = frozenset({
    "artifacts", "bundle", "cluster_id", "compute_id", "default", "git", "mode", "permissions",
    "presets", "resources", "run_as", "sync", "variables", "workspace",
})


def all_problems(bundle: Bundle) -> list[str]:
    checks: list[Callable[[Bundle], list[str]]] = [
        key_problems, typed_model_problems, entry_point_problems, file_problems, cron_problems,
        task_problems, reference_problems, target_problems, access_problems, wheel_dependency_problems,
    ]
    return [problem for check in checks for problem in check(bundle)]


# --- keys and typed models (databricks-bundles) --------------------------------------------------

def key_problems(bundle: Bundle) -> list[str]:
    """Top-level keys of every file and the keys of every target are ones the CLI knows."""
    problems = []
    for name, data in bundle.files.items():
        for key in sorted(set(data) - TOP_LEVEL_KEYS):
            problems.append(f"{name}: unknown top-level key '{key}'; valid: {', '.join(sorted(TOP_LEVEL_KEYS))}")
    for tname, spec in (bundle.main.get("targets") or {}).items():
        for key in sorted(set(spec or {}) - TARGET_KEYS):
            problems.append(f"{BUNDLE_FILE}: targets.{tname}: unknown key '{key}'; valid: {', '.join(sorted(TARGET_KEYS))}")
    return problems


def typed_model_problems(bundle: Bundle) -> list[str]:
    """Every job parses with ``Job.from_dict``: unknown keys, missing required keys, bad enums."""
    from databricks.bundles.jobs import Job

    problems = []
    for name, key, job in bundle.jobs():
        try:
            Job.from_dict(job)  # type: ignore[arg-type]
        except (ValueError, TypeError, KeyError) as exc:
            problems.append(f"{name}: resources.jobs.{key}: {exc}")
    for name, data in bundle.files.items():
        unchecked = sorted(set(data.get("resources") or {}) - {"jobs"})
        if unchecked:
            problems.append(f"{name}: resources {unchecked} have no typed check here; add one")
    return problems


# --- JSON schema -----------------------------------------------------------------------------------

def find_schema(root: Path = ROOT) -> Path | None:
    """The CLI's JSON schema: ``$SPARKFS_BUNDLE_SCHEMA``, else ``shared/dab/bundle-schema.json``
    next to the clone or next to a folder above it (CI has ``../shared``; a fresh clone has none)."""
    if os.environ.get(SCHEMA_VAR):
        return Path(os.environ[SCHEMA_VAR])
    for folder in root.parents:
        if (folder / SCHEMA_RELPATH).is_file():
            return folder / SCHEMA_RELPATH
    return None


def load_schema(path: Path) -> dict[str, Any]:
    """The CLI's bundle schema with its ``\\p{..}`` patterns rewritten for Python's ``re``."""
    import json

    schema: dict[str, Any] = json.loads(path.read_text())
    _rewrite_patterns(schema)
    return schema


def _rewrite_patterns(node: Any) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                value = value.replace(r"[\p{L}\p{N}]", r"[^\W_]").replace(r"\p{L}", r"[^\W\d_]")
                if r"\p{" in value:
                    raise ValueError(f"schema pattern with a \\p class this rewrite does not know: {value}")
                node[key] = value
            else:
                _rewrite_patterns(value)
    elif isinstance(node, list):
        for item in node:
            _rewrite_patterns(item)


def schema_problems(bundle: Bundle, schema: Mapping[str, Any]) -> list[str]:
    """Validate each file alone (an included file has the same schema as ``databricks.yml``)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    problems = []
    for name, data in bundle.files.items():
        for error in validator.iter_errors(data):
            for path, message in _deepest(error):
                where = ".".join(str(p) for p in path) or "<top level>"
                problems.append(f"{name}: {where}: {message}")
    return problems


def _deepest(error: Any) -> list[tuple[Any, str]]:
    """(path, message) of the branch that got furthest into the document: most values are
    ``oneOf`` [the real type, a "${..}" reference string], and the real type's error is the one
    to show."""
    if not error.context:
        return [(error.absolute_path, error.message)]
    if all(e.validator in ("type", "pattern") and e.absolute_path == error.absolute_path for e in error.context):
        # A scalar of the wrong type: neither the type nor a ${...} reference.
        types = [str(e.validator_value) for e in error.context if e.validator == "type"]
        return [(error.absolute_path, f"{error.instance!r} is not of type {' or '.join(types)} (nor a ${{...}} reference)")]
    branches: dict[Any, list[Any]] = {}
    for e in error.context:
        branches.setdefault(e.relative_schema_path[0], []).append(e)

    def rank(errors: list[Any]) -> tuple[int, bool]:
        # Deepest first; at equal depth, a branch that failed on more than the value's type
        # (the object branch of oneOf [object, "${..}" string]) says what is wrong.
        return max(len(e.absolute_path) for e in errors), any(e.validator != "type" for e in errors)

    best = max(branches.values(), key=rank)
    return [leaf for e in best for leaf in _deepest(e)]


# --- entry points ----------------------------------------------------------------------------------

def pyproject(root: Path) -> dict[str, Any]:
    with (root / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_tasks(bundle: Bundle) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(file, job key, job, task) for every task that runs a ``python_wheel_task``."""
    for name, key, job in bundle.jobs():
        for task in job.get("tasks") or []:
            if "python_wheel_task" in task:
                yield name, key, job, task


def entry_point_problems(bundle: Bundle) -> list[str]:
    """Each ``python_wheel_task`` names this project's package and one of its ``[project.scripts]``,
    whose target imports and is callable."""
    project = pyproject(bundle.root)["project"]
    scripts: dict[str, str] = project.get("scripts", {})
    problems = []
    for name, key, _, task in wheel_tasks(bundle):
        where = f"{name}: resources.jobs.{key}.tasks[{task.get('task_key')}].python_wheel_task"
        wheel = task["python_wheel_task"]
        package = str(wheel.get("package_name", ""))
        if _normalize(package) != _normalize(project["name"]):
            problems.append(f"{where}: package_name '{package}' is not this project ('{project['name']}')")
        entry = wheel.get("entry_point")
        if entry not in scripts:
            problems.append(
                f"{where}: entry_point '{entry}' is not in pyproject.toml [project.scripts]; "
                f"declared: {sorted(scripts)}"
            )
            continue
        module, _, attr = scripts[entry].partition(":")
        try:
            target = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            problems.append(f"{where}: entry_point '{entry}' = {scripts[entry]} does not import: {exc}")
            continue
        if not callable(target):
            problems.append(f"{where}: entry_point '{entry}' = {scripts[entry]} is not callable")
    return problems


def wheel_dependency_problems(bundle: Bundle) -> list[str]:
    """The wheel must not pull in Spark: Databricks provides it, and a pip-installed pyspark
    would shadow the runtime's (local Spark comes with the ``local`` extra instead)."""
    deps = pyproject(bundle.root)["project"].get("dependencies", [])
    names = {_normalize(re.split(r"[\s<>=!~;\[(]", dep, maxsplit=1)[0]): dep for dep in deps}
    return [
        f"pyproject.toml: [project.dependencies] has '{names[n]}'; the Databricks runtime provides "
        f"{n}, so it belongs in an extra (e.g. 'local'), not in the wheel's requirements"
        for n in sorted(RUNTIME_PROVIDED & set(names))
    ]


# --- files -------------------------------------------------------------------------------------------

def _artifact_outputs(bundle: Bundle) -> list[Path]:
    """Folders a wheel artifact builds into: ``<artifact path>/dist``."""
    outputs = []
    for art in (bundle.main.get("artifacts") or {}).values():
        if art.get("type") == "whl":
            outputs.append((bundle.root / art.get("path", ".")).resolve() / "dist")
    return outputs


def file_problems(bundle: Bundle) -> list[str]:
    """Every local path the bundle names exists: include globs, artifact folders, task files,
    files under ``${workspace.file_path}`` (the synced bundle root); wheel paths point at an
    artifact's build output."""
    root, problems = bundle.root, []
    for pattern in bundle.main.get("include") or []:
        if not list(root.glob(pattern)):
            problems.append(f"{BUNDLE_FILE}: include '{pattern}' matches no file")
    for key, art in (bundle.main.get("artifacts") or {}).items():
        folder = root / art.get("path", ".")
        if not any((folder / f).is_file() for f in ("pyproject.toml", "setup.py")):
            problems.append(f"{BUNDLE_FILE}: artifacts.{key}.path '{art.get('path')}' has no pyproject.toml or setup.py")
    outputs = _artifact_outputs(bundle)
    for name, key, job in bundle.jobs():
        here = (root / name).parent
        for env in job.get("environments") or []:
            for dep in (env.get("spec") or {}).get("dependencies") or []:
                problems += _wheel_path_problems(dep, here, outputs, f"{name}: resources.jobs.{key}.environments[{env.get('environment_key')}]")
        for task in job.get("tasks") or []:
            where = f"{name}: resources.jobs.{key}.tasks[{task.get('task_key')}]"
            for lib in task.get("libraries") or []:
                if "whl" in lib:
                    problems += _wheel_path_problems(lib["whl"], here, outputs, where)
            for field, path in (("spark_python_task", "python_file"), ("notebook_task", "notebook_path")):
                value = (task.get(field) or {}).get(path)
                if value and not _is_remote(value) and not _exists(here / value, field == "notebook_task"):
                    problems.append(f"{where}.{field}.{path}: '{value}' does not exist")
            for arg in _strings(task):
                for rel in re.findall(r"\$\{workspace\.file_path\}/([^\s\"']+)", arg):
                    if not (root / rel).exists():
                        problems.append(f"{where}: '{arg}' names {rel}, which is not in the bundle root (synced to workspace.file_path)")
    return problems


def _is_remote(path: str) -> bool:
    return path.startswith(("/", "dbfs:", "s3:", "abfss:", "gs:", "${")) or "://" in path


def _exists(path: Path, notebook: bool) -> bool:
    return path.exists() or (notebook and any(path.with_suffix(s).exists() for s in (".py", ".ipynb", ".sql")))


def _wheel_path_problems(dep: str, here: Path, outputs: list[Path], where: str) -> list[str]:
    if not dep.endswith(".whl") or _is_remote(dep):
        return []  # a PyPI requirement or a remote wheel
    folder = (here / dep).parent.resolve()
    if folder in outputs:
        return []
    return [f"{where}: wheel '{dep}' is not built by any whl artifact (they build into {[str(o) for o in outputs]})"]


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


# --- cron --------------------------------------------------------------------------------------------

def cron_problems(bundle: Bundle) -> list[str]:
    """Every job schedule is Quartz cron syntax in a known time zone."""
    problems = []
    for name, key, job in bundle.jobs():
        schedule = job.get("schedule")
        if not schedule:
            continue
        where = f"{name}: resources.jobs.{key}.schedule"
        try:
            parse_quartz(str(schedule.get("quartz_cron_expression", "")))
        except ValueError as exc:
            problems.append(f"{where}.quartz_cron_expression: {exc}")
        zone = str(schedule.get("timezone_id", ""))
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{where}.timezone_id: '{zone}' is not a known time zone (e.g. UTC, Europe/Berlin)")
    return problems


@dataclass(frozen=True)
class QuartzCron:
    """A Quartz expression that croniter accepted, and its croniter form.

    The croniter form keeps Quartz's field order (seconds first, year last), so it is read with
    ``second_at_beginning=True``. ``quartz_only`` is a day-of-month form croniter has no form for
    (``L-n``, ``LW``): checked here by rule, with ``L`` in its place for croniter's check, so
    :meth:`runs` cannot compute that schedule.
    """

    quartz: str
    croniter: str
    quartz_only: str | None = None

    def runs(self, start: datetime, count: int) -> list[datetime]:
        """The next ``count`` times the schedule fires after ``start`` (fewer if a year field
        ends it first)."""
        if self.quartz_only:
            raise ValueError(f"'{self.quartz}': croniter cannot compute '{self.quartz_only}'")
        times = croniter(self.croniter, start, second_at_beginning=True)
        runs: list[datetime] = []
        try:
            while len(runs) < count:
                runs.append(times.get_next(datetime))
        except CroniterBadDateError:  # no next time: past the last year
            pass
        return runs


DAY_OF_MONTH, DAY_OF_WEEK = 3, 5
# name, how many values (Quartz rejects a larger step; croniter would just fire once), what it takes
_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("seconds", 60, "0-59"),
    ("minutes", 60, "0-59"),
    ("hours", 24, "0-23"),
    ("day-of-month", 31, "1-31, L, L-n, LW, nW or ?"),
    ("month", 12, "1-12 or JAN-DEC"),
    ("day-of-week", 7, "1-7 (1 = SUN) or SUN-SAT, L, nL, n#k or ?"),
    ("year", 130, "1970-2099"),
)
WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # croniter's 0-6


def parse_quartz(expression: str) -> QuartzCron:
    """Check a Quartz cron expression (the syntax of Databricks job schedules) with croniter.

    Fields: ``sec min hour day-of-month month day-of-week [year]``. croniter checks each field's
    values, ranges, steps, lists and names, ``?``, ``L``, ``nW`` and ``n#k``. What Quartz says
    and croniter does not is checked or translated here: 6 or 7 fields; exactly one of
    day-of-month and day-of-week is ``?``; no step larger than its field; ``L``/``W``/``#`` forms
    alone in their field; days of week 1-7 from SUN (croniter: 0-6), ``L`` alone = SAT and
    ``nL`` = croniter's ``Ln``. Raises ``ValueError`` naming the field and what is wrong.

    >>> parse_quartz("0 0 8 ? * MON").croniter
    '0 0 8 ? * MON'
    >>> parse_quartz("0 0 8 ? * 2-6").croniter
    '0 0 8 ? * 1-5'
    """
    parts = expression.split()
    if len(parts) not in (6, 7):
        raise ValueError(
            f"'{expression}' has {len(parts)} fields; Quartz needs 6 or 7: "
            f"seconds minutes hours day-of-month month day-of-week [year]"
        )
    dom, dow = parts[DAY_OF_MONTH], parts[DAY_OF_WEEK]
    if (dom == "?") == (dow == "?"):
        raise ValueError(
            f"'{expression}': exactly one of day-of-month ('{dom}') and day-of-week ('{dow}') must be '?'"
        )
    fields, quartz_only = list(parts), None
    for index, text in enumerate(parts):
        name, size, allowed = _FIELDS[index]
        try:
            for step in re.findall(r"/(\d+)", text):
                if int(step) > size:
                    raise ValueError(f"step '{step}' is larger than the field's {size} values")
            if index == DAY_OF_MONTH:
                fields[index], quartz_only = _day_of_month(text)
            elif index == DAY_OF_WEEK:
                fields[index] = _day_of_week(text)
        except ValueError as exc:
            raise ValueError(f"'{expression}': {name} field '{text}': {exc}") from None
        # Each field alone, the others '*': croniter's message names neither the field nor the
        # expression as written (it quotes its own reordered, lower-cased copy).
        probe = ["*"] * len(parts)
        probe[index] = fields[index]
        reason = _croniter_rejects(" ".join(probe))
        if reason is not None:
            why = f"; croniter: {reason}" if reason else ""
            raise ValueError(f"'{expression}': {name} field '{text}' is not valid ({name}: {allowed}){why}")
    translated = " ".join(fields)
    reason = _croniter_rejects(translated)
    if reason is not None:  # no field alone is wrong, but croniter rejects them together
        raise ValueError(f"'{expression}': croniter rejects it (as '{translated}'): {reason}")
    return QuartzCron(expression, translated, quartz_only)


def _croniter_rejects(expression: str) -> str | None:
    """None when croniter accepts the expression (seconds first), else its reason ('' if it
    gives none beyond quoting the expression)."""
    try:
        croniter.expand(expression, second_at_beginning=True)
    except CroniterError as exc:
        # croniter's messages start with '[<expression>]' and count fields from minutes (0).
        reason = re.sub(r"^\[[^\]]*\]\s*|\s*in field \d+", "", str(exc))
        return reason.removeprefix("is not acceptable").strip(" ,.")
    return None


def _day_of_month(text: str) -> tuple[str, str | None]:
    """The croniter form of a day-of-month field, and the Quartz form croniter cannot compute."""
    upper = text.upper()
    if "L" not in upper and "W" not in upper:
        return text, None
    match = re.fullmatch(r"L|L-(\d+)|LW|\d+W", upper)
    if not match:
        raise ValueError("L / W forms are 'L', 'L-n', 'LW' or 'nW', alone (not in a list or range)")
    if match[1] is not None and not 1 <= int(match[1]) <= 30:
        raise ValueError(f"offset in '{text}' must be 1-30")
    if match[1] is not None or upper == "LW":
        # croniter knows the last day (L) but not n days before it (L-n) nor the last weekday
        # (LW): it checks the other fields with L standing in.
        return "L", text
    return text, None


def _day_of_week(text: str) -> str:
    """The croniter form of a day-of-week field: Quartz numbers the days 1-7 from SUN, croniter
    0-6 (and reads 7 as SUN too), so each day number is shifted and checked to be 1-7."""
    upper = text.upper()
    if ("L" in upper or "#" in upper) and not re.fullmatch(r"L|\w+L|\w+#\d+", upper):
        raise ValueError("'#' and 'L' forms are 'n#k', 'nL' or 'L', alone (not in a list or range)")
    if upper == "L":
        return "6"  # alone, L is the last day of the week: SAT

    def shift(match: re.Match[str]) -> str:
        day = int(match[0])
        if not 1 <= day <= 7:
            raise ValueError(f"{day} is out of range 1-7 (1 = SUN ... 7 = SAT)")
        return str(day - 1)

    # Day numbers only: not a step (after '/') nor the k of 'n#k'.
    shifted = re.sub(r"(?<![#/\d])\d+", shift, upper)
    last = re.fullmatch(r"(\w+)L", shifted)
    if last:  # Quartz 'nL' (the month's last n-day) is croniter's 'Ln', which takes a number
        day = last[1]
        return f"L{WEEKDAYS.index(day)}" if day in WEEKDAYS else f"L{day}"
    return shifted


# --- tasks, references, targets ---------------------------------------------------------------------

def task_problems(bundle: Bundle) -> list[str]:
    """Inside each job: unique task keys, ``depends_on`` names a task of the same job and makes no
    cycle, every task declares compute that the job defines."""
    problems = []
    for name, key, job in bundle.jobs():
        where = f"{name}: resources.jobs.{key}"
        tasks = job.get("tasks") or []
        task_keys = [t.get("task_key") for t in tasks]
        for dup in sorted({k for k in task_keys if task_keys.count(k) > 1}):
            problems.append(f"{where}: task_key '{dup}' is used by more than one task")
        envs = {e.get("environment_key") for e in job.get("environments") or []}
        clusters = {c.get("job_cluster_key") for c in job.get("job_clusters") or []}
        graph: dict[str, list[str]] = {}
        for task in tasks:
            tkey = task.get("task_key")
            deps = [d.get("task_key") for d in task.get("depends_on") or []]
            graph[tkey] = deps
            for dep in deps:
                if dep not in task_keys:
                    problems.append(
                        f"{where}.tasks[{tkey}].depends_on: '{dep}' is not a task of this job; tasks: {task_keys}"
                    )
            problems += _compute_problems(task, envs, clusters, f"{where}.tasks[{tkey}]")
        cycle = _find_cycle(graph)
        if cycle:
            problems.append(f"{where}: depends_on makes a cycle: {' -> '.join(cycle)}")
    return problems


def _compute_problems(task: dict[str, Any], envs: set[Any], clusters: set[Any], where: str) -> list[str]:
    if task.get("environment_key") is not None:
        env = task["environment_key"]
        return [] if env in envs else [f"{where}: environment_key '{env}' is not in the job's environments {sorted(envs)}"]
    if task.get("job_cluster_key") is not None:
        cluster = task["job_cluster_key"]
        return [] if cluster in clusters else [f"{where}: job_cluster_key '{cluster}' is not in the job's job_clusters {sorted(clusters)}"]
    if task.get("new_cluster") or task.get("existing_cluster_id"):
        return []
    return [f"{where}: no compute: set environment_key (serverless), job_cluster_key, new_cluster or existing_cluster_id"]


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """A ``depends_on`` cycle as [task, a task it depends on, ..., task], or None."""
    # Dependencies on unknown tasks are reported on their own; here they would be new nodes.
    known = {task: [dep for dep in deps if dep in graph] for task, deps in graph.items()}
    try:
        TopologicalSorter(known).prepare()
    except CycleError as exc:
        # args[1] lists each node before a node that depends on it: reversed, it reads
        # "depends on" from left to right.
        return list(reversed(exc.args[1]))
    return None


def reference_problems(bundle: Bundle) -> list[str]:
    """Every ``${var.X}`` is a declared variable; every ``{{job.parameters.X}}`` is a parameter of
    the job it appears in."""
    declared = set(bundle.main.get("variables") or {})
    problems = []
    for name, data in bundle.files.items():
        for text in _strings(data):
            for var in re.findall(r"\$\{var\.([\w-]+)", text):
                if var not in declared:
                    problems.append(f"{name}: '${{var.{var}}}' is not a declared variable; declared: {sorted(declared)}")
    for name, key, job in bundle.jobs():
        params = {p.get("name") for p in job.get("parameters") or []}
        for text in _strings(job.get("tasks") or []):
            for param in re.findall(r"\{\{\s*job\.parameters\.([\w.-]+)\s*\}\}", text):
                if param not in params:
                    problems.append(
                        f"{name}: resources.jobs.{key}: '{{{{job.parameters.{param}}}}}' is not a job parameter; "
                        f"parameters: {sorted(params)}"
                    )
    return problems


def target_problems(bundle: Bundle) -> list[str]:
    """One default target; modes the CLI accepts; a production target has a shared root path and
    permissions; every target's variables are declared."""
    targets = bundle.main.get("targets") or {}
    declared = set(bundle.main.get("variables") or {})
    problems = []
    defaults = [t for t, spec in targets.items() if (spec or {}).get("default")]
    if len(defaults) != 1:
        problems.append(f"{BUNDLE_FILE}: targets: exactly one target needs 'default: true'; found {defaults}")
    for tname, spec in targets.items():
        spec = spec or {}
        where = f"{BUNDLE_FILE}: targets.{tname}"
        mode = spec.get("mode")
        if mode not in (None, "development", "production"):
            problems.append(f"{where}.mode: '{mode}'; the CLI accepts 'development' or 'production'")
        if mode == "production":
            if not (spec.get("workspace") or {}).get("root_path"):
                problems.append(f"{where}: a production target needs workspace.root_path")
            if not spec.get("permissions") and not bundle.main.get("permissions"):
                problems.append(f"{where}: a production target needs permissions")
        for var in sorted(set(spec.get("variables") or {}) - declared):
            problems.append(f"{where}.variables: '{var}' is not declared under variables; declared: {sorted(declared)}")
    return problems


# --- who may touch production ----------------------------------------------------------------------

WRITE_PRIVILEGES = {"MODIFY", "CREATE_TABLE"}
READ_PRIVILEGES = {"USE_SCHEMA", "SELECT"}


def _lakehouse_schemas(root: Path) -> list[str]:
    """The schema names of conf/sparkfs.yaml (storage.schemas): what the jobs write."""
    conf = _read(root / "conf" / "sparkfs.yaml")
    return sorted((conf.get("storage") or {}).get("schemas", {}).values())


def access_problems(bundle: Bundle) -> list[str]:
    """A production target: a root path only its owners can write (not /Workspace/Shared, where
    every workspace user can), jobs run as a service principal given by a variable, no write
    access for the group ``users``, and every schema the jobs write declared with grants: write
    privileges for the service principal only, read privileges for a group variable."""
    problems = []
    for tname, spec in (bundle.main.get("targets") or {}).items():
        spec = spec or {}
        if spec.get("mode") != "production":
            continue
        where = f"{BUNDLE_FILE}: targets.{tname}"
        root_path = str((spec.get("workspace") or {}).get("root_path") or "")
        if root_path.startswith(("/Workspace/Shared", "/Shared")):
            problems.append(f"{where}.workspace.root_path: {root_path} is writable by all workspace users; "
                            "deploy under /Workspace/Users/${var.service_principal}/...")
        principal = (spec.get("run_as") or {}).get("service_principal_name")
        if not (isinstance(principal, str) and re.fullmatch(r"\$\{var\.\w+\}", principal)):
            problems.append(f"{where}.run_as: the prod jobs must run as a service principal given by a "
                            f"variable (service_principal_name: ${{var.<name>}}); found {spec.get('run_as')!r}")
        for perm in spec.get("permissions") or bundle.main.get("permissions") or []:
            if perm.get("group_name") == "users" and perm.get("level") != "CAN_VIEW":
                problems.append(f"{where}.permissions: group 'users' has {perm.get('level')}; at most CAN_VIEW")
        schemas = {s.get("name"): s for s in ((spec.get("resources") or {}).get("schemas") or {}).values()}
        for name in _lakehouse_schemas(bundle.root):
            if name not in schemas:
                problems.append(f"{where}.resources.schemas: no schema {name!r} with grants; the jobs write it")
                continue
            grants = {g.get("principal"): set(g.get("privileges") or []) for g in schemas[name].get("grants") or []}
            writers = sorted(p for p, privs in grants.items() if privs & WRITE_PRIVILEGES)
            if writers != [principal]:
                problems.append(f"{where}: schema {name!r} grants write privileges to {writers}; only the "
                                f"service principal {principal} may write")
            readers = [p for p, privs in grants.items() if p != principal and privs >= READ_PRIVILEGES]
            if not any(re.fullmatch(r"\$\{var\.\w+\}", str(p)) for p in readers):
                problems.append(f"{where}: schema {name!r} grants no reader group (a variable) {sorted(READ_PRIVILEGES)}")
    return problems
