"""The cost plan's CUDA model against a real GPU, in one command for the first machine with one:

    python -m bench.tools.gpu_validation --gpu h200-141g --out results/gpu-validation-h200

measures every strategy at the ``paper-profile`` setting (ViT-B/16, 224 px, 6 frames, batch 2; ``--profile-only``:
a few training steps each, so minutes, not hours) in fp32 and in bf16 on the GPU, each precision into its own
sub-folder of ``--out``, then plans every measured run again and puts the CUDA model's ``memory_reserved`` peak
beside the measured one (``python -m bench.tools.plan_check ... --gpu``: ``plan-check/plan_check.md`` and ``.json``).
The measured folders are ordinary result folders (reports, records with the GPU's name), labelled by ``--gpu``.
Exit 2 without a GPU; otherwise plan_check's exit code (1 if a FLOP figure differs or a peak misses its tolerance).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from bench.boundary import entry_point
from bench.config import ConfigError

PRECISIONS = ("fp32", "bf16")
RUN_BENCH = Path(__file__).resolve().parents[2] / "run_bench.py"


def build_parser() -> argparse.ArgumentParser:
    from bench.measure.cuda_memory import GPUS

    p = argparse.ArgumentParser(prog="python -m bench.tools.gpu_validation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpu", required=True, choices=sorted(GPUS), help="the GPU this machine has (its workspace sizes, "
                   "assumed context and peaks: bench/measure/cuda_memory.py GPUS)")
    p.add_argument("--out", type=Path, required=True, help="folder of the measured sweeps and the comparison")
    p.add_argument("--strategies", default="all", help="strategies to measure (default: all)")
    p.add_argument("--batch-size", default="2", help="batch sizes (comma-separated; default 2, as paper-profile)")
    return p


def commands(args: argparse.Namespace) -> list[list[str]]:
    """The sweeps (one per precision) and the comparison, as argument lists."""
    python, sweeps = sys.executable, []
    for precision in PRECISIONS:
        sweeps.append([python, str(RUN_BENCH), "--preset", "paper-profile", "--strategies", args.strategies,
                       "--batch-size", args.batch_size, "--precision", precision, "--device", "cuda",
                       "--profile-only", "--out", str(args.out / f"paper-profile-{precision}")])
    check = [python, "-m", "bench.tools.plan_check", *(str(args.out / f"paper-profile-{p}") for p in PRECISIONS),
             "--gpu", args.gpu, "--out", str(args.out / "plan-check")]
    return [*sweeps, check]


def main(argv: list[str] | None = None) -> int:
    import torch

    args = build_parser().parse_args(argv)
    if not torch.cuda.is_available():
        raise ConfigError("gpu_validation: no CUDA device on this machine; run it where a GPU is (the plan itself "
                          "needs none: run_bench.py --plan --gpu-memory)")
    *sweeps, check = commands(args)
    for command in sweeps:
        print("+ " + " ".join(command[1:]), flush=True)
        code = subprocess.call(command)
        if code not in (0, 1):  # 1: some run failed (recorded); the comparison covers the others
            return code
    print("+ " + " ".join(check[1:]), flush=True)
    return subprocess.call(check)


if __name__ == "__main__":
    sys.exit(entry_point("gpu_validation")(main)())
