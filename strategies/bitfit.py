"""BitFit (Ben Zaken et al., "BitFit: Simple Parameter-efficient Fine-tuning for Transformer-based Masked
Language-models", ACL 2022): only the bias terms of the backbone train.

Every bias of the CLIP visual tower learns -- attention in-projection and out-projection, the MLP's two linears and
the LayerNorms' shifts (BitFit trains all of them, LayerNorm included) -- starting from the pretrained values, so the
step-0 output is the base model's (zero-init). CLIP's patch embedding has no bias. Nothing is added: the strategy
declares the biases it trains (``trains_existing``). ViT-B/16: 12 blocks x (2,304 + 768 + 3,072 + 768 + 2 x 768)
+ ln_pre and ln_post = 102,912 parameters.
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies.options import option
from strategies.registry import Hyperparameters, StrategyOptions, register


@dataclass(frozen=True)
class BitFitConfig(StrategyOptions):
    norms: bool = option(True, "whether the LayerNorm shifts train too (BitFit: yes)")


def biases(model, cfg: BitFitConfig):
    """The bias parameters of the CLIP visual tower (LayerNorm shifts only with ``cfg.norms``)."""
    for name, parameter in model.backbone.named_parameters():
        parts = name.split(".")
        is_norm = len(parts) > 1 and parts[-2].startswith("ln")
        if name.endswith("bias") and (cfg.norms or not is_norm):
            yield parameter


def apply(model, cfg: BitFitConfig):
    for parameter in biases(model, cfg):
        parameter.requires_grad_(True)
    return model


register("bitfit", config=BitFitConfig, apply=apply, zero_init=True, trains_existing=biases,
         hyper=Hyperparameters({"lr": 1e-3, "backbone_lr_scale": 1.0},
                               "the bias terms at the rate of new parameters, Adam 1e-3: BitFit tunes biases at "
                               "rates of 1e-4 to 1e-3 (Ben Zaken et al., ACL 2022)"),
         description="BitFit: only the visual tower's bias terms train (attention, MLP, LayerNorm)")
