"""Per-clip test predictions kept in the result JSON, and what a strategy's own parameters contribute to them.

Statistics over test clips (bench/measure/statistics.py: bootstrap intervals, paired comparisons) need every clip's
prediction, not only the metrics. They are stored inside the run's result JSON, so the JSON stays the single source
of truth: sigmoid probabilities as float32 (exact: the metrics recomputed from them equal the recorded ones; a
float16 copy would move clips across the 0.45 / 0.5 thresholds), zlib-compressed and base64-encoded; the 0/1
labels as packed bits. The embedded default's 512 clips x 43 columns cost about 110 kB per result file.

The own-parameter probe answers "do the strategy's own parameters do anything?" by construction rather than by a
list of bugs: the test split is predicted once more with every trainable parameter outside the shared fusion / head
put back to its value before training. If a strategy's parameters never stepped, or stepped but are not used by
the forward pass, both predictions are identical and the effect is exactly 0.
"""
from __future__ import annotations

import base64
import zlib

import numpy as np
import torch
from torch import nn

from bench.errors import BenchError

ENCODING = "probs: float32 little-endian row-major (N, A), zlib, base64; labels: numpy packbits of (N, A) 0/1, base64"


class PredictionsError(BenchError, ValueError):
    """Stored predictions are missing or cannot be decoded."""


def encode(probs: np.ndarray, labels: np.ndarray) -> dict:
    """(N, A) probabilities and 0/1 labels -> a JSON-serialisable dict (see ``ENCODING``)."""
    probs = np.ascontiguousarray(probs, dtype="<f4")
    bits = np.packbits(np.asarray(labels, dtype=np.uint8).reshape(-1))
    return {"encoding": ENCODING, "shape": list(probs.shape),
            "probs": base64.b64encode(zlib.compress(probs.tobytes(), 9)).decode("ascii"),
            "labels": base64.b64encode(bits.tobytes()).decode("ascii")}


def decode(stored: dict) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of ``encode``: probabilities (N, A) float64 and labels (N, A) int64."""
    try:
        rows, cols = (int(v) for v in stored["shape"])
        probs = np.frombuffer(zlib.decompress(base64.b64decode(stored["probs"])), dtype="<f4")
        bits = np.frombuffer(base64.b64decode(stored["labels"]), dtype=np.uint8)
        labels = np.unpackbits(bits)[: rows * cols]
        return probs.reshape(rows, cols).astype(np.float64), labels.reshape(rows, cols).astype(np.int64)
    except (KeyError, TypeError, ValueError, zlib.error) as error:
        raise PredictionsError(f"test predictions cannot be decoded ({type(error).__name__}: {error})") from None


def own_parameters(model: nn.Module) -> dict[str, nn.Parameter]:
    """Trainable parameters outside the shared, strategy-independent modules (``model.head_modules()``; a model
    without them, such as the reference CNN, owns everything it trains)."""
    inner = model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model
    shared_modules = inner.head_modules() if hasattr(inner, "head_modules") else []  # a DDP wrapper hides them
    shared = {id(p) for module in shared_modules for p in module.parameters()}
    return {name: p for name, p in model.named_parameters() if p.requires_grad and id(p) not in shared}


def snapshot_own(model: nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the own parameters before training (what the probe restores)."""
    return {name: p.detach().to("cpu", copy=True) for name, p in own_parameters(model).items()}


@torch.no_grad()
def own_parameter_effect(model: nn.Module, initial: dict[str, torch.Tensor], predict_test, probs: np.ndarray
                         ) -> dict:
    """Mean |p_trained - p_restored| over test clips and columns, with the own parameters back at ``initial``.

    ``predict_test()`` returns the test probabilities (N, A) of the model as it is; ``probs`` are those of the
    trained model. The trained values are put back afterwards. ``None`` fields for a strategy without own
    parameters (``frozen``: only the shared head trains).
    """
    params = own_parameters(model)
    if not params:
        return {"own_params": 0, "prob_abs_change_mean": None, "prob_abs_change_max": None}
    trained = {name: p.detach().clone() for name, p in params.items()}
    for name, p in params.items():
        p.copy_(initial[name].to(p.device))
    try:
        restored = predict_test()
    finally:
        for name, p in params.items():
            p.copy_(trained[name])
    change = np.abs(np.asarray(probs, dtype=np.float64) - np.asarray(restored, dtype=np.float64))
    return {"own_params": int(sum(p.numel() for p in params.values())),
            "prob_abs_change_mean": float(change.mean()), "prob_abs_change_max": float(change.max())}
