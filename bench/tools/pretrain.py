"""Contrastive pre-training of a small open_clip CLIP on synthetic pedestrian image / caption pairs.

VTF and VTFPAR++ start from a CLIP that already knows how people look (Radford et al., ICML 2021); comparing "frozen
backbone + small tuned part" against full fine-tuning on a randomly initialised backbone would measure nothing. This
command gives the embedded default ``par-vit-tiny`` such a start, offline: CLIP's symmetric InfoNCE loss
(``open_clip.loss.ClipLoss``, with the model's learnable ``logit_scale`` clamped at 100 as open_clip's trainer does),
AdamW with CLIP's ViT betas (0.9, 0.98) and eps 1e-6, no weight decay on gains / biases / ``logit_scale`` (open_clip
``main.py``), linear warm-up then cosine decay. Data: data/captions.py (static appearance only; no motion, pose or
age; people keyed with split ids >= 10, never a PAR person).

Output (``--out``): ``open_clip_config.json`` + ``open_clip_model.safetensors`` (fp16 values; open_clip casts them to
the fp32 model on load), loadable as ``create_clip("local-dir:DIR")`` or ``create_clip("par-vit-tiny",
"DIR/open_clip_model.safetensors")``, and ``metadata.json`` (arguments, data description, versions, wall time,
losses, zero-shot checks of the stored model and of the same architecture at its random initialisation, sha256).

    python -m bench.tools.pretrain --out models/weights/par-vit-tiny-synthclip --steps 5000 --batch-size 64 --seed 0
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import ClassVar

import numpy as np
import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from open_clip.loss import ClipLoss
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from bench.config import Validated, option
from bench.errors import BenchError
from data import captions
from data.transforms import clip_normalize
from models.backbone import CONFIG_DIR, create_clip, image_size_of, tokenizer_for

DEFAULT_OUT = "models/weights/par-vit-tiny-synthclip"
WEIGHTS_FILE = "open_clip_model.safetensors"
CONFIG_FILE = "open_clip_config.json"
METADATA_FILE = "metadata.json"
MAX_LOGIT_SCALE = math.log(100.0)


class PretrainError(BenchError, ValueError):
    """A checkpoint that does not round-trip (bad arguments are the config's ``ConfigError``)."""


@dataclass(frozen=True)
class PretrainConfig(Validated):
    """Everything that decides the checkpoint (``workers`` only changes speed; ``threads`` may change float
    summation order, so it is fixed and recorded). Declared and checked like every config (``option``)."""

    SECTION: ClassVar[str] = "pretrain"

    model: str = option("par-vit-tiny", "open_clip architecture (models/configs)")
    steps: int = option(5000, "optimizer steps (one fresh batch each)", min=1)
    batch_size: int = option(64, "pairs per step (contrastive negatives)", min=2)
    lr: float = option(1e-3, "peak learning rate", above=0)
    weight_decay: float = option(0.1, "AdamW decay on weight matrices", min=0)
    warmup_steps: int = option(100, "linear warm-up steps before cosine", min=0)
    seed: int = option(0, "torch seed: initialisation", min=0)
    data_seed: int = option(0, "which synthetic people exist", min=0)
    nuisance_max: float = option(2.0, "nuisance scale ~ U(0, this)", min=0)
    threads: int = option(1, "torch CPU threads (fixed: summation order)", min=1)
    workers: int = option(1, "DataLoader processes rendering pairs", min=0)
    eval_pairs: int = option(1000, "held-out pairs for the zero-shot checks", min=5)
    twins: bool = option(False, "hard negatives: every second training pair is the previous one's person with one "
                                "described binary attribute flipped, both captions naming it (data/captions.py)")


HELP = {f.name: f.metadata["help"] for f in fields(PretrainConfig)}


def build_parser() -> argparse.ArgumentParser:
    """CLI whose defaults reproduce the committed checkpoint (tests compare them with its metadata.json)."""
    d = PretrainConfig()
    p = argparse.ArgumentParser(prog="python -m bench.tools.pretrain", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="output directory (checkpoint, config, metadata.json)")
    p.add_argument("--model", default=d.model, help=HELP["model"])
    p.add_argument("--steps", type=int, default=d.steps, help=HELP["steps"])
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=HELP["batch_size"])
    p.add_argument("--lr", type=float, default=d.lr, help=HELP["lr"])
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=HELP["weight_decay"])
    p.add_argument("--warmup-steps", type=int, default=d.warmup_steps, help=HELP["warmup_steps"])
    p.add_argument("--seed", type=int, default=d.seed, help=HELP["seed"])
    p.add_argument("--data-seed", type=int, default=d.data_seed, help=HELP["data_seed"])
    p.add_argument("--nuisance-max", type=float, default=d.nuisance_max, help=HELP["nuisance_max"])
    p.add_argument("--threads", type=int, default=d.threads, help=HELP["threads"])
    p.add_argument("--workers", type=int, default=d.workers, help=HELP["workers"])
    p.add_argument("--eval-pairs", type=int, default=d.eval_pairs, help=HELP["eval_pairs"])
    p.add_argument("--twins", action="store_true", help=HELP["twins"])
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no decay on 1-d tensors (gains, biases, class embedding) and ``logit_scale``."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        skip = param.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if skip else decay).append(param)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def warmup_cosine(step: int, *, warmup: int, total: int) -> float:
    """LR multiplier: linear warm-up to 1 over ``warmup`` steps, then cosine to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def _pair_config(cfg: PretrainConfig, image_size: int, *, held_out: bool) -> captions.PairConfig:
    split = captions.HELD_OUT_SPLIT if held_out else captions.PRETRAIN_SPLIT
    return captions.PairConfig(image_size=image_size, data_seed=cfg.data_seed, split_id=split,
                               nuisance_max=cfg.nuisance_max, wide=not held_out, twins=cfg.twins and not held_out)


def init_model(cfg: PretrainConfig) -> torch.nn.Module:
    """The architecture at its seeded random initialisation (also the 'random' baseline of the checks)."""
    torch.manual_seed(cfg.seed)
    return create_clip(cfg.model)


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch CPU threads (the float summation order depends on it), then restore the caller's."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train(cfg: PretrainConfig, *, progress: bool = True) -> tuple[torch.nn.Module, list[float]]:
    """Pre-train from the seeded initialisation with ``cfg.threads`` threads; returns the model (eval mode) and the
    loss of every step."""
    with torch_threads(cfg.threads):
        return _train(cfg, progress=progress)


def _train(cfg: PretrainConfig, *, progress: bool) -> tuple[torch.nn.Module, list[float]]:
    model = init_model(cfg).train()
    data = captions.PairBatches(_pair_config(cfg, image_size_of(model.visual), held_out=False),
                                batch_size=cfg.batch_size, num_batches=cfg.steps, tokenizer=tokenizer_for(cfg.model))
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=cfg.workers)
    optimizer = torch.optim.AdamW(param_groups(model, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6,
                                  fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup=cfg.warmup_steps, total=cfg.steps))
    loss_fn, losses = ClipLoss(), []
    bar = tqdm(loader, total=cfg.steps, disable=not progress, desc="pretrain", unit="step")
    for images, tokens in bar:
        loss = loss_fn(model.encode_image(images, normalize=True), model.encode_text(tokens, normalize=True),
                       model.logit_scale.exp())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    return model.eval(), losses


def held_out_pairs(cfg: PretrainConfig, image_size: int) -> list[captions.Pair]:
    """The check set: PAR-like frames (nuisance 1, PAR scenes, no view change), uniform classes, split 11."""
    pair_cfg = _pair_config(cfg, image_size, held_out=True)
    return [captions.render_pair(pair_cfg, i) for i in range(cfg.eval_pairs)]


@torch.no_grad()
def _features(model: torch.nn.Module, tokenizer, pairs: list[captions.Pair]) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit-norm image (N, D) and caption (N, D) features."""
    images = clip_normalize(torch.from_numpy(np.stack([p.image for p in pairs])))  # (N, S, S, 3) -> (N, 3, S, S)
    image_f = torch.cat([model.encode_image(chunk, normalize=True) for chunk in images.split(250)])
    text_f = torch.cat([model.encode_text(tokenizer([p.caption for p in pairs[i:i + 250]]), normalize=True)
                        for i in range(0, len(pairs), 250)])
    return image_f, text_f


def recall_at(similarity: torch.Tensor, k: int) -> float:
    """Share of rows whose own column (the diagonal) is among the k highest; ties count against it."""
    own = similarity.diagonal()[:, None]  # (N,) -> (N, 1)
    return float(((similarity >= own).sum(1) <= k).float().mean())


@torch.no_grad()
def zero_shot_checks(model: torch.nn.Module, tokenizer, pairs: list[captions.Pair]) -> dict[str, float]:
    """Retrieval recall@1/@5 both ways (chance k/N) and colour classification by 'a person in a <c> top' prompts
    (chance 1/classes; held-out classes are uniform, so that is also the majority rate)."""
    model.eval()
    image_f, text_f = _features(model, tokenizer, pairs)
    sim = image_f @ text_f.T  # (N images, N captions)
    n = len(pairs)
    out = {"pairs": n, "chance_r1": round(1 / n, 4), "chance_r5": round(5 / n, 4)}
    for k in (1, 5):
        out[f"image_to_text_r{k}"] = round(recall_at(sim, k), 4)
        out[f"text_to_image_r{k}"] = round(recall_at(sim.T, k), 4)
    for group in ("top colour", "bottom colour"):
        prompts = captions.zero_shot_prompts(group)
        pred = (image_f @ model.encode_text(tokenizer(prompts), normalize=True).T).argmax(1)  # (N, classes) -> (N,)
        truth = torch.tensor([p.attrs[group] for p in pairs])
        key = group.replace(" ", "_")
        out[f"{key}_accuracy"] = round(float((pred == truth).float().mean()), 4)
        out[f"{key}_chance"] = round(1 / len(prompts), 4)
    return out


def save_checkpoint(model: torch.nn.Module, out: Path, *, model_name: str) -> Path:
    """Write the fp16 weights and the ``local-dir:`` config (model_cfg = the architecture's JSON); returns the
    weights path."""
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    (out / WEIGHTS_FILE).chmod(0o644)
    model_cfg = json.loads((CONFIG_DIR / f"{model_name}.json").read_text())
    preprocess = {"size": model_cfg["vision_cfg"]["image_size"], "mean": list(OPENAI_DATASET_MEAN),
                  "std": list(OPENAI_DATASET_STD)}
    (out / CONFIG_FILE).write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}, indent=2) + "\n")
    return out / WEIGHTS_FILE


def load_pretrained(out: Path) -> torch.nn.Module:
    """Load through open_clip's standard ``local-dir:`` path and check every fp32 value equals the stored fp16 one."""
    model = create_clip(f"local-dir:{out}").eval()
    stored = load_file(str(out / WEIGHTS_FILE))
    for name, value in model.state_dict().items():
        if value.dtype != torch.float32 or not torch.equal(value, stored[name].float()):
            raise PretrainError(f"{out / WEIGHTS_FILE}: {name} does not load as the stored fp16 values in fp32")
    return model


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def data_description(cfg: PretrainConfig, image_size: int) -> dict:
    """What the pairs are, in words and numbers, for metadata.json."""
    return {
        "images": f"single {image_size} px frames of data/synthetic.py people, a random frame of a 16-frame tracklet",
        "people": f"np.random.default_rng([data_seed={cfg.data_seed}, split_id, index]); pre-training split_id "
                  f"{captions.PRETRAIN_SPLIT}, held-out checks split_id {captions.HELD_OUT_SPLIT} (PAR splits use 0-2)",
        "pairs_seen": cfg.steps * cfg.batch_size,
        "class_priors": "uniform over the classes of every MARS group (binary groups 1/2), not data.synthetic.PRIORS",
        "nuisance_scale": f"uniform [0, {cfg.nuisance_max}] (PAR default 1)",
        "scenes": "base / pole / ground colours uniform in [0, 255] (PAR: [40, 215], contrasting poles)",
        "views": "scale exp U(ln 0.8, ln 1.25), aspect exp U(-0.1, 0.1), shift U(-0.1, 0.1) half-widths, "
                 "horizontal flip 1/2, border padding",
        "held_out": f"{cfg.eval_pairs} pairs, PAR-like frames: nuisance 1, PAR scenes, no view change, uniform classes",
        "caption_grammar_version": captions.GRAMMAR_VERSION,
        "captions_describe": list(captions.DESCRIBED_GROUPS),
        "captions_never_mention": list(captions.OMITTED_GROUPS),
    }


def _metadata(argv: list[str], args: argparse.Namespace, cfg: PretrainConfig, *, image_size: int,
              losses: list[float], checks: dict, weights: Path, timing: dict) -> dict:
    """metadata.json: how the checkpoint was made and what it can do."""
    return {
        "command": " ".join(["python -m bench.tools.pretrain", *argv]), "arguments": vars(args), "config": asdict(cfg),
        "seed": cfg.seed, "steps": cfg.steps, "data": data_description(cfg, image_size),
        "loss": {"first": losses[0], "final_mean_last_20": float(np.mean(losses[-20:])),
                 "every_25_steps": [round(x, 4) for x in losses[::25]]},
        "zero_shot": checks, "wall_time_s": timing,
        "weights": {"file": WEIGHTS_FILE, "dtype": "float16", "bytes": weights.stat().st_size,
                    "sha256": sha256_of(weights)},
        "environment": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                        "python": platform.python_version(), "machine": platform.machine(),
                        "cpu_count": os.cpu_count(), "torch_threads": cfg.threads},
    }


def main(argv: list[str] | None = None) -> dict:
    """Pre-train, save, reload through open_clip, run the checks on it and on the random initialisation."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    cfg = PretrainConfig(**{k: v for k, v in vars(args).items() if k not in ("out", "no_progress")})
    Path(args.out).mkdir(parents=True, exist_ok=True)  # a bad --out fails now, not after the training
    torch.set_num_threads(cfg.threads)
    start = time.perf_counter()
    model, losses = train(cfg, progress=not args.no_progress)
    train_s = time.perf_counter() - start
    weights = save_checkpoint(model, Path(args.out), model_name=cfg.model)
    loaded, tokenizer = load_pretrained(Path(args.out)), tokenizer_for(cfg.model)
    image_size = image_size_of(loaded.visual)
    pairs = held_out_pairs(cfg, image_size)
    checks = {"pretrained": zero_shot_checks(loaded, tokenizer, pairs),
              "random_init": zero_shot_checks(init_model(cfg), tokenizer, pairs)}
    checks["pretrained"]["logit_scale"] = round(loaded.logit_scale.exp().item(), 3)
    timing = {"train": round(train_s, 1), "total": round(time.perf_counter() - start, 1)}
    meta = _metadata(argv, args, cfg, image_size=image_size, losses=losses, checks=checks, weights=weights,
                     timing=timing)
    (Path(args.out) / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps({"zero_shot": checks, "final_loss": meta["loss"]["final_mean_last_20"], "wall_time_s": timing}))
    return meta


if __name__ == "__main__":
    from bench.boundary import run_entry  # the command line's error boundary (one line, exit 2 on bad input)

    sys.exit(run_entry(main, "bench.tools.pretrain"))
