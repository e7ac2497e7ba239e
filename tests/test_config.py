from __future__ import annotations

from pathlib import Path

import pytest

from sparkfs.core.config import load_settings
from sparkfs.core.errors import ConfigError

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
