"""Mixed precision: every strategy trains in bf16 on CPU, fp16 goes through the gradient scaler, a half-precision
frozen backbone stays frozen while trainable parameters and Adam's state stay fp32, saved activations are charged
to the right module, and reports never put two precisions in one row."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.config import ConfigError, RunConfig, TrainConfig
from bench.measure import profile
from bench.numerics import (
    FP32,
    Numerics,
    TrainingStep,
    half_frozen_parameters,
    numerics_for,
    relayout_attention_inputs,
)
from bench.records import switches_label
from bench.reporting import report
from bench.training.train import make_optimizer
from data.schema import MARS
from models.loss import WeightedBCE
from strategies import registry
from tests.conftest import micro_model, micro_video
from tests.test_report import fake_record
from tests.test_strategy_contract import CATALOG, _apply

BF16 = Numerics(device_type="cpu", dtype=torch.bfloat16)
CPU = torch.device("cpu")


def _target(batch: int = 2) -> torch.Tensor:
    return (torch.rand(batch, MARS.num_columns, generator=torch.Generator().manual_seed(3)) > 0.5).float()


def _loss() -> WeightedBCE:
    return WeightedBCE(torch.full((MARS.num_columns,), 0.3))


@pytest.mark.parametrize("name", sorted(CATALOG))
def test_every_strategy_trains_a_bf16_step_on_cpu_and_stays_finite(name):
    model, _, _, backbone_ids = _apply(name)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2), backbone_ids)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    loss = TrainingStep(model, _loss(), optimizer, BF16, CPU)(micro_video(), _target())
    assert torch.isfinite(loss)
    moved = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, trainable[n])]
    assert moved, f"{name}: no trainable parameter changed"
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("name", ["frozen", "lora", "side", "prompt", "adapter", "peft_ia3", "ssf", "ia3"])
def test_half_frozen_backbone_stays_frozen_and_trainable_state_stays_fp32(name):
    model, _, _, backbone_ids = _apply(name)
    cast = half_frozen_parameters(model.backbone, torch.bfloat16)
    assert cast > 0
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2), backbone_ids)
    for _ in range(2):
        loss = TrainingStep(model, _loss(), optimizer, BF16, CPU)(micro_video(), _target())
        assert torch.isfinite(loss)
    norms = {id(p) for m in model.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()}
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, n
        else:
            assert torch.equal(p, frozen[n]), f"{n}: a frozen weight changed"
            if id(p) not in norms and n.startswith("vision") and p.dim() >= 2:
                assert p.dtype == torch.bfloat16, n
    states = [t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t) and t.dim()]
    assert states and all(t.dtype == torch.float32 for t in states)


def test_fp16_steps_go_through_the_gradient_scaler():
    """An absurd initial scale overflows fp16 gradients: the scaler skips the step and lowers the scale."""
    model, _, _, backbone_ids = _apply("frozen")
    numerics = numerics_for(TrainConfig(precision="fp16"), torch.device("cpu"))
    assert numerics.dtype == torch.float16 and numerics.scaler is not None
    numerics.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)
    optimizer = make_optimizer(model, TrainConfig(lr=1e-2), backbone_ids)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    TrainingStep(model, _loss(), optimizer, numerics, CPU)(micro_video(), _target())
    assert numerics.scaler.get_scale() < 2.0**100
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)
    numerics.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    TrainingStep(model, _loss(), optimizer, numerics, CPU)(micro_video(), _target())
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if p.requires_grad)


def test_flops_do_not_depend_on_precision_and_state_is_restored():
    model = registry.apply_strategy(micro_model(), "full", {})
    video, target = micro_video(), _target()
    fp32 = profile.measure_flops(model, video, target, loss_fn=_loss(), numerics=FP32)
    bf16 = profile.measure_flops(model, video, target, loss_fn=_loss(), numerics=BF16)
    assert bf16["train_step_flops"] == fp32["train_step_flops"] > 0


def test_saved_activations_are_charged_to_the_module_that_saved_them():
    """Linear(10, 20) saves its input (8x10 fp32 = 320 B), ReLU its output (8x20 = 640 B), which the second Linear
    saves again (same storage, counted once); weights are parameters, not activations."""
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    out = profile.activation_bytes_by_module(model, torch.randn(8, 10), numerics=FP32)
    assert out["activation_saved_bytes_by_module"] == {"1": 640, "0": 320}
    assert out["activation_saved_bytes"] == 960


def test_side_tuning_saves_no_backbone_activations_unlike_full():
    video = micro_video()
    full = profile.activation_bytes_by_module(registry.apply_strategy(micro_model(), "full", {}), video, numerics=FP32)
    side = profile.activation_bytes_by_module(registry.apply_strategy(micro_model(), "side", {}), video, numerics=FP32)
    assert full["activation_saved_bytes_by_module"]["vision.frames"] > 0
    assert "vision.frames" not in side["activation_saved_bytes_by_module"]
    assert side["activation_saved_bytes_by_module"]["vision.side_ssn"] > 0


def test_report_never_puts_two_precisions_in_one_row():
    records = []
    for precision, mem in (("fp32", 1000.0), ("bf16", 600.0)):
        for strategy, scale in (("full", 1.0), ("side", 0.25)):
            record = fake_record(strategy, mem_mib=mem * scale)
            record["run"]["config"]["train"]["precision"] = precision
            records.append(record)
    agg = report.aggregate(report.to_frame(records))
    assert len(agg) == 4 and set(agg["precision"]) == {"fp32", "bf16"}
    assert (agg["seeds"] == 1).all()
    assert agg["mem / full"].tolist() == pytest.approx([1.0, 1.0, 0.25, 0.25])  # against full of its own precision
    view = report.summary_view(agg, arrows=False)
    assert sorted(zip(view["strategy"], view["precision"], strict=True)) == [
        ("full", "bf16"), ("full", "fp32"), ("side", "bf16"), ("side", "fp32")]


def test_records_without_a_precision_read_as_fp32_and_switches_are_labelled():
    frame = report.to_frame([fake_record("full")])
    assert frame.loc[0, "precision"] == "fp32" and frame.loc[0, "switches"] == "-"
    assert switches_label({"half_frozen_backbone": True, "sdpa_backend": "math"}) == "half-frozen+sdpa=math"


@pytest.mark.parametrize(("train", "field"), [({"precision": "fp8"}, "train.precision"),
                                              ({"half_frozen_backbone": True}, "train.half_frozen_backbone"),
                                              ({"sdpa_backend": "fast"}, "train.sdpa_backend")])
def test_bad_numerics_values_fail_naming_the_field(train, field):
    with pytest.raises(ConfigError, match=field) as error:
        RunConfig.from_dict({"train": train})
    assert "\n" not in str(error.value)


def _expanded_weight_copies(attention: nn.MultiheadAttention, x: torch.Tensor) -> list:
    """Allocations of the (L, E, 3E) broadcast input-projection weight during one no-grad bf16 attention call."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    shape = [x.shape[1], attention.embed_dim, 3 * attention.embed_dim]
    with torch.no_grad(), BF16.forward_context(), torch_profile(activities=[ProfilerActivity.CPU],
                                                                 record_shapes=True) as prof:
        attention(x, x, x, need_weights=False)
    return [e.name for e in prof.events() if e.input_shapes and list(e.input_shapes[0]) == shape]


def test_cpu_low_precision_attention_gets_sequence_major_inputs_with_the_same_values():
    torch.manual_seed(0)
    # frozen (a frozen backbone's attention) and in train mode: the path that copies the broadcast weight
    attention = nn.MultiheadAttention(64, 4, batch_first=True).requires_grad_(False)
    x = torch.randn(6, 17, 64)  # (N, L, E)
    with torch.no_grad():
        plain = attention(x, x, x, need_weights=False)[0]
    assert _expanded_weight_copies(attention, x), "PyTorch no longer copies the weight: the re-layout may go"
    assert relayout_attention_inputs(attention, BF16) == 1
    assert not _expanded_weight_copies(attention, x)  # the projection is one matrix multiply
    with torch.no_grad():
        relaid = attention(x, x, x, need_weights=False)[0]
    assert relaid.shape == plain.shape and torch.equal(relaid, plain)  # fp32 outside autocast: same kernels' values
    key = torch.randn(6, 17, 64)
    with torch.no_grad():  # cross-attention (query is not key) passes through unchanged in value
        assert torch.allclose(attention(x, key, key, need_weights=False)[0],
                              nn.MultiheadAttention.forward(attention, x, key, key, need_weights=False)[0])


@pytest.mark.parametrize("numerics", [Numerics(), Numerics(device_type="cuda", dtype=torch.bfloat16)],
                         ids=["cpu-fp32", "cuda-bf16"])
def test_attention_inputs_are_left_alone_where_kernels_take_strided_inputs(numerics):
    model = micro_model()
    assert relayout_attention_inputs(model, numerics) == 0
    assert not any(m._forward_pre_hooks for m in model.modules() if isinstance(m, nn.MultiheadAttention))
