"""SSF (Lian et al., "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning", NeurIPS 2022):
a learnable per-channel scale and shift after the operations of every visual block, the backbone frozen.

y = gamma * x + beta, per channel, after each block's LayerNorms (``ln_1``, ``ln_2``), its attention output and
its MLP's two linears (``c_fc``, ``c_proj``), as SSF inserts them after normalisation, attention and MLP layers.
gamma starts at 1 and beta at 0, so every block is exactly the frozen one at step 0 (zero-init; SSF's code draws
gamma ~ N(1, 0.02), beta ~ N(0, 0.02), which this project does not, so the contract "step 0 = base model" holds).
After training the scale and shift can be folded into the preceding linear layer (SSF's re-parameterisation);
this benchmark measures the training cost, so they stay separate. The attention module is wrapped as a whole:
``nn.MultiheadAttention`` reads its ``out_proj`` weight directly, so a wrapper on ``out_proj`` would be bypassed.

Parameters per block of width D with an MLP of width 4D: 2 x (D + D + D + 4D + D) = 16 D (ViT-B/16: 12,288 per
block, 147,456 in all).

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.options import option
from strategies.registry import StrategyError, StrategyOptions, register

WRAPPED = ("ln_1", "attn", "ln_2", "mlp.c_fc", "mlp.c_proj")


def _layers_problem(layers: tuple[int, ...]) -> str | None:
    return None if layers and min(layers) >= 0 else f"expected a list of block indices >= 0, got {list(layers)}"


@dataclass(frozen=True)
class SSFConfig(StrategyOptions):
    layers: tuple[int, ...] | None = option(None, "indices of the visual blocks that get scale-and-shift, >= 0; null "
                                                  "= all", check=_layers_problem)


class ScaleShift(nn.Module):
    """``base_layer`` followed by y = ssf_scale * x + ssf_shift over the last (channel) axis."""

    def __init__(self, base_layer: nn.Module, channels: int):
        super().__init__()
        self.base_layer = base_layer
        self.ssf_scale = nn.Parameter(torch.ones(channels))
        self.ssf_shift = nn.Parameter(torch.zeros(channels))

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.ssf_scale.to(x.dtype) + self.ssf_shift.to(x.dtype)  # (..., C)

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):  # nn.MultiheadAttention: (output, weights)
            return (self._scaled(out[0]), *out[1:])
        return self._scaled(out)


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[0]
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    return module.out_features


def _wrap(block: nn.Module, path: str) -> None:
    *parents, leaf = path.split(".")
    owner = block
    for part in parents:
        owner = getattr(owner, part)
    target = getattr(owner, leaf)
    setattr(owner, leaf, ScaleShift(target, _channels(target)))


def apply(model, cfg: SSFConfig):
    blocks = model.backbone_blocks
    layers = range(len(blocks)) if cfg.layers is None else cfg.layers
    if max(layers, default=-1) >= len(blocks):
        raise StrategyError(f"layers: the visual tower has blocks 0..{len(blocks) - 1}, got {list(layers)}")
    for index in layers:
        for path in WRAPPED:
            _wrap(blocks[index], path)
    for name, parameter in model.named_parameters():
        if ".ssf_" in f".{name}":
            parameter.requires_grad_(True)
    return model


register("ssf", config=SSFConfig, apply=apply, prefixes=("ssf_",), zero_init=True,
         description="SSF: per-channel scale and shift after every visual block's norms, attention and MLP linears")
