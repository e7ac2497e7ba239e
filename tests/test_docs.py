"""The docs follow the code: the README's layout lists what the repository holds, and nothing else."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def layout_block() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1]
    return section.split("```", 2)[1]


def layout_paths(block: str) -> list[str]:
    """Paths named in the layout tree: a line is ``<name>[, <name>...]  <description>``, indented
    under the folder (a name ending in ``/``) it belongs to."""
    paths: list[str] = []
    folders: list[tuple[int, str]] = []
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        names = [n.strip() for n in re.split(r"\s{2,}", line.strip())[0].split(",")]
        while folders and folders[-1][0] >= indent:
            folders.pop()
        base = folders[-1][1] if folders else ""
        paths += [base + n for n in names]
        if names[-1].endswith("/"):
            folders.append((indent, base + names[-1]))
    return paths


def tracked_files() -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return out.split()
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: what is on disk
        return [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".venv" not in p.parts]


def test_layout_parser_reads_folders_and_groups() -> None:
    block = "a/  the a\n  b.py, c.py  two\n  d/  deeper\n    e.py  e\nf.txt  top\n"
    assert layout_paths(block) == ["a/", "a/b.py", "a/c.py", "a/d/", "a/d/e.py", "f.txt"]


def test_readme_layout_matches_the_repository() -> None:
    listed = layout_paths(layout_block())
    files = tracked_files()
    missing = [p for p in listed if not (p in files or any(f.startswith(p) for f in files if p.endswith("/")))]
    assert not missing, f"README's layout names paths the repository does not have: {missing}"

    tops = {f.split("/")[0] + ("/" if "/" in f else "") for f in files if not f.startswith(".")}
    unlisted_tops = sorted(tops - set(listed))
    assert not unlisted_tops, f"README's layout does not mention {unlisted_tops}"
    modules = sorted(f for f in files if f.startswith("sparkfs/") and f.endswith(".py")
                     and not f.endswith("__init__.py"))
    folders = sorted({f.rsplit("/", 1)[0] + "/" for f in files if f.startswith("sparkfs/")})
    unlisted = [m for m in [*folders, *modules] if m not in listed]
    assert not unlisted, f"README's layout does not mention {unlisted}"


def test_every_public_name_documents_an_example() -> None:
    import inspect

    import sparkfs

    missing = []
    for name in sparkfs.__all__:
        obj = getattr(sparkfs, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            continue  # errors document themselves by their message
        if "Example::" not in (inspect.getdoc(obj) or ""):
            missing.append(name)
    assert not missing, f"public names without an Example:: in their docstring: {missing}"
