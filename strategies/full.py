"""Full fine-tuning: every parameter of the CLIP visual tower is trained.

Not VTF's setting: VTF keeps the CLIP encoder fixed (Zhu et al., CVPR-W 2023, section 3.1), which is ``frozen``.
Full fine-tuning is the reference every PEFT strategy's cost and accuracy are measured against (VTFPAR++, Fig. 1).
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import register


@dataclass(frozen=True)
class FullConfig:
    pass


def apply(model, cfg: FullConfig):
    model.vision.requires_grad_(True)
    return model


register("full", config=FullConfig, apply=apply, zero_init=True,
         description="full fine-tuning of the CLIP visual tower (the reference for cost ratios)")
