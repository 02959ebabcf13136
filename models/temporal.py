"""Temporal aggregators: (B, T, N, D) frame tokens -> (B, N, D) clip tokens.

``mean`` is VTF's average over frames. ``tmd`` is a Temporal Memory Diffusion aggregator after TF-CLIP (Yu et al.,
AAAI 2024): the frames' class tokens ("memories") first attend to each other across time, then every token of every
frame reads the updated memories (diffusion), and the result is averaged over frames. Both residual branches end in
zero-initialised projections, so at initialisation ``tmd`` equals ``mean`` and any strategy can switch to it
without changing its step-0 output.
"""
from __future__ import annotations

import torch
from torch import nn


class MeanOverFrames(nn.Module):
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=1)  # (B, T, N, D) -> (B, N, D)


class TemporalMemoryDiffusion(nn.Module):
    def __init__(self, width: int, heads: int = 4):
        super().__init__()
        heads = heads if width % heads == 0 else 1
        self.memory_norm = nn.LayerNorm(width)
        self.memory_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.token_norm = nn.LayerNorm(width)
        self.diffuse_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        for attn in (self.memory_attn, self.diffuse_attn):
            nn.init.zeros_(attn.out_proj.weight)
            nn.init.zeros_(attn.out_proj.bias)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        b, t, n, d = tokens.shape
        memories = tokens[:, :, 0]  # class token of every frame: (B, T, D)
        m = self.memory_norm(memories)
        memories = memories + self.memory_attn(m, m, m, need_weights=False)[0]  # frames talk across time
        queries = self.token_norm(tokens).reshape(b, t * n, d)  # (B, T*N, D)
        diffused = self.diffuse_attn(queries, memories, memories, need_weights=False)[0]  # (B, T*N, D)
        tokens = tokens + diffused.reshape(b, t, n, d)  # (B, T*N, D) -> (B, T, N, D)
        return tokens.mean(dim=1)  # (B, N, D)


def build_temporal(name: str, *, width: int) -> nn.Module:
    if name == "mean":
        return MeanOverFrames()
    if name == "tmd":
        return TemporalMemoryDiffusion(width)
    raise ValueError(f"model.temporal: unknown aggregator {name!r}; expected 'mean' or 'tmd'")
