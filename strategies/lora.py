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
from strategies.options import option
from strategies.registry import NEW_PARAMETERS, StrategyOptions, register

TARGET_MODULES = {"attn": ("attn",), "mlp": ("mlp.c_fc", "mlp.c_proj")}
PREFIXES = ("lora_",)


def _targets_problem(targets: tuple[str, ...]) -> str | None:
    if targets and len(set(targets)) == len(targets) and set(targets) <= set(TARGET_MODULES):
        return None
    return f"expected distinct names from {sorted(TARGET_MODULES)}, got {targets!r}"


@dataclass(frozen=True)
class LoraConfig(StrategyOptions):
    r: int = option(8, "rank of the update B A", min=1)
    alpha: float = option(16, "scaling numerator: the update is scaled by alpha / r", above=0)
    dropout: float = option(0.0, "dropout on the adapted MLP linears' inputs (none on attention)", min=0, below=1)
    targets: tuple[str, ...] = option(("attn", "mlp"), "what is adapted, distinct: attn (the whole attention), mlp "
                                                       "(c_fc, c_proj)", check=_targets_problem)


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


register("lora", config=LoraConfig, apply=apply, hyper=NEW_PARAMETERS, prefixes=PREFIXES, zero_init=True,
         description="peft LoRA (r=8, alpha=16) on the visual tower's attention and MLP linears")
