"""Frame ablations of the sensitivity study: take the temporal information out of a clip, keep everything else.

``shuffle`` puts a clip's frames in a random order (a permutation drawn from ``(seed, index)``, the same every epoch
and run), which a temporal model that reads frame order must notice and a mean over frames cannot. ``one`` shows the
first sampled frame T times: no motion is left, while the model, its FLOPs and its memory stay those of a T-frame
clip (unlike ``--frames 1``, which changes the model's temporal blocks too). Both apply to every split, so a
model is trained and tested without what the ablation removes. Works on any dataset of (video (T, ...), labels).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

ABLATIONS = ("none", "shuffle", "one")


class FrameAblation(Dataset):
    """Wraps a video dataset; items are ``(video (T, 3, H, W), labels)`` with the frames reordered or repeated."""

    def __init__(self, dataset: Dataset, mode: str, *, seed: int = 0):
        if mode not in ABLATIONS[1:]:
            raise ValueError(f"frame ablation must be one of {ABLATIONS[1:]}, got {mode!r}")
        self.dataset, self.mode, self.seed = dataset, mode, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name):  # labels, schema, set_epoch, ... of the wrapped dataset
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, i: int):
        video, labels = self.dataset[i]
        t = video.shape[0]
        if self.mode == "one":
            return video[:1].expand(t, *video.shape[1:]).clone(), labels  # (1, ...) -> (T, ...)
        order = np.random.default_rng([self.seed, i]).permutation(t)
        return video[torch.from_numpy(order)], labels
