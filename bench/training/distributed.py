"""One run over several processes: DDP under torchrun (``--nproc-per-node K`` = ``train.world_size``).

The sweep starts such a run with ``torchrun --standalone --nproc-per-node K -m bench.runner.worker``
(bench/runner/sweep.py); the loop stays the one of bench/training/train.py, only what it is given changes:

* data: ``train.batch_size`` is the global batch, each rank loads ``batch_size / K`` clips per step from a
  ``DistributedSampler`` that calls ``set_epoch`` before every pass, so every epoch is a new permutation shared by
  all ranks (as the single-process loader reshuffles every pass);
* model: ``DistributedDataParallel`` averages the gradients, so one step sees the global batch. The BatchNorm over the
  logits becomes ``SyncBatchNorm`` on GPU (statistics over the global batch). ``SyncBatchNorm`` refuses CPU tensors,
  so on CPU (gloo) each rank normalises with its own batch statistics and the running statistics are averaged over
  the ranks before every evaluation (timm's ``--dist-bn reduce``): a documented deviation from one process;
* evaluation is exact: every rank predicts its shard, the predictions are gathered by dataset index and the
  ``DistributedSampler``'s padding (it repeats items to make the split divisible by K) is dropped, so metrics are
  computed on each item exactly once, identically on every rank (so every rank keeps the same checkpoint);
* profile: peak memory per rank and its max, step time as the max over ranks of their medians, throughput from the
  global batch; FLOPs are counted on one rank's batch (``*_per_rank``) and ``train_step_flops`` is K times that,
  the work of one step of the whole run. Only rank 0 writes the record (bench/runner/worker.py).
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from bench.config import RunConfig
from bench.numerics import TrainingStep
from bench.training.train import predict


@dataclass(frozen=True)
class Ranks:
    """This process's place in a DDP run."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def sync_batchnorm(self) -> bool:
        return self.device.type == "cuda"


def start(cfg: RunConfig) -> Ranks | None:
    """Join the run's process group (None for a one-process run). torchrun sets RANK, WORLD_SIZE and LOCAL_RANK."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.train.world_size == 1 and world == 1:
        return None
    if world != cfg.train.world_size:
        raise ValueError(f"train.world_size {cfg.train.world_size}: this process belongs to a group of {world} "
                         "(a run with world_size > 1 is started by the sweep through torchrun: --nproc-per-node)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.train.device != "cpu"
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    return Ranks(rank=dist.get_rank(), world_size=world, device=device)


def stop(ranks: Ranks | None) -> None:
    if ranks is not None and dist.is_initialized():
        dist.destroy_process_group()


class EpochSampler(DistributedSampler):
    """A ``DistributedSampler`` that calls ``set_epoch`` with the pass number before each pass over the data."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes = 0

    def __iter__(self):
        self.set_epoch(self.passes)
        self.passes += 1
        return super().__iter__()


def shard_loaders(loaders: dict[str, DataLoader], ranks: Ranks, *, batch_size: int, seed: int
                  ) -> dict[str, DataLoader]:
    """The same splits, each rank loading its share: training shuffled per pass, evaluation in order, padded."""
    sharded = {}
    for split, loader in loaders.items():
        train = split == "train"
        sampler_type = EpochSampler if train else DistributedSampler
        sampler = sampler_type(loader.dataset, num_replicas=ranks.world_size, rank=ranks.rank, shuffle=train,
                               seed=seed, drop_last=False)
        sharded[split] = DataLoader(loader.dataset, batch_size=batch_size // ranks.world_size, sampler=sampler,
                                    drop_last=loader.drop_last, num_workers=loader.num_workers,
                                    pin_memory=loader.pin_memory, persistent_workers=loader.num_workers > 0)
    return sharded


def wrap(model: nn.Module, ranks: Ranks) -> nn.Module:
    """DDP around the model (SyncBatchNorm first on GPU); the strategy's step hooks stay reachable. Buffers are not
    broadcast from rank 0 at every forward: on CPU they are averaged before evaluation instead."""
    if ranks.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    newer = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    no_forward_sync = {"forward_sync_buffers": False} if newer else {"broadcast_buffers": False}  # torch >= 2.14
    wrapped = DistributedDataParallel(model, device_ids=device_ids, **no_forward_sync)
    wrapped.step_hooks = getattr(model, "step_hooks", [])
    return wrapped


def average_batchnorm_statistics(model: nn.Module, world_size: int) -> None:
    """Running mean / variance of every BatchNorm averaged over the ranks (``--dist-bn reduce``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            for buffer in (module.running_mean, module.running_var):
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(world_size)


def predict_split(step: TrainingStep, loader: DataLoader, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """``bench.training.train.predict`` over a whole split, whichever rank runs it: under DDP every rank predicts its
    shard, then all predictions are gathered by dataset index and the sampler's padding dropped."""
    sampler = loader.sampler
    if not isinstance(sampler, DistributedSampler):
        return predict(step, loader, desc=desc)
    world = sampler.num_replicas
    if not any(isinstance(m, nn.SyncBatchNorm) for m in step.model.modules()):
        average_batchnorm_statistics(step.model, world)
    probs, labels = predict(step, loader, desc=desc)  # (n_rank, A), sampler order
    shards: list = [None] * world
    dist.all_gather_object(shards, (list(sampler), probs, labels))
    return _assemble(shards, num_items=len(loader.dataset), world_size=world)


def _assemble(shards: list, *, num_items: int, world_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Rank r's j-th item sits at position r + K j of the padded order; positions >= num_items are padding."""
    probs = np.full((num_items, shards[0][1].shape[1]), np.nan)
    labels = np.full((num_items, shards[0][2].shape[1]), np.nan)
    for rank, (indices, rank_probs, rank_labels) in enumerate(shards):
        keep = [j for j in range(len(indices)) if rank + world_size * j < num_items]
        rows = np.asarray(indices)[keep]
        probs[rows], labels[rows] = rank_probs[keep], rank_labels[keep]
    if np.isnan(probs).any():
        raise RuntimeError(f"distributed evaluation: {int(np.isnan(probs).any(axis=1).sum())} of {num_items} "
                           "items got no prediction")
    return probs, labels


PER_RANK = ("peak_mem_bytes", "step_time_ms_median", "train_step_flops")


def reduce_profile(profile: dict, ranks: Ranks, *, batch_size: int) -> dict:
    """Every rank's profile -> the run's: peak memory per rank and its max, step time the max of the ranks' medians,
    throughput from the global ``batch_size``, train-step FLOPs summed over ranks."""
    mine = {key: profile.get(key) for key in PER_RANK}
    everyone: list = [None] * ranks.world_size
    dist.all_gather_object(everyone, mine)
    out = {**profile, "world_size": ranks.world_size, "batch_per_rank": batch_size // ranks.world_size}
    for key in PER_RANK:
        out[f"{key}_per_rank"] = [entry[key] for entry in everyone]
    if all(entry["peak_mem_bytes"] is not None for entry in everyone):
        out["peak_mem_bytes"] = max(entry["peak_mem_bytes"] for entry in everyone)
    steps = [entry["step_time_ms_median"] for entry in everyone]
    if all(step is not None for step in steps):
        out["step_time_ms_median"] = max(steps)
        out["throughput_clips_per_s"] = batch_size / (max(steps) / 1000.0)
    flops = [entry["train_step_flops"] for entry in everyone]
    if all(value is not None for value in flops):
        out["train_step_flops"] = sum(flops)
    return out
