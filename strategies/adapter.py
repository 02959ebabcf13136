"""AdaptFormer (Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition", NeurIPS
2022): a bottleneck adapter parallel to each block's MLP, on the frozen CLIP visual tower.

Block output x' + MLP(LN(x')) + s * up(drop(ReLU(down(a)))), x' the block's state after attention. What the adapter
reads (``tap``) differs between the paper and the authors' code:

- ``norm`` (default): a = LN(x'), the MLP's own input, as Eq. 3-4 of the paper write it. ``block.mlp`` becomes a
  ``ParallelAdapterMLP`` holding the original MLP as ``base_layer`` (same module, weights untouched).
- ``input``: a = x', the block input before ``ln_2``, as the released ``Block.forward`` (ShoufaChen/AdaptFormer,
  ``models/custom_modules.py``: ``adapt_x = self.adaptmlp(x, add_residual=False)`` before ``norm2``) computes it.
  The norm then moves into the wrapper (``base_norm``; ``block.ln_2`` becomes an identity), since open_clip's block
  hands its MLP only the normalised tensor: the same operations in the same order, the same weights.

``dropout`` acts on the bottleneck activation in training only: the released ``Adapter`` is built with
``dropout=0.1`` (``nn.functional.dropout(..., training=self.training)``); the paper does not mention it, and the
embedded default keeps 0. The ``paper`` presets select the released choices (``input``, 0.1).

As in AdaptFormer's code (``init_option="lora"``), ``down`` keeps the default (Kaiming-uniform) weight with a zero
bias and ``up`` starts at zero, so the block output equals the frozen base model's at step 0 (zero-init); the scale
s = 0.1 is the released ``ffn_adapter_scalar``. open_clip's LayerScale ``ls_2`` (identity in CLIP) applies to the sum.

Parameters per adapted block of width D and bottleneck k: 2 D k + k + D (ViT-B/16, k = 64: 99,136 per block),
whatever the tap and dropout.

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.options import block_indices_problem, option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register

PREFIXES = ("adapter_",)
TAPS = ("norm", "input")


def _bottleneck_problem(value: int | float) -> str | None:
    if value >= 1 if isinstance(value, int) else 0 < value < 1:
        return None
    return f"expected an int >= 1 or a fraction in (0, 1), got {value!r}"



@dataclass(frozen=True)
class AdapterConfig(StrategyOptions):
    bottleneck: int | float = option(64, "hidden width: an int >= 1, or a float in (0, 1) = fraction of the block "
                                         "width", check=_bottleneck_problem)
    scale: float = option(0.1, "s in MLP(h) + s * adapter(h) (AdaptFormer: 0.1)")
    layers: tuple[int, ...] | None = option(None, "indices of the adapted visual blocks, distinct, >= 0; null = all",
                                            check=block_indices_problem)
    dropout: float = option(0.0, "dropout on the bottleneck activation, training only (released code: 0.1; not in "
                                 "the paper)", min=0, below=1)
    tap: str = option("norm", "what the adapter reads: norm = LN(x'), the MLP's input (paper Eq. 3); input = the "
                              "block input x' before ln_2 (released code)", choices=TAPS)

    def hidden(self, width: int) -> int:
        """The bottleneck width for a block of ``width`` (a fraction rounds, at least 1)."""
        return self.bottleneck if isinstance(self.bottleneck, int) else max(1, round(self.bottleneck * width))


class ParallelAdapterMLP(nn.Module):
    """The AdaptFormer parallel adapter beside ``base_layer`` (the block's MLP).

    Without ``base_norm``: h (..., D) = LN(x') -> base_layer(h) + scale * adapter(h) (paper, Eq. 3-4).
    With ``base_norm`` (the block's ``ln_2``, moved here): x' -> base_layer(base_norm(x')) + scale * adapter(x')
    (released code)."""

    def __init__(self, base_layer: nn.Module, *, width: int, hidden: int, scale: float, dropout: float = 0.0,
                 base_norm: nn.Module | None = None):
        super().__init__()
        weight = next(base_layer.parameters())
        self.base_layer = base_layer
        self.base_norm = base_norm
        self.adapter_down = nn.Linear(width, hidden, device=weight.device, dtype=weight.dtype)
        self.adapter_dropout = nn.Dropout(dropout)
        self.adapter_up = nn.Linear(hidden, width, device=weight.device, dtype=weight.dtype)
        self.scale = scale
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def adapter(self, a: torch.Tensor) -> torch.Tensor:
        """up(drop(ReLU(down(a)))), (..., D) -> (..., D); dropout is active in training mode only."""
        return self.adapter_up(self.adapter_dropout(torch.relu(self.adapter_down(a))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x if self.base_norm is None else self.base_norm(x)  # the MLP's input LN(x'), (..., D)
        return self.base_layer(h) + self.scale * self.adapter(x)


def _width(block: nn.Module) -> int:
    linears = [m for m in block.mlp.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise StrategyError("adapter: the visual block's mlp has no nn.Linear to read its width from")
    return linears[0].in_features


def apply(model, cfg: AdapterConfig):
    """Wrap the MLP (and, ``tap: input``, its norm) of each chosen block; only the adapter's down/up projections
    train."""
    blocks = model.backbone_blocks
    layers = range(len(blocks)) if cfg.layers is None else cfg.layers
    if any(index >= len(blocks) for index in layers):
        raise StrategyError(f"adapter.layers: {list(layers)} out of range for {len(blocks)} visual blocks")
    for index in layers:
        block = blocks[index]
        if isinstance(block.mlp, ParallelAdapterMLP):
            raise StrategyError(f"adapter: visual block {index} already has an adapter")
        width = _width(block)
        base_norm = block.ln_2 if cfg.tap == "input" else None
        if base_norm is not None:
            block.ln_2 = nn.Identity()  # open_clip calls mlp(ln_2(x)): the wrapper now applies the norm itself
        block.mlp = ParallelAdapterMLP(block.mlp, width=width, hidden=cfg.hidden(width), scale=cfg.scale,
                                       dropout=cfg.dropout, base_norm=base_norm)
        block.mlp.adapter_down.requires_grad_(True)
        block.mlp.adapter_up.requires_grad_(True)
    return model


register("adapter", config=AdapterConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=PREFIXES, zero_init=True,
         description="AdaptFormer parallel bottleneck adapter (64, s=0.1) beside every visual block's MLP")
