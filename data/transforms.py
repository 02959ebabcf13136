"""CLIP preprocessing for video clips: fitting a frame to the model's square input, training augmentation, and
CLIP's normalisation.

Fitting (``fit_frame``): pedestrian crops are slim (MARS: 256 x 128), CLIP takes squares. VTF pads the frame with
zero pixels to 224 x 224 (Zhu et al., CVPR-W 2023, section 2.1): ``"pad"`` scales the frame so its longer side is
the input size, keeping the aspect ratio, and centres it on a black square (a 256 x 128 frame becomes a 224 x 112
person with 56 zero columns either side). ``"stretch"`` resizes to the square, distorting the person (bicubic,
as CLIP's own preprocessing).

Augmentation (``pad_crop_flip``, training only): the authors' released training transform, Pad(10) with zeros,
RandomCrop back to the input size and RandomHorizontalFlip(0.5). The released code draws it per frame
(``"frame"``); ``"clip"`` draws once per clip so the frames of a tracklet stay aligned. Evaluation never augments.

Normalisation: CLIP's own mean/std (OpenAI's). The released VTF / VTFPAR++ code normalises with mean = std = 0.5,
which does not match the statistics CLIP was trained with; we do not copy that.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from PIL import Image

CLIP_MEAN = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
CLIP_STD = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
FRAME_FITS = ("pad", "stretch")
AUGMENTS = ("none", "frame", "clip")


def fit_frame(image: Image.Image, size: int, fit: str = "pad") -> np.ndarray:
    """An RGB PIL image -> (size, size, 3) uint8: aspect kept and zero-padded (``"pad"``) or stretched."""
    if fit == "stretch":
        return np.asarray(image.resize((size, size), Image.Resampling.BICUBIC), dtype=np.uint8)
    width, height = image.size
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    canvas = np.zeros((size, size, 3), dtype=np.uint8)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top:top + new_h, left:left + new_w] = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC))
    return canvas


def pad_crop_flip(frames: np.ndarray, rng: np.random.Generator, *, pad: int, per_frame: bool) -> np.ndarray:
    """(T, S, S, 3) uint8 -> (T, S, S, 3): zero-pad by ``pad``, crop S x S at a random offset, flip with p = 0.5."""
    count, size = frames.shape[0], frames.shape[1]
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (T, S+2p, S+2p, 3)
    draws = count if per_frame else 1
    offsets = rng.integers(0, 2 * pad + 1, size=(draws, 2))
    flips = rng.random(draws) < 0.5
    out = np.empty_like(frames)
    for t in range(count):
        k = t if per_frame else 0
        top, left = offsets[k]
        crop = padded[t, top:top + size, left:left + size]
        out[t] = crop[:, ::-1] if flips[k] else crop
    return out


def augment_clip(frames: np.ndarray, rng: np.random.Generator, *, mode: str, pad: int) -> np.ndarray:
    """The training augmentation ``mode`` (``AUGMENTS``) applied to a clip of uint8 frames."""
    if mode not in AUGMENTS:
        raise ValueError(f"data.augment: expected one of {AUGMENTS}, got {mode!r}")
    if mode == "none":
        return frames
    return pad_crop_flip(frames, rng, pad=pad, per_frame=mode == "frame")


def clip_normalize(frames_uint8: torch.Tensor, image_size: int | None = None) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (T, 3, S, S) float, resized to the model's input and CLIP-normalised."""
    video = frames_uint8.permute(0, 3, 1, 2).float().div_(255.0)  # (T,H,W,3) -> (T,3,H,W)
    if image_size is not None and video.shape[-2:] != (image_size, image_size):
        video = F.interpolate(video, size=(image_size, image_size), mode="bilinear", align_corners=False,
                              antialias=True)
    return (video - CLIP_MEAN) / CLIP_STD
