"""The one training / evaluation loop, identical for every strategy.

Adam with a cosine schedule and linear warm-up (VTF / VTFPAR++: Adam, lr 1e-3, no weight decay, cosine with 5
warm-up epochs out of 20-30), the weighted BCE of models/loss.py, one pass over the validation split per epoch to
choose the checkpoint, and a single evaluation of the test split with the chosen weights. The loop knows no
strategy: a strategy that needs per-step work appends a callable to ``model.step_hooks``, which is called after
every optimizer step for every strategy.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bench.config import TrainConfig
from bench.numerics import TrainingStep


@dataclass
class TrainOutcome:
    best_epoch: int = -1
    best_val: float = -math.inf
    history: list = field(default_factory=list)   # per epoch: loss, val metric, seconds
    step_times_s: list = field(default_factory=list)
    train_time_s: float = 0.0
    steps: int = 0


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_optimizer(model: nn.Module, cfg: TrainConfig, backbone_ids: set[int]) -> torch.optim.Optimizer:
    """Adam over trainable parameters; pretrained-backbone parameters get ``lr * backbone_lr_scale``."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError("no trainable parameters: the strategy and train.train_head leave nothing to train")
    base = [p for p in trainable if id(p) in backbone_ids]
    new = [p for p in trainable if id(p) not in backbone_ids]
    groups = [{"params": new, "lr": cfg.lr}]
    if base:
        groups.append({"params": base, "lr": cfg.lr * cfg.backbone_lr_scale})
    return torch.optim.Adam(groups, weight_decay=cfg.weight_decay)


def make_schedule(optimizer, cfg: TrainConfig, *, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The run's learning-rate schedule, stepped after every optimizer step (``train.lr_schedule``)."""
    if cfg.lr_schedule == "released":
        return released_schedule(optimizer, epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                 steps_per_epoch=steps_per_epoch)
    return cosine_with_warmup(optimizer, total_steps=steps_per_epoch * cfg.epochs,
                              warmup_steps=int(cfg.warmup_epochs * steps_per_epoch))


def released_schedule(optimizer, *, epochs: int, warmup_epochs: float, steps_per_epoch: int
                      ) -> torch.optim.lr_scheduler.LambdaLR:
    """The released VTF / VTFPAR++ schedule (their ``solver/scheduler_factory.py``): timm's ``CosineLRScheduler``
    stepped once per epoch, warm-up from 0.01 lr over ``warmup_epochs``, then cosine from lr towards 0.002 lr over all
    epochs counted from 0. timm sets the per-epoch factors (on a probe optimizer at lr 1); every step of an epoch uses
    its epoch's factor."""
    from timm.scheduler import CosineLRScheduler

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    quiet = logging.getLogger("timm.scheduler.cosine_lr")  # it warns that one epoch has no cosine: true, and harmless
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        timm_schedule = CosineLRScheduler(probe, t_initial=epochs, lr_min=0.002, warmup_lr_init=0.01,
                                          warmup_t=warmup_epochs, cycle_limit=1, t_in_epochs=True)
    finally:
        quiet.setLevel(level)
    factors = []
    for epoch in range(epochs):
        timm_schedule.step(epoch)
        factors.append(probe.param_groups[0]["lr"])
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factors[min(step // steps_per_epoch, epochs - 1)])


def cosine_with_warmup(optimizer, *, total_steps: int, warmup_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@torch.no_grad()
def predict(step: TrainingStep, loader: DataLoader, desc: str = "eval") -> tuple[np.ndarray, np.ndarray]:
    """Sigmoid probabilities and labels of a whole split, (N, A) each, by the step's model in the run's precision."""
    step.model.eval()
    probs, labels = [], []
    for video, target in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        with step.numerics.forward_context():
            logits = step.model(video.to(step.device))
        probs.append(torch.sigmoid(logits.float()).cpu())
        labels.append(target)
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def snapshot(model: nn.Module) -> dict:
    """CPU copy of what training changes: trainable parameters and all buffers (BatchNorm statistics)."""
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    buffers = {name for name, _ in model.named_buffers()}
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items() if k in trainable | buffers}


def train_epoch(step: TrainingStep, loader: DataLoader, *, scheduler, outcome: TrainOutcome, epoch: int,
                max_steps: int | None) -> float:
    """One pass over ``loader`` (at most ``max_steps`` batches), each batch one ``step`` (the step the profiler
    measures too), timed; returns the mean loss."""
    model, device = step.model, step.device
    model.train()
    losses = []
    bar = tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, dynamic_ncols=True)
    for index, (video, target) in enumerate(bar):
        if max_steps is not None and index >= max_steps:
            break
        video, target = video.to(device, non_blocking=True), target.to(device, non_blocking=True)
        synchronize(device)
        start = time.perf_counter()
        loss = step(video, target)
        synchronize(device)
        outcome.step_times_s.append(time.perf_counter() - start)
        scheduler.step()
        outcome.steps += 1
        for hook in getattr(model, "step_hooks", ()):
            hook(outcome.steps)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    return float(np.mean(losses)) if losses else float("nan")
