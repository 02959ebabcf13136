"""A reference learner for the data: a small CNN, trained and evaluated by the benchmark's own loop.

When every strategy scores low on a dataset, two explanations compete: the task is too hard for the training
budget, or the CLIP pipeline is slow to learn it. A convolutional network has the locality prior that a tiny ViT
trained for a few hundred steps lacks; trained by ``bench.training.run.fit_and_test`` on the same data and loaders, with
the same weighted BCE, prior-initialised output, Adam with warm-up and cosine decay, validation-selected checkpoint,
single test evaluation and majority baseline, it tells the two apart. The figures are a yardstick for the
data, not a strategy of the benchmark: the network shares nothing with CLIP or VTF.

    python -m bench.tools.reference --epochs 4 --out results/reference-cnn
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch import nn

from bench.boundary import ensure_writable_folder, entry_point
from bench.config import ConfigError, RunConfig, merge
from bench.measure import profile
from bench.numerics import TrainingStep, numerics_for
from bench.records import now_iso, write_json_atomic
from bench.runner.experiments import load_preset, run_config, run_id
from bench.runner.worker import run_record
from bench.training.datasets import build_loaders
from bench.training.run import fit_and_test, resolve_device, seed_everything, weighted_loss
from bench.training.train import make_optimizer
from data.schema import get_schema
from models.backbone import configured_image_size

NAME = "reference_cnn"


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class FrameCNN(nn.Module):
    """video (B, T, 3, S, S) -> logits (B, A): five 3x3 conv-BN-ReLU layers with three 2x2 max-pools, a linear
    read-out of the 6 x 6 feature map (position-aware, like a ViT's tokens), mean over frames, then a BatchNorm1d over
    the A logits as in VTF's head."""

    def __init__(self, num_attributes: int):
        super().__init__()
        self.features = nn.Sequential(_conv(3, 32), _conv(32, 32), nn.MaxPool2d(2), _conv(32, 64), _conv(64, 64),
                                      nn.MaxPool2d(2), _conv(64, 128), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(6))
        self.readout = nn.Linear(128 * 6 * 6, num_attributes)
        self.norm = nn.BatchNorm1d(num_attributes)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        b, t = video.shape[:2]
        logits = self.readout(self.features(video.flatten(0, 1)).flatten(1))  # (B*T, 3, S, S) -> (B*T, A)
        return self.norm(logits.unflatten(0, (b, t)).mean(dim=1))  # (B, T, A) -> (B, A)

    @torch.no_grad()
    def init_prior(self, prior_logits: torch.Tensor) -> None:
        """Start at the loss-optimal constant predictor, as the VTF head does (``AttributeHead.init_prior``)."""
        self.norm.bias.copy_(prior_logits.to(self.norm.bias))


def run_reference(cfg: RunConfig) -> dict:
    """Train and test the reference CNN under ``cfg`` (data and train sections); returns a result record."""
    started, start = now_iso(), time.perf_counter()
    seed_everything(cfg.train.seed)
    device = resolve_device(cfg.train.device)
    model = FrameCNN(get_schema(cfg.data.dataset).num_columns).to(device)
    loaders = build_loaders(cfg.data, image_size=configured_image_size(cfg.model.backbone),
                            batch_size=cfg.train.batch_size, seed=cfg.train.seed, pin_memory=device.type == "cuda")
    loss_fn = weighted_loss(loaders, device)
    if cfg.train.head_prior_init:
        model.init_prior(loss_fn.constant_optimum_logits())
    step = TrainingStep(model, loss_fn, make_optimizer(model, cfg.train, backbone_ids=set()),
                        numerics_for(cfg.train, device), device)
    outcome, result_metrics, eval_times = fit_and_test(step, loaders, cfg=cfg, memory=profile.MemoryWindow(device))
    name = run_id(NAME, frames=cfg.data.frames, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    record = run_record(cfg, run_id=name, status="ok", started_at=started, duration_s=time.perf_counter() - start)
    record["metrics"] = result_metrics
    record["profile"] = {"params_trainable": sum(p.numel() for p in model.parameters()),
                         "train_time_s": outcome.train_time_s, **eval_times,
                         "train_steps": outcome.steps, "mode": "train"}
    return record


def reference_config(preset: str | None, *, epochs: int | None, seed: int) -> RunConfig:
    """The preset's data and training settings; the strategy section names the reference learner."""
    base = load_preset(preset)
    cfg = run_config(base, "full", seed=seed, frames=base["data"]["frames"], batch_size=base["train"]["batch_size"])
    override = {"strategy": {"name": NAME, "family": NAME, "params": {}}, "profile": {"enabled": False}}
    if epochs is not None:
        override["train"] = {"epochs": epochs}
    return RunConfig.from_dict(merge(cfg.to_dict(), override))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tools.reference", description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="experiment preset whose data and training settings are used (default: default)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--out", type=Path, default=Path("runs/reference-cnn"), help="folder for the result JSON")
    return p


@entry_point("bench.tools.reference")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    cfg = reference_config(args.preset, epochs=args.epochs, seed=args.seed)
    ensure_writable_folder(args.out)  # before the training, not after it
    record = run_reference(cfg)
    path = args.out / f"{record['run']['id']}.json"
    write_json_atomic(path, record)
    test, majority = record["metrics"]["test"], record["metrics"]["majority_test"]
    print(f"{NAME}: test macro-F1 {100 * test['macro_f1']:.2f} %, paper-F1 {100 * test['paper_f1']:.2f} % "
          f"(majority class {100 * majority['macro_f1']:.2f} / {100 * majority['paper_f1']:.2f} %), "
          f"{record['profile']['train_steps']} steps, {record['profile']['train_time_s']:.0f} s training -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
