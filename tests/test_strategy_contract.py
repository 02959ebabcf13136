"""Contract tests parametrized over every runnable strategy (registered families and experiment variants).

A new strategy file plus its registry call is picked up here without new test code.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from bench.runner.experiments import strategy_catalog
from data.schema import MARS
from strategies import registry
from tests.conftest import micro_model, micro_video

CATALOG = strategy_catalog()


def _apply(name: str):
    entry = CATALOG[name]
    model = micro_model(temporal=entry["model"].get("temporal", "mean"))
    base_ids = {id(p) for p in model.parameters()}
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    torch.manual_seed(1)
    model = registry.apply_strategy(model, entry["family"], entry["params"])
    return model, entry, base_ids, backbone_ids


def _head_ids(model) -> set[int]:
    return {id(p) for module in model.head_modules() for p in module.parameters()}


@pytest.fixture(params=sorted(CATALOG))
def applied(request):
    return (request.param, *_apply(request.param))


def test_output_shape_unchanged(applied):
    _, model, *_ = applied
    assert model(micro_video()).shape == (2, MARS.num_columns)


def test_only_the_strategys_own_parameters_and_head_train(applied):
    name, model, entry, base_ids, backbone_ids = applied
    strategy = registry.get(entry["family"])
    cfg = registry.build_config(entry["family"], entry["params"])
    heads, declared = _head_ids(model), {id(p) for p in strategy.trains_existing(model, cfg)}
    assert declared <= base_ids, f"{name}: trains_existing must name parameters the model already had"
    for pname, p in model.named_parameters():
        own = id(p) not in base_ids and id(p) not in heads
        if own:
            assert any(part.startswith(strategy.prefixes) for part in pname.split(".")), \
                f"{name}: {pname} lacks {strategy.prefixes}"
        expected = own or id(p) in heads or id(p) in declared
        assert p.requires_grad == expected, f"{name}: {pname} requires_grad={p.requires_grad}"


def test_every_trainable_parameter_gets_a_gradient(applied):
    name, model, *_ = applied
    model.train()
    model(micro_video()).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"


def test_optimizer_steps_change_exactly_the_trainable_parameters(applied):
    name, model, *_ = applied
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(2):  # two steps: zero-initialised factors (LoRA B, adapter up) unlock their partners
        optimizer.zero_grad()
        model(micro_video(seed=step)).square().mean().backward()
        optimizer.step()
    for n, p in model.named_parameters():
        changed = not torch.equal(before[n], p.detach())
        assert changed == p.requires_grad, f"{name}: {n} changed={changed} requires_grad={p.requires_grad}"


def test_zero_initialised_strategies_match_the_base_model_at_step_zero(applied):
    name, model, entry, *_ = applied
    if not registry.get(entry["family"]).zero_init:
        pytest.skip(f"{name} is not zero-initialised")
    base = micro_model(temporal=entry["model"].get("temporal", "mean")).eval()
    video = micro_video()
    with torch.no_grad():
        assert torch.allclose(model.eval()(video), base(video), atol=1e-5), name


def test_config_round_trips_through_json(applied):
    name, _, entry, *_ = applied
    cfg = registry.build_config(entry["family"], entry["params"])
    again = registry.build_config(entry["family"], json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert again == cfg


def test_unknown_strategy_parameter_is_rejected():
    with pytest.raises(registry.StrategyError, match="unknown parameter"):
        registry.build_config("frozen", {"rank": 4})
