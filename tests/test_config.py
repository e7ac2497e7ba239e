from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from synthetic_flights import synthetic_config

from sparkfs.core.config import Settings, load_settings, local_cores
from sparkfs.core.durations import format_duration, parse_duration
from sparkfs.core.errors import ConfigError
from sparkfs.features.feature_tables import load_feature_tables
from sparkfs.ml.config import load_training_config

REPO = Path(__file__).resolve().parents[1]


def write_conf(root: Path, base: str, overlays: dict[str, str] | None = None) -> Path:
    conf = root / "conf"
    (conf / "env").mkdir(parents=True)
    (conf / "sparkfs.yaml").write_text(base)
    for env, text in (overlays or {"local": "{}\n"}).items():
        (conf / "env" / f"{env}.yaml").write_text(text)
    return conf


def test_project_conf_loads_for_every_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKFS_DATA_DIR", raising=False)
    for env in ("local", "dev", "prod"):
        settings = load_settings(REPO / "conf", env)
        assert settings.env == env
        assert settings.storage.schemas["gold"].endswith("sparkfs_gold")
    assert load_settings(REPO / "conf", "local").storage.catalog is None
    assert load_settings(REPO / "conf", "dev").storage.catalog == "main"
    assert load_settings(REPO / "conf", "local").data_path == REPO / ".sparkfs"


def test_misspelled_key_names_file_and_key(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "spark:\n  shufle_partitions: 4\n")
    with pytest.raises(ConfigError) as err:
        load_settings(conf, "local")
    message = str(err.value)
    assert str(conf / "sparkfs.yaml") in message
    assert "spark.shufle_partitions" in message
    assert "shuffle_partitions" in message  # lists what would be valid


def test_misspelled_key_in_overlay_names_the_overlay(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "project: x\n", {"local": "storage:\n  catalgo: main\n"})
    with pytest.raises(ConfigError, match=r"env/local\.yaml.*\n.*storage\.catalgo"):
        load_settings(conf, "local")


def test_wrong_type_names_key_and_value(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "spark:\n  shuffle_partitions: many\n")
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions.*'many'"):
        load_settings(conf, "local")


def test_overlay_merges_deeply_and_env_vars_expand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_PARTS", "3")
    conf = write_conf(
        tmp_path,
        "spark:\n  shuffle_partitions: ${MY_PARTS}\n  app_name: base\nstorage:\n  data_dir: ${NOPE:-data}\n",
        {"dev": "spark:\n  app_name: dev-app\n"},
    )
    settings = load_settings(conf, "dev")
    assert settings.spark.shuffle_partitions == 3
    assert settings.spark.app_name == "dev-app"
    assert settings.data_path == (tmp_path / "data").resolve()


def test_missing_env_var_without_default_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPARKFS_SURELY_UNSET", raising=False)
    conf = write_conf(tmp_path, "project: ${SPARKFS_SURELY_UNSET}\n")
    with pytest.raises(ConfigError, match="'project'.*SPARKFS_SURELY_UNSET"):
        load_settings(conf, "local")


def test_unknown_environment_lists_known_ones(tmp_path: Path) -> None:
    conf = write_conf(tmp_path, "project: x\n", {"local": "{}\n", "dev": "{}\n"})
    with pytest.raises(ConfigError, match=r"unknown environment 'staging'.*\['dev', 'local'\]"):
        load_settings(conf, "staging")


# --- durations: one type for every conf file ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("3h", timedelta(hours=3)),
        ("30d", timedelta(days=30)),
        (" 2w ", timedelta(weeks=2)),
        ("0s", timedelta(0)),
        ("P30D", timedelta(days=30)),
        ("PT3H", timedelta(hours=3)),
        ("P1DT12H", timedelta(days=1, hours=12)),
        ("P2W", timedelta(weeks=2)),
        ("PT1M30S", timedelta(seconds=90)),
        ("PT0.5S", timedelta(milliseconds=500)),
        (timedelta(hours=5), timedelta(hours=5)),
    ],
)
def test_parse_duration_accepts_units_and_iso_8601(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("bad", ["1 month", "3 weeks", "P1M", "P1Y", "P", "PT", "P1DT", "-1d", "1.5h", "", 30, None])
def test_bad_duration_lists_the_accepted_forms(bad: object) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    message = str(info.value)
    assert "expected a duration like '30d'" in message
    assert "'2w'" in message and "'P30D'" in message
    assert message.endswith(f"found {bad!r}" + (" (a number has no unit)" if isinstance(bad, int) else ""))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (timedelta(days=30), "30d"),
        (timedelta(weeks=2), "14d"),
        (timedelta(hours=36), "36h"),
        (timedelta(minutes=90), "90m"),
        (timedelta(seconds=90), "90s"),
        (timedelta(0), "0s"),
        (timedelta(milliseconds=1500), "PT1.5S"),
    ],
)
def test_format_duration_writes_the_largest_whole_unit_and_round_trips(value: timedelta, text: str) -> None:
    assert format_duration(value) == text
    assert parse_duration(format_duration(value)) == value


FEATURE_TABLES_YAML = """\
tables:
  - name: events
    description: d
    owner: o
    keys: [k]
    event_time: ts
    build: mod:fn
    columns: {k: key, ts: time}
    rolling:
      windows: {w2: %s}
      aggregates: [{value: v, aggs: [sum], description: v}]
"""


def test_two_weeks_is_valid_in_feature_tables_and_training_conf(settings: Settings, tmp_path: Path) -> None:
    tables = tmp_path / "feature_tables.yaml"
    tables.write_text(FEATURE_TABLES_YAML % "2w")
    assert load_feature_tables(tables)[0].rolling.windows["w2"] == timedelta(days=14)  # type: ignore[union-attr]
    training = tmp_path / "training.yaml"
    data = synthetic_config("durations").model_dump(mode="json", exclude_none=True)
    data["split"]["gap"] = "2w"
    data["lookups"] = [{"table": "events", "lookup_key": ["k"], "lookback": "P14D"}]
    training.write_text(yaml.safe_dump(data))
    config = load_training_config(settings, training)
    assert config.split.gap == config.lookups[0].lookback == timedelta(days=14)
    assert config.model_dump(mode="json")["split"]["gap"] == "14d"


def test_bad_duration_in_a_conf_file_names_file_key_and_accepted_forms(tmp_path: Path) -> None:
    tables = tmp_path / "feature_tables.yaml"
    tables.write_text(FEATURE_TABLES_YAML % "2 weeks")
    with pytest.raises(ConfigError) as info:
        load_feature_tables(tables)
    message = str(info.value)
    assert str(tables) in message
    assert "tables.0.rolling.windows.w2" in message
    assert "expected a duration like '30d'" in message and "found '2 weeks'" in message


def test_a_local_session_gets_one_partition_per_core_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    found = {m: local_cores(m) for m in ("local", "local[3]", "local[*]", "local[4,2]", "spark://host:7077", "yarn")}
    assert found == {"local": 1, "local[3]": 3, "local[*]": 6, "local[4,2]": 4, "spark://host:7077": None, "yarn": None}
    assert load_settings(REPO / "conf", "local").spark.shuffle_partitions is None  # the repo's conf: per core
