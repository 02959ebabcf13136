"""fvcore's forward FLOP count (an independent JIT-trace counter) against torch's ``FlopCounterMode`` on the embedded
default's small model (bench/tools/flops_check.py): equal on the matmul kinds, and the one difference is attention,
which fvcore skips and torch counts as the two matmuls of the analytic count (Q.K^T and P.V, N*N*D MACs each per
head-summed block; Vaswani et al. 2017)."""
from __future__ import annotations

import pytest

from bench.tools import flops_check
from tests.test_profile import tower_shape

pytest.importorskip("fvcore")


def attention_flops(model, *, batch: int, frames: int) -> int:
    """FLOPs (2 x MACs) of every attention of the PAR model: the visual tower's blocks on each frame, then the fusion
    block over the attribute and visual tokens."""
    tokens, width, _, layers, _ = tower_shape(model.backbone)
    fusion_tokens, fusion_width = model.num_attributes + tokens, model.fusion_norm.normalized_shape[0]
    return 2 * (batch * frames * layers * 2 * tokens * tokens * width
                + batch * 2 * fusion_tokens * fusion_tokens * fusion_width)


def test_fvcore_agrees_with_the_torch_count_but_for_attention_which_it_skips():
    model, video = flops_check.strategy_batch("full")
    found = flops_check.check(model, video)
    batch, frames = video.shape[:2]
    assert found["attention_flops_torch"] == attention_flops(model, batch=batch, frames=frames)
    assert found["fvcore_unsupported_ops"]["aten::scaled_dot_product_attention"] == \
        tower_shape(model.backbone)[3] + 1  # one per visual block and one in the fusion block
    shared = found["forward_flops_torch"] - found["attention_flops_torch"]
    assert abs(found["forward_flops_fvcore"] - shared) <= 0.01 * shared
    assert abs(found["matmul_gap_pct"]) <= flops_check.TOLERANCE_PCT
    assert found["fvcore_norm_flops"] > 0  # fvcore counts the norms, torch counts them 0: kept apart
