"""CLIP preprocessing for video clips.

CLIP's own normalisation (OpenAI mean/std) is used. The released VTF / VTFPAR++ code normalises with
mean = std = 0.5, which does not match the statistics CLIP was trained with; we do not copy that.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

CLIP_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)


def clip_normalize(frames_uint8: torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) float, resized to the model's input and CLIP-normalised."""
    video = frames_uint8.permute(0, 3, 1, 2).float().div_(255.0)  # (T,H,W,3) -> (T,3,H,W)
    if image_size is not None and video.shape[-2:] != (image_size, image_size):
        video = F.interpolate(video, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
    return (video - CLIP_MEAN) / CLIP_STD
