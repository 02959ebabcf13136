"""The released / paper definitions of SSF, (IA)3 and AdaptFormer: parameter counts at ViT-B/16 written out by hand,
and each option doing what it claims (the generic contract is in test_strategy_contract.py)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from strategies import registry
from tests.conftest import micro_model
from tests.test_peft_strategies import _meta_vit_b16

D, BLOCKS = 768, 12  # ViT-B/16: width, blocks (MLP width 4D)


def _trainable(model) -> int:
    return sum(p.numel() for p in model.backbone.parameters() if p.requires_grad)


def _randomise(module: nn.Module, prefix: str, seed: int = 0) -> None:
    """Move a strategy's own parameters away from their identity start, so the tests see them act."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in module.named_parameters():
            if name.split(".")[-1].startswith(prefix):
                param.add_(0.3 * torch.randn(param.shape, generator=generator))


def _reference_attention(q, k, v, base: nn.MultiheadAttention) -> torch.Tensor:
    """Multi-head attention of given q, k, v (B, N, D), written out, then ``base``'s output projection."""
    heads = base.num_heads

    def split(t):  # (B, N, D) -> (B, heads, N, D/heads)
        return t.unflatten(-1, (heads, t.shape[-1] // heads)).transpose(1, 2)

    out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # (B, heads, N, D/heads)
    return base.out_proj(out.transpose(1, 2).flatten(2))  # (B, N, D)


# --- SSF -------------------------------------------------------------------------------------------------------------

def test_ssf_official_placement_matches_the_hand_count_of_the_released_vit_b16():
    per_block = 2 * (D + 3 * D + D + D + 4 * D + D)  # ln_1, qkv, attention output, ln_2, c_fc (4D), c_proj
    patch_embed, final_norm = 2 * D, 2 * D  # after conv1 (patch tokens), after ln_post
    assert per_block == 16_896
    model = registry.get("ssf").apply(_meta_vit_b16(), registry.build_config("ssf", {}))
    assert _trainable(model) == BLOCKS * per_block + patch_embed + final_norm == 205_824
    names = {n for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert {"conv1.ssf_scale", "ln_post.ssf_shift", "transformer.resblocks.11.attn.ssf_qkv_scale"} <= names


def test_ssf_blocks_placement_keeps_the_earlier_count():
    model = registry.get("ssf").apply(_meta_vit_b16(), registry.build_config("ssf", {"placement": "blocks"}))
    assert _trainable(model) == BLOCKS * 2 * (D + D + D + 4 * D + D) == 147_456
    names = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert not any(n.startswith(("conv1.", "ln_post.")) or "ssf_qkv" in n for n in names)


def test_ssf_qkv_scale_and_shift_act_on_the_fused_projection_output():
    model = registry.apply_strategy(micro_model(), "ssf", {})
    attn = model.backbone_blocks[0].attn
    _randomise(attn, "ssf_")
    base, x = attn.base_layer, torch.randn(2, 5, 64)
    q, k, v = (F.linear(x, base.in_proj_weight, base.in_proj_bias) * attn.ssf_qkv_scale + attn.ssf_qkv_shift
               ).split(64, dim=-1)  # (B, N, D) each, after scale and shift of all 3D channels
    expected = _reference_attention(q, k, v, base) * attn.ssf_scale + attn.ssf_shift
    torch.testing.assert_close(attn(x, x, x, need_weights=False)[0], expected, rtol=1e-5, atol=1e-5)


def test_ssf_official_scales_the_patch_tokens_and_the_final_norm():
    model = registry.apply_strategy(micro_model(), "ssf", {})
    visual = model.backbone
    _randomise(visual.conv1, "ssf_")
    images = torch.randn(2, 3, 32, 32)
    patches = visual.conv1.base_layer(images)  # (B', D, h, w): channel axis 1
    scale, shift = visual.conv1.ssf_scale.view(1, -1, 1, 1), visual.conv1.ssf_shift.view(1, -1, 1, 1)
    torch.testing.assert_close(visual.conv1(images), patches * scale + shift)
    assert visual.conv1.kernel_size == (8, 8) and model.vision.frames.width == 64  # wrapped layers still inspectable
    blocks = registry.apply_strategy(micro_model(), "ssf", {"placement": "blocks"})
    assert isinstance(blocks.backbone.conv1, nn.Conv2d) and isinstance(blocks.backbone.ln_post, nn.LayerNorm)


# --- (IA)3 -----------------------------------------------------------------------------------------------------------

def test_ia3_matches_the_hand_count_of_the_paper_definition_at_vit_b16():
    per_block = D + D + 4 * D  # l_k, l_v (attention keys and values), l_ff (FFN intermediate, 4D)
    model = registry.get("ia3").apply(_meta_vit_b16(), registry.build_config("ia3", {}))
    assert _trainable(model) == BLOCKS * per_block == 55_296
    mlp_only = registry.get("ia3").apply(_meta_vit_b16(), registry.build_config("ia3", {"attention": False}))
    assert _trainable(mlp_only) == BLOCKS * 4 * D == 36_864


def test_ia3_scales_keys_and_values_but_not_queries():
    model = registry.apply_strategy(micro_model(), "ia3", {})
    attn = model.backbone_blocks[0].attn
    _randomise(attn, "ia3_")
    base, x = attn.base_layer, torch.randn(2, 5, 64)
    q, k, v = F.linear(x, base.in_proj_weight, base.in_proj_bias).split(64, dim=-1)  # (B, N, D) each
    expected = _reference_attention(q, attn.ia3_l_k * k, attn.ia3_l_v * v, base)
    torch.testing.assert_close(attn(x, x, x, need_weights=False)[0], expected, rtol=1e-5, atol=1e-5)


def test_ia3_scales_the_ffn_intermediate_activation():
    model = registry.apply_strategy(micro_model(), "ia3", {"attention": False})
    block = model.backbone_blocks[0]
    assert isinstance(block.attn, nn.MultiheadAttention)  # attention untouched without l_k, l_v
    _randomise(block.mlp, "ia3_")
    h = torch.randn(2, 5, 256)  # (B, N, 4D): the activation after gelu
    c_proj = block.mlp.c_proj
    torch.testing.assert_close(c_proj(h), c_proj.base_layer(h * c_proj.ia3_l_ff))


# --- AdaptFormer -----------------------------------------------------------------------------------------------------

def _adapted(**params):
    model = registry.apply_strategy(micro_model(), "adapter", {"bottleneck": 16, "layers": [0], **params})
    block = model.backbone_blocks[0]
    torch.manual_seed(3)
    nn.init.normal_(block.mlp.adapter_up.weight, std=0.5)  # up starts at zero: make the adapter visible
    return block


def test_adapter_dropout_is_active_in_training_only():
    block, x = _adapted(dropout=0.5), torch.randn(2, 5, 64)
    mlp = block.mlp
    mlp.eval()
    expected = mlp.base_layer(x) + 0.1 * mlp.adapter_up(torch.relu(mlp.adapter_down(x)))  # no dropout
    torch.testing.assert_close(mlp(x), expected)
    assert torch.equal(mlp(x), mlp(x))
    mlp.train()
    torch.manual_seed(0)
    first, second = mlp(x), mlp(x)
    assert not torch.equal(first, second) and not torch.allclose(first, expected)
    still = _adapted(dropout=0.0).mlp.train()
    assert torch.equal(still(x), still(x))  # no dropout: training mode is deterministic


def test_adapter_input_tap_reads_the_block_input_before_the_norm():
    norm_block, x = _adapted(tap="norm"), torch.randn(2, 5, 64)
    input_block = _adapted(tap="input")
    input_block.mlp.load_state_dict(norm_block.mlp.state_dict() | {
        f"base_norm.{k}": v for k, v in norm_block.ln_2.state_dict().items()})  # the same weights in both
    assert isinstance(input_block.ln_2, nn.Identity) and input_block.mlp.base_norm is not None
    base_norm, base_mlp = norm_block.ln_2, norm_block.mlp.base_layer
    with torch.no_grad():
        mid = x + norm_block.attention(norm_block.ln_1(x))  # x': the block's state after attention
        down, up = norm_block.mlp.adapter_down, norm_block.mlp.adapter_up
        paper = mid + base_mlp(base_norm(mid)) + 0.1 * up(torch.relu(down(base_norm(mid))))  # Eq. 3-4
        released = mid + base_mlp(base_norm(mid)) + 0.1 * up(torch.relu(down(mid)))  # Block.forward of the code
        torch.testing.assert_close(norm_block(x), paper)
        torch.testing.assert_close(input_block(x), released)
        assert not torch.allclose(paper, released, atol=1e-3)


def test_adapter_paper_choices_keep_the_parameter_count_and_the_zero_start():
    base = micro_model().eval()
    model = registry.apply_strategy(copy.deepcopy(base), "adapter", {"tap": "input", "dropout": 0.1}).eval()
    assert _trainable(model) == 2 * (2 * 64 * 64 + 64 + 64)  # 2 blocks x (2 D k + k + D), k = 64 = D here
    video = torch.randn(2, 3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(video), base(video))


@pytest.mark.parametrize("params", [{"tap": "before"}, {"dropout": 1.0}, {"placement": "all"}])
def test_bad_choices_are_refused(params):
    family = "ssf" if "placement" in params else "adapter"
    with pytest.raises(registry.StrategyError, match=next(iter(params))):
        registry.build_config(family, params)

