"""The VTF PAR model: shapes, cached text features, which parameters learn under full and frozen, the loss."""
from __future__ import annotations

import math

import pytest
import torch

from data.schema import MARS
from models.loss import WeightedBCE
from models.temporal import MeanOverFrames, TemporalMemoryDiffusion
from strategies import registry
from tests.conftest import micro_model, micro_video


def test_output_shape_is_batch_by_attributes(model, video):
    assert model(video).shape == (2, MARS.num_columns)


def test_frame_encoder_keeps_every_token_after_projection(model):
    tokens = model.vision.frames(torch.randn(5, 3, 32, 32))
    assert tokens.shape == (5, 1 + 16, model.vision.frames.out_dim)  # class + 4x4 patches, projected width


def test_text_features_are_a_cached_buffer_not_a_text_tower(model):
    assert model.text_features.shape[0] == MARS.num_columns
    assert not any("transformer" in name and "visual" not in name for name, _ in model.named_parameters())
    assert "text_features" in dict(model.named_buffers())


def test_text_features_depend_on_the_sentence():
    a, b = micro_model().text_features, micro_model().text_features
    assert torch.equal(a, b)
    assert not torch.allclose(a[0], a[1])  # different sentences -> different features


def _grads_after_backward(model, video):
    model.train()
    model(video).sum().backward()
    return {name for name, p in model.named_parameters() if p.grad is not None}


def test_full_trains_backbone_and_head(model, video):
    model = registry.apply_strategy(model, "full")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == {name for name, _ in model.named_parameters()}
    assert _grads_after_backward(model, video) == trainable


def test_frozen_trains_only_fusion_and_head(model, video):
    model = registry.apply_strategy(model, "frozen")
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(name.startswith("vision.frames") for name in trainable)
    assert {n.split(".")[0] for n in trainable} == {"vision_proj", "text_proj", "fusion", "fusion_norm", "head"}
    assert _grads_after_backward(model, video) == trainable


def test_train_head_flag_freezes_the_shared_head(model):
    model = registry.apply_strategy(model, "full", train_head=False)
    assert not any(p.requires_grad for p in model.head.parameters())
    assert all(p.requires_grad for p in model.backbone.parameters())


def test_tmd_starts_equal_to_mean_and_learns():
    tokens = torch.randn(2, 3, 5, 8)
    tmd = TemporalMemoryDiffusion(8, heads=2)
    assert torch.allclose(tmd(tokens), MeanOverFrames()(tokens), atol=1e-6)
    tmd(tokens).sum().backward()
    assert tmd.memory_attn.out_proj.weight.grad is not None


def test_tmd_model_runs_with_every_frame_count():
    model = micro_model(temporal="tmd")
    for frames in (1, 4):
        assert model(micro_video(frames=frames)).shape == (2, MARS.num_columns)


def test_weighted_bce_matches_hand_computation():
    rates = torch.tensor([0.25, 0.5])
    logits = torch.tensor([[0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0]])
    # log(2) per column (logit 0), weights exp(1 - 0.25) for the positive, exp(0.5) for the negative
    expected = math.log(2) * (math.exp(0.75) + math.exp(0.5))
    assert WeightedBCE(rates)(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_prior_logits_are_where_the_weighted_loss_of_a_constant_predictor_is_flat(model):
    """z* = logit(r) + 1 - 2r: the gradient of VTF's weighted BCE vanishes there, for every positive rate."""
    rates = torch.tensor([0.1, 0.5, 0.8])
    labels = (torch.arange(10).unsqueeze(1) < (rates * 10).unsqueeze(0)).float()  # (10, 3), exactly r*10 ones
    loss_fn = WeightedBCE(rates)
    prior = loss_fn.constant_optimum_logits()
    torch.testing.assert_close(prior, torch.log(rates / (1 - rates)) + 1 - 2 * rates)
    shared = prior.clone().requires_grad_(True)  # one logit per column, the same for every clip
    loss_fn(shared.expand(10, 3), labels).backward()
    torch.testing.assert_close(shared.grad, torch.zeros(3), atol=1e-6, rtol=0)
    moved = (prior + 0.3).requires_grad_(True)
    loss_fn(moved.expand(10, 3), labels).backward()
    assert (moved.grad > 0).all()  # past the optimum the loss rises
    wanted = torch.linspace(-2.0, 1.0, model.num_attributes)
    model.head.init_prior(wanted)
    torch.testing.assert_close(model.head.norm.bias.detach(), wanted)
