"""The cost plan (``run_bench.py --plan``, bench/runner/planning.py) against a real profiled CPU step.

At the smoke preset's scale (par-vit-micro, 2 frames) each case builds the run twice: for real, set up as
``run_one`` sets it up and measured by ``profile.profile_extras`` (the figures a run records), and planned on fake
tensors. FLOPs must be equal, and so must the activations saved for backward, module by module; the peak must agree
within the plan's tolerance (3%). In fp32 it is exact to the byte but for kernel workspaces; in bf16 / fp16 CPU
kernels also allocate a few tensors inside themselves (weight packing), which no op-level trace sees.
"""
from __future__ import annotations

import json

import pytest
import torch

from bench import numerics as precision
from bench.config import merge
from bench.measure import profile
from bench.runner import experiments, planning
from bench.training.run import build_model
from bench.training.train import make_optimizer
from models.backbone import image_size_of
from models.loss import WeightedBCE

BATCH, FRAMES = 2, 2


def smoke_spec(strategy: str, *, train: dict | None = None, side: dict | None = None):
    base = merge(experiments.load_preset("smoke"), {"train": train or {}})
    if side:
        base = merge(base, {"strategy_defaults": {"side": side}})
    return experiments.expand(base, strategies=[strategy], seeds=[0], frames=[FRAMES], batch_sizes=[BATCH])[0]


def measured(cfg) -> dict:
    """What a run records about one CPU training step, the model set up as ``run_one`` does."""
    torch.manual_seed(0)
    model, _, backbone_ids, _ = build_model(cfg)
    device = torch.device("cpu")
    numerics = precision.numerics_for(cfg.train, device)
    if cfg.train.half_frozen_backbone:
        precision.half_frozen_parameters(model.backbone, numerics.dtype)
    precision.relayout_attention_inputs(model, numerics)
    loss_fn = WeightedBCE(torch.full((model.num_attributes,), 0.5))
    optimizer = make_optimizer(model, cfg.train, backbone_ids)
    size = image_size_of(model.backbone)
    video = torch.randn(BATCH, FRAMES, 3, size, size)
    target = (torch.rand(BATCH, model.num_attributes) > 0.5).float()
    if numerics.scaler is not None:  # fp16: at its default scale a fresh scaler skips the first steps (overflow),
        numerics.scaler = torch.amp.GradScaler("cpu", init_scale=1.0)  # the plan predicts a step that is taken
    return profile.profile_extras(precision.TrainingStep(model, loss_fn, optimizer, numerics, device), (video, target),
                                  cfg=cfg.profile)


CASES = {  # id -> (strategy, train overrides, side overrides): every precision, the half-frozen backbone, recompute
    "full-fp32": ("full", {}, None),
    "frozen-bf16-half": ("frozen", {"precision": "bf16", "half_frozen_backbone": True}, None),
    "side-recompute": ("side", {}, {"checkpoint": True}),
    "lora-bf16": ("lora", {"precision": "bf16"}, None),
    "prompt-fp16": ("prompt", {"precision": "fp16"}, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_plan_predicts_the_profiled_step(case):
    strategy, train, side = CASES[case]
    spec = smoke_spec(strategy, train=train, side=side)
    planned = planning.plan_run(spec, planning.Planner())
    assert planned["traced_batch"] == "marker"  # one trace for every batch size, split exactly (plan.MARKER_BATCH)
    real = measured(spec.config)
    assert {k: planned[k] for k in planning.FLOP_KEYS} == {k: real[k] for k in planning.FLOP_KEYS}
    assert planned["fwd_flops_by_module"] == real["fwd_flops_by_module"]
    assert planned["activation_saved_bytes_by_module"] == real["activation_saved_bytes_by_module"]
    # Memory a CPU kernel allocates without a tensor (the profiler's "unknown": workspaces per thread, and on CPUs
    # with native bf16 kernels, AVX512-BF16 / AMX, oneDNN's packed weights in place of autocast's weight copies, which
    # the op-level trace does see) may or may not be in the prediction: it must lie between the measured peak without
    # those bytes and with them, within the tolerance.
    tolerance = planning.MEMORY_TOLERANCE_PCT / 100
    known, total = real["peak_mem_bytes"] - real["peak_mem_unknown_bytes"], real["peak_mem_bytes"]
    predicted = planned["peak_bytes_predicted_cpu_profiler"]
    assert known * (1 - tolerance) <= predicted <= total * (1 + tolerance), \
        (predicted, known, total, planned["peak_by_category_bytes"])


def test_the_peak_splits_into_its_categories_and_modules():
    planned = planning.plan_run(smoke_spec("full"), planning.Planner())
    categories = planned["peak_by_category_bytes"]
    assert sum(categories.values()) == planned["peak_bytes_predicted"]
    params = planned["params_total"] * 4  # fp32
    assert categories["weights"] >= params and categories["optimizer_state"] >= 2 * params
    assert categories["activations"] > 0 and planned["peak_phase"] in ("forward", "backward", "optimizer step")
    modules = planned["memory_by_module"]
    assert sum(m["activations_saved_bytes"] for m in modules.values()) == planned["activation_saved_bytes"]
    assert sum(m["gradients_bytes"] for m in modules.values()) == planned["params_trainable"] * 4


def test_plan_command_prints_a_table_and_writes_a_versioned_json(tmp_path, capsys):
    from bench.cli import main

    assert main(["--plan", "--preset", "smoke", "--strategies", "frozen,bitfit", "--batch-size", "2,4",
                 "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "peak MiB" in printed and "frozen" in printed and "bitfit" in printed
    document = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert document["schema_version"] == 1 and document["kind"] == "cost-plan" and len(document["runs"]) == 4
    run = document["runs"][0]
    assert {"peak_bytes_predicted", "peak_by_category_bytes", "fwd_flops_per_clip", "train_step_flops",
            "memory_by_module", "setting"} <= set(run)
    assert not list(tmp_path.glob("*.json"))  # the run records' folder stays free of other JSON


def test_compare_row_reports_equal_flops_and_the_signed_gap():
    planned = {"id": "x", "strategy": "full", "setting": {"batch_size": 2, "precision": "fp32",
                                                           "half_frozen_backbone": False},
               "peak_bytes_predicted_cpu_profiler": 103, "unread_bytes": 0, "peak_by_category_bytes": {},
               "activation_saved_bytes": 5, "trace_time_s": 0.1, **dict.fromkeys(planning.FLOP_KEYS, 7)}
    row = planning.compare_row(planned, {"peak_mem_bytes": 100, "activation_saved_bytes": 5,
                                         **dict.fromkeys(planning.FLOP_KEYS, 7)}, source="r")
    assert row["flops_equal"] and row["activation_saved_equal"] and row["peak_gap_pct"] == pytest.approx(3.0)
    row = planning.compare_row(planned, {"peak_mem_bytes": 100, **dict.fromkeys(planning.FLOP_KEYS, 8)}, source="r")
    assert not row["flops_equal"]


def test_plan_takes_a_list_of_precisions_and_a_sweep_refuses_one(tmp_path, capsys):
    import run_bench

    assert run_bench.main(["--plan", "--preset", "smoke", "--strategies", "frozen", "--precision", "fp32,bf16",
                           "--out", str(tmp_path)]) == 0
    runs = json.loads((tmp_path / "plan" / "plan.json").read_text())["runs"]
    assert [r["setting"]["precision"] for r in runs] == ["fp32", "bf16"]
    capsys.readouterr()
    assert run_bench.main(["--preset", "smoke", "--strategies", "frozen", "--precision", "fp32,bf16",
                           "--out", str(tmp_path / "sweep")]) == 2
    error = capsys.readouterr().err.strip()
    assert "--precision" in error and "--plan" in error and len(error.splitlines()) == 1


def test_one_trace_gives_every_batch_size():
    """The marker-batch trace split into its batch-independent and per-clip parts (plan.MARKER_BATCH) equals a
    trace made at each batch size itself: FLOPs, peak, categories and saved activations."""
    planner = planning.Planner()
    spec = smoke_spec("lora", train={"precision": "bf16"})
    marker = planner.trace(spec.config)
    for batch in (2, 5):  # the head's BatchNorm needs two clips
        direct = planner._trace(spec.config, batch)
        assert direct.traced_batch == batch and marker.traced_batch is None
        at_batch, traced = marker.cost(batch), direct.cost(batch)
        for key in (*planning.FLOP_KEYS, "fwd_flops_by_module", "peak_bytes_predicted", "peak_by_category_bytes",
                    "activation_saved_bytes_by_module", "peak_phase", "unread_bytes"):
            assert at_batch[key] == traced[key], key
