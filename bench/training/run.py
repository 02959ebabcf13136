"""One benchmark run: config -> data -> model -> strategy -> train (val chooses the checkpoint) -> test once ->
metrics -> profile -> one result dict. Runs inside a worker process (bench/runner/worker.py) so peak memory is clean."""
from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import torch

from bench import numerics
from bench.config import RunConfig
from bench.measure import generalisation, metrics, predictions, profile
from bench.numerics import TrainingStep
from bench.training import checkpoint, distributed
from bench.training.datasets import build_loaders
from bench.training.train import TrainOutcome, make_optimizer, make_schedule, snapshot, train_epoch
from data.schema import get_schema
from models.backbone import image_size_of
from models.loss import WeightedBCE
from models.par_model import FusionSpec, build_par_model, init_fusion_from_vit
from models.vision import discard_attention
from strategies import registry


class TrainingFailed(RuntimeError):
    """Training ran but produced nothing usable (no step taken, or a non-finite loss): the run must not be ``ok``."""


def check_epoch(loss: float, *, epoch: int, steps_before: int, outcome: TrainOutcome, loader,
                finite: bool = True) -> None:
    """An epoch that took no step, or (``finite``) whose mean loss is not finite, fails the run with what to change.
    Profile-only runs ask for steps only: they measure cost, not learning."""
    if outcome.steps == steps_before:
        raise TrainingFailed(f"epoch {epoch + 1} took no training step (train split of {len(loader.dataset)} clips "
                             f"in {len(loader)} batches); nothing was learned, so no result is recorded as ok")
    if finite and not math.isfinite(loss):
        raise TrainingFailed(f"train loss is {loss} in epoch {epoch + 1} (after {outcome.steps} steps): training "
                             "diverged; lower train.lr or check the data")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device {name!r}: CUDA is not available on this machine (use --device cpu)")
    return torch.device(name)


def build_base_model(cfg: RunConfig, **options):
    """The PAR model before any strategy: CLIP visual tower, cached text features, fusion and head. ``options``
    go to ``build_par_model`` (the cost plan's shape-only text encoder)."""
    schema = get_schema(cfg.data.dataset)
    fusion = FusionSpec(width=cfg.model.fusion_width, heads=cfg.model.fusion_heads,
                        mlp_ratio=cfg.model.fusion_mlp_ratio, drop_path=cfg.model.fusion_drop_path)
    model = build_par_model(backbone=cfg.model.backbone, pretrained=cfg.model.pretrained,
                            sentences=schema.sentences(), fusion=fusion, temporal=cfg.model.temporal,
                            num_frames=cfg.data.frames, activation=cfg.model.activation, **options)
    if not cfg.model.visual_attention:
        discard_attention(model.backbone)
    if cfg.model.fusion_init:
        init_fusion_from_vit(model, cfg.model.fusion_init)
    return model


def with_strategy(model, cfg: RunConfig):
    """Apply the run's strategy; also return the ids of all parameters and of the backbone's, taken before it."""
    base_ids = {id(p) for p in model.parameters()}
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    model = registry.apply_strategy(model, cfg.strategy.registered, cfg.strategy.params,
                                    train_head=cfg.train.train_head)
    return model, base_ids, backbone_ids


def build_model(cfg: RunConfig):
    """The run's model with its strategy, the ids of with_strategy, and what its backbone weights were."""
    base = build_base_model(cfg)
    weights = base.weights_info.to_dict()
    return (*with_strategy(base, cfg), weights)


def fit(step: TrainingStep, loaders, *, cfg: RunConfig, memory: profile.MemoryWindow,
        checkpoint_file: Path | None = None) -> tuple[TrainOutcome, dict]:
    """Train for ``cfg.train.epochs``; keep the weights with the best validation ``select_metric`` and return
    their validation metrics (those of the chosen checkpoint, not of the last epoch); without a validation split
    (protocol full-train) the last epoch's weights and no validation metrics. With ``checkpoint_file`` the
    state is saved after every epoch and a run that finds one continues after its epoch
    (bench/training/checkpoint.py)."""
    model, optimizer = step.model, step.optimizer
    steps_per_epoch = min(len(loaders["train"]), cfg.train.max_steps_per_epoch or len(loaders["train"]))
    scheduler = make_schedule(optimizer, cfg.train, steps_per_epoch=steps_per_epoch)
    outcome, best_state, start = TrainOutcome(), snapshot(model), time.perf_counter()
    best_val_metrics: dict = {}
    resumed = checkpoint.restore(checkpoint_file, model=model, optimizer=optimizer, scheduler=scheduler,
                                 outcome=outcome, loader=loaders["train"])
    first_epoch, best_state, best_val_metrics = resumed or (0, best_state, best_val_metrics)
    start -= outcome.train_time_s  # training seconds of earlier processes count too
    for epoch in range(first_epoch, cfg.train.epochs):
        steps_before = outcome.steps
        with memory:
            loss = train_epoch(step, loaders["train"], scheduler=scheduler, outcome=outcome, epoch=epoch,
                               max_steps=cfg.train.max_steps_per_epoch)
        check_epoch(loss, epoch=epoch, steps_before=steps_before, outcome=outcome, loader=loaders["train"])
        if "val" not in loaders:  # protocol full-train: no validation split, the last epoch is the model
            outcome.history.append({"epoch": epoch + 1, "train_loss": loss, "elapsed_s": time.perf_counter() - start})
            outcome.best_epoch, best_state = epoch + 1, snapshot(model)
        else:
            best_state, best_val_metrics = _validate(
                step, loaders["val"], cfg=cfg, outcome=outcome, epoch=epoch, loss=loss,
                elapsed_s=time.perf_counter() - start, best=(best_state, best_val_metrics))
        if checkpoint_file is not None:
            outcome.train_time_s = time.perf_counter() - start
            checkpoint.save(checkpoint_file, epoch=epoch + 1, model=model, optimizer=optimizer, scheduler=scheduler,
                            outcome=outcome, best_state=best_state, best_val_metrics=best_val_metrics,
                            loader=loaders["train"])
    outcome.train_time_s = time.perf_counter() - start
    model.load_state_dict(best_state, strict=False)
    return outcome, best_val_metrics


def _validate(step: TrainingStep, loader, *, cfg: RunConfig, outcome: TrainOutcome, epoch: int, loss: float,
              elapsed_s: float, best: tuple[dict, dict]) -> tuple[dict, dict]:
    """Score the validation split after an epoch, log it, and keep the weights if they beat the best so far:
    returns the (state, validation metrics) kept."""
    probs, labels = distributed.predict_split(step, loader, desc="val")
    val = metrics.evaluate(probs, labels, get_schema(cfg.data.dataset), threshold=cfg.train.threshold)
    chosen = val[cfg.train.select_metric]
    outcome.history.append({"epoch": epoch + 1, "train_loss": loss, f"val_{cfg.train.select_metric}": chosen,
                            "elapsed_s": elapsed_s})
    if chosen > outcome.best_val:
        outcome.best_val, outcome.best_epoch = chosen, epoch + 1
        return snapshot(step.model), val
    return best


def evaluate_test(step: TrainingStep, loaders, *, cfg: RunConfig) -> tuple[dict, float, np.ndarray, np.ndarray]:
    """Test metrics, seconds spent predicting, and the per-clip probabilities and labels (N, A) behind them."""
    schema = get_schema(cfg.data.dataset)
    start = time.perf_counter()
    probs, labels = distributed.predict_split(step, loaders["test"], desc="test")
    elapsed = time.perf_counter() - start
    return metrics.evaluate(probs, labels, schema, threshold=cfg.train.threshold), elapsed, probs, labels


def evaluate_train_subset(step: TrainingStep, loaders, *, cfg: RunConfig) -> tuple[dict, float]:
    """The training subset's metrics (bench/measure/generalisation.py) with the weights the test split was scored
    with, predicted as the test split is, and the seconds it took (the check's cost, kept in the profile)."""
    start = time.perf_counter()
    probs, labels = distributed.predict_split(step, loaders[generalisation.TRAIN_SUBSET], desc="train subset")
    figures = generalisation.subset_metrics(probs, labels, get_schema(cfg.data.dataset), threshold=cfg.train.threshold)
    return figures, time.perf_counter() - start


def majority_baseline(loaders, cfg: RunConfig) -> dict:
    schema = get_schema(cfg.data.dataset)
    train_labels, test_labels = loaders["train"].dataset.labels, loaders["test"].dataset.labels
    probs = metrics.majority_probs(train_labels, len(test_labels), schema)
    return metrics.evaluate(probs, test_labels, schema, threshold=cfg.train.threshold)


def fit_and_test(step: TrainingStep, loaders, *, cfg: RunConfig, memory: profile.MemoryWindow,
                 checkpoint_file: Path | None = None) -> tuple[TrainOutcome, dict, dict]:
    """Train (val chooses the weights), test once, and compare with the majority class: the run's ``metrics``, and
    the evaluation seconds (``eval_time_s`` of the test split, ``train_subset_eval_time_s``).

    Also kept: every test clip's prediction (for bootstrap statistics), the same weights' metrics on a fixed subset
    of training clips (the gate's train-vs-test check) and the own-parameter probe (how much the test predictions
    move when the strategy's own parameters go back to their values before training).
    """
    model = step.model
    initial_own = predictions.snapshot_own(model)
    outcome, val = fit(step, loaders, cfg=cfg, memory=memory, checkpoint_file=checkpoint_file)
    if "test" not in loaders:  # protocol val-only (a --tune grid's run): the test split was never built
        return outcome, {"val": val, "best_epoch": outcome.best_epoch, "history": outcome.history}, \
            {"eval_time_s": None, "train_subset_eval_time_s": None}
    test, eval_time_s, probs, labels = evaluate_test(step, loaders, cfg=cfg)
    subset, subset_time_s = evaluate_train_subset(step, loaders, cfg=cfg)
    own_effect = predictions.own_parameter_effect(
        model, initial_own, lambda: distributed.predict_split(step, loaders["test"], desc="probe")[0], probs)
    result_metrics = {"test": test, "val": val, "majority_test": majority_baseline(loaders, cfg),
                      generalisation.TRAIN_SUBSET: subset, "best_epoch": outcome.best_epoch,
                      "history": outcome.history, "own_params_effect": own_effect,
                      "test_predictions": predictions.encode(probs, labels)}
    return outcome, result_metrics, {"eval_time_s": eval_time_s, "train_subset_eval_time_s": subset_time_s}


def weighted_loss(loaders, device) -> WeightedBCE:
    """VTF's weighted BCE with the positive rates of the training split."""
    return WeightedBCE(metrics.positive_rates(loaders["train"].dataset.labels)).to(device)


def measure_steps(step: TrainingStep, loaders, *, cfg: RunConfig, memory: profile.MemoryWindow) -> TrainOutcome:
    """Profile-only mode: ``warmup_steps + measured_steps`` training steps, no training to convergence."""
    outcome, needed = TrainOutcome(), cfg.profile.warmup_steps + cfg.profile.measured_steps
    start = time.perf_counter()
    while outcome.steps < needed:
        steps_before = outcome.steps
        with memory:
            loss = train_epoch(step, loaders["train"], scheduler=_constant(step.optimizer), outcome=outcome, epoch=0,
                               max_steps=needed - outcome.steps)
        check_epoch(loss, epoch=0, steps_before=steps_before, outcome=outcome, loader=loaders["train"], finite=False)
    outcome.train_time_s = time.perf_counter() - start
    return outcome


def _constant(optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)


def run_one(cfg: RunConfig, checkpoint_file: Path | None = None) -> dict:
    """Execute one run and return the record's ``OUTCOME`` sections (bench/records.py: ``metrics``, ``profile``,
    ``weights``). Under torchrun (``train.world_size`` > 1) this is one rank of a DDP run
    (bench/training/distributed.py); every rank returns the run's figures. ``checkpoint_file``: where a one-process
    run saves its state after every epoch and continues from it (bench/training/checkpoint.py; runs over several
    torchrun ranks start again from epoch 0)."""
    seed_everything(cfg.train.seed)
    ranks = distributed.start(cfg)  # None for a one-process run
    device = ranks.device if ranks else resolve_device(cfg.train.device)
    gpu_before = profile.gpu_memory_guard(device) if cfg.profile.memory else None  # before this process uses CUDA
    model, base_ids, backbone_ids, weights = build_model(cfg)
    model.to(device)
    numerics.set_global_switches(cfg.train, device)
    run_numerics = numerics.numerics_for(cfg.train, device)
    half_cast = numerics.half_frozen_parameters(model.backbone, run_numerics.dtype) \
        if cfg.train.half_frozen_backbone else 0
    relaid = numerics.relayout_attention_inputs(model, run_numerics)
    loaders = build_loaders(cfg.data, image_size=image_size_of(model.backbone), batch_size=cfg.train.batch_size,
                            seed=cfg.train.seed, pin_memory=device.type == "cuda", protocol=cfg.train.protocol)
    if ranks:
        loaders = distributed.shard_loaders(loaders, ranks, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    loss_fn = weighted_loss(loaders, device)
    if cfg.train.head_prior_init:
        model.head.init_prior(loss_fn.constant_optimum_logits())
    trained = distributed.wrap(model, ranks) if ranks else model  # the module the loop trains and evaluates
    step = TrainingStep(trained, loss_fn, make_optimizer(model, cfg.train, backbone_ids), run_numerics, device)
    numerics.maybe_compile(model, cfg.train)
    memory = profile.MemoryWindow(device)
    result_metrics, eval_times = {}, {"eval_time_s": None, "train_subset_eval_time_s": None}
    if cfg.profile.only:
        outcome = measure_steps(step, loaders, cfg=cfg, memory=memory)
    else:
        outcome, result_metrics, eval_times = fit_and_test(step, loaders, cfg=cfg, memory=memory,
                                                           checkpoint_file=None if ranks else checkpoint_file)
    extras = profile.profile_extras(step.on(model), next(iter(loaders["train"])), cfg=cfg.profile)  # after training
    numerics_record = numerics.setting_record(cfg.train, device, half_cast_params=half_cast,
                                                relaid_attentions=relaid)
    prof = {**profile.count_parameters(model, base_ids),
            **profile.step_time_stats(outcome.step_times_s, warmup_steps=cfg.profile.warmup_steps,
                                      batch_size=cfg.train.batch_size),
            **memory.summary(), **extras, **(gpu_before or {}), **numerics_record, "train_time_s": outcome.train_time_s,
            **eval_times, "train_steps": outcome.steps,
            "mode": "profile-only" if cfg.profile.only else "train"}
    if ranks:
        prof = distributed.reduce_profile(prof, ranks, batch_size=cfg.train.batch_size)
        distributed.stop(ranks)
    return {"metrics": result_metrics, "profile": prof, "weights": weights}
