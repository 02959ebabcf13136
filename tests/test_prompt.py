"""VPT-deep and PromptPAR region prompts: token layout, the region attention mask, locality, depth, gradients."""
from __future__ import annotations

import copy
import functools
import json
from pathlib import Path

import pytest
import torch

from data.schema import MARS
from models.par_model import FusionSpec, build_par_model
from strategies import registry
from strategies.prompt import PromptConfig, stripe_rows
from tests.conftest import micro_model, micro_video

REGION = {"num_prompts": 3, "regions": 2, "global_prompts": 2}  # micro: 4x4 patches, stripes of rows (0,3), (1,4)
VARIANT = Path(__file__).resolve().parents[1] / "experiments" / "strategies" / "promptpar.json"


@functools.lru_cache(maxsize=None)
def _base(backbone: str):
    if backbone == "micro":
        return micro_model()
    torch.manual_seed(0)
    return build_par_model(backbone="par-vit-tiny", pretrained=None, sentences=MARS.sentences(),
                           fusion=FusionSpec(width=64, heads=2), num_frames=3)


def tiny_model():
    return copy.deepcopy(_base("tiny"))  # building CLIP once keeps the file fast


def prompted(params: dict, model=None):
    model = copy.deepcopy(_base("micro")) if model is None else model
    return registry.apply_strategy(model, "prompt", params).eval()


def shapes_seen(model, images: torch.Tensor) -> dict[str, tuple]:
    """Input shapes of the last block and of ln_post during one frame-encoder forward."""
    frames, seen = model.vision.frames, {}
    hooks = [frames.blocks[-1].register_forward_pre_hook(lambda m, args: seen.update(block=tuple(args[0].shape))),
             frames.visual.ln_post.register_forward_pre_hook(lambda m, args: seen.update(ln_post=tuple(args[0].shape)))]
    seen["out"] = tuple(frames(images).shape)
    for hook in hooks:
        hook.remove()
    return seen


def first_block(model, images: torch.Tensor) -> torch.Tensor:
    frames, prompts = model.vision.frames, model.vision.frames.prompts
    x = frames.embed(images)
    mask = prompts.attn_mask(x.shape[1])
    return frames.blocks[0](prompts.before_block(0, x), attn_mask=mask)


@pytest.mark.parametrize("rows, regions, overlap, expected", [
    (4, 2, 1, [(0, 3), (1, 4)]),
    (8, 4, 1, [(0, 3), (2, 5), (3, 6), (5, 8)]),
    (6, 4, 1, [(0, 3), (1, 4), (2, 5), (3, 6)]),  # par-vit-tiny at 48 px
    (8, 4, 0, [(0, 2), (2, 4), (4, 6), (6, 8)]),
    (14, 4, 1, [(0, 5), (3, 8), (6, 11), (9, 14)]),  # ViT-B/16 at 224 px
    (4, 1, 1, [(0, 4)]),
])
def test_stripe_rows_hand_computed(rows, regions, overlap, expected):
    assert stripe_rows(rows, regions=regions, overlap_rows=overlap) == expected


@pytest.mark.parametrize("params, field", [
    ({"num_prompts": 0}, "num_prompts"), ({"depth": 0}, "depth"), ({"regions": -1}, "regions"),
    ({"global_prompts": 4}, "global_prompts"), ({"overlap_rows": -1}, "overlap_rows"), ({"init": "zeros"}, "init"),
    ({"num_prompts": True}, "num_prompts"), ({"num_prompts": 2.5}, "num_prompts"),
])
def test_config_rejects_bad_values_naming_the_field(params, field):
    with pytest.raises(registry.StrategyError, match=field):
        registry.build_config("prompt", params)


@pytest.mark.parametrize("params, field", [({"depth": 3}, "depth"), ({"regions": 5}, "regions")])
def test_apply_rejects_what_the_backbone_cannot_hold(params, field):
    with pytest.raises(registry.StrategyError, match=field):  # micro: 2 blocks, 4 patch rows
        prompted(params)


def test_region_prompts_without_stripe_prompts_are_allowed():
    assert PromptConfig(num_prompts=0, regions=2).num_prompts == 0


def test_registration_and_parameter_names():
    entry = registry.get("prompt")
    assert entry.prefixes == ("prompt_",) and entry.zero_init is False
    model = prompted(REGION)
    added = {name: tuple(p.shape) for name, p in model.named_parameters() if ".prompts." in name}
    assert added == {"vision.frames.prompts.prompt_global": (2, 2, 64),  # (depth, G, D)
                     "vision.frames.prompts.prompt_region": (2, 2 * 3, 64),  # (depth, R * num_prompts, D)
                     "vision.frames.prompts.prompt_region_cls": (2, 64)}  # (R, D)


def test_applying_twice_is_refused():
    with pytest.raises(registry.StrategyError, match="already set"):
        prompted({}, model=prompted({}))


def test_variant_file_builds_a_promptpar_config():
    spec = json.loads(VARIANT.read_text())
    assert spec["family"] == "prompt"
    cfg = registry.build_config(spec["family"], spec["params"])
    assert (cfg.num_prompts, cfg.regions, cfg.global_prompts) == (10, 4, 10)  # 50 per block, as released
    assert cfg.global_prompts + cfg.regions * cfg.num_prompts == 50


def test_vpt_tokens_are_inserted_then_stripped_before_ln_post():
    model = prompted({"num_prompts": 5})
    seen = shapes_seen(model, torch.randn(3, 3, 32, 32))
    assert seen["block"] == (3, 1 + 5 + 16, 64)  # [cls, 5 prompts, 4x4 patches] inside the tower
    assert seen["ln_post"] == (3, 1 + 16, 64)  # prompts removed before ln_post
    assert seen["out"] == (3, 1 + 16, model.vision.frames.out_dim)
    assert model(micro_video()).shape == (2, MARS.num_columns)


def test_region_tokens_are_kept_and_prompts_stripped():
    model = prompted(REGION)
    seen = shapes_seen(model, torch.randn(3, 3, 32, 32))
    assert seen["block"] == (3, 1 + 2 + 16 + 2 + 2 * 3, 64)  # cls, G, P, R region cls, R x 3 region prompts
    assert seen["ln_post"] == (3, 1 + 16 + 2, 64)  # [cls, patches, region cls]
    assert model(micro_video()).shape == (2, MARS.num_columns)


def test_deep_prompts_replace_the_previous_blocks_prompts():
    model = prompted({"num_prompts": 4})
    prompts = model.vision.frames.prompts
    x = torch.randn(2, 1 + 4 + 16, 64)
    y = prompts.before_block(1, x)
    assert torch.equal(y[:, 0], x[:, 0]) and torch.equal(y[:, 5:], x[:, 5:])  # cls and patches kept
    assert torch.equal(y[:, 1:5], prompts.prompt_global[1].expand(2, -1, -1))  # block 1's own prompts


def test_region_class_tokens_start_as_clips_embedded_class_token():
    model = prompted(REGION)
    embedded_cls = model.vision.frames.embed(torch.randn(1, 3, 32, 32))[0, 0]
    region_cls = model.vision.frames.prompts.prompt_region_cls
    assert torch.allclose(region_cls, embedded_cls.expand(2, -1), atol=1e-6)


@pytest.mark.parametrize("stripe_mask", ["rows", "isolated"])
def test_mask_confines_each_stripe_and_the_base_rows_as_configured(stripe_mask):
    model = prompted({**REGION, "stripe_mask": stripe_mask})
    mask = model.vision.frames.prompts.attn_mask(1 + 16)
    visible = {q: set(torch.where(mask[q] == 0)[0].tolist()) for q in range(mask.shape[0])}
    assert mask.shape == (27, 27) and set(mask.unique().tolist()) == {0.0, float("-inf")}
    # layout: 0 cls, 1-2 global, 3-18 patches (row-major 4x4), 19-20 region cls, 21-23 / 24-26 region prompts
    base = set(range(0, 19))
    for q in base:  # released mask: only the stripe rows are restricted; isolated: base never sees stripe tokens
        assert visible[q] == (set(range(27)) if stripe_mask == "rows" else base)
    stripe0, stripe1 = set(range(3, 15)), set(range(7, 19))  # patch rows 0-2 and 1-3
    for q in (19, 21, 22, 23):
        assert visible[q] == {19, 21, 22, 23} | stripe0  # no row-3 patch, no stripe-1 token, no cls or global
    for q in (20, 24, 25, 26):
        assert visible[q] == {20, 24, 25, 26} | stripe1


def test_mask_at_tiny_scale_blocks_patches_outside_each_stripe():
    model = prompted({"num_prompts": 2, "regions": 4, "global_prompts": 2}, model=tiny_model())
    prompts = model.vision.frames.prompts
    mask, groups = prompts.attn_mask(1 + 36), prompts.token_groups()
    patches = set(groups["patches"])
    for r, (start, stop) in enumerate([(0, 3), (1, 4), (2, 5), (3, 6)]):  # 48 px / patch 8: 6x6 patches
        inside = {1 + 2 + row * 6 + col for row in range(start, stop) for col in range(6)}
        for q in [groups["region_cls"][r], *groups["region_prompts"][r]]:
            assert all(mask[q, k] == 0 for k in inside)
            assert all(mask[q, k] == float("-inf") for k in patches - inside)
    assert shapes_seen(model, torch.randn(2, 3, 48, 48))["ln_post"] == (2, 1 + 36 + 4, 128)


def test_stripe_tokens_ignore_patches_outside_their_stripe_at_the_first_block():
    model = prompted(REGION)
    groups, torch_gen = model.vision.frames.prompts.token_groups(), torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 32, 32, generator=torch_gen)
    row3_changed, row0_changed = images.clone(), images.clone()
    row3_changed[..., 24:, :] += torch.randn(2, 3, 8, 32, generator=torch_gen)  # patch row 3: outside stripe 0
    row0_changed[..., :8, :] += torch.randn(2, 3, 8, 32, generator=torch_gen)  # patch row 0: outside stripe 1
    own0 = [groups["region_cls"][0], *groups["region_prompts"][0]]
    own1 = [groups["region_cls"][1], *groups["region_prompts"][1]]
    with torch.no_grad():
        base, after3, after0 = (first_block(model, x) for x in (images, row3_changed, row0_changed))
        assert torch.allclose(base[:, own0], after3[:, own0], atol=1e-6)
        assert torch.allclose(base[:, own1], after0[:, own1], atol=1e-6)
        assert not torch.allclose(base[:, own1], after3[:, own1], atol=1e-3)  # row 3 is inside stripe 1
        assert not torch.allclose(base[:, 0], after3[:, 0], atol=1e-3)  # the global class token sees everything
        # Through the stack the confinement is per block only: patches of stripe 0 saw row 3 in block 0.
        full_base, full_after = model.vision.frames(images), model.vision.frames(row3_changed)
        assert not torch.allclose(full_base[:, 1 + 16], full_after[:, 1 + 16], atol=1e-3)


def test_isolated_base_path_equals_vpt_with_the_global_prompts_whatever_the_stripes_hold():
    regional, plain = prompted({**REGION, "stripe_mask": "isolated"}), prompted({"num_prompts": 2})
    with torch.no_grad():
        plain.vision.frames.prompts.prompt_global.copy_(regional.vision.frames.prompts.prompt_global)
        images = torch.randn(2, 3, 32, 32)
        before = regional.vision.frames(images)
        for param in (regional.vision.frames.prompts.prompt_region, regional.vision.frames.prompts.prompt_region_cls):
            param.add_(torch.randn_like(param))  # random, not constant: LayerNorm erases a constant shift
        after = regional.vision.frames(images)
        assert torch.allclose(before[:, :17], after[:, :17], atol=1e-5)  # [cls, patches] untouched
        released = prompted(REGION)  # the released mask: the global tokens read the stripe tokens
        released.load_state_dict(regional.state_dict())
        assert not torch.allclose(released.vision.frames(images)[:, :17], after[:, :17], atol=1e-4)
        assert not torch.allclose(before[:, 17:], after[:, 17:], atol=1e-3)  # region tokens moved
        assert torch.allclose(after[:, :17], plain.vision.frames(images), atol=1e-4)


def test_depth_below_the_block_count_carries_the_last_prompts_on():
    model = prompted({"num_prompts": 2, "regions": 4, "global_prompts": 1, "depth": 2}, model=tiny_model())
    prompts = model.vision.frames.prompts
    assert prompts.prompt_global.shape == (2, 1, 128) and prompts.prompt_region.shape == (2, 8, 128)
    x = torch.randn(2, 1 + 36 + prompts.num_extra, 128)
    assert prompts.before_block(2, x) is x and prompts.before_block(3, x) is x  # blocks 2, 3 keep the prompts
    seen = shapes_seen(model, torch.randn(2, 3, 48, 48))
    assert seen["block"] == (2, 1 + 1 + 36 + 4 + 4 * 2, 128) and seen["ln_post"] == (2, 1 + 36 + 4, 128)


@pytest.mark.parametrize("params", [{"num_prompts": 4}, REGION])
def test_every_prompt_parameter_gets_a_gradient_through_the_frozen_tower(params):
    model = prompted(params).train()
    model(micro_video()).sum().backward()
    own = {name: p for name, p in model.named_parameters() if ".prompts." in name}
    assert own and all(p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0 for p in own.values())
    assert all(p.grad is None and not p.requires_grad for p in model.backbone.parameters())


@pytest.mark.parametrize("name", ["prompt_global", "prompt_region", "prompt_region_cls"])
def test_model_output_follows_the_prompts(name):
    model, video = prompted(REGION), micro_video()
    with torch.no_grad():
        before = model(video)
        param = getattr(model.vision.frames.prompts, name)
        param.add_(torch.randn_like(param))  # random, not constant: LayerNorm erases a constant shift
        assert not torch.allclose(before, model(video), atol=1e-4)
