"""VTFPAR++ side tuning: shapes, taps, frozen backbone without autograd, gradients, parameter counts, config."""
from __future__ import annotations

import copy
import functools
import json

import pytest
import torch

from data.schema import MARS
from models.backbone import create_clip
from models.par_model import FusionSpec, build_par_model
from strategies import registry
from strategies.side import (
    SideConfig,
    SideVision,
    SpatialSideNet,
    TemporalSideNet,
    _add_to_patches,
    default_taps,
    side_block,
)
from tests.conftest import micro_model, micro_video

SMALL = {"width": 48, "heads": 4, "ssn_depth": 3, "max_frames": 3}  # micro: P = 16 patches, D_clip = 64
P, D_CLIP = 16, 64


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@functools.lru_cache(maxsize=None)
def _base_model(fusion_width: int, num_frames: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_par_model(backbone="par-vit-micro", pretrained=None, sentences=MARS.sentences(),
                           fusion=FusionSpec(width=fusion_width, heads=2), num_frames=num_frames)


def _side_model(fusion_width: int = 64, num_frames: int = 3, **params) -> torch.nn.Module:
    base = copy.deepcopy(_base_model(fusion_width, num_frames))
    torch.manual_seed(0)  # after the (cached) base: the side networks start alike whichever call builds the base
    return registry.apply_strategy(base, "side", {**SMALL, **params})


@pytest.mark.parametrize("params, parts", [({}, {"side_ssn", "side_tsn"}), ({"temporal": False}, {"side_ssn"}),
                                           ({"spatial": False}, {"side_tsn"})])
def test_output_shapes_and_which_side_networks_exist(params, parts):
    model = _side_model(**params)
    video = micro_video(batch=2, frames=3)
    assert model.vision(video).shape == (2, 1 + P, 48)  # (B, 1+P, W)
    assert model(video).shape == (2, MARS.num_columns)
    assert model.vision_proj.in_features == 48  # the shared projection follows the side width
    added = {name.split(".")[1] for name, _ in model.named_parameters() if "side_" in name}
    assert added == parts


def test_paper_width_runs_on_the_tiny_backbone():
    torch.manual_seed(0)
    side = SideVision(create_clip("par-vit-tiny").visual, SideConfig(ssn_depth=4), num_frames=2)  # width 240, 6 heads
    assert side.taps == (0, 1, 2, 3, 4)
    assert side(torch.randn(1, 2, 3, 48, 48)).shape == (1, 1 + 36, 240)  # 48 px / patch 8 -> 6x6 patches


def test_single_frame_clip_uses_block_zero_only():
    model = _side_model(num_frames=1)
    assert model.vision(micro_video(batch=1, frames=1)).shape == (1, 1 + P, 48)


def test_default_taps_scale_the_paper_indices():
    assert default_taps(12) == (0, 3, 6, 9, 11)
    assert default_taps(4) == (0, 1, 2, 3, 4)  # 11 * 4 / 12 = 3.67 -> 4
    assert default_taps(2) == (0, 1, 2)  # 0, 0.5 -> 1, 1, 1.5 -> 2, 1.83 -> 2: duplicates dropped
    assert _side_model().vision.taps == (0, 1, 2)


def test_taps_are_the_backbone_outputs_without_class_token_and_without_autograd():
    side = _side_model(taps=[0, 2]).vision
    side.train()
    images = micro_video(batch=1, frames=2).flatten(0, 1)
    taps = side.clip_taps(images)
    expected0 = side.frames.embed(images)  # after ln_pre
    expected2 = side.frames.blocks[1](side.frames.blocks[0](expected0))  # output of block 2
    assert [tuple(t.shape) for t in taps] == [(2, P, D_CLIP)] * 2
    assert torch.allclose(taps[0], expected0[:, 1:]) and torch.allclose(taps[1], expected2[:, 1:], atol=1e-6)
    assert not any(t.requires_grad or t.grad_fn is not None for t in taps)


def _saved_shapes(model, video) -> list[tuple[int, ...]]:
    """Shapes of the activations autograd keeps for backward (parameters and buffers excluded)."""
    owned = {t.untyped_storage().data_ptr() for t in [*model.parameters(), *model.buffers()]}
    shapes = []

    def pack(t):
        if t.untyped_storage().data_ptr() not in owned:
            shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(video)
    return shapes


def test_no_backbone_activation_is_kept_for_backward():
    """Backbone activations are (B', 1+P, D_clip) token maps and (B', 1+P, 4 D_clip) MLP hiddens. The side model
    may keep D_clip-wide tensors only as its fusion inputs: the tapped patch tokens (P tokens, class token
    dropped) and their LayerNorm outputs, which the fusion Linear/LayerNorm need for their weight gradients (a
    Linear saves its input flattened to (rows, D_clip)). The side, fusion (40) and MLP widths (192, 160) differ from
    the backbone's (64, 256), so shapes tell them apart; ``full`` on the same input is the positive control."""
    video = micro_video(batch=2, frames=3)
    side_shapes = _saved_shapes(_side_model(fusion_width=40).train(), video)
    token_counts = [torch.Size(s).numel() // D_CLIP for s in side_shapes if s[-1] == D_CLIP]
    assert token_counts and all(n % P == 0 and n % (1 + P) for n in token_counts)  # P-token maps only
    assert not any(s[-1] == 4 * D_CLIP for s in side_shapes)
    full = registry.apply_strategy(micro_model(), "full").train()
    full_shapes = _saved_shapes(full, video)
    assert any(s[-2:] == (1 + P, D_CLIP) for s in full_shapes) and any(s[-1] == 4 * D_CLIP for s in full_shapes)


def test_every_side_parameter_gets_a_gradient_and_the_backbone_none():
    model = _side_model().train()
    model(micro_video(batch=2, frames=3)).sum().backward()  # frames == max_frames: every TSN block is used
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert with_grad == trainable
    assert {name for name in trainable if name.startswith("vision.")} == {
        name for name, _ in model.named_parameters() if "side_" in name}
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())


def test_temporal_network_builds_one_block_per_frame_of_the_models_clip():
    for frames in (1, 2, 3):
        tsn = _side_model(num_frames=frames).vision.side_tsn
        assert len(tsn.blocks) == frames
        assert len(tsn.fusions) == (0 if frames == 1 else 3)  # frame t >= 1 fusions, one per tap stream


def test_clips_longer_than_max_frames_are_refused_when_the_strategy_is_applied():
    with pytest.raises(registry.StrategyError, match="clips of 4 frames.*max_frames=3"):
        _side_model(num_frames=4)
    assert len(_side_model(num_frames=4, temporal=False).vision.side_modules()) == 1


def test_backbone_is_registered_once_and_keeps_its_names():
    base = micro_model()
    base_names = {name for name, _ in base.named_parameters() if name.startswith("vision.frames.visual.")}
    model = _side_model()
    params = dict(model.named_parameters())
    assert {name for name in params if name.startswith("vision.frames.visual.")} == base_names
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    assert sum(id(p) in backbone_ids for p in model.parameters()) == len(backbone_ids)


def test_more_frames_than_temporal_blocks_is_a_clear_error():
    model = _side_model()
    with pytest.raises(registry.StrategyError, match="4 frames.*3-frame clips"):
        model(micro_video(batch=1, frames=4))
    spatial_only = _side_model(temporal=False)  # no temporal blocks, no frame limit
    assert spatial_only.vision(micro_video(batch=1, frames=4)).shape == (1, 1 + P, 48)


def test_spatial_network_ignores_frame_order_temporal_network_does_not():
    video = micro_video(batch=1, frames=3)
    reverse = video.flip(1)
    for params, invariant in (({"temporal": False}, True), ({"spatial": False}, False)):
        side = _side_model(**params).vision.eval()
        with torch.no_grad():
            same = torch.allclose(side(video), side(reverse), atol=1e-5)
        assert same == invariant


def test_fusion_adds_to_patches_and_leaves_the_class_token():
    x = torch.zeros(2, 1 + 3, 4)
    out = _add_to_patches(x, torch.ones(2, 3, 4))
    assert torch.equal(out[:, 0], torch.zeros(2, 4)) and torch.equal(out[:, 1:], torch.ones(2, 3, 4))


def test_one_paper_width_block_has_694320_parameters():
    # 2 LayerNorms 4*240 + qkv 240*720+720 + out 240*240+240 + fc1 240*960+960 + fc2 960*240+240
    block = side_block(240, 6)
    assert _count(block) == 694_320
    assert block.attn.in_proj_bias is not None and block.mlp.c_fc.out_features == 960


def test_paper_scale_counts_match_the_released_code_minus_its_unused_parts():
    """ViT-B/16 geometry (D_clip 768, patch 16, 196 patches, 5 taps), width 240. Released: SSN 6,717,120 (8 blocks
    registered, 7 run), TSN 7,190,880 (adds an unused patch embedding 184,560 and five 240x240 projections
    289,200). Here only the used parts are registered."""
    cfg = SideConfig()
    with torch.device("meta"):  # shapes only: no memory, no init cost
        ssn = SpatialSideNet(cfg, clip_width=768, patch_size=16, num_patches=196, num_taps=5)
        tsn = TemporalSideNet(cfg, clip_width=768, num_patches=196, num_taps=5, num_frames=8)
    fusion = 2 * 768 + 768 * 240 + 240  # LayerNorm + Linear
    tokens = 240 + 197 * 240  # class token + positions
    assert _count(ssn) == (3 * 16 * 16 * 240 + 240) + tokens + 5 * fusion + 7 * 694_320 == 6_022_800
    assert _count(tsn) == (768 * 240 + 240) + tokens + 5 * fusion + 8 * 694_320 == 6_717_120
    assert _count(ssn) + 694_320 == 6_717_120  # the released SSN's 8th, never-run block
    assert _count(tsn) + 184_560 + 5 * (240 * 240 + 240) == 7_190_880


def test_config_accepts_json_lists_and_round_trips():
    cfg = registry.build_config("side", {"taps": [0, 3, 6, 9, 11]})
    assert cfg.taps == (0, 3, 6, 9, 11)
    assert registry.build_config("side", json.loads(registry.config_to_json(cfg))) == cfg


@pytest.mark.parametrize("params, message", [
    ({"width": 240, "heads": 7}, "heads"), ({"spatial": False, "temporal": False}, "at least one"),
    ({"taps": [3, 0]}, "increasing"), ({"taps": []}, "non-empty"), ({"taps": [0, 1, 2], "ssn_depth": 1}, "ssn_depth"),
    ({"max_frames": 0}, "max_frames"), ({"mlp_ratio": 0}, "mlp_ratio")])
def test_invalid_config_is_rejected(params, message):
    with pytest.raises(registry.StrategyError, match=message):
        registry.build_config("side", params)


def test_taps_beyond_the_backbone_depth_are_rejected():
    with pytest.raises(registry.StrategyError, match="outputs 0..2"):
        SideVision(micro_model().backbone, SideConfig(taps=(0, 3)), num_frames=3)


def test_side_tokens_enter_the_fusion_directly_when_the_widths_match():
    """VTFPAR++'s forward has no projection after the side networks (side and fusion width both 240)."""
    straight = _side_model(fusion_width=48)
    projected = _side_model(fusion_width=48, fusion_projection="linear")
    assert isinstance(straight.vision_proj, torch.nn.Identity)
    assert isinstance(projected.vision_proj, torch.nn.Linear)
    assert _count(projected) - _count(straight) == 48 * 48 + 48  # 57,840 at the paper's 240
    assert straight(micro_video(batch=2, frames=3)).shape == (2, MARS.num_columns)
    assert isinstance(_side_model(fusion_width=64).vision_proj, torch.nn.Linear)  # widths differ: a Linear is needed


def test_side_refuses_a_temporal_aggregator_it_would_ignore():
    torch.manual_seed(0)
    base = build_par_model(backbone="par-vit-micro", pretrained=None, sentences=MARS.sentences(),
                           fusion=FusionSpec(width=64, heads=2), num_frames=3, temporal="tmd")
    with pytest.raises(registry.StrategyError, match="does not apply under side tuning"):
        registry.apply_strategy(base, "side", SMALL)


def test_fusion_projection_is_validated():
    with pytest.raises(registry.StrategyError, match="fusion_projection"):
        SideConfig(fusion_projection="sometimes")


def test_recomputed_side_networks_give_the_same_values_and_gradients_and_keep_less():
    from bench.measure.profile import activation_bytes_by_module
    from bench.numerics import FP32

    video = micro_video()
    results = {}
    for recompute in (False, True):
        torch.manual_seed(0)
        model = _side_model(checkpoint=recompute).train()
        torch.manual_seed(1)  # the same dropout masks in both
        out = model(video)
        out.float().square().mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        saved = activation_bytes_by_module(model, video, numerics=FP32)["activation_saved_bytes_by_module"]
        results[recompute] = out.detach(), grads, saved
    (plain, plain_grads, plain_saved), (again, again_grads, again_saved) = results[False], results[True]
    assert torch.allclose(again, plain, atol=1e-6)
    assert plain_grads.keys() == again_grads.keys()
    for name, grad in plain_grads.items():
        assert torch.allclose(again_grads[name], grad, atol=1e-6), name
    for network in ("vision.side_ssn", "vision.side_tsn"):
        assert again_saved[network] < 0.5 * plain_saved[network], (network, again_saved, plain_saved)
    with torch.no_grad():  # evaluation: the plain forward
        assert torch.allclose(model.eval()(video), model(video))


@pytest.mark.parametrize("sdpa_backend", ["auto", "math"])
def test_recomputed_side_networks_train_and_count_under_every_attention_policy(sdpa_backend):
    from bench.measure.profile import measure_flops
    from bench.numerics import Numerics, TrainingStep

    numerics = Numerics(dtype=torch.bfloat16, sdpa_backend=sdpa_backend)
    video, target = micro_video(), torch.ones(2, MARS.num_columns)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    flops = {}
    for recompute in (False, True):
        model = _side_model(checkpoint=recompute).train()
        optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
        assert torch.isfinite(TrainingStep(model, loss_fn, optimizer, numerics, video.device)(video, target))
        flops[recompute] = measure_flops(model, video, target, loss_fn=loss_fn, numerics=numerics)
    assert flops[True]["fwd_flops_batch"] == flops[False]["fwd_flops_batch"]
    # backward also runs the side blocks and fusions forward again (not the patch embedding, not the frozen backbone)
    side_forward = sum(v for k, v in flops[False]["fwd_flops_by_module"].items() if k.startswith("vision.side_"))
    extra = flops[True]["bwd_flops_batch"] - flops[False]["bwd_flops_batch"]
    assert 0.5 * side_forward < extra < side_forward, (extra, side_forward)
