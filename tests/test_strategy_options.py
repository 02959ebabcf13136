"""Every strategy's config is declared and checked by the builder the run config uses (strategies/options.py): each
field has help text, ``--list-strategies --verbose`` shows it, and a bad value is one ``StrategyError`` naming the
strategy and the field. Generic over the registry, so a strategy added later is covered."""
from __future__ import annotations

import dataclasses
import typing

import pytest

from bench.cli import build_parser, list_parameters, print_strategies
from bench.runner.experiments import load_preset, run_config, strategy_catalog
from strategies import registry
from strategies.options import BOUNDS


def _fields():
    return [(name, f, typing.get_type_hints(registry.get(name).config)[f.name]) for name in registry.names()
            for f in dataclasses.fields(registry.get(name).config)]


FIELDS = _fields()
IDS = [f"{name}.{f.name}" for name, f, _ in FIELDS]


def test_every_strategy_config_is_declared_with_the_options_builder():
    for name in registry.names():
        assert issubclass(registry.get(name).config, registry.StrategyOptions), name


@pytest.mark.parametrize("name,f,annotation", FIELDS, ids=IDS)
def test_every_strategy_field_declares_help(name, f, annotation):
    assert f.metadata.get("help"), f"{name}.{f.name}: no help text"


@pytest.mark.parametrize("name,f,annotation", FIELDS, ids=IDS)
def test_a_wrong_type_is_a_strategy_error_naming_strategy_field_and_value(name, f, annotation):
    with pytest.raises(registry.StrategyError, match=rf"^strategy '{name}': {f.name}: expected .*, got \[\['x'\]\]$"):
        registry.build_config(name, {f.name: [["x"]]})


@pytest.mark.parametrize("name,f,annotation", FIELDS, ids=IDS)
def test_a_value_past_a_declared_bound_is_a_strategy_error_naming_the_field(name, f, annotation):
    step = 1 if int in (typing.get_args(annotation) or (annotation,)) else 0.5
    past = {"min": lambda b: b - step, "max": lambda b: b + step, "above": lambda b: b, "below": lambda b: b}
    for rule, _, text in BOUNDS:
        if rule in f.metadata:
            with pytest.raises(registry.StrategyError, match=rf"^strategy '{name}': {f.name}: expected {text} "):
                registry.build_config(name, {f.name: past[rule](f.metadata[rule])})
    if "choices" in f.metadata:
        with pytest.raises(registry.StrategyError, match=rf"^strategy '{name}': {f.name}: expected one of "):
            registry.build_config(name, {f.name: "no-such-choice"})


def test_a_bad_value_in_code_is_a_strategy_error_too():
    from strategies.lora import LoraConfig

    with pytest.raises(registry.StrategyError, match=r"^r: expected >= 1, got 0$"):
        LoraConfig(r=0)


def test_a_bad_value_in_a_preset_names_strategy_field_value_and_expectation():
    base = load_preset("smoke")
    base["strategy_defaults"] = {"lora": {"dropout": 1.5}}
    with pytest.raises(registry.StrategyError, match=r"^strategy 'lora': dropout: expected < 1, got 1.5$"):
        run_config(base, "lora", seed=0, frames=2, batch_size=4)


def test_a_bad_value_of_a_variant_names_its_file():
    base = load_preset("smoke")
    base["strategy_defaults"] = {"side": {"width": 50}}  # the default 6 heads do not divide it
    with pytest.raises(registry.StrategyError, match=r"side_spatial\.json: strategy 'side': heads: must divide"):
        run_config(base, "side_spatial", seed=0, frames=2, batch_size=4)


def test_a_plugin_config_without_the_base_class_still_gets_the_generic_check():
    @dataclasses.dataclass(frozen=True)
    class PlainConfig:
        rank: int = 4

    registry.register("plain_demo", config=PlainConfig, apply=lambda model, cfg: model, description="demo")
    with pytest.raises(registry.StrategyError, match=r"^strategy 'plain_demo': rank: expected an integer, got 'x'$"):
        registry.build_config("plain_demo", {"rank": "x"})


def test_list_strategies_verbose_shows_every_field_with_type_default_and_help(capsys):
    assert print_strategies(build_parser().parse_args(["--list-strategies", "--verbose"])) == 0
    printed = capsys.readouterr().out
    assert printed.strip() == list_parameters()
    for name, entry in strategy_catalog().items():
        block = _block(printed, name)
        for doc in registry.describe(entry["family"], entry["params"]):
            assert doc.name in block and doc.help in block and doc.type in block, (name, doc.name)
            assert f"= {doc.default}" in block, (name, doc.name)
    assert "r        int = 8 " in _block(printed, "lora") and '["mlp"]' in _block(printed, "lora_mlp")
    assert "(variant of lora)" in _block(printed, "lora_mlp") and "(no parameters)" in _block(printed, "frozen")


def _block(printed: str, name: str) -> str:
    """The lines of one strategy: its heading and the indented lines under it."""
    lines = printed.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split(" ")[0] == name)
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return "\n".join(lines[start:end])
