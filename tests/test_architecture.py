"""The house rules, checked on the source: imports only go down, training and scoring never
import each other, and modules stay small.

Rooms, top to bottom: ``jobs`` -> ``catalog`` -> ``ml`` / ``features`` / ``examples`` /
``monitoring`` -> ``pit`` -> ``core``.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "sparkfs"

# What each room may import from sparkfs (besides itself and the package root's __version__).
ALLOWED = {
    "core": {"core"},
    "pit": {"core", "pit"},
    "features": {"core", "features"},
    "ml": {"core", "pit", "features", "ml"},
    "examples": {"core", "features", "examples"},
    "monitoring": {"core", "monitoring"},
    # Catalog, lineage and upkeep read what every room below wrote (conf, tables, the registry).
    "catalog": {"core", "pit", "features", "ml", "catalog"},
    "jobs": {"core", "pit", "features", "ml", "examples", "monitoring", "catalog", "jobs"},
}
# Scoring and training are peers: they share ml.assembly (and the packaged model, config,
# tracking), never each other's modules.
TRAINING = {"sparkfs.ml.train", "sparkfs.ml.collect", "sparkfs.ml.fit", "sparkfs.ml.mlflow_log",
            "sparkfs.ml.evaluation", "sparkfs.ml.splits"}
SCORING = {"sparkfs.ml.score", "sparkfs.ml.skew"}
MAX_LINES = 410  # "about 400": a docstring example should not force a split
LONG_MODULE_REASON = "Why this module is long:"


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def sparkfs_imports(path: Path) -> set[str]:
    """Every sparkfs module ``path`` imports, at any depth (lazy imports inside functions too)."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("sparkfs")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sparkfs"):
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # `from sparkfs.ml import x`
    return {n for n in names if n in modules() or n.count(".") == 1}


def room(module: str) -> str | None:
    """The room a module lives in; ``python -m sparkfs`` is the CLI, on the jobs floor."""
    parts = module.split(".")
    if parts[1:] == ["__main__"]:
        return "jobs"
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else None


@pytest.mark.parametrize("module", sorted(m for m in modules() if room(m)))
def test_imports_only_go_down(module: str) -> None:
    here = room(module)
    assert here is not None
    wrong = sorted(
        imported for imported in sparkfs_imports(modules()[module])
        if room(imported) is not None and room(imported) not in ALLOWED[here]
    )
    assert not wrong, f"{module} ({here}) imports {wrong}; {here} may import only {sorted(ALLOWED[here])}"


def test_training_and_scoring_do_not_import_each_other() -> None:
    for side, other in ((TRAINING, SCORING), (SCORING, TRAINING)):
        for module in side:
            crossing = sorted(sparkfs_imports(modules()[module]) & other)
            assert not crossing, f"{module} imports {crossing}: share code through sparkfs.ml.assembly"


def test_the_library_below_jobs_never_imports_jobs() -> None:
    for module, path in modules().items():
        if room(module) != "jobs" and module != "sparkfs.__main__":
            assert not {m for m in sparkfs_imports(path) if room(m) == "jobs"}, module


def test_modules_stay_small_or_say_why() -> None:
    long = {}
    for module, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and LONG_MODULE_REASON not in (ast.get_docstring(ast.parse(text)) or ""):
            long[module] = len(text.splitlines())
    assert not long, f"modules over {MAX_LINES} lines without '{LONG_MODULE_REASON}' in their docstring: {long}"


def test_the_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from sparkfs.jobs.context import JobContext\nimport sparkfs.ml.train\n")
    assert {"sparkfs.jobs.context", "sparkfs.ml.train"} <= sparkfs_imports(bad)
