"""Frozen backbone: CLIP stays fixed, only the shared fusion transformer and head learn (linear-probe-like VTF)."""
from __future__ import annotations

from dataclasses import dataclass

from strategies.registry import register


@dataclass(frozen=True)
class FrozenConfig:
    pass


def apply(model, cfg: FrozenConfig):
    return model


register("frozen", config=FrozenConfig, apply=apply, zero_init=True,
         description="CLIP visual tower frozen; only the fusion transformer and head are trained")
