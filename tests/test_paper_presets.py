"""The ``paper`` presets select the papers' / released code's choices, and every preset built on them inherits them;
the embedded default keeps the project's documented defaults. Plus VTFPAR++'s fusion drop-path (models/par_model.py):
identity in evaluation, stochastic in training."""
from __future__ import annotations

import pytest
import torch

from bench.config import RunConfig
from bench.runner.experiments import load_preset, run_config
from data.schema import MARS
from models.par_model import FusionSpec, build_par_model
from tests.conftest import MICRO, micro_video

PAPER_PRESETS = ("paper", "paper-dryrun", "paper-profile", "paper-profile-b16", "paper-profile-b16-recompute")


def _run(preset: str, strategy: str) -> RunConfig:
    base = load_preset(preset)
    return run_config(base, strategy, seed=0, frames=base["data"]["frames"], batch_size=base["train"]["batch_size"])


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_presets_select_the_faithful_choices(preset):
    cfg = _run(preset, "adapter")
    assert cfg.model.fusion_drop_path == 0.1  # VTFPAR++'s fusion block
    assert cfg.train.head_prior_init is False  # neither paper starts the head at the prior
    assert cfg.train.lr_schedule == "released"  # timm's per-epoch cosine of the released code
    assert (cfg.strategy.params["tap"], cfg.strategy.params["dropout"]) == ("input", 0.1)  # AdaptFormer's code
    assert _run(preset, "ssf").strategy.params["placement"] == "official"
    assert _run(preset, "ia3").strategy.params["attention"] is True
    assert cfg.model.backbone == "ViT-B-16" and cfg.model.fusion_width == 240 and cfg.data.frames == 6


@pytest.mark.parametrize("preset", ["paper-profile", "paper-profile-b16"])
def test_profile_presets_keep_their_own_settings_over_the_paper_they_extend(preset):
    cfg = _run(preset, "frozen")
    assert cfg.model.pretrained is None and cfg.model.activation == "quick_gelu"
    assert cfg.profile.only and cfg.train.epochs == 1 and cfg.data.num_workers == 0
    assert cfg.train.batch_size == (2 if preset == "paper-profile" else 16)


@pytest.mark.parametrize("preset", ["default", "smoke", "ci"])
def test_other_presets_keep_the_documented_defaults(preset):
    cfg = _run(preset, "adapter")
    assert cfg.model.fusion_drop_path == 0.0 and cfg.train.head_prior_init is True and cfg.train.lr_schedule is None
    assert (cfg.strategy.params["tap"], cfg.strategy.params["dropout"]) == ("norm", 0.0)


def _fusion_model(drop_path: float):
    torch.manual_seed(0)
    return build_par_model(backbone=MICRO, pretrained=None, sentences=MARS.sentences(), num_frames=3,
                           fusion=FusionSpec(width=64, heads=2, drop_path=drop_path))


def test_fusion_drop_path_is_identity_in_eval_and_stochastic_in_training():
    plain, dropped = _fusion_model(0.0), _fusion_model(0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()  # no parameters or buffers added
    dropped.load_state_dict(plain.state_dict())
    tokens = torch.randn(4, 7, 64)  # (B, A+N, W) into the fusion block
    plain.eval(), dropped.eval()
    assert torch.equal(dropped.fusion(tokens), plain.fusion(tokens))
    with torch.no_grad():
        assert torch.equal(dropped(micro_video()), plain(micro_video()))
    dropped.train(), plain.train()
    torch.manual_seed(1)
    draws = [dropped.fusion(tokens) for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert not torch.allclose(draws[0], plain.fusion(tokens))
    assert torch.equal(plain.fusion(tokens), plain.fusion(tokens))  # rate 0: training is deterministic


def test_fusion_drop_path_drops_whole_samples_of_a_residual_branch():
    """timm's DropPath: a dropped sample's branch is zero, a kept one is scaled by 1 / (1 - p)."""
    block = _fusion_model(0.5).fusion.train()
    branch = torch.ones(64, 3, 8)  # (B, N, W)
    torch.manual_seed(0)
    out = block.ls_1(branch)
    per_sample = out.flatten(1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert all(row.unique().numel() == 1 for row in per_sample)  # one draw per sample
    assert 0 < (per_sample[:, 0] == 0).sum() < 64


def test_fusion_drop_path_is_a_model_option_checked_by_the_config():
    assert RunConfig().model.fusion_drop_path == 0.0
    with pytest.raises(ValueError, match="model.fusion_drop_path"):
        RunConfig.from_dict({"model": {"fusion_drop_path": 1.0}})


def test_a_run_builds_the_fusion_drop_path_it_is_configured_with():
    from bench.training.run import build_base_model

    cfg = RunConfig.from_dict({"model": {"backbone": MICRO, "fusion_width": 64, "fusion_heads": 2,
                                         "fusion_drop_path": 0.1}})
    fusion = build_base_model(cfg).fusion
    assert getattr(fusion.ls_1, "drop_prob", None) == 0.1 and getattr(fusion.ls_2, "drop_prob", None) == 0.1
