"""A paper-scale dry run anyone can run on a CPU: the ``paper`` settings on a MARS-format folder with an OpenAI-format
checkpoint, a couple of training steps per strategy, real result JSONs and a report.

    python -m bench.tools.dryrun --out results/paper-dryrun-cpu              # every strategy
    python -m bench.tools.dryrun --strategies full,side --work /tmp/dryrun   # a subset, inputs kept in /tmp/dryrun

It exercises exactly the path a GPU user runs with the real files -- ``data.prepare mars`` on a raw MARS download,
``--pretrained ~/.cache/clip/ViT-B-16.pt`` (OpenAI's TorchScript archive, QuickGELU), ViT-B/16 at 224 px, 6 frames,
zero-padded slim frames, the released augmentation, the VTFPAR++ fusion width -- minus the GPU and the real data:
the MARS folder holds a few hundred 256 x 128 frames of drawn figures with random labels, and the checkpoint holds
random weights in OpenAI's key layout and fp16, as OpenAI ships them. Preset ``paper-dryrun`` changes only the
amount of work (batch 2, two steps, one epoch), so the figures it writes are smoke, not results; its memory and time
per step are those of batch 2 on this machine.

``write_openai_checkpoint`` and ``write_mars_raw`` are also what the tests use to build OpenAI-format archives and
MARS-format folders of any size.
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image, ImageDraw
from torch import nn

from bench.boundary import entry_point

OPENAI_MARKERS = {"input_resolution": 224, "context_length": 77, "vocab_size": 49408}
FRAME_SIZE = (128, 256)  # MARS crops, PIL (width, height)


class _StateHolder(nn.Module):
    """A module whose state dict is exactly the given one, so TorchScript can save it as an archive the way OpenAI's
    ``clip`` package stores its models (the weights under OpenAI's key names)."""

    def __init__(self, state_dict: dict[str, torch.Tensor]):
        super().__init__()
        for key, value in state_dict.items():
            *path, leaf = key.split(".")
            module = self
            for part in path:
                if not hasattr(module, part):
                    module.add_module(part, nn.Module())
                module = getattr(module, part)
            if value.is_floating_point() and value.dim() > 0:
                module.register_parameter(leaf, nn.Parameter(value, requires_grad=False))
            else:
                module.register_buffer(leaf, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def openai_state_dict(model: nn.Module, *, image_size: int) -> dict[str, torch.Tensor]:
    """An open_clip CLIP's weights as OpenAI stores them: the same key names, fp16, plus OpenAI's three extra keys."""
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v.detach()
             for k, v in model.state_dict().items()}
    markers = {**OPENAI_MARKERS, "input_resolution": image_size,
               "context_length": int(model.positional_embedding.shape[0])}
    return {**state, **{k: torch.tensor(v) for k, v in markers.items()}}


def write_openai_checkpoint(model: nn.Module, path: Path, *, image_size: int, torchscript: bool = True) -> Path:
    """Save ``model`` (an open_clip CLIP) in OpenAI's format: a TorchScript archive (``clip`` package cache) or a
    plain ``torch.save`` state dict."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = openai_state_dict(model, image_size=image_size)
    if torchscript:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, but it is OpenAI's format
            torch.jit.save(torch.jit.script(_StateHolder(state)), str(path))
    else:
        torch.save(state, path)
    return path


def _figure(rng: np.random.Generator, frame: int) -> Image.Image:
    """A 256 x 128 pedestrian-like crop: a coloured torso, legs and head on a noisy background."""
    image = Image.fromarray(rng.integers(60, 200, size=(FRAME_SIZE[1], FRAME_SIZE[0], 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    shift = 4 * (frame % 3)
    top, bottom = tuple(int(c) for c in rng.integers(0, 255, 3)), tuple(int(c) for c in rng.integers(0, 255, 3))
    draw.ellipse((44 + shift, 10, 84 + shift, 50), fill=(220, 180, 150))
    draw.rectangle((34 + shift, 50, 94 + shift, 140), fill=top)
    draw.rectangle((40 + shift, 140, 88 + shift, 246), fill=bottom)
    return image


def _mars_fields() -> list[tuple[str, int]]:
    from data.mars import FIELDS

    return [(f.name, f.classes) for f in FIELDS]


def write_mars_raw(root: Path, *, train_ids: int = 8, test_ids: int = 4, tracklets: int = 2, frames: int = 8,
                   seed: int = 0) -> Path:
    """A raw MARS download in its real layout (bbox_*/, info/*.txt + *.mat, mars_attributes.csv) with
    ``frames`` 256 x 128 JPEG frames per tracklet and random annotations; returns the folder."""
    root, rng = Path(root), np.random.default_rng(seed)
    fields, rows, pid = _mars_fields(), [], 1
    for split, count in (("train", train_ids), ("test", test_ids)):
        names, info = [], []
        for _ in range(count):
            for tracklet in range(1, tracklets + 1):
                cam = 1 + tracklet % 6
                track = [f"{pid:04d}C{cam}T{tracklet:04d}F{n:03d}.jpg" for n in range(1, frames + 1)]
                for k, name in enumerate(track):
                    path = root / f"bbox_{split}" / f"{pid:04d}" / name
                    path.parent.mkdir(parents=True, exist_ok=True)
                    _figure(rng, k).save(path, quality=90)
                info.append([len(names) + 1, len(names) + len(track), pid, cam])
                names += track
                rows.append([pid, cam, tracklet, *(int(rng.integers(0, n)) for _, n in fields)])
            pid += 1
        (root / "info").mkdir(parents=True, exist_ok=True)
        (root / "info" / f"{split}_name.txt").write_text("\n".join(names) + "\n")
        scipy.io.savemat(root / "info" / f"tracks_{split}_info.mat", {f"track_{split}_info": np.array(info, float)})
    with open(root / "mars_attributes.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["person_id", "camera_id", "tracklets_id", *(name for name, _ in fields)])
        writer.writerows(rows)
    return root


def prepare_inputs(work: Path, *, backbone: str = "ViT-B-16") -> tuple[Path, Path]:
    """The prepared MARS root and the OpenAI TorchScript checkpoint of the dry run (built once, then reused)."""
    from data.prepare import prepare
    from models.backbone import configured_image_size, create_clip

    work.mkdir(parents=True, exist_ok=True)
    prepared, checkpoint = work / "mars", work / f"{backbone}.openai.pt"
    if not (prepared / "manifest.csv").is_file():
        print(f"writing a MARS-format folder to {work / 'mars_raw'} and preparing it", flush=True)
        prepare("mars", write_mars_raw(work / "mars_raw"), prepared, val_fraction=0.25, seed=0)
    if not checkpoint.is_file():
        print(f"writing random {backbone} weights in OpenAI's TorchScript format to {checkpoint}", flush=True)
        torch.manual_seed(0)
        model = create_clip(backbone, None, activation="quick_gelu")
        write_openai_checkpoint(model, checkpoint, image_size=configured_image_size(backbone))
    return prepared, checkpoint


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.tools.dryrun", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/paper-dryrun"), help="result folder")
    parser.add_argument("--work", type=Path, default=Path(".cache/paper-dryrun"),
                        help="where the MARS-format folder and the checkpoint are written (reused when present)")
    parser.add_argument("--strategies", default="all", help="comma-separated strategy names, or 'all'")
    return parser


@entry_point("bench.tools.dryrun")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from bench.cli import main as run_bench

    start = time.perf_counter()
    prepared, checkpoint = prepare_inputs(args.work)
    code = run_bench(["--preset", "paper-dryrun", "--dataset", "mars", "--data-root", str(prepared),
                      "--pretrained", str(checkpoint), "--strategies", args.strategies, "--out", str(args.out)])
    print(f"dry run: {time.perf_counter() - start:.0f} s wall time in all", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
