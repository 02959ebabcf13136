"""The visual path of VTF: CLIP's visual tower applied per frame, all tokens kept, then a temporal aggregator.

VTF (Zhu et al., CVPR-W 2023) keeps every visual token of every frame after ``ln_post`` and the visual projection
(197 x 512 for ViT-B/16 at 224) and averages them over frames. ``ClipFrameEncoder`` runs open_clip's visual tower
block by block so that strategies have public attach points: ``blocks`` (the tower's residual blocks) and
``prompts``, a hook object for visual prompt tokens (VPT, PromptPAR) with this protocol::

    prompts.attn_mask(num_tokens) -> additive mask (num_tokens', num_tokens') or None
    prompts.before_block(index, tokens) -> tokens      # insert / replace prompt tokens before block ``index``
    prompts.strip(tokens) -> tokens                    # drop prompt tokens before ln_post

Legend for shape comments: B batch, T frames, N tokens, D width, A attribute columns.
"""
from __future__ import annotations

import torch
from torch import nn

from models.temporal import build_temporal


class ClipFrameEncoder(nn.Module):
    """(B', 3, H, W) images -> (B', N, D_out) tokens after ln_post and the visual projection."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual
        self.prompts: nn.Module | None = None

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    @property
    def width(self) -> int:
        return self.visual.conv1.out_channels

    @property
    def out_dim(self) -> int:
        return self.visual.proj.shape[1]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding + class token + positions + ln_pre: CLIP output 0, (B', N, D)."""
        visual = self.visual
        x = visual.conv1(images)  # (B', D, h, w)
        x = x.flatten(2).transpose(1, 2)  # (B', h*w, D)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # (B', 1, D)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)  # (B', N, D)
        return visual.ln_pre(x)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images)
        mask = self.prompts.attn_mask(x.shape[1]) if self.prompts is not None else None
        for index, block in enumerate(self.blocks):
            if self.prompts is not None:
                x = self.prompts.before_block(index, x)
            x = block(x, attn_mask=mask)
        if self.prompts is not None:
            x = self.prompts.strip(x)
        return self.visual.ln_post(x) @ self.visual.proj  # (B', N, D_out)


class DiscardedResidual(nn.Module):
    """Zero times its input: put in place of a block's ``ls_1`` it removes the attention branch from the residual
    stream while the attention is still computed, so FLOPs and parameter counts stay those of the intact tower."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 0


def discard_attention(visual: nn.Module) -> int:
    """The sensitivity ablation "no visual attention": every block of the visual tower keeps only its MLP branch,
    so a token sees its own patch (and position) alone; whatever a strategy does through attention (prompts,
    attention LoRA, side networks reading attention-mixed taps) loses its effect. Returns the blocks changed."""
    blocks = visual.transformer.resblocks
    for block in blocks:
        block.ls_1 = DiscardedResidual()
    return len(blocks)


class VideoEncoder(nn.Module):
    """(B, T, 3, H, W) video -> (B, N, D_out) visual tokens: frame encoder then temporal aggregation."""

    def __init__(self, frames: ClipFrameEncoder, *, temporal: str = "mean"):
        super().__init__()
        self.frames = frames
        self.temporal = build_temporal(temporal, width=frames.out_dim)

    @property
    def out_dim(self) -> int:
        return self.frames.out_dim

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        tokens = self.frames(video.flatten(0, 1))  # (B*T, 3, H, W) -> (B*T, N, D)
        return self.temporal(tokens.unflatten(0, (b, t)))  # (B, T, N, D) -> (B, N, D)
