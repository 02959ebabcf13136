"""Frozen backbone: CLIP stays fixed, only the shared fusion transformer and head learn.

This is VTF's own setting: "In the training phase, the parameters of CLIP encoder are fixed" (Zhu et al., CVPR-W
2023, section 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import NEW_PARAMETERS, StrategyOptions, register


@dataclass(frozen=True)
class FrozenConfig(StrategyOptions):
    """No parameters."""


def apply(model, cfg: FrozenConfig):
    return model


register("frozen", config=FrozenConfig, apply=apply, hyper=NEW_PARAMETERS, zero_init=True,
         description="VTF's setting: CLIP visual tower frozen; only the fusion transformer and head are trained")
