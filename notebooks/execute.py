"""Execute notebooks top to bottom against the local lakehouse and save them with their outputs.

    .venv/bin/python notebooks/execute.py                      # every notebook here, in place
    .venv/bin/python notebooks/execute.py explore_feature_tables.ipynb -p DAY='"2013-07-01"'
    .venv/bin/python notebooks/execute.py --output /tmp/runs         # saved there, not in place

A ``-p NAME=EXPR`` replaces that assignment in the cell tagged ``parameters``. The kernel runs in
this folder with this environment (``SPARKFS_DATA_DIR``, ``SPARKFS_CONF_DIR`` choose the
lakehouse and the config). Any cell error stops with the cell's output and exit status 1; the
test suite runs the notebooks through :func:`execute`.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

HERE = Path(__file__).resolve().parent


def set_parameters(notebook: nbformat.NotebookNode, parameters: Mapping[str, str]) -> None:
    """Replace ``NAME = ...`` lines of the ``parameters`` cell with ``NAME = <expr>``."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    if parameters and not cells:
        raise ValueError("the notebook has no cell tagged 'parameters'")
    for name, expr in parameters.items():
        pattern = re.compile(rf"^{re.escape(name)}\s*=.*$", re.MULTILINE)
        if not any(pattern.search(c.source) for c in cells):
            raise ValueError(f"parameter {name} is not assigned in the parameters cell")
        line = f"{name} = {expr}"
        for cell in cells:
            cell.source = pattern.sub(lambda _, line=line: line, cell.source)


def execute(
    path: Path, parameters: Mapping[str, str] | None = None, *, save_to: Path | None = None,
    timeout: int = 900,
) -> nbformat.NotebookNode:
    """Run every cell of ``path`` in a fresh ``python3`` kernel (cwd: the notebook's folder);
    raise :class:`CellExecutionError` on the first failing cell. Saves to ``save_to`` if given,
    without stderr output (the JVM's logs)."""
    notebook = nbformat.read(path, as_version=4)
    set_parameters(notebook, parameters or {})
    client = NotebookClient(
        notebook, timeout=timeout, kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # keep diffs small: no timings
        if cell.cell_type == "code":  # Spark's JVM logs and progress bars are not results
            cell.outputs = [o for o in cell.outputs
                            if not (o.output_type == "stream" and o.name == "stderr")]
    if save_to is not None:
        nbformat.write(notebook, save_to)
    return notebook


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook here")
    parser.add_argument("-p", "--parameter", action="append", default=[], metavar="NAME=EXPR")
    parser.add_argument("-o", "--output", type=Path, metavar="FOLDER",
                        help="save the executed notebooks in FOLDER (default: in place)")
    args = parser.parse_args()
    parameters = dict(p.split("=", 1) for p in args.parameter)
    paths = [HERE / p if not p.is_absolute() and not p.exists() else p for p in args.notebooks]
    if args.output:
        args.output.mkdir(parents=True, exist_ok=True)
    for path in paths or sorted(HERE.glob("*.ipynb")):
        print(f"executing {path.name} ...", flush=True)
        try:
            execute(path.resolve(), parameters, save_to=args.output / path.name if args.output else path)
        except CellExecutionError as exc:
            print(f"{path.name} failed:\n{exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
