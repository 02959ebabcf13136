"""Exact FLOPs against analytic ViT counts, CPU peak memory on a hand-computed case, state left untouched, and the
GPU paths as no-ops without CUDA.

Analytic counts are in MACs (one multiply-add); the counter reports FLOPs = 2 x MACs. Per transformer block of N
tokens, width D and MLP hidden width H (Dosovitskiy et al., ViT, 2021; Kaplan et al. 2020, Table 1 for the
per-matmul accounting): qkv projection N*D*3D, output projection N*D*D, MLP 2*N*D*H, attention scores Q.K^T and
the weighted sum of values N*N*D each.
"""
from __future__ import annotations

import open_clip
import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.config import ProfileConfig
from bench.measure import profile
from bench.numerics import FP32, TrainingStep
from data.schema import MARS
from models.loss import WeightedBCE
from strategies import registry
from tests.conftest import micro_model, micro_video

VIT_B16_GFLOPS = 35.13  # one 224x224 image through the ViT-B/16 visual tower: 17.563 GMACs


CPU = torch.device("cpu")


def block_macs(tokens: int, width: int, hidden: int) -> int:
    """One pre-norm transformer block: projections, MLP and the two attention matmuls."""
    return tokens * width * 3 * width + tokens * width * width + 2 * tokens * width * hidden + \
        2 * tokens * tokens * width


def patch_embed_macs(visual: nn.Module) -> int:
    """The patch-embedding convolution of one image: patches x (C * k * k) x D."""
    conv = visual.conv1
    patches = visual.grid_size[0] * visual.grid_size[1]
    return patches * conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1] * conv.out_channels


def tower_shape(visual: nn.Module) -> tuple[int, int, int, int, int]:
    """(tokens N, width D, MLP hidden H, layers, projected width E) of an open_clip visual tower."""
    block = visual.transformer.resblocks[0]
    tokens = visual.grid_size[0] * visual.grid_size[1] + 1  # patches + class token
    return tokens, visual.conv1.out_channels, block.mlp.c_fc.out_features, len(visual.transformer.resblocks), \
        visual.proj.shape[1]


def vit_tower_macs(visual: nn.Module) -> int:
    """open_clip's visual forward of one image: patches, blocks, and the projection of the pooled class token."""
    tokens, width, hidden, layers, out = tower_shape(visual)
    return patch_embed_macs(visual) + layers * block_macs(tokens, width, hidden) + width * out


def par_model_macs(model: nn.Module, *, batch: int, frames: int) -> dict[str, int]:
    """Forward MACs of the PAR model's parts for one batch (every visual token is projected, see models/vision.py)."""
    visual = model.backbone
    tokens, width, hidden, layers, out = tower_shape(visual)
    per_frame = patch_embed_macs(visual) + layers * block_macs(tokens, width, hidden) + tokens * width * out
    fusion_width, attributes = model.fusion_norm.normalized_shape[0], model.num_attributes
    return {"frames": batch * frames * per_frame, "patch_embed": batch * frames * patch_embed_macs(visual),
            "vision_proj": batch * tokens * out * fusion_width,
            "text_proj": attributes * model.text_features.shape[1] * fusion_width,  # once per batch
            "fusion": batch * block_macs(attributes + tokens, fusion_width, model.fusion.mlp.c_fc.out_features)}


def micro_batch(batch: int = 2, frames: int = 3) -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    target = (torch.arange(batch * MARS.num_columns).reshape(batch, MARS.num_columns) % 3 == 0).float()
    return micro_video(batch, frames), target, WeightedBCE(torch.full((MARS.num_columns,), 0.3))


def test_vit_b16_forward_flops_match_the_analytic_count():
    visual = open_clip.create_model("ViT-B-16", pretrained=None).visual.requires_grad_(False).eval()
    analytic = vit_tower_macs(visual)
    assert 2 * analytic == pytest.approx(VIT_B16_GFLOPS * 1e9, rel=0.005)
    flops = profile.measure_flops(visual, torch.zeros(1, 3, 224, 224), torch.zeros(1), loss_fn=lambda x, y: x.sum(),
                                  numerics=FP32)
    assert flops["fwd_flops_per_clip"] == pytest.approx(2 * analytic, rel=0.005)
    assert flops["bwd_flops_batch"] == 0  # nothing trainable: forward only
    assert not visual.training  # eval mode restored


def test_full_fine_tuning_backward_is_twice_the_forward_except_the_input_layers():
    model = registry.apply_strategy(micro_model(), "full")
    video, target, loss_fn = micro_batch()
    flops = profile.measure_flops(model, video, target, loss_fn=loss_fn, numerics=FP32)
    macs = par_model_macs(model, batch=2, frames=3)
    forward = macs["frames"] + macs["vision_proj"] + macs["text_proj"] + macs["fusion"]
    assert flops["fwd_flops_batch"] == 2 * forward
    assert flops["fwd_flops_per_clip"] == forward  # 2 * forward / B with B = 2
    # Input and weight gradients for every matmul, except the two whose input needs no gradient (video, text buffer).
    assert flops["bwd_flops_batch"] == 2 * (2 * forward - macs["patch_embed"] - macs["text_proj"])
    assert flops["train_step_flops"] == flops["fwd_flops_batch"] + flops["bwd_flops_batch"]
    trainable = sum(p.numel() for p in model.parameters())
    assert flops["optimizer_update_flops_approx"] == profile.ADAM_FLOPS_PER_PARAM * trainable


def test_forward_flops_by_module_match_the_analytic_count_of_each_part():
    model = registry.apply_strategy(micro_model(), "full")
    video, target, loss_fn = micro_batch()
    flops = profile.measure_flops(model, video, target, loss_fn=loss_fn, numerics=FP32)
    by_module, macs = flops["fwd_flops_by_module"], par_model_macs(model, batch=2, frames=3)
    assert by_module["vision.frames"] == 2 * macs["frames"]
    assert by_module["vision_proj"] == 2 * macs["vision_proj"] and by_module["text_proj"] == 2 * macs["text_proj"]
    assert sum(v for k, v in by_module.items() if k.startswith("fusion.")) == 2 * macs["fusion"]
    assert sum(by_module.values()) == flops["fwd_flops_batch"]
    assert list(by_module.values()) == sorted(by_module.values(), reverse=True)


def test_side_tuning_forward_flops_name_the_side_networks():
    model = registry.apply_strategy(micro_model(), "side")
    video, target, loss_fn = micro_batch()
    flops = profile.measure_flops(model, video, target, loss_fn=loss_fn, numerics=FP32)
    assert {"vision.side_ssn", "vision.side_tsn"} <= set(flops["fwd_flops_by_module"])
    assert sum(flops["fwd_flops_by_module"].values()) == flops["fwd_flops_batch"]


def test_frozen_backbone_backward_covers_only_the_trainable_head():
    frozen = registry.apply_strategy(micro_model(), "frozen")
    full = registry.apply_strategy(micro_model(), "full")
    video, target, loss_fn = micro_batch()
    flops = profile.measure_flops(frozen, video, target, loss_fn=loss_fn, numerics=FP32)
    macs = par_model_macs(frozen, batch=2, frames=3)
    # Weight gradients of the two projections (their inputs are frozen), input and weight gradients in the fusion.
    assert flops["bwd_flops_batch"] == 2 * (macs["vision_proj"] + macs["text_proj"] + 2 * macs["fusion"])
    full_flops = profile.measure_flops(full, video, target, loss_fn=loss_fn, numerics=FP32)
    assert flops["fwd_flops_batch"] == full_flops["fwd_flops_batch"]
    assert flops["bwd_flops_batch"] < 0.5 * full_flops["bwd_flops_batch"]  # micro: the fusion block is a large share
    assert flops["train_step_flops"] < full_flops["train_step_flops"]


class NoGradBackbone(nn.Module):
    """Side tuning's pattern: the backbone runs in eval mode under no_grad, a small trainable net reads it."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual.requires_grad_(False)
        self.head = nn.Linear(visual.output_dim, 4)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.visual.eval()
        with torch.no_grad():
            features = self.visual(images)
        return self.head(features)


def test_a_no_grad_eval_backbone_is_counted_in_full():
    visual = micro_model().backbone
    model, images = NoGradBackbone(visual), torch.randn(2, 3, 32, 32)
    expected = 2 * (2 * vit_tower_macs(visual) + 2 * visual.output_dim * 4)
    with torch.no_grad(), FlopCounterMode(display=False) as naive:
        model(images)
    assert naive.get_total_flops() < expected  # the MHA fast path hides the attention from the counter
    flops = profile.measure_flops(model, images, torch.zeros(2, 4), loss_fn=nn.MSELoss(), numerics=FP32)
    assert flops["fwd_flops_batch"] == expected
    assert flops["bwd_flops_batch"] == 2 * 4 * visual.output_dim * 2  # weight gradient of the head only


def test_measuring_flops_leaves_model_and_global_flags_unchanged():
    model = registry.apply_strategy(micro_model(), "full").eval()
    video, target, loss_fn = micro_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fastpath = torch.backends.mha.get_fastpath_enabled()
    profile.measure_flops(model, video, target, loss_fn=loss_fn, numerics=FP32)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # includes BatchNorm running statistics
    assert all(p.grad is None for p in model.parameters())
    assert not any(m.training for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled() == fastpath


def test_cpu_peak_memory_of_a_linear_layer_is_hand_computable():
    model = nn.Linear(1000, 1000, bias=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y, weight = torch.randn(8, 1000), torch.randn(8, 1000), model.weight.detach().clone()
    first = profile.cpu_peak_memory(TrainingStep(model, nn.MSELoss(), optimizer, FP32, CPU), x, y)
    second = profile.cpu_peak_memory(TrainingStep(model, nn.MSELoss(), optimizer, FP32, CPU), x, y)
    assert first == second  # deterministic
    assert first["peak_mem_kind"] == "cpu_profiler_live_tensors"
    parts = first["peak_mem_by_category_bytes"]
    assert parts["params"] == 4_000_000 and parts["grads"] == 4_000_000  # 1000 x 1000 float32, live in the step
    assert parts["optimizer_state"] == 8_000_000 + 4  # Adam's two moments + its step counter
    assert parts["inputs"] >= 2 * 8 * 1000 * 4
    assert first["peak_mem_bytes"] == sum(parts.values()) >= 16_000_000
    assert torch.equal(model.weight, weight) and model.weight.grad is None and not optimizer.state  # restored


def test_cpu_peak_memory_orders_frozen_below_full():
    video, target, loss_fn = micro_batch()
    peaks = {}
    for name in ("frozen", "full"):
        model = registry.apply_strategy(micro_model(), name)
        optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
        peaks[name] = profile.cpu_peak_memory(TrainingStep(model, loss_fn, optimizer, FP32, CPU), video, target)
    full, frozen = peaks["full"]["peak_mem_by_category_bytes"], peaks["frozen"]["peak_mem_by_category_bytes"]
    assert frozen["optimizer_state"] < full["optimizer_state"]
    assert peaks["frozen"]["peak_mem_bytes"] < peaks["full"]["peak_mem_bytes"]


def test_a_failing_profiler_falls_back_to_a_labelled_rss_figure(monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("no timeline")

    monkeypatch.setattr(profile, "_profiled_step_peak", broken)
    model = nn.Linear(1000, 1000, bias=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    out = profile.cpu_peak_memory(TrainingStep(model, nn.MSELoss(), optimizer, FP32, CPU), torch.randn(8, 1000),
                                  torch.randn(8, 1000))
    assert out["peak_mem_kind"] == "cpu_rss_delta_sampled"
    assert out["peak_mem_fallback_reason"] == "RuntimeError: no timeline"
    assert out["peak_mem_bytes"] >= 4_000_000  # at least the fresh 1000 x 1000 float32 gradient


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only behaviour")
def test_gpu_helpers_are_no_ops_without_cuda():
    for device in (torch.device("cpu"), torch.device("cuda:0")):
        assert profile.gpu_memory_guard(device) is None
        assert profile.nvml_used_bytes(device) is None


class FakeProcess:
    def __init__(self, pid: int, used: int | None):
        self.pid, self.usedGpuMemory = pid, used


class FakeNvml:
    """Just the pynvml calls the guard makes, over a fixed process list."""

    def __init__(self, processes: list[FakeProcess]):
        self.processes = processes

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return self.processes

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return []

    def nvmlDeviceGetMemoryInfo(self, handle):
        return type("Memory", (), {"used": 7 * 2**30})()


def _fake_session(monkeypatch, processes: list[FakeProcess]) -> None:
    class Session:
        def __init__(self, device):
            pass

        def __enter__(self):
            return FakeNvml(processes), "handle"

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(profile, "_nvml_session", Session)


@pytest.mark.parametrize("used", [2**30, None])
def test_gpu_guard_refuses_memory_held_by_another_process(monkeypatch, used):
    _fake_session(monkeypatch, [FakeProcess(1, used)])
    with pytest.raises(profile.GpuBusyError, match="1 other process"):
        profile.gpu_memory_guard(torch.device("cuda:0"))


def test_gpu_guard_ignores_this_process_and_tiny_foreign_usage(monkeypatch):
    import os

    _fake_session(monkeypatch, [FakeProcess(os.getpid(), 30 * 2**30), FakeProcess(1, 2**20)])
    seen = profile.gpu_memory_guard(torch.device("cuda:0"))
    assert seen == {"nvml_foreign_processes": 1, "nvml_foreign_bytes": 2**20, "nvml_used_bytes_before": 7 * 2**30}
    assert profile.nvml_used_bytes(torch.device("cuda:0")) == 7 * 2**30


def test_profile_extras_on_cpu_follows_the_flags():
    model = registry.apply_strategy(micro_model(), "frozen")
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad])
    video, target, loss_fn = micro_batch()
    step = TrainingStep(model, loss_fn, optimizer, FP32, CPU)
    both = profile.profile_extras(step, (video, target), cfg=ProfileConfig())
    assert both["flops_convention"].startswith("FLOPs = 2 x MACs") and both["train_step_flops"] > 0
    assert both["peak_mem_kind"] == "cpu_profiler_live_tensors" and both["peak_mem_bytes"] > 0
    assert "nvml_device_used_bytes" not in both
    only_flops = profile.profile_extras(step, (video, target), cfg=ProfileConfig(memory=False))
    assert "peak_mem_bytes" not in only_flops and only_flops["train_step_flops"] == both["train_step_flops"]
    assert profile.profile_extras(step, (video, target), cfg=ProfileConfig(enabled=False)) == {}
