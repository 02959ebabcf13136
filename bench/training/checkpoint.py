"""Training checkpoints at epoch ends, so that a killed, preempted or timed-out run continues where it stopped.

A run's checkpoint lies in ``<out>/.checkpoints/<run_id>-<config digest>-<source digest>.pt``: a run of another
config or of other code never resumes from it. It is written atomically after every epoch's validation and holds
everything the rest of the run depends on: the model's state (parameters and buffers), the optimizer's and the
scheduler's, the best weights so far and their validation metrics, the outcome so far (history, step times, steps,
training seconds), the random generators (torch, numpy, Python), the training loader's shuffling generator, the
training dataset's per-clip draw counters (frame offsets and augmentation) and, under DDP, the sampler's pass count.
So a resumed run computes exactly what the uninterrupted run would have (tests/test_checkpoint.py); what it loses
is the part of the epoch it was in when stopped. The worker removes the checkpoint once the run has a final record
(ok or failed); a preempted or killed run keeps it for its resume or requeue.

Not restored: the memory window's peak (the resumed process measures its own epochs) and wall-clock figures beyond
the training seconds summed over the processes.
"""
from __future__ import annotations

import copy
import dataclasses
import os
import pickle
import random
import tempfile
from pathlib import Path

import numpy as np
import torch

CHECKPOINTS = ".checkpoints"


def checkpoint_path(result_path: Path, run_id: str, config_digest: str, source_sha256: str) -> Path:
    """Where the worker writing ``result_path`` (``<out>/.attempts/<run_id>.json``) keeps its run's checkpoint."""
    out = Path(result_path).parent.parent
    return out / CHECKPOINTS / f"{run_id}-{config_digest}-{source_sha256[:12]}.pt"


def _train_dataset(loader):
    """The training dataset that counts its draws, through wrappers (a frame ablation)."""
    dataset = loader.dataset
    while not hasattr(dataset, "_draws") and isinstance(getattr(dataset, "dataset", None), torch.utils.data.Dataset):
        dataset = dataset.dataset
    return dataset


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def save(path: Path, *, epoch: int, model, optimizer, scheduler, outcome, best_state: dict, best_val_metrics: dict,
         loader) -> None:
    """The state after ``epoch`` epochs, written to a temporary file and renamed (never half a checkpoint)."""
    dataset = _train_dataset(loader)
    state = {
        "epoch": epoch, "model": _unwrapped(model).state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "outcome": dataclasses.asdict(outcome), "best_state": best_state,
        "best_val_metrics": best_val_metrics,
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "loader_generator": loader.generator.get_state() if loader.generator is not None else None,
        "draws": copy.deepcopy(getattr(dataset, "_draws", None)),
        "sampler_passes": getattr(loader.sampler, "passes", None),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def restore(path: Path | None, *, model, optimizer, scheduler, outcome, loader) -> tuple[int, dict, dict] | None:
    """Load ``path`` into the run's objects; (epochs done, best weights, their validation metrics), or None when
    there is no checkpoint to continue from (none yet, or unreadable: the run starts again from epoch 0)."""
    if path is None or not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)  # our own file, named by digests
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
        print(f"{path}: unreadable training checkpoint ({error}); the run starts from its first epoch", flush=True)
        return None
    _unwrapped(model).load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    for field, value in state["outcome"].items():
        setattr(outcome, field, value)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if rng["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    if state["loader_generator"] is not None and loader.generator is not None:
        loader.generator.set_state(state["loader_generator"])
    dataset = _train_dataset(loader)
    if state["draws"] is not None and hasattr(dataset, "_draws"):
        dataset._draws = copy.deepcopy(state["draws"])
    if state["sampler_passes"] is not None:
        loader.sampler.passes = state["sampler_passes"]
    print(f"resuming from {path} after epoch {state['epoch']}", flush=True)
    return state["epoch"], state["best_state"], state["best_val_metrics"]
