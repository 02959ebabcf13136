"""(IA)3 (Liu et al., "Few-Shot Parameter-Efficient Fine-Tuning is Better and Cheaper than In-Context Learning",
NeurIPS 2022, section 3.3): three learned vectors per block rescale the keys (l_k), the values (l_v) and the FFN's
intermediate activation (l_ff) of the frozen CLIP visual tower:

    softmax(Q (l_k * K)^T / sqrt(d_k)) (l_v * V),        (l_ff * gelu(W_1 x)) W_2

All three start at one, so the tower is exactly the frozen one at step 0 (zero-init, as in the paper and peft).

Why not peft's IA3 here: peft's (IA)3 scales whole ``nn.Linear`` / ``nn.Conv`` modules (for BERT-style ViTs its
``IA3Config`` targets ``key``, ``value`` and, as ``feedforward_modules``, ``output.dense``), but open_clip's blocks
compute q, k and v with one fused ``in_proj_weight`` inside ``nn.MultiheadAttention``: there is no key or value
module to target, and peft's IA3 does not adapt ``nn.MultiheadAttention`` at all. So the attention is wrapped
(``ScaledKeysValues``): l_k and l_v are folded into the key and value rows of the fused projection for each call,
l * (W x + b) = (diag(l) W) x + l * b, exact (``strategies.common.scaled_in_projection``). l_ff scales the input of
``c_proj`` (``ScaledInput``), what peft's ``feedforward_modules`` do. The ``peft_ia3`` variant (peft, MLP linears
only) stays for comparison; it scales c_fc's output instead of the keys and values.

Parameters per block of width D with an MLP of width 4D: D + D + 4D = 6 D (ViT-B/16: 4,608 per block, 55,296 in
all); ``attention: false`` keeps l_ff alone (4 D).

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.common import call_with, enable_added, scaled_in_projection
from strategies.options import block_indices_problem, option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register


@dataclass(frozen=True)
class IA3Config(StrategyOptions):
    attention: bool = option(True, "scale the attention's keys and values (l_k, l_v; Liu et al. 3.3); false = the "
                                   "FFN's l_ff alone")
    layers: tuple[int, ...] | None = option(None, "indices of the scaled visual blocks, distinct, >= 0; null = all",
                                            check=block_indices_problem)


class ScaledKeysValues(nn.Module):
    """``nn.MultiheadAttention`` whose keys and values are multiplied by ``ia3_l_k`` / ``ia3_l_v`` (D each)."""

    def __init__(self, base_layer: nn.MultiheadAttention):
        super().__init__()
        width, device = base_layer.embed_dim, base_layer.in_proj_weight.device
        self.base_layer = base_layer
        self.ia3_l_k = nn.Parameter(torch.ones(width, device=device))
        self.ia3_l_v = nn.Parameter(torch.ones(width, device=device))

    def forward(self, *args, **kwargs):
        ones = torch.ones_like(self.ia3_l_k)  # queries unscaled
        scale = torch.cat([ones, self.ia3_l_k, self.ia3_l_v])  # (3D,) in the fused q/k/v row order
        return call_with(self.base_layer, scaled_in_projection(self.base_layer, scale), args, kwargs)


class ScaledInput(nn.Module):
    """``base_layer(ia3_l_ff * h)``: the FFN's intermediate activation h (..., 4D) rescaled before ``c_proj``."""

    def __init__(self, base_layer: nn.Linear):
        super().__init__()
        self.base_layer = base_layer
        self.ia3_l_ff = nn.Parameter(torch.ones(base_layer.in_features, device=base_layer.weight.device))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.base_layer(h * self.ia3_l_ff.to(h.dtype))


def _check_block(block: nn.Module, index: int) -> None:
    if not isinstance(block.attn, nn.MultiheadAttention) or not isinstance(block.mlp.c_proj, nn.Linear):
        raise StrategyError(f"ia3: visual block {index} is not a plain open_clip block (already adapted?)")


def apply(model, cfg: IA3Config):
    """Wrap each chosen block's attention (with ``attention``) and ``c_proj``; only the ia3_ vectors train."""
    blocks = model.backbone_blocks
    layers = range(len(blocks)) if cfg.layers is None else cfg.layers
    if any(index >= len(blocks) for index in layers):
        raise StrategyError(f"ia3.layers: {list(layers)} out of range for {len(blocks)} visual blocks")
    for index in layers:
        block = blocks[index]
        _check_block(block, index)
        if cfg.attention:
            block.attn = ScaledKeysValues(block.attn)
        block.mlp.c_proj = ScaledInput(block.mlp.c_proj)
    enable_added(model.backbone, "ia3_")
    return model


register("ia3", config=IA3Config, apply=apply, hyper=NEW_PARAMETERS, prefixes=("ia3_",), zero_init=True,
         description="(IA)3: learned rescaling of every visual block's keys, values (l_k, l_v) and FFN activation "
                     "(l_ff)")
