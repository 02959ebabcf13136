"""Strategy-specific behaviour of ``lora``, ``adapter`` and ``peft`` (the generic contract is in
test_strategy_contract.py): exact LoRA sizes at ViT-B/16 scale, LoRA on nn.MultiheadAttention equal to the merged
weights W + dW, the out_proj bypass guard, the AdaptFormer adapter's formula and zero init, and peft tuner handling.
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import open_clip
import pytest
import torch
from open_clip.model import _build_vision_tower
from torch import nn

from bench.runner.experiments import strategy_catalog
from strategies import adapter, lora, registry
from tests.conftest import micro_model, micro_video


def _meta_vit_b16() -> SimpleNamespace:
    """The ViT-B/16 visual tower on the meta device (shapes only, no memory), with the PAR model's attach points."""
    cfg = open_clip.get_model_config("ViT-B-16")
    with torch.device("meta"):
        visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"])
    visual.requires_grad_(False)
    return SimpleNamespace(backbone=visual, backbone_blocks=visual.transformer.resblocks, step_hooks=[])


@pytest.mark.parametrize("targets, expected", [(("attn",), 442_368), (("mlp",), 737_280),
                                               (("attn", "mlp"), 1_179_648)])
def test_lora_r8_sizes_on_vit_b16(targets, expected):
    # per block, D = 768, r = 8: attn r(D + 3D) + r(D + D) = 36,864; mlp r(D + 4D) + r(4D + D) = 61,440; x 12 blocks
    model = _meta_vit_b16()
    lora.apply(model, lora.LoraConfig(r=8, targets=targets))
    trainable = [(n, p) for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert sum(p.numel() for _, p in trainable) == expected
    assert all(".lora_A." in n or ".lora_B." in n for n, _ in trainable)


class _MaskOnly:
    """A prompt hook that only supplies an additive attention mask: tokens 1-4 see only themselves and the class."""

    def attn_mask(self, num_tokens: int) -> torch.Tensor:
        mask = torch.zeros(num_tokens, num_tokens)
        mask[1:5, 5:] = float("-inf")
        return mask

    def before_block(self, index: int, tokens: torch.Tensor) -> torch.Tensor:
        return tokens

    def strip(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens


def test_lora_on_multihead_attention_equals_merged_weights_through_the_frame_encoder():
    base = micro_model()
    model = registry.apply_strategy(copy.deepcopy(base), "lora", {"targets": ["attn"]})
    frozen = {n: (p, p.detach().clone()) for n, p in model.backbone.named_parameters() if not p.requires_grad}
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if ".lora_" in name:
            nn.init.normal_(param, std=0.1)
    with torch.no_grad():  # reference: plain attention with W + (alpha / r) B A for in_proj and out_proj
        for block, ref in zip(model.backbone_blocks, base.backbone_blocks, strict=True):
            ref.attn.in_proj_weight += block.attn.get_delta_weight("default")
            ref.attn.out_proj.weight += block.attn.base_layer.out_proj.get_delta_weight("default")
    model.vision.frames.prompts = base.vision.frames.prompts = _MaskOnly()
    images = micro_video().flatten(0, 1)  # (B, T, 3, H, W) -> (B*T, 3, H, W)
    out = model.vision.frames(images)
    torch.testing.assert_close(out, base.vision.frames(images), rtol=0, atol=1e-5)
    out.square().sum().backward()
    lora_grads = [p.grad for n, p in model.named_parameters() if ".lora_" in n]
    assert len(lora_grads) == 2 * 4 and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
    model.state_dict()  # peft 0.21's MHA layer re-created the frozen weights here and after every forward
    for name, param in model.backbone.named_parameters():
        if name in frozen:
            assert param is frozen[name][0] and torch.equal(param, frozen[name][1]), name


def test_out_proj_of_multihead_attention_is_refused():
    with pytest.raises(registry.StrategyError, match="never calls it"):
        registry.apply_strategy(micro_model(), "peft", {"tuner": "ia3", "targets": ["attn.out_proj"]})


def test_adapter_is_the_adaptformer_formula_and_starts_at_zero():
    model = registry.apply_strategy(micro_model(), "adapter", {"bottleneck": 0.25, "scale": 0.1, "layers": [1]})
    assert not isinstance(model.backbone_blocks[0].mlp, adapter.ParallelAdapterMLP)
    mlp = model.backbone_blocks[1].mlp
    added = [p for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in added) == 2 * 64 * 16 + 16 + 64  # down (64 -> 16) and up (16 -> 64), with biases
    h = torch.randn(3, 5, 64)
    assert torch.equal(mlp(h), mlp.base_layer(h))  # up projection is zero: the base MLP exactly
    mlp(h).sum().backward()
    assert mlp.adapter_up.weight.grad.abs().sum() > 0 and torch.equal(mlp.adapter_down.weight.grad,
                                                                      torch.zeros(16, 64))
    with torch.no_grad():
        nn.init.normal_(mlp.adapter_up.weight)
        expected = mlp.base_layer(h) + 0.1 * (torch.relu(h @ mlp.adapter_down.weight.T + mlp.adapter_down.bias)
                                              @ mlp.adapter_up.weight.T + mlp.adapter_up.bias)
        torch.testing.assert_close(mlp(h), expected)


@pytest.mark.parametrize("params, match", [
    ({"tuner": "nope"}, "unknown peft tuner"),
    ({"tuner": "prompt_tuning"}, "injects no layers"),
    ({"tuner": "loha", "kwargs": {"rank": 4}}, r"kwargs.rank: not a parameter of peft's LoHaConfig"),
    ({"tuner": "oft", "kwargs": {"r": 4, "oft_block_size": 32}}, "OFTConfig rejected them"),
    ({"tuner": "adalora"}, "kwargs.total_step"),
])
def test_peft_config_errors_are_one_line(params, match):
    with pytest.raises(registry.StrategyError, match=match) as error:
        registry.build_config("peft", params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("params, match", [
    ({"tuner": "loha", "targets": ["attn"]}, "cannot adapt these modules"),
    ({"tuner": "oft", "kwargs": {"oft_block_size": 48}}, "does not divide the input width 64"),
])
def test_peft_apply_errors_are_one_line(params, match):
    with pytest.raises(registry.StrategyError, match=match) as error:
        registry.apply_strategy(micro_model(), "peft", params)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("variant, prefix, count", [
    ("peft_ia3", "ia3_", 2 * (256 + 256)),  # per block: c_fc output (4D) and c_proj input (4D), D = 64
    ("peft_oft", "oft_", 2 * (64 // 32 + 256 // 32) * (32 * 31 // 2)),  # skew-symmetric 32 x 32 block per 32 inputs
    ("peft_lokr", "lokr_", None),
])
def test_peft_variants_train_only_their_prefixed_parameters(variant, prefix, count):
    entry = strategy_catalog()[variant]
    model = registry.apply_strategy(micro_model(), entry["family"], entry["params"])
    trainable = {n: p for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert trainable and all(any(part.startswith(prefix) for part in n.split(".")) for n in trainable)
    assert {n.split(".mlp.")[1].split(".")[0] for n in trainable} == {"c_fc", "c_proj"}
    if count is not None:
        assert sum(p.numel() for p in trainable.values()) == count
    if variant == "peft_ia3":  # feedforward (input-scaled) c_proj: (1, in); c_fc scales its output: (out, 1)
        block = model.backbone_blocks[0].mlp
        assert block.c_proj.ia3_l["default"].shape == (1, 256) and block.c_fc.ia3_l["default"].shape == (256, 1)


def test_adalora_rank_allocation_runs_as_a_step_hook():
    model = registry.apply_strategy(micro_model(), "peft", {"tuner": "adalora", "kwargs": {
        "total_step": 3, "tinit": 0, "tfinal": 1, "deltaT": 1, "init_r": 4, "target_r": 2}})
    assert len(model.step_hooks) == 1
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    for step in (1, 2):
        optimizer.zero_grad()
        model(micro_video(seed=step)).square().mean().backward()
        optimizer.step()
        model.step_hooks[0](step)
    ranks = model.backbone.peft_config["default"].rank_pattern
    assert ranks and sum(sum(mask) for mask in ranks.values()) == 2 * 4  # target_r 2 per layer, 4 layers
