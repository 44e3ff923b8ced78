"""Configs: every recipe loads; bad YAML, unknown keys and wrong types give one line naming
the file, the key and what was expected."""

from pathlib import Path

import pytest

from curation.core.config import ConfigError, load_config
from curation.ingest.config import IngestConfig

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["laion.yaml", "laion400m.yaml", "coyo.yaml", "datacomp.yaml", "internvl_jsonl.yaml"])
def test_every_recipe_loads(name):
    cfg = load_config(CONFIGS / name, IngestConfig)
    assert cfg.source.columns
    assert cfg.download.allow_private_addresses is False  # production recipes never allow it


def _err(tmp_path, text: str) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, IngestConfig)
    msg = str(exc.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    return msg


SOURCE = "source: {name: x, columns: {url: URL, caption: TEXT}}\n"


def test_unknown_key_names_key_and_choices(tmp_path):
    msg = _err(tmp_path, SOURCE + "download: {timout_s: 3}\n")
    assert "download.timout_s: unknown key" in msg and "timeout_s" in msg


def test_wrong_type_names_expected_type(tmp_path):
    msg = _err(tmp_path, SOURCE + "download: {timeout_s: ten}\n")
    assert "download.timeout_s: expected float" in msg and "'ten'" in msg


def test_bool_is_not_an_int(tmp_path):
    assert "download.retries: expected int" in _err(tmp_path, SOURCE + "download: {retries: true}\n")


def test_bad_literal(tmp_path):
    msg = _err(tmp_path, SOURCE + "image: {resize_mode: stretch}\n")
    assert "image.resize_mode" in msg and "'keep_ratio'" in msg


def test_invalid_yaml_has_position(tmp_path):
    msg = _err(tmp_path, SOURCE + "download: {timeout_s: 3\n")
    assert "invalid YAML" in msg and "line" in msg


def test_missing_required(tmp_path):
    assert "source: required key missing" in _err(tmp_path, "download: {}\n")


def test_unknown_filter_and_filter_param(tmp_path):
    assert "metadata_filters[0].colour: unknown filter" in _err(tmp_path, SOURCE + "metadata_filters: [{colour: {}}]\n")
    msg = _err(tmp_path, SOURCE + "metadata_filters: [{nsfw: {max_scroe: 0.3}}]\n")
    assert "metadata_filters[0].nsfw.max_scroe: unknown key" in msg


def test_unknown_canonical_column(tmp_path):
    msg = _err(tmp_path, "source: {name: x, columns: {url: URL, captoin: TEXT}}\n")
    assert "columns.captoin: unknown canonical field" in msg


def test_value_checks(tmp_path):
    assert "timeout_s: must be > 0" in _err(tmp_path, SOURCE + "download: {timeout_s: 0}\n")


def test_not_utf8(tmp_path):
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path, IngestConfig)


def test_train_recipe_loads_and_its_errors_name_the_key(tmp_path):
    from model.config import TrainConfig

    cfg = load_config(CONFIGS / "train.yaml", TrainConfig)
    assert cfg.model.preset == "tiny" and cfg.ntp.reduction == "square" and cfg.mpo.w_pref == 0.8
    path = tmp_path / "train.yaml"
    path.write_text("ntp: {reduction: mean}\n")
    with pytest.raises(ConfigError, match=r"train.yaml: ntp.reduction: expected one of 'token' \| 'sample' \| 'square'"):
        load_config(path, TrainConfig)
    path.write_text("optim: {lr: fast}\n")
    with pytest.raises(ConfigError, match="optim.lr: expected float"):
        load_config(path, TrainConfig)
