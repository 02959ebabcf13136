"""Full fine-tuning: every parameter of the CLIP visual tower is trained.

Not VTF's setting: VTF keeps the CLIP encoder fixed (Zhu et al., CVPR-W 2023, section 3.1), which is ``frozen``.
Full fine-tuning is the reference every PEFT strategy's cost and accuracy are measured against (VTFPAR++, Fig. 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import Hyperparameters, StrategyOptions, register


@dataclass(frozen=True)
class FullConfig(StrategyOptions):
    """No parameters."""


def trained(model, cfg: FullConfig | None = None):
    """Every parameter of the visual path (the CLIP visual tower and the temporal aggregator)."""
    return model.vision.parameters()


def apply(model, cfg: FullConfig):
    for parameter in trained(model):
        parameter.requires_grad_(True)
    return model


register("full", config=FullConfig, apply=apply, zero_init=True, trains_existing=trained,
         hyper=Hyperparameters({"lr": 1e-3, "backbone_lr_scale": 0.01},
                               "new parameters at VTF's Adam 1e-3; the pretrained CLIP weights at 1e-5 (scale "
                               "0.01), the rate CLIP's visual tower is fine-tuned at (Goyal et al., FLYP, CVPR "
                               "2023: 1e-5; Li et al., CLIP-ReID, AAAI 2023: 5e-6)"),
         description="full fine-tuning of the CLIP visual tower (the reference for cost ratios)")
