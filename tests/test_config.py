"""Run configuration: JSON presets, validation with clear messages, digests."""
from __future__ import annotations

import pytest

from bench.config import ConfigError, RunConfig, load_json, merge
from bench.runner.experiments import expand, load_preset, resolve_strategies, strategy_catalog


def test_every_preset_and_variant_builds_a_valid_run_config():
    for preset in ("default", "smoke", "paper", "paper-profile", "paper-profile-b16"):
        base = load_preset(preset)
        for name in strategy_catalog():
            specs = expand(base, strategies=[name], seeds=[0], frames=[2], batch_sizes=[4])
            assert specs[0].config.strategy.name == name


def test_unknown_key_is_rejected_with_its_dotted_path():
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) \['epoch'\]"):
        RunConfig.from_dict({"train": {"epoch": 3}})


def test_wrong_type_and_bad_value_name_the_field():
    with pytest.raises(ConfigError, match="train.epochs: expected"):
        RunConfig.from_dict({"train": {"epochs": "three"}})
    with pytest.raises(ConfigError, match="data.frames: expected >= 1"):
        RunConfig.from_dict({"data": {"frames": 0}})
    with pytest.raises(ConfigError, match="data.data_root: required"):
        RunConfig.from_dict({"data": {"dataset": "mars"}})


def test_merge_is_deep_but_replaces_strategy_params():
    merged = merge({"a": {"x": 1, "y": 2}, "params": {"r": 8}}, {"a": {"y": 3}, "params": {"alpha": 1}})
    assert merged == {"a": {"x": 1, "y": 3}, "params": {"alpha": 1}}


def test_digest_changes_with_any_field():
    assert RunConfig().digest() == RunConfig.from_dict({}).digest()
    assert RunConfig().digest() != RunConfig.from_dict({"train": {"seed": 1}}).digest()


def test_strategy_selection():
    assert resolve_strategies("full, frozen") == ["full", "frozen"]
    assert set(resolve_strategies("all")) == set(strategy_catalog())
    with pytest.raises(ConfigError, match="unknown"):
        resolve_strategies("fulll")


def test_invalid_json_file_names_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ConfigError, match="bad.json: invalid JSON"):
        load_json(bad)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="no such preset"):
        load_preset("nope")
