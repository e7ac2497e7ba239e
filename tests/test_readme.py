"""Every code block of the README runs.

Python blocks run in the README's order in one namespace, as a reader pastes them into one
session, against the shared end-to-end lakehouse (``e2e_lakehouse.py``), built the way the README
says to: the features job over two days of synthetic landing files, and a model trained and a day
scored on the synthetic flights, predicting into ``flight_delay_predictions``. The reader's
``sparkfs.connect()`` finds it through ``SPARKFS_CONF_DIR`` / ``SPARKFS_DATA_DIR``.

YAML blocks that start with ``# conf/<file>.yaml`` are added to a copy of ``conf/`` and must
load into the typed config. Shell blocks are checked without a JVM: each ``sparkfs`` command line parses with the CLI's own
parser (a job it names exists), each ``make`` target is in the Makefile, each script a
``spark-submit`` line names exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from e2e_lakehouse import SharedLakehouse

from sparkfs.core.config import load_settings
from sparkfs.jobs.cli import build_parser
from sparkfs.jobs.registry import JOBS

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def command_lines(block: str) -> list[list[str]]:
    """The command lines of a shell block, each without its trailing comment."""
    lines = []
    for line in block.splitlines():
        line = re.split(r"\s#\s|\s{2,}#", line)[0].strip()
        if line and not line.startswith("#"):
            lines.append(shlex.split(line))
    return lines


def test_the_readme_has_code_blocks_and_this_module_finds_them() -> None:
    assert len(code_blocks(README, "python")) >= 4
    assert command_lines("make demo    # installs\nsparkfs run x --date 2013-01-01  # a day\n") == [
        ["make", "demo"], ["sparkfs", "run", "x", "--date", "2013-01-01"]]


def test_every_shell_command_exists_without_starting_spark() -> None:
    makefile = (REPO / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][\w-]*):", makefile, re.M))
    checked = 0
    for block in code_blocks(README, "bash"):
        for words in command_lines(block):
            program = words[0].rsplit("/", 1)[-1]
            if any("<" in w for w in words):  # a placeholder such as <job>
                continue
            if program == "sparkfs":
                args = build_parser().parse_args(words[1:])  # exits (fails the test) on a bad flag
                if getattr(args, "job", None):
                    assert args.job in JOBS, words
                checked += 1
            elif program == "make":
                assert words[1] in targets, f"make {words[1]}: no such target in the Makefile"
                checked += 1
            elif program == "spark-submit":
                scripts = [w for w in words if w.endswith(".py")]
                assert scripts and all((REPO / s).is_file() for s in scripts), words
                checked += 1
    assert checked >= 10


def test_every_conf_snippet_loads_into_the_typed_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparkfs.features.feature_tables import declared_feature_tables
    from sparkfs.features.pipeline import load_pipeline
    from sparkfs.ml.config import load_training_config

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)

    def read(name: str) -> dict:
        return yaml.safe_load((conf / name).read_text())

    def write(name: str, data: dict) -> None:
        (conf / name).write_text(yaml.safe_dump(data))

    added = []
    for block in code_blocks(README, "yaml"):
        name = block.splitlines()[0].removeprefix("# conf/")
        snippet = yaml.safe_load(block)
        if name == "pipeline.yaml":
            pipeline, suites = read(name), read("expectations.yaml")
            for key in ("sources", "silver"):
                pipeline[key] += snippet[key]
            for table in snippet["silver"]:  # the README says to write the suite; any suite will do here
                suites["suites"][table["expectations"]] = [
                    {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": table["keys"][0]}}]
            write(name, pipeline)
            write("expectations.yaml", suites)
        elif name == "feature_tables.yaml":
            tables = read(name)
            tables["tables"] += snippet
            write(name, tables)
        elif name == "training.yaml":
            training = read(name)
            training["lookups"] += snippet["lookups"]
            training["features"]["numeric"] += snippet["features"]["numeric"]
            write(name, training)
        else:
            continue
        added.append(name)
    assert sorted(added) == ["feature_tables.yaml", "pipeline.yaml", "training.yaml"]

    (tmp_path / "my_features.py").write_text("def origin_departures(lake, span):\n    raise NotImplementedError\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    settings = load_settings(conf, "local")
    pipeline = load_pipeline(settings.conf_dir, settings.data_path)
    assert "gates" in [s.name for s in pipeline.config.silver]
    assert "origin_delays" in [t.name for t in declared_feature_tables(settings)]
    assert "origin_delays" in [lk.table for lk in load_training_config(settings).lookups]


@pytest.fixture(scope="module")
def readers_lakehouse(e2e_lakehouse: SharedLakehouse) -> Iterator[Path]:
    """The shared lakehouse, found the way the README says: through the environment."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in e2e_lakehouse.environment().items():
            patch.setenv(key, value)
        yield e2e_lakehouse.root


@pytest.mark.e2e
def test_every_python_block_runs_in_order(readers_lakehouse: Path, capsys: pytest.CaptureFixture[str]) -> None:
    namespace: dict[str, object] = {"__name__": "readme"}
    for number, block in enumerate(code_blocks(README, "python"), 1):
        try:
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"README python block {number} failed: {exc!r}\n{block}") from exc
    out = capsys.readouterr().out
    assert "'rows': " in out and "'carrier_delays.matched': " in out  # the quickstart's print(ts.checks)
    lake = namespace["lake"]
    assert lake.settings.data_path == (readers_lakehouse / "data").resolve()  # type: ignore[attr-defined]
