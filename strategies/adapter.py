"""AdaptFormer (Chen et al., "AdaptFormer: Adapting Vision Transformers for Scalable Visual Recognition", NeurIPS
2022): a bottleneck adapter parallel to each block's MLP, on the frozen CLIP visual tower.

AdaptFormer's Eq. 3-4 with h = LN(x') the MLP's input: MLP(h) + s * up(ReLU(down(h))), the block's residual added
as before. Here ``block.mlp`` is replaced by ``ParallelAdapterMLP`` that holds the original MLP as ``base_layer``
(same module, weights untouched) and the adapter as ``adapter_down`` (D -> bottleneck) and ``adapter_up``
(bottleneck -> D). As in AdaptFormer's code, ``down`` keeps the default (Kaiming-uniform) init and ``up`` starts at
zero, so the block output equals the frozen base model's at step 0 (zero-init); AdaptFormer's scale s = 0.1 is the
default. open_clip's LayerScale ``ls_2`` (identity in CLIP) then applies to the sum.

Parameters per adapted block of width D and bottleneck k: 2 D k + k + D (ViT-B/16, k = 64: 99,136 per block).

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.options import option
from strategies.registry import StrategyError, StrategyOptions, register

PREFIXES = ("adapter_",)


def _bottleneck_problem(value: int | float) -> str | None:
    if value >= 1 if isinstance(value, int) else 0 < value < 1:
        return None
    return f"expected an int >= 1 or a fraction in (0, 1), got {value!r}"


def _layers_problem(layers: tuple[int, ...]) -> str | None:
    if layers and len(set(layers)) == len(layers) and min(layers) >= 0:
        return None
    return f"expected distinct block indices >= 0 or null (all), got {layers!r}"


@dataclass(frozen=True)
class AdapterConfig(StrategyOptions):
    bottleneck: int | float = option(64, "hidden width: an int >= 1, or a float in (0, 1) = fraction of the block "
                                         "width", check=_bottleneck_problem)
    scale: float = option(0.1, "s in MLP(h) + s * adapter(h) (AdaptFormer: 0.1)")
    layers: tuple[int, ...] | None = option(None, "indices of the adapted visual blocks, distinct, >= 0; null = all",
                                            check=_layers_problem)

    def hidden(self, width: int) -> int:
        """The bottleneck width for a block of ``width`` (a fraction rounds, at least 1)."""
        return self.bottleneck if isinstance(self.bottleneck, int) else max(1, round(self.bottleneck * width))


class ParallelAdapterMLP(nn.Module):
    """h (..., D) -> base_layer(h) + scale * adapter_up(ReLU(adapter_down(h))), the AdaptFormer parallel adapter."""

    def __init__(self, base_layer: nn.Module, *, width: int, hidden: int, scale: float):
        super().__init__()
        weight = next(base_layer.parameters())
        self.base_layer = base_layer
        self.adapter_down = nn.Linear(width, hidden, device=weight.device, dtype=weight.dtype)
        self.adapter_up = nn.Linear(hidden, width, device=weight.device, dtype=weight.dtype)
        self.scale = scale
        nn.init.zeros_(self.adapter_down.bias)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.base_layer(h) + self.scale * self.adapter_up(torch.relu(self.adapter_down(h)))


def _width(block: nn.Module) -> int:
    linears = [m for m in block.mlp.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise StrategyError("adapter: the visual block's mlp has no nn.Linear to read its width from")
    return linears[0].in_features


def apply(model, cfg: AdapterConfig):
    """Wrap the MLP of each chosen block; only the adapter's own down/up projections train."""
    blocks = model.backbone_blocks
    layers = range(len(blocks)) if cfg.layers is None else cfg.layers
    if any(index >= len(blocks) for index in layers):
        raise StrategyError(f"adapter.layers: {list(layers)} out of range for {len(blocks)} visual blocks")
    for index in layers:
        block = blocks[index]
        if isinstance(block.mlp, ParallelAdapterMLP):
            raise StrategyError(f"adapter: visual block {index} already has an adapter")
        width = _width(block)
        block.mlp = ParallelAdapterMLP(block.mlp, width=width, hidden=cfg.hidden(width), scale=cfg.scale)
        block.mlp.adapter_down.requires_grad_(True)
        block.mlp.adapter_up.requires_grad_(True)
    return model


register("adapter", config=AdapterConfig, apply=apply, prefixes=PREFIXES, zero_init=True,
         description="AdaptFormer parallel bottleneck adapter (64, s=0.1) beside every visual block's MLP")
