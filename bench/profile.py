"""Profiling of a run: parameter counts, step time, throughput and peak memory over the training window.

Conventions: times in seconds (``_s``) or milliseconds (``_ms``), memory in bytes (``_bytes``). Step time is the
median over measured steps after warm-up, synchronised on GPU, evaluation excluded.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


def count_parameters(model: nn.Module, base_ids: set[int]) -> dict:
    """Total / trainable / added parameters; ``added`` = parameters that did not exist before the strategy."""
    params = list({id(p): p for p in model.parameters()}.values())
    return {
        "params_total": sum(p.numel() for p in params),
        "params_trainable": sum(p.numel() for p in params if p.requires_grad),
        "params_added": sum(p.numel() for p in params if id(p) not in base_ids),
    }


def step_time_stats(step_times_s: list[float], *, warmup_steps: int, batch_size: int) -> dict:
    """Median step time after dropping ``warmup_steps``, and the matching throughput in clips per second."""
    measured = step_times_s[warmup_steps:] or step_times_s
    if not measured:
        return {"step_time_ms_median": None, "throughput_clips_per_s": None, "steps_timed": 0}
    median_s = float(np.median(measured))
    return {"step_time_ms_median": 1000.0 * median_s, "throughput_clips_per_s": batch_size / median_s,
            "steps_timed": len(measured)}


class MemoryWindow:
    """Peak memory over one or more training windows (GPU: CUDA allocator statistics)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peaks: dict[str, int] = {}

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._keep_max("cuda_max_allocated_bytes", torch.cuda.max_memory_allocated(self.device))
            self._keep_max("cuda_max_reserved_bytes", torch.cuda.max_memory_reserved(self.device))
        return False

    def _keep_max(self, key: str, value: int) -> None:
        self.peaks[key] = max(self.peaks.get(key, 0), int(value))

    def summary(self) -> dict:
        if "cuda_max_allocated_bytes" in self.peaks:
            return {"peak_mem_bytes": self.peaks["cuda_max_allocated_bytes"], "peak_mem_kind": "cuda_max_allocated",
                    **self.peaks}
        return {}
