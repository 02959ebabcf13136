"""The command line reaches the run config through the config's own declarations: the field flags take their help
and choices from the declared field, ``--set SECTION.FIELD=VALUE`` reaches every field, and a wrong one is one line
naming the field and exit 2."""
from __future__ import annotations

import dataclasses
import json

import pytest

import run_bench
from bench import cli
from bench.config import DataConfig, ModelConfig, ProfileConfig, RunConfig, TrainConfig, field_at, merge
from bench.runner.experiments import load_preset


def parsed(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def option_of(flag: str):
    return next(a for a in cli.build_parser()._actions if flag in a.option_strings)


@pytest.mark.parametrize("flag", sorted(cli.FIELD_FLAGS))
def test_a_field_flag_takes_its_help_and_choices_from_the_declared_field(flag):
    declared = field_at(cli.FIELD_FLAGS[flag])
    action = option_of(flag)
    assert declared.metadata["help"] in action.help and cli.FIELD_FLAGS[flag] in action.help
    if "choices" in declared.metadata:
        hidden = cli.CLI_HIDDEN_CHOICES.get(cli.FIELD_FLAGS[flag], ())
        assert list(action.choices) == [c for c in declared.metadata["choices"] if c not in hidden]
    else:
        assert action.choices is None


def test_set_reaches_any_field_with_its_json_type_and_wins_over_the_flags():
    args = parsed("--epochs", "2", "--set", "train.epochs=5", "--set", "train.lr=3e-4", "--set", "data.augment=frame",
                  "--set", "model.pretrained=null", "--set", "train.max_steps_per_epoch=2",
                  "--set", "model.visual_attention=false", "--set", "profile.flops=false")
    over = cli.overrides(args)
    assert over["train"] == {"epochs": 5, "lr": 3e-4, "max_steps_per_epoch": 2}
    assert over["data"] == {"augment": "frame"}
    assert over["model"] == {"pretrained": None, "visual_attention": False}
    assert over["profile"] == {"flops": False}
    preset = {k: v for k, v in load_preset("smoke").items() if k in ("data", "model", "train", "profile")}
    cfg = RunConfig.from_dict(merge(preset, over))
    assert cfg.train.lr == 3e-4 and cfg.train.epochs == 5 and cfg.model.visual_attention is False


def test_flags_alone_give_the_same_overrides_as_the_matching_set():
    by_flags = cli.overrides(parsed("--dataset", "mars", "--temporal", "tmd", "--epochs", "3",
                                    "--half-frozen-backbone", "--protocol", "full-train"))
    by_set = cli.overrides(parsed("--set", "data.dataset=mars", "--set", "model.temporal=tmd",
                                  "--set", "train.epochs=3", "--set", "train.half_frozen_backbone=true",
                                  "--set", "train.protocol=full-train"))
    assert by_flags == by_set


@pytest.mark.parametrize("setting, words", [
    ("train.lrr=1", ["train has no field 'lrr'", "did you mean train.lr"]),
    ("trian.lr=1", ["unknown section 'trian'", "data, model, train, profile"]),
    ("strategy.name=full", ["unknown section 'strategy'"]),
    ("train.lr", ["expected SECTION.FIELD=VALUE", "'train.lr'"]),
])
def test_a_wrong_setting_is_one_line_naming_it_and_exit_2(setting, words, capsys):
    with pytest.raises(SystemExit) as stop:
        run_bench.main(["--preset", "smoke", "--set", setting])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and "\n" not in err and err.startswith("error: argument --set: ")
    assert all(word in err for word in words), err


def test_a_value_the_field_refuses_is_one_line_naming_the_field(tmp_path, capsys):
    assert run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--set", "train.lr=-1",
                           "--out", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.strip() == "error: train.lr: expected > 0, got -1.0"
    assert not list((tmp_path / "runs").glob("*.json"))


def test_list_fields_names_every_declared_field(capsys):
    assert run_bench.main(["--list-fields"]) == 0
    listed = capsys.readouterr().out
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "profile": ProfileConfig}
    for section, cls in sections.items():
        for f in dataclasses.fields(cls):
            assert f"{section}.{f.name} " in listed, f"{section}.{f.name}"
    assert json.dumps("synthetic") in listed  # defaults shown as the JSON --set takes
