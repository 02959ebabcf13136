"""Ordered frame sampling for tracklets.

The released VTF / VTFPAR++ code samples frames at random and in random order, at train and at test time, so its
evaluation is not deterministic and the "temporal" order is lost. Here, as in TSN-style sampling, a tracklet of
``n`` frames is cut into ``T`` equal segments and one frame is taken from each, in order: at a random offset inside
the segment when training, at the segment centre when evaluating. Tracklets shorter than ``T`` repeat frames.
"""
from __future__ import annotations

import numpy as np


def sample_frame_indices(n_available: int, num_frames: int, *, train: bool, rng: np.random.Generator | None = None
                         ) -> list[int]:
    """Return ``num_frames`` ordered frame indices into a tracklet of ``n_available`` frames."""
    if n_available < 1:
        raise ValueError("cannot sample frames from an empty tracklet")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    edges = np.linspace(0.0, n_available, num_frames + 1)
    if train:
        rng = rng if rng is not None else np.random.default_rng()
        points = edges[:-1] + rng.random(num_frames) * (edges[1:] - edges[:-1])
    else:
        points = (edges[:-1] + edges[1:]) / 2.0
    return np.minimum(np.floor(points).astype(int), n_available - 1).tolist()
