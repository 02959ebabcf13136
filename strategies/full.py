"""Full fine-tuning: every parameter of the CLIP visual tower is trained (VTF's setting, Zhu et al. 2023)."""
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
         description="full fine-tuning of the CLIP visual tower (VTF)")
