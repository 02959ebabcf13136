"""What a backbone's frozen features carry, per attribute group: a linear probe on the preset's clips.

Every strategy starts from the CLIP visual tower's tokens. At the embedded default's budget (a few hundred optimizer
steps) no strategy adds a visual feature the tower lacks: a randomly initialised tower learns next to nothing
(``results/default-random``) and 30 epochs of full fine-tuning score what the frozen tower scores
(``results/long-schedule``). So what the frozen features carry bounds what any strategy can learn, and a group they
do not carry stays near chance whichever way CLIP is tuned. The probe measures that directly, without training a
strategy (Alain and Bengio, "Understanding intermediate layers using linear classifier probes", 2016):

- features: the frozen tower's tokens after ``ln_post`` and the projection (what VTF's fusion reads), averaged over
  the clip's frames (VTF's temporal mean), pooled per clip as [mean over tokens, max over tokens, class token] and
  standardised with the training split's statistics;
- one L2-regularised logistic regression per attribute column, fitted on the training split (full batch, L-BFGS);
- ROC AUC of its scores on the test split; a group's AUC is the mean over its columns (each class against the rest
  for a multi-class group). 0.5 is chance, 1.0 a perfect ranking.

Frames are sampled as for evaluation (no augmentation), so the figures are deterministic for a given backbone.

    python -m bench.tools.probe --out runs/probe
    python -m bench.tools.probe --pretrained none --out runs/probe-random

Writes ``probe.json`` (versioned; AUCs as fractions) and ``probe.md`` into ``--out``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import rankdata
from tabulate import tabulate
from torch.utils.data import DataLoader

from bench.boundary import ensure_writable_folder, entry_point
from bench.config import ConfigError, RunConfig
from bench.records import now_iso, write_json_atomic
from bench.runner.experiments import load_preset, run_config
from bench.training.datasets import build_split
from data.schema import KINDS, AttributeSchema, get_schema

SCHEMA_VERSION = 1
KIND = "linear-probe"  # a document, not a run record (no "run" section)
DEFAULT_L2 = 0.025  # mean-BCE + l2/2 |w|^2 on standardised features: about scikit-learn's C = 0.05 at 768 clips


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve = P(score of a random positive > score of a random negative), ties counted half
    (the Mann-Whitney U statistic over n_pos * n_neg); NaN when the labels hold one class only."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)  # average ranks: a tie between a positive and a negative counts one half
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def pooled_features(encoder: torch.nn.Module, dataset, *, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3D) pooled frozen features and (N, A) labels of every clip of ``dataset``."""
    features, labels = [], []
    encoder.eval()
    with torch.no_grad():
        for video, target in DataLoader(dataset, batch_size=batch_size):
            b, t = video.shape[:2]
            tokens = encoder(video.flatten(0, 1)).unflatten(0, (b, t)).mean(dim=1)  # (B*T, N, D) -> (B, N, D)
            features.append(torch.cat([tokens.mean(1), tokens.amax(1), tokens[:, 0]], dim=1))  # (B, 3D)
            labels.append(target)
    return torch.cat(features).double().numpy(), torch.cat(labels).numpy()


def fit_logistic(features: np.ndarray, labels: np.ndarray, *, l2: float = DEFAULT_L2) -> tuple[np.ndarray, float]:
    """Weights (D,) and bias of the logistic regression minimising mean BCE + l2 / 2 * |w|^2 (bias unpenalised)."""
    x = torch.as_tensor(features, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.float64)
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=500, tolerance_grad=1e-9, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y) + l2 / 2 * weight @ weight
        loss.backward()
        return loss

    optimizer.step(objective)
    return weight.detach().numpy(), float(bias.detach())


def probe_columns(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *,
                  l2: float = DEFAULT_L2) -> np.ndarray:
    """(A,) test ROC AUC of one probe per column, each fitted on ``train`` (features are standardised with the
    training statistics first)."""
    (x_train, y_train), (x_test, y_test) = train, test
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    aucs = []
    for column in range(y_train.shape[1]):
        if y_train[:, column].min() == y_train[:, column].max():  # nothing to learn from one class
            aucs.append(float("nan"))
            continue
        weight, bias = fit_logistic(x_train, y_train[:, column], l2=l2)
        aucs.append(roc_auc(x_test @ weight + bias, y_test[:, column]))
    return np.array(aucs)


def group_aucs(column_aucs: np.ndarray, schema: AttributeSchema) -> dict[str, dict]:
    """Group name -> {kind, auc (mean over its columns, NaN columns left out), columns}."""
    groups = {}
    for group, cols in zip(schema.groups, schema.group_slices(), strict=True):
        values = column_aucs[cols]
        values = values[~np.isnan(values)]
        groups[group.name] = {"kind": group.kind, "auc": float(values.mean()) if values.size else None,
                              "columns": int(column_aucs[cols].size)}
    return groups


def probe_config(preset: str | None, pretrained: str | None) -> RunConfig:
    """The preset's data and model (``--pretrained`` replaces its weights; ``none`` = random initialisation), its
    weights checked so that a bad file fails before anything is created."""
    from models.backbone import check_weights

    base = load_preset(preset)
    if pretrained is not None:
        base["model"] = {**base["model"], "pretrained": pretrained}
    cfg = run_config(base, "frozen", seed=0, frames=base["data"]["frames"], batch_size=base["train"]["batch_size"])
    check_weights(cfg.model.backbone, cfg.model.pretrained, activation=cfg.model.activation)  # before any folder
    return cfg


def run_probe(cfg: RunConfig, *, l2: float = DEFAULT_L2) -> dict:
    """Probe the frozen tower of ``cfg.model`` on ``cfg.data``'s train and test splits; returns the record."""
    from models.backbone import configured_image_size, create_clip
    from models.vision import ClipFrameEncoder

    started, start = now_iso(), time.perf_counter()
    model = cfg.model
    torch.manual_seed(0)  # a random initialisation (--pretrained none) is the same one every time
    clip = create_clip(model.backbone, model.pretrained, activation=model.activation)
    encoder = ClipFrameEncoder(clip.visual)
    size = configured_image_size(model.backbone)
    splits = {split: pooled_features(encoder, build_split(cfg.data, split, image_size=size, sample_seed=0,
                                                          training=False)) for split in ("train", "test")}
    schema = get_schema(cfg.data.dataset)
    groups = group_aucs(probe_columns(splits["train"], splits["test"], l2=l2), schema)
    by_kind = {kind: _mean([groups[name]["auc"] for name in schema.groups_of_kind(kind)]) for kind in KINDS
               if schema.groups_of_kind(kind)}  # as metrics.evaluate: a kind with no group is absent
    return {"schema_version": SCHEMA_VERSION, "kind": KIND, "started_at": started,
            "duration_s": time.perf_counter() - start,
            "method": "frozen tower tokens after ln_post and proj, mean over frames, [mean, max, class token] "
                      "pooled, standardised on train; logistic regression per column (mean BCE + l2/2 |w|^2, L-BFGS) "
                      "on train; ROC AUC on test, mean over a group's columns",
            "l2": l2, "backbone": model.backbone, "pretrained": model.pretrained,
            "weights": clip.weights_info.to_dict(),
            "data": cfg.to_dict()["data"], "clips": {split: int(x.shape[0]) for split, (x, _) in splits.items()},
            "auc_by_kind": by_kind, "auc_mean": _mean([g["auc"] for g in groups.values()]), "groups": groups}


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def markdown(record: dict) -> str:
    """probe.md: one row per group (kind, test ROC AUC), then the mean per kind."""
    rows = [[name, g["kind"], g["columns"], _cell(g["auc"])] for name, g in record["groups"].items()]
    kinds = [[f"**{kind}** (mean)", "", "", _cell(auc)] for kind, auc in record["auc_by_kind"].items()]
    table = tabulate(rows + kinds + [["**all groups** (mean)", "", "", _cell(record["auc_mean"])]],
                     headers=["group", "kind", "columns", "test ROC AUC"], tablefmt="github")
    return (f"# What the frozen features of `{record['backbone']}` carry\n\n"
            f"Generated by `python -m bench.tools.probe`. Weights: `{record['pretrained']}`. "
            f"Clips: {record['clips']['train']} train, {record['clips']['test']} test. Method: {record['method']} "
            f"(l2 = {record['l2']}). 0.5 is chance.\n\n{table}\n")


def _cell(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.tools.probe", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", help="experiment preset whose data and backbone are probed (default: the embedded "
                   "default)")
    p.add_argument("--pretrained", help="weights to probe instead of the preset's (a file, an open_clip tag, or "
                   "'none' for a random initialisation)")
    p.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty of every probe (mean BCE + l2/2 |w|^2)")
    p.add_argument("--out", type=Path, default=Path("runs/probe"), help="folder for probe.json and probe.md")
    return p


@entry_point("bench.tools.probe")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.l2 > 0:
        raise ConfigError(f"--l2 must be > 0, got {args.l2}")
    cfg = probe_config(args.preset, args.pretrained)
    ensure_writable_folder(args.out)
    record = run_probe(cfg, l2=args.l2)
    write_json_atomic(args.out / "probe.json", record)
    (args.out / "probe.md").write_text(markdown(record))
    kinds = ", ".join(f"{kind} {_cell(auc)}" for kind, auc in record["auc_by_kind"].items())
    print(f"probe of {record['backbone']} ({record['pretrained']}): test ROC AUC {_cell(record['auc_mean'])} over "
          f"all groups ({kinds}) -> {args.out / 'probe.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
