"""An independent cross-check of the forward FLOP count: fvcore's ``FlopCountAnalysis`` (a JIT trace with its own
per-op formulas) against torch's ``FlopCounterMode`` (what every run records), per strategy on one batch:

    python -m bench.tools.flops_check                        # full, frozen, side on the embedded default
    python -m bench.tools.flops_check --strategies all --out /tmp/flops

fvcore counts one per multiply-add, so its figures are doubled here (FLOPs = 2 x MACs, bench/measure/profile.py).
The two agree on the matmul kinds (convolutions, linear layers, matmuls) and differ by design elsewhere: fvcore
has no formula for ``scaled_dot_product_attention`` (it lists it under ``fvcore_unsupported_ops``, with the other
ops it skips), which torch counts as its two matmuls (``attention_flops_torch``); fvcore counts the norms, torch
counts them 0 (``fvcore_norm_flops``). So ``forward_flops_torch - attention_flops_torch`` must equal
``forward_flops_fvcore`` within ``TOLERANCE_PCT``. A strategy that fvcore's trace cannot follow (a JIT trace refuses
``torch.func.functional_call``, which the LoRA attention wrapper uses) is recorded with ``fvcore_error``. Exit 1 if
a traced strategy misses the tolerance; ``--out FOLDER`` writes ``flops_check.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
from torch import nn

from bench.boundary import entry_point

TOLERANCE_PCT = 1.0
MATMUL_KINDS = ("conv", "linear", "matmul", "mm", "bmm", "addmm", "einsum")  # fvcore's ``by_operator`` names
NORM_KINDS = ("layer_norm", "batch_norm", "group_norm", "instance_norm")
DEFAULT_STRATEGIES = "full,frozen,side"


@contextlib.contextmanager
def without_mha_fastpath():
    """``nn.MultiheadAttention`` under no_grad takes a fused fast path that neither counter sees into (its input and
    output projections included); off, attention reaches both as projections plus one SDPA op."""
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)


def fvcore_forward_flops(model: nn.Module, video: torch.Tensor) -> dict:
    """Forward FLOPs of ``model`` on ``video`` by fvcore (eval, no grad): the matmul kinds x 2, the norms x 2 apart,
    and the ops fvcore skipped with how often each ran."""
    from fvcore.nn import FlopCountAnalysis

    model.eval()
    with torch.no_grad(), without_mha_fastpath():
        analysis = FlopCountAnalysis(model, (video,))
        analysis.unsupported_ops_warnings(False)
        analysis.uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        by_operator = analysis.by_operator()
        skipped = dict(analysis.unsupported_ops())
    return {"forward_flops_fvcore": 2 * sum(by_operator.get(kind, 0) for kind in MATMUL_KINDS),
            "fvcore_norm_flops": 2 * sum(by_operator.get(kind, 0) for kind in NORM_KINDS),
            "fvcore_unsupported_ops": dict(sorted(skipped.items()))}


def torch_forward_flops(model: nn.Module, video: torch.Tensor) -> dict:
    """Forward FLOPs of ``model`` on ``video`` by ``FlopCounterMode`` (eval, no grad, the MHA fast path off so that
    attention reaches the counter as one SDPA op, counted as the math kernel's two matmuls), and attention's part."""
    from torch.utils.flop_counter import FlopCounterMode

    from bench.measure.profile import FUSED_ATTENTION_AS_MATH

    model.eval()
    with torch.no_grad(), without_mha_fastpath(), \
            FlopCounterMode(display=False, custom_mapping=FUSED_ATTENTION_AS_MATH) as counter:
        model(video)
    per_op = counter.get_flop_counts()["Global"]
    return {"forward_flops_torch": counter.get_total_flops(),
            "attention_flops_torch": sum(n for op, n in per_op.items() if "attention" in str(op))}


def check(model: nn.Module, video: torch.Tensor) -> dict:
    """Both counts of one model and batch, and the gap on the kinds both count (percent of torch's)."""
    found = torch_forward_flops(model, video)
    try:
        found |= fvcore_forward_flops(model, video)
    except RuntimeError as error:  # a trace fvcore cannot take; the message says which construct
        return found | {"fvcore_error": " ".join(str(error).split())[:300]}
    shared = found["forward_flops_torch"] - found["attention_flops_torch"]
    found["matmul_gap_pct"] = 100.0 * (found["forward_flops_fvcore"] - shared) / shared if shared else 0.0
    return found


def strategy_batch(strategy: str, *, batch: int = 2) -> tuple[nn.Module, torch.Tensor]:
    """The strategy's model on the embedded default (experiments/defaults.json) and a random batch for it."""
    from bench.runner.experiments import load_preset, run_config
    from bench.training.run import build_model
    from models.backbone import image_size_of

    base = load_preset(None)
    cfg = run_config(base, strategy, seed=0, frames=base["data"]["frames"], batch_size=batch)
    torch.manual_seed(0)
    model = build_model(cfg)[0]
    size = image_size_of(model.backbone)
    return model, torch.randn(batch, cfg.data.frames, 3, size, size)  # (B, T, 3, H, W)


@entry_point("bench.tools.flops_check")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.flops_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", default=DEFAULT_STRATEGIES, help="comma-separated strategy names, or 'all'")
    parser.add_argument("--out", type=Path, help="also write flops_check.json to this folder")
    args = parser.parse_args(argv)
    from bench.records import write_json_atomic
    from bench.runner.experiments import resolve_strategies

    rows = [{"strategy": name, **check(*strategy_batch(name))} for name in resolve_strategies(args.strategies)]
    for found in rows:
        print(f"{found['strategy']}: torch {found['forward_flops_torch']:,} (attention "
              f"{found['attention_flops_torch']:,}), fvcore " + (f"{found['forward_flops_fvcore']:,} "
              f"(gap {found['matmul_gap_pct']:+.4f}%, skipped {found['fvcore_unsupported_ops']})"
              if "fvcore_error" not in found else f"not traced: {found['fvcore_error']}"), flush=True)
    if args.out:
        write_json_atomic(args.out / "flops_check.json", {"kind": "flops-check", "tolerance_pct": TOLERANCE_PCT,
                                                          "batch": 2, "rows": rows})
    return 1 if any(abs(r.get("matmul_gap_pct", 0.0)) > TOLERANCE_PCT for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
