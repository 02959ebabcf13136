"""LoRA (Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022) on the CLIP visual tower, via peft.

W' = W + (alpha / r) B A with A (r x d_in) random and B (d_out x r) zero, so the model equals the frozen base model
at step 0 (zero-init). Targets, per residual block of the visual tower:

- ``"attn"``: the ``nn.MultiheadAttention`` as a whole. peft's LoRA is the only peft tuner that accepts it; it
  adapts both the packed q/k/v projection (``in_proj_weight``) and the output projection. ``out_proj`` alone is
  never targeted: MHA reads its weight directly, so an adapter there would be silently bypassed (see
  ``strategies.common``). The forward used for it is ``common.MergeFreeLoraMHA`` (peft's layer, W + dW substituted
  instead of peft 0.21's merge/unmerge, which adds the out_proj delta twice and re-creates the frozen weights).
- ``"mlp"``: the MLP linears ``c_fc`` and ``c_proj``.

Parameters per block of width D (MLP width 4D), A and B of each adapted matrix: attn r (D + 3D) for in_proj plus
r (D + D) for out_proj = 6 r D; mlp r (D + 4D) for c_fc plus r (4D + D) for c_proj = 10 r D. ViT-B/16 (D = 768,
12 blocks, r = 8): 442,368 (attn), 737,280 (mlp), 1,179,648 (both).
``dropout`` acts on the inputs of the MLP linears; on the attention peft folds the update into the weights, where
input dropout cannot apply, so it has no effect there.
"""
from __future__ import annotations

from dataclasses import dataclass

import peft

from strategies.common import check_only_added_train, inject_peft, resolve_targets
from strategies.registry import register

TARGET_MODULES = {"attn": ("attn",), "mlp": ("mlp.c_fc", "mlp.c_proj")}
PREFIXES = ("lora_",)


@dataclass(frozen=True)
class LoraConfig:
    """r: rank; alpha: scaling numerator (update scale alpha / r); dropout: on the adapted MLP linears' inputs;
    targets: any of "attn" (whole attention) and "mlp" (c_fc, c_proj)."""

    r: int = 8
    alpha: float = 16
    dropout: float = 0.0
    targets: tuple[str, ...] = ("attn", "mlp")

    def __post_init__(self):
        object.__setattr__(self, "targets", tuple(self.targets))  # JSON gives lists
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r: expected an integer >= 1, got {self.r!r}")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or self.alpha <= 0:
            raise ValueError(f"alpha: expected a number > 0, got {self.alpha!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a number in [0, 1), got {self.dropout!r}")
        distinct = len(set(self.targets)) == len(self.targets)
        if not (self.targets and distinct and set(self.targets) <= set(TARGET_MODULES)):
            raise ValueError(f"targets: expected distinct names from {sorted(TARGET_MODULES)}, got {self.targets!r}")


def apply(model, cfg: LoraConfig):
    """Inject peft LoRA layers into the chosen modules of every visual block; only their A and B train."""
    suffixes = [suffix for target in cfg.targets for suffix in TARGET_MODULES[target]]
    names = resolve_targets(model, suffixes, field="lora.targets")
    before = {id(p) for p in model.backbone.parameters()}
    config = peft.LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=names,
                             bias="none")
    inject_peft(model.backbone, config, field="lora")
    check_only_added_train(model.backbone, before, prefixes=PREFIXES, field="lora")
    return model


register("lora", config=LoraConfig, apply=apply, prefixes=PREFIXES, zero_init=True,
         description="peft LoRA (r=8, alpha=16) on the visual tower's attention and MLP linears")
