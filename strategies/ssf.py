"""SSF (Lian et al., "Scaling & Shifting Your Features: A New Baseline for Efficient Model Tuning", NeurIPS 2022):
a learnable per-channel scale and shift after the operations of the visual tower, the backbone frozen.

y = gamma * x + beta, per channel. Where (``placement``):

- ``official`` (default; the authors' released ViT, ``models/vision_transformer.py`` of dongzelian/SSF): in every
  block after both LayerNorms (``ln_1``, ``ln_2``), after the fused q/k/v projection (3D channels), after the
  attention's output projection, after both MLP linears (``c_fc``, ``c_proj``); plus after the patch embedding
  (``conv1``, on the patch tokens before the class token and positions join) and after the final norm (``ln_post``).
  SSF section 3.2 inserts an SSF-ADA "after each operation"; the code is what produced its numbers.
- ``blocks``: the same per block without the q/k/v projection, and nothing outside the blocks (this project's
  earlier placement; 147,456 at ViT-B/16).

Parameters at width D with an MLP of width 4D, ``official``: per block 2 x (D + 3D + D + D + 4D + D) = 22 D, patch
embedding 2 D, final norm 2 D. ViT-B/16 (D = 768, 12 blocks): 16,896 per block, 202,752 + 1,536 + 1,536 = 205,824.
``blocks``: 16 D per block (12,288), 147,456 in all. ``layers`` chooses the blocks; the patch embedding and the final
norm belong to no block and are always scaled under ``official``.

Why wrappers, and how the q/k/v scale is applied: a ``ScaleShift`` module holds the original layer as
``base_layer``. ``nn.MultiheadAttention`` reads its ``out_proj`` weight directly and keeps q/k/v in one fused
``in_proj_weight``, so the attention is wrapped as a whole (``AttentionScaleShift``): its q/k/v scale and shift are
folded into the fused projection for each call (``strategies.common.scaled_in_projection``, exact), its output is
scaled like any other layer's.

Init: gamma starts at 1 and beta at 0, so the tower is exactly the frozen one at step 0 (zero-init; SSF's code draws
gamma ~ N(1, 0.02), beta ~ N(0, 0.02), which this project does not, so the contract "step 0 = base model" holds).
After training the scale and shift can be folded into the preceding linear layer (SSF's re-parameterisation); this
benchmark measures the training cost, so they stay separate.

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from strategies.common import call_with, enable_added, scaled_in_projection
from strategies.options import block_indices_problem, option
from strategies.registry import NEW_PARAMETERS, StrategyError, StrategyOptions, register

PLACEMENTS = ("official", "blocks")
BLOCK_PATHS = ("ln_1", "attn", "ln_2", "mlp.c_fc", "mlp.c_proj")  # per block, both placements
TOWER_PATHS = {"conv1": 1, "ln_post": -1}  # official only: layer -> its channel axis (conv1 is (B', D, h, w))



@dataclass(frozen=True)
class SSFConfig(StrategyOptions):
    layers: tuple[int, ...] | None = option(None, "indices of the visual blocks that get scale-and-shift, >= 0; null "
                                                  "= all", check=block_indices_problem)
    placement: str = option("official", "official = SSF's released ViT: also after the fused q/k/v projection, the "
                                         "patch embedding and the final norm (SSF 3.2; 205,824 at ViT-B/16); blocks "
                                         "= norms, attention output and MLP linears only (147,456)",
                            choices=PLACEMENTS)


class ScaleShift(nn.Module):
    """``base_layer`` followed by y = ssf_scale * x + ssf_shift over the channel axis ``dim`` (last by default).

    Attributes the wrapper lacks are read from ``base_layer`` (``conv1.kernel_size``, ``ln_post.normalized_shape``),
    as peft's layers do, so code that inspects the tower still finds them."""

    def __init__(self, base_layer: nn.Module, channels: int, *, dim: int = -1):
        super().__init__()
        device = next(base_layer.parameters()).device
        self.base_layer = base_layer
        self.dim = dim
        self.ssf_scale = nn.Parameter(torch.ones(channels, device=device))
        self.ssf_shift = nn.Parameter(torch.zeros(channels, device=device))

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_layer":
                raise
            return getattr(self.base_layer, name)

    def _scaled(self, x: torch.Tensor) -> torch.Tensor:
        shape = [1] * x.dim()
        shape[self.dim] = -1  # (..., C) or (B', C, h, w)
        return x * self.ssf_scale.to(x.dtype).view(shape) + self.ssf_shift.to(x.dtype).view(shape)

    def forward(self, *args, **kwargs):
        out = self.base_layer(*args, **kwargs)
        if isinstance(out, tuple):  # nn.MultiheadAttention: (output, weights)
            return (self._scaled(out[0]), *out[1:])
        return self._scaled(out)


class AttentionScaleShift(ScaleShift):
    """An ``nn.MultiheadAttention`` with SSF after its output projection and, with ``qkv``, after its fused q/k/v
    projection (``ssf_qkv_scale`` / ``ssf_qkv_shift``, 3D channels), as SSF's released ``Attention`` does."""

    def __init__(self, base_layer: nn.MultiheadAttention, *, qkv: bool):
        super().__init__(base_layer, base_layer.embed_dim)
        self.qkv = qkv
        if qkv:
            rows, device = 3 * base_layer.embed_dim, self.ssf_scale.device  # q, k, v rows of the fused projection
            self.ssf_qkv_scale = nn.Parameter(torch.ones(rows, device=device))
            self.ssf_qkv_shift = nn.Parameter(torch.zeros(rows, device=device))

    def forward(self, *args, **kwargs):
        if not self.qkv:
            return super().forward(*args, **kwargs)
        overrides = scaled_in_projection(self.base_layer, self.ssf_qkv_scale, self.ssf_qkv_shift)
        out = call_with(self.base_layer, overrides, args, kwargs)  # (output (B', N, D), weights)
        return (self._scaled(out[0]), *out[1:])


def _channels(module: nn.Module) -> int:
    if isinstance(module, nn.LayerNorm):
        return module.normalized_shape[0]
    if isinstance(module, nn.Conv2d):
        return module.out_channels
    return module.out_features


def _wrap(owner: nn.Module, path: str, *, qkv: bool, dim: int = -1) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    target = getattr(owner, leaf)
    if isinstance(target, ScaleShift):
        raise StrategyError(f"ssf: {path!r} already has a scale and shift")
    if isinstance(target, nn.MultiheadAttention):
        wrapped = AttentionScaleShift(target, qkv=qkv)
    else:
        wrapped = ScaleShift(target, _channels(target), dim=dim)
    setattr(owner, leaf, wrapped)


def apply(model, cfg: SSFConfig):
    """Wrap the chosen blocks' layers (and, ``official``, the patch embedding and final norm); only ssf_ trains."""
    blocks = model.backbone_blocks
    layers = range(len(blocks)) if cfg.layers is None else cfg.layers
    if max(layers, default=-1) >= len(blocks):
        raise StrategyError(f"layers: the visual tower has blocks 0..{len(blocks) - 1}, got {list(layers)}")
    official = cfg.placement == "official"
    for index in layers:
        for path in BLOCK_PATHS:
            _wrap(blocks[index], path, qkv=official)
    if official:
        for path, dim in TOWER_PATHS.items():
            _wrap(model.backbone, path, qkv=False, dim=dim)
    enable_added(model.backbone, "ssf_")
    return model


register("ssf", config=SSFConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=("ssf_",), zero_init=True,
         description="SSF: per-channel scale and shift after the patch embedding, every norm, qkv, attention and MLP "
                     "linear (released placement)")
